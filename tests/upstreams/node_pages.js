// A legacy Node app for the client-injection tests: an HTML page with a length, an HTML page
// streamed in chunks with `</head>` split between two of them, JSON, and a binary image.
// Each answer says which Accept-Encoding the request carried.
const http = require("http");
const port = Number(process.argv[2]);
const image = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
http
  .createServer((req, res) => {
    res.setHeader("X-Seen-Accept-Encoding", req.headers["accept-encoding"] || "");
    if (req.url === "/app/page") {
      const body = "<!doctype html><html><head><title>Legacy</title></head><body><h1>Legacy page</h1></body></html>";
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Content-Length": Buffer.byteLength(body), ETag: '"v1"' });
      res.end(body);
    } else if (req.url === "/app/stream") {
      res.writeHead(200, { "Content-Type": "text/html" });
      res.write("<html><head><title>Streamed</title></he");
      setTimeout(() => res.end("ad><body>streamed</body></html>"), 30);
    } else if (req.url === "/app/data.json") {
      const body = JSON.stringify({ head: "</head>", n: 1 });
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
      res.end(body);
    } else if (req.url === "/app/image.png") {
      res.writeHead(200, { "Content-Type": "image/png", "Content-Length": image.length });
      res.end(image);
    } else {
      res.writeHead(404, { "Content-Type": "text/plain" });
      res.end("not found");
    }
  })
  .listen(port, "127.0.0.1", () => console.log("listening " + port));
