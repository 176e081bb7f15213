"""A TLS syslog receiver for the tests: reads RFC 6587 octet-counted frames and appends each
message to the capture file, one per line. Prints its port first."""
import argparse
import socket
import ssl
import threading

p = argparse.ArgumentParser()
p.add_argument("--cert", required=True)
p.add_argument("--key", required=True)
p.add_argument("--capture", required=True)
args = p.parse_args()

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(args.cert, args.key)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(8)
print(srv.getsockname()[1], flush=True)
lock = threading.Lock()


def serve(conn):
    buf = b""
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            while b" " in buf:
                n, rest = buf.split(b" ", 1)
                if not n.isdigit() or len(rest) < int(n):
                    break
                msg, buf = rest[: int(n)], rest[int(n):]
                with lock, open(args.capture, "ab") as f:
                    f.write(msg + b"\n")


while True:
    c, _ = srv.accept()
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except ssl.SSLError:
        continue
    threading.Thread(target=serve, args=(t,), daemon=True).start()
