// A plain Node `http` app behind the gateway in the differential tests, written the way the
// Node docs and typical apps parse requests: `new URL(req.url, `http://${req.headers.host}`)`,
// then a virtual-host check on the hostname and a `startsWith('/admin')` check on the path.
//
// Mode `url` routes on the WHATWG-normalized pathname as is. Mode `decode` also
// percent-decodes it and normalizes it with `path.posix.normalize`, as static-file servers
// and hand-written routers do.
//
// Every answer names the area it dispatched to and the path it routed on:
// `RESOURCE:intranet:<path>`, `RESOURCE:admin:<path>` or `RESOURCE:public:<path>`.
//
// Usage: node node_app.js PORT url|decode
'use strict';

const http = require('http');
const path = require('path');

const [port, mode] = process.argv.slice(2);

function route(req) {
  let url;
  try {
    url = new URL(req.url, `http://${req.headers.host}`);
  } catch (_) {
    url = new URL(req.url, 'http://localhost');
  }
  let pathname = url.pathname;
  if (mode === 'decode') {
    pathname = path.posix.normalize(decodeURIComponent(pathname));
  }
  if (url.hostname === 'intranet.test') return ['intranet', pathname];
  if (pathname.startsWith('/admin')) return ['admin', pathname];
  return ['public', pathname];
}

http
  .createServer((req, res) => {
    let body;
    try {
      const [area, p] = route(req);
      body = `RESOURCE:${area}:${p}\n`;
    } catch (e) {
      res.writeHead(400, { 'Content-Type': 'text/plain' });
      res.end(`bad request: ${e.message}\n`);
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end(body);
  })
  .listen(Number(port), '127.0.0.1');
