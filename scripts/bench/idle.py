"""Open N idle keep-alive connections (each sends one request, then waits), report when done,
hold them for SECONDS."""
import sys, socket, time

port, n, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    socks.append(s)
for s in socks:
    s.recv(4096)
print("ready", flush=True)
time.sleep(seconds)
