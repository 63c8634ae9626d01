"""A loopback HTTP stand-in that answers every request with the bytes it is given: hostile PSA answers.

The ConnectWise sandbox (``psabill.sandbox``) speaks JSON it encodes itself;
answers such as JSON nested past any recursion limit, or paging whose
``Link: next`` never ends, need the bytes as they are.
"""

from __future__ import annotations

import http.server
import socketserver
import threading
from typing import Callable, Dict, List, Tuple

Answer = Callable[[str], Tuple[int, Dict[str, str], bytes]]  # path -> (status, headers, body)


class RawPsa:
    """A loopback HTTP server answering every request with what ``answer(path)`` gives: (status, headers, body).

    The ConnectWise sandbox speaks JSON it encodes itself; hostile answers (JSON nested past any recursion
    limit, paging that never ends) need the bytes as they are."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: List[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body in two writes must not wait for a delayed ACK

            def log_message(self, *args: object) -> None:
                pass

            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                owner.requests.append(self.path)
                status, headers, body = owner.answer(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PATCH = _reply

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def api_url(self) -> str:
        return self.url + "/v2025_1/apis/3.0"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
