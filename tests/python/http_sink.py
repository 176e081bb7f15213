"""A local HTTP server standing in for Splunk HEC and a webhook receiver in the tests.

Prints the port it listens on, then appends each request to the capture file as one JSON line:
{"path", "headers", "body", "hmacOk"} (hmacOk: the X-Thoth-Signature matches --secret).
"""
import argparse
import hashlib
import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

p = argparse.ArgumentParser()
p.add_argument("--capture", required=True)
p.add_argument("--secret", default="")
args = p.parse_args()


class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        sig = self.headers.get("x-thoth-signature", "")
        want = "sha256=" + hmac.new(args.secret.encode(), body, hashlib.sha256).hexdigest()
        rec = {
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8"),
            "hmacOk": hmac.compare_digest(sig, want),
        }
        with open(args.capture, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"text":"Success","code":0}')

    def log_message(self, *a):
        pass


srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
