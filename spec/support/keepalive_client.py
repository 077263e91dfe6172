"""100 requests on one keep-alive connection with Python's http.client;
used by spec/http_clients_spec.lua. usage: python3 keepalive_client.py PORT"""
import http.client, sys

conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
for i in range(100):
    conn.request("GET", "/hello/%d" % i)
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200 and body == b"hello %d\n" % i, (resp.status, body)
    # One TCP connection throughout: http.client reuses it while the server
    # keeps it alive; the local port never changes.
    if i == 0:
        port = conn.sock.getsockname()[1]
    assert conn.sock.getsockname()[1] == port, "a new connection was opened"
print("100 requests on one connection")
