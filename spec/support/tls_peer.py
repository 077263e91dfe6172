"""TLS peers written with Python's standard library only (ssl, socket), for
spec/tls_interop_spec.lua. Every socket has a timeout; every wait is bounded.
  client PORT CA NAME LINE [CERT KEY]  connect, verify for NAME, send LINE, print the reply
  server CERT KEY COUNT [CA]           serve COUNT connections on 127.0.0.1:0 (CA: mTLS)
  reset PORT CA WHEN GOFILE            begin a handshake or a record (WHEN: hello,
                                       handshake, record), wait for GOFILE, then reset
                                       the connection (SO_LINGER 0)"""
import os, socket, ssl, struct, sys, time

def out(*words):
    print(*words, flush=True)

def subject_cn(cert):
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return "-"

def client(port, ca, name, line, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=name) as s:
                out("version", s.version())
                out("peer", subject_cn(s.getpeercert()))
                s.sendall(line.encode() + b"\n")
                reply = b""
                while not reply.endswith(b"\n"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                out("reply", reply.decode().rstrip("\n"))
    except (ssl.SSLError, OSError) as e:
        out("error", type(e).__name__, str(e))
        sys.exit(3)

def server(cert, key, count, ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    lsock.settimeout(10)
    out("port", lsock.getsockname()[1])
    for _ in range(int(count)):
        try:
            raw, _ = lsock.accept()
        except socket.timeout:
            out("no client")
            return
        raw.settimeout(5)
        try:
            with ctx.wrap_socket(raw, server_side=True) as s:
                peer = s.getpeercert()
                out("accepted", s.version(), peer and subject_cn(peer) or "-")
                f = s.makefile("rb")
                for line in f:
                    s.sendall(b"py: " + line)
                f.close()
        except (ssl.SSLError, OSError) as e:
            out("error", type(e).__name__, str(e))
    out("done")

def reset(port, ca, when, gofile):
    ctx = ssl.create_default_context(cafile=ca)
    inc, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, outb, server_hostname="localhost")
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outb.read()
    if when == "hello":            # half of the ClientHello
        sock.sendall(hello[: len(hello) // 2])
    elif when == "handshake":      # the ClientHello, the server's answer, no Finished
        sock.sendall(hello)
        got = sock.recv(65536)
        out("server answered", len(got) > 0)
    elif when == "record":         # a whole handshake, then part of a record
        sock.sendall(hello)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                data = outb.read()
                if data:
                    sock.sendall(data)
                chunk = sock.recv(65536)
                if not chunk:
                    out("error server closed")
                    sys.exit(3)
                inc.write(chunk)
        data = outb.read()
        if data:
            sock.sendall(data)
        tls.write(b"whole\n")
        sock.sendall(outb.read())
        tls.write(b"x" * 1000 + b"\n")
        record = outb.read()
        sock.sendall(record[: len(record) // 2])
    out("ready")
    deadline = time.monotonic() + 10
    while not os.path.exists(gofile) and time.monotonic() < deadline:
        time.sleep(0.02)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    out("reset")

if __name__ == "__main__":
    {"client": client, "server": server, "reset": reset}[sys.argv[1]](*sys.argv[2:])
