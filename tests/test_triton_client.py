"""MMEClient against a real HTTP server (http.server in a thread): what it resends, and what not.

A load (``POST /models``) that may have reached the server is never sent twice: the server
might be loading it already. Idempotent requests are retried once; so is anything that
provably never left (an idle keep-alive connection the server had closed)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mmesim.triton.client import MMEClient


class Server:
    """Answers per a script: "drop" reads the request, then closes the connection without a
    reply; "ok" replies 200 and keeps the connection; "ok-close" replies, then closes it."""

    def __init__(self, script: list[str]):
        self.script, self.seen = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.seen.append((self.command, self.path, body))
                action = outer.script.pop(0) if outer.script else "ok"
                if action == "drop":
                    self.close_connection = True
                    return
                reply = json.dumps({"models": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                self.close_connection = action == "ok-close"

            do_GET = do_POST = do_DELETE = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def test_a_load_the_server_may_have_received_is_not_sent_again():
    with Server(["drop"]) as srv:
        client = MMEClient(srv.url, timeout_s=10)
        with pytest.raises(OSError):
            client.load("m1", "/opt/ml/models/m1")
        assert [(m, p) for m, p, _ in srv.seen] == [("POST", "/models")]       # once, not twice
        assert json.loads(srv.seen[0][2]) == {"model_name": "m1", "url": "/opt/ml/models/m1"}
        client.close()


@pytest.mark.parametrize("call, method, answer", [
    (lambda c: c.list(), "GET", []), (lambda c: c.ping(), "GET", True),
    (lambda c: c.request("DELETE", "/models/m1").status, "DELETE", 200)])
def test_idempotent_requests_are_retried_once(call, method, answer):
    with Server(["drop"]) as srv:
        client = MMEClient(srv.url, timeout_s=10)
        assert call(client) == answer
        assert [m for m, _, _ in srv.seen] == [method, method]
        client.close()


def test_an_idle_connection_the_server_closed_is_replaced_before_a_load():
    with Server(["ok-close", "ok"]) as srv:
        client = MMEClient(srv.url, timeout_s=10)
        assert client.list() == []
        time.sleep(0.2)                               # the server has closed the keep-alive connection
        client.load("m1", "/models/m1")               # sent once, on a new connection
        assert [(m, p) for m, p, _ in srv.seen] == [("GET", "/models"), ("POST", "/models")]
        client.close()


def test_a_refused_connection_raises_and_ping_says_no():
    with Server([]) as srv:
        url = srv.url
    client = MMEClient(url, timeout_s=5)              # nobody listens there any more
    with pytest.raises(ConnectionRefusedError):
        client.load("m1", "/models/m1")
    assert client.ping() is False
