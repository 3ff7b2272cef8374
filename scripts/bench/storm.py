"""Hammer /auth/login with wrong passwords for SECONDS (a login storm), with N threads."""
import sys, threading, time, http.client, json

port, seconds, n = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
stop = time.time() + seconds
count = [0]

def run():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"email": "storm@example.com", "password": "wrong password"})
    while time.time() < stop:
        try:
            c.request("POST", "/auth/login", body, {"Content-Type": "application/json"})
            c.getresponse().read()
            count[0] += 1
        except Exception:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

threads = [threading.Thread(target=run) for _ in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print(count[0])
