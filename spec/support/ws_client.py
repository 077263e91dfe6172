"""A WebSocket client written with Python's standard library only, used by
spec/websocket_spec.lua against examples/ws_echo.lua. Prints one line per
check; exits non-zero on the first failure.

usage: python3 ws_client.py PORT"""
import base64, hashlib, os, socket, struct, sys

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)


def recv_exact(n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def frame(opcode, payload, fin=True):
    mask = os.urandom(4)
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame():
    b1, b2 = recv_exact(2)
    assert b2 & 0x80 == 0, "server frames must not be masked"
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack("!H", recv_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(8))[0]
    return b1 & 0x0F, recv_exact(n)


key = base64.b64encode(os.urandom(16)).decode()
sock.sendall(("GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
              "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
              "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
head = b""
while b"\r\n\r\n" not in head:
    head += recv_exact(1)
accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
assert head.startswith(b"HTTP/1.1 101"), head
assert accept.encode() in head, "wrong Sec-WebSocket-Accept"
print("handshake ok")

sock.sendall(frame(1, b"hello"))
assert read_frame() == (1, b"hello")
print("text echo ok")

big = os.urandom(70000)
sock.sendall(frame(2, big))
assert read_frame() == (2, big)
print("binary echo ok")

sock.sendall(frame(1, b"frag", fin=False) + frame(9, b"ping!") + frame(0, b"mented"))
assert read_frame() == (10, b"ping!")
assert read_frame() == (1, b"fragmented")
print("ping and fragments ok")

sock.sendall(frame(8, struct.pack("!H", 1000) + b"bye"))
opcode, payload = read_frame()
assert opcode == 8 and payload[:2] == struct.pack("!H", 1000), (opcode, payload)
assert sock.recv(1) == b"", "the server should close after the close handshake"
print("close ok")
