"""Drive a portcullis binary through its hot paths, for profile-guided optimization.

    python3 scripts/pgo/train.py path/to/portcullis [rounds]

Used by scripts/build-pgo.sh on the instrumented build (each run of it writes its profile at
exit), and by scripts/test.sh on the plain release build, so the workload itself is checked in
CI. Python's standard library and the openssl command only (what the Docker builder has): a
small upstream in a thread, and for each signing algorithm a gateway on loopback (plain HTTP
and TLS) with a public route and an `auth: required` route. The mix is what a gateway in front
of a legacy application mostly serves: proxied requests with a cached token, public requests,
a new token after every refresh, cookie navigations, and some refusals and logins. Every
answer is checked, so a workload that stopped reaching the path it means to train fails here
instead of training the error path.
"""

import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.path.abspath(sys.argv[1])
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 1
PASSWORD = "training password"


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer and no Nagle: otherwise each keep-alive answer waits for the
    # gateway's delayed ACK (40 ms).
    wbufsize = 4096
    disable_nagle_algorithm = True

    def do_GET(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    do_POST = do_GET

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc):
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit(f"the gateway exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"the gateway did not listen on {port} within 15 s")


def expect(conn, method, path, status, headers=None, body=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    if r.status != status:
        sys.exit(f"{method} {path}: expected {status}, got {r.status}: {data[:200]!r}")
    return r, data


def cookies_of(resp):
    jar = {}
    for k, v in resp.getheaders():
        if k.lower() == "set-cookie":
            name, _, rest = v.partition("=")
            jar[name] = rest.split(";")[0]
    return jar


def workload(c, port, requests):
    origin = f"http://127.0.0.1:{port}"
    expect(c, "GET", "/healthz", 200)
    for i in range(requests):
        expect(c, "GET", f"/pub/page?i={i % 7}", 200)

    login = json.dumps({"email": "train@example.com", "password": PASSWORD})
    r, data = expect(c, "POST", "/auth/login", 200, {"Content-Type": "application/json"}, login)
    token = json.loads(data)["access_token"]
    jar = cookies_of(r)
    bearer = {"Authorization": f"Bearer {token}"}
    for i in range(requests * 2):
        expect(c, "GET", f"/app/item/{i % 13}?q=x", 200, bearer)
    expect(c, "POST", "/app/form", 200, {**bearer, "Content-Type": "text/plain"}, "a=1")

    # Browser navigations with the access cookie (and other cookies the app owns).
    cookie = {
        "Cookie": f"theme=dark; pc_access={jar['pc_access']}; lang=en",
        "Accept": "text/html",
        "Sec-Fetch-Mode": "navigate",
    }
    for i in range(requests // 4):
        expect(c, "GET", f"/app/page/{i % 5}", 200, cookie)

    # Refresh rotation: every new access token is verified once, then served from the cache.
    for _ in range(requests // 40):
        hdr = {
            "Cookie": f"pc_refresh={jar['pc_refresh']}; pc_csrf={jar['pc_csrf']}",
            "X-CSRF-Token": jar["pc_csrf"],
            "Origin": origin,
        }
        r, data = expect(c, "POST", "/auth/refresh", 200, hdr)
        jar.update(cookies_of(r))
        fresh = {"Authorization": "Bearer " + json.loads(data)["access_token"]}
        for _ in range(5):
            expect(c, "GET", "/app/after-refresh", 200, fresh)

    # Refusals: a forged signature, no credential, a navigation sent to the login page. The
    # forgery changes a character well inside the signature: the last one or two can carry
    # only padding bits, or already be the replacement.
    i = len(token) - 10
    forged = token[:i] + ("B" if token[i] == "A" else "A") + token[i + 1:]
    for _ in range(requests // 20):
        expect(c, "GET", "/app/forged", 401, {"Authorization": f"Bearer {forged}"})
        expect(c, "GET", "/app/no-token", 401)
        expect(c, "GET", "/app/no-token", 302, {"Accept": "text/html"})
    wrong = json.dumps({"email": "train@example.com", "password": "wrong"})
    for _ in range(3):
        expect(c, "POST", "/auth/login", 401, {"Content-Type": "application/json"}, wrong)
    expect(c, "GET", "/auth/login", 200)
    expect(c, "GET", "/.well-known/jwks.json", 200)
    expect(c, "POST", "/auth/logout", 200, bearer)
    expect(c, "GET", "/app/after-logout", 401, bearer)
    c.close()


def tls_files(work):
    """A self-signed P-256 certificate for 127.0.0.1, made with the openssl command."""
    if not shutil.which("openssl"):
        sys.exit("the openssl command is needed for the TLS part (apt-get install openssl)")
    key, cert = os.path.join(work, "key.pem"), os.path.join(work, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert


def run(alg, up_port, work, requests):
    work = tempfile.mkdtemp(prefix=f"{alg}-", dir=work)
    keys = os.path.join(work, "keys")
    subprocess.run([BIN, "keygen", "--alg", alg, "--kid", "k", "--out", keys],
                   check=True, stdout=subprocess.DEVNULL)
    phc = subprocess.run([BIN, "hash-password", "--password-stdin"], input=PASSWORD,
                         capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(work, "users.yaml"), "w") as f:
        f.write(f'users:\n  train:\n    email: train@example.com\n    password: "{phc}"\n')
    port, tls_port = free_port(), free_port()
    cert = tls_files(work)
    cfg = os.path.join(work, f"{alg}.yaml")
    with open(cfg, "w") as f:
        f.write(f"""server:
  listen: ["127.0.0.1:{port}"]
  tls: {{ listen: ["127.0.0.1:{tls_port}"], cert: cert.pem, key: key.pem }}
  public_url: "http://127.0.0.1:{port}"
  threads: 1
  grace_period: 1s
cookies: {{ secure: false }}
tokens:
  issuer: https://train.test
  signing_keys: [{{ kid: k, algorithm: {alg}, private_key_file: keys/k.private.pem }}]
users: {{ file: users.yaml }}
store: {{ path: data/db }}
rate_limits: {{ login_per_ip: 1000/1m, login_per_account: 1000/1m, login_per_account_ip: 1000/1m, login_per_device: 1000/1m, refresh_per_ip: 100000/1m }}
logging: {{ format: json, level: warn }}
upstreams: {{ app: {{ addresses: ["127.0.0.1:{up_port}"] }} }}
routes:
  - {{ path_prefix: /pub, upstream: app, auth: public }}
  - {{ path_prefix: /, upstream: app }}
""")
    gw = subprocess.Popen([BIN, "serve", "-c", cfg], stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(work, "gateway.log"), "w"))
    try:
        wait_port(port, gw)
        wait_port(tls_port, gw)
        started = time.time()
        workload(http.client.HTTPConnection("127.0.0.1", port, timeout=30), port, requests)
        # The same over TLS (rustls is Rust code: untrained, PGO would treat it as cold).
        tls = ssl.create_default_context(cafile=cert)
        conn = http.client.HTTPSConnection("127.0.0.1", tls_port, timeout=30, context=tls)
        workload(conn, port, requests // 2)
        print(f"{alg}: {time.time() - started:.1f} s", flush=True)
    finally:
        # A clean exit writes the profile; a kill would lose it.
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gw.kill()
            sys.exit("the gateway did not stop within 30 s of SIGTERM")
    if gw.returncode != 0:
        with open(os.path.join(work, "gateway.log")) as log:
            tail = log.read()[-2000:]
        sys.exit(f"{alg}: the gateway exited with {gw.returncode}; its log ends:\n{tail}")


def main():
    up = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as work:
        for _ in range(ROUNDS):
            for alg in ("EdDSA", "ES256", "RS256"):
                run(alg, up.server_address[1], work, 2000)
    up.shutdown()


main()
