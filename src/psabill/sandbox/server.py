"""The loopback HTTP server the sandbox PSAs share, and its test machinery.

:class:`LoopbackServer` carries latency, queued faults, "die after N requests",
a request log, per-endpoint counters and the highest number of requests seen
in flight at once per endpoint. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, urlsplit

Reply = Tuple[int, Dict[str, str], Any]  # status, headers, JSON-able body (None: empty)


@dataclass(frozen=True)
class Fault:
    """One forced outcome for the next matching request.

    ``status`` answers with that status (and ``retry_after``/``body``);
    ``delay`` sleeps first (longer than the client's timeout = a timeout);
    ``drop`` closes the connection without answering.
    """

    status: Optional[int] = None
    retry_after: Optional[str] = None
    body: Any = None
    delay: float = 0.0
    late: bool = False  # stall after doing the work: the write lands, the answer never arrives
    drop: bool = False
    method: Optional[str] = None  # only requests with this method
    endpoint: Optional[str] = None  # only requests whose endpoint label contains this


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Dict[str, str]
    endpoint: str
    headers: Dict[str, str]
    body: Any = None
    status: int = 0


@dataclass
class _Faults:
    queue: List[Fault] = field(default_factory=list)
    die_after: Optional[int] = None


def _sleep_until(moment: float) -> None:
    left = moment - time.monotonic()
    if left > 0:
        time.sleep(left)


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with test knobs; subclasses route."""

    #: headers copied into the request log (never Authorization or secrets).
    LOGGED_HEADERS: Sequence[str] = ("Accept", "Content-Type", "clientId")
    MASKED_HEADERS: Sequence[str] = ()  # logged as "[present]": a log must never hold a secret

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency_ms: float = 0.0) -> None:
        self.latency_ms = latency_ms
        self._lock = threading.Lock()
        self._log: List[Request] = []
        self._counts: Counter[str] = Counter()
        self._inflight: Counter[str] = Counter()
        self._max_inflight: Counter[str] = Counter()
        self._faults = _Faults()
        self._handled = 0
        self._dead = False
        # Test hooks: called with (method, endpoint label) before a request is routed and after its
        # answer is made but before it is sent (a kill -9 between a write landing and its answer).
        self.before: Optional[Callable[[str, str], None]] = None
        self.after: Optional[Callable[[str, str], None]] = None
        self._thread: Optional[threading.Thread] = None
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._server.request_queue_size = 128

    # -- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LoopbackServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"{type(self).__name__}:{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._dead = True
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- knobs -------------------------------------------------------------

    def fail(self, status: int, times: int = 1, *, retry_after: Optional[str] = None, body: Any = None,
             method: Optional[str] = None, endpoint: Optional[str] = None) -> None:
        """Answer the next ``times`` matching requests with ``status``."""
        self._enqueue(Fault(status=status, retry_after=retry_after, body=body, method=method, endpoint=endpoint), times)

    def delay(self, seconds: float, times: int = 1, *, late: bool = False, method: Optional[str] = None,
              endpoint: Optional[str] = None) -> None:
        """Stall the next ``times`` matching requests, before (or, ``late``, after) doing the work."""
        self._enqueue(Fault(delay=seconds, late=late, method=method, endpoint=endpoint), times)

    def drop(self, times: int = 1, *, method: Optional[str] = None, endpoint: Optional[str] = None) -> None:
        """Close the connection on the next ``times`` matching requests without answering."""
        self._enqueue(Fault(drop=True, method=method, endpoint=endpoint), times)

    def die_after(self, requests: int) -> None:
        """Answer ``requests`` more requests, then drop every connection: a PSA gone mid-run."""
        with self._lock:
            self._faults.die_after = self._handled + requests

    def revive(self) -> None:
        with self._lock:
            self._faults = _Faults()
            self._dead = False

    def heal(self) -> None:
        """Drop every queued fault: the server answers normally again."""
        with self._lock:
            self._faults.queue.clear()
            self._faults.die_after = None

    def _enqueue(self, fault: Fault, times: int) -> None:
        with self._lock:
            self._faults.queue.extend([fault] * times)

    # -- observation -------------------------------------------------------

    @property
    def requests(self) -> List[Request]:
        with self._lock:
            return list(self._log)

    @property
    def counts(self) -> Dict[str, int]:
        """Requests per endpoint label, e.g. ``"PATCH finance/agreements/{id}/additions/{id}"``."""
        with self._lock:
            return dict(self._counts)

    @property
    def max_inflight(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._max_inflight)

    @property
    def total(self) -> int:
        with self._lock:
            return self._handled

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._counts.clear()
            self._max_inflight.clear()

    # -- routing (subclasses) ----------------------------------------------

    def endpoint(self, method: str, path: str) -> str:
        """A label for counting: the path with numeric ids replaced by ``{id}``."""
        return f"{method} {_ID.sub('/{id}', path)}"

    def authorize(self, headers: Dict[str, str], path: str) -> Optional[Reply]:
        return None

    def route(self, method: str, path: str, query: Dict[str, str], body: Any) -> Reply:
        raise NotImplementedError

    # -- request handling --------------------------------------------------

    def _pick_fault(self, method: str, label: str) -> Tuple[Optional[Fault], bool]:
        with self._lock:
            self._handled += 1
            die = self._faults.die_after
            if self._dead or (die is not None and self._handled > die):
                self._dead = True
                return None, True
            for i, fault in enumerate(self._faults.queue):
                if (fault.method is None or fault.method == method) and (
                        fault.endpoint is None or fault.endpoint in label):
                    return self._faults.queue.pop(i), False
            return None, False

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        # The answer leaves ``latency_ms`` after the request arrived, the stand-in's own work included:
        # a PSA's latency covers its work, so the stand-in's must too. A stall (``delay``), before the work
        # or after it, comes on top.
        due = getattr(handler, "arrived", time.monotonic()) + self.latency_ms / 1000.0
        split = urlsplit(handler.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        label = self.endpoint(method, path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        fault, dead = self._pick_fault(method, label)
        if dead:
            handler.close_connection = True
            return
        headers = {k: ("[present]" if k in self.MASKED_HEADERS else handler.headers[k])
                   for k in self.LOGGED_HEADERS if handler.headers.get(k) is not None}
        body: Any = None
        reply: Reply
        with self._lock:
            self._inflight[label] += 1
            self._max_inflight[label] = max(self._max_inflight[label], self._inflight[label])
        try:
            if fault is not None and fault.delay and not fault.late:
                time.sleep(fault.delay)
                due += fault.delay
            if fault is not None and fault.drop:
                _sleep_until(due)
                handler.close_connection = True
                self._record(Request(method, path, query, label, headers, None, 0))
                return
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
            if fault is not None and fault.status is not None:
                extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                reply = (fault.status, extra, fault.body if fault.body is not None else {"message": "injected fault"})
            else:
                lowered = {k.lower(): v for k, v in handler.headers.items()}
                denied = self.authorize(lowered, path)
                if denied is not None:
                    reply = denied
                else:
                    if self.before is not None:
                        self.before(method, label)
                    try:
                        reply = self.route(method, path, query, body)
                    except BadRequest as exc:
                        reply = (400, {}, {"code": "InvalidObject", "message": str(exc)})
                    except Exception as exc:  # a sandbox bug must answer, not hang the client
                        reply = (500, {}, {"code": "ServerError", "message": f"{type(exc).__name__}: {exc}"})
            if fault is not None and fault.delay and fault.late:
                time.sleep(fault.delay)
                due += fault.delay
            if self.after is not None:
                self.after(method, label)
            _sleep_until(due)
        finally:
            with self._lock:
                self._inflight[label] -= 1
        self._record(Request(method, path, query, label, headers, body, reply[0]))
        self._send(handler, reply)

    def _record(self, request: Request) -> None:
        with self._lock:
            self._log.append(request)
            self._counts[request.endpoint] += 1

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        status, headers, body = reply
        payload = b"" if body is None else json.dumps(body).encode("utf-8")
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _handler_class(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: 10k requests without 10k handshakes
            disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms stalls

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                pass

            def parse_request(self) -> bool:
                self.arrived = time.monotonic()  # the request line is in: the latency runs from here
                return super().parse_request()

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                server._serve(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                server._serve(self, "POST")

            def do_PATCH(self) -> None:  # noqa: N802
                server._serve(self, "PATCH")

        return Handler


_ID = re.compile(r"/\d+(?=/|$)")


class BadRequest(Exception):
    """Answered as HTTP 400 with this message."""
