"""A tiny HTTP endpoint for tests of the load generator itself (Locust's dispatch, the
adapter's time base): answers SageMaker's InvokeEndpoint path and Triton's MME invoke path
after a fixed delay. Run as ``python stub_endpoint.py PORTFILE [DELAY_S]``; it writes the
port it listens on into PORTFILE."""

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay_s = 0.005

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.delay_s)
        ok = self.path.endswith("/invoke") or self.path.endswith("/invocations")
        if "fail" in self.path or "fail" in (self.headers.get("X-Amzn-SageMaker-Target-Model") or ""):
            ok = False
        out = b'{"outputs": []}' if ok else b'{"ErrorCode": "ValidationError", "Message": "no"}'
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "application/json")
        if not ok:
            self.send_header("x-amzn-ErrorType", "ValidationError:")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
        self.server.bytes_in += len(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    Handler.delay_s = float(sys.argv[2]) if len(sys.argv) > 2 else 0.005
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.bytes_in = 0
    with open(sys.argv[1], "w") as fh:
        fh.write(str(server.server_address[1]))
    server.serve_forever()
