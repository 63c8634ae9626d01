"""The one HTTP path every remote API shares (the PSAs, LastPass): retries, limits, counting, scrubbing.

Policy, in the order a request meets it:

* Only ``https://`` leaves the host. ``http://`` is allowed to loopback
  (127.0.0.0/8, ::1, ``localhost``) so the sandbox and test stand-ins work; any
  other plain-HTTP URL is refused before a socket opens, because the request
  would carry credentials in clear text. Paging links handed back by the PSA
  are followed on the origin we were configured with or discovered, never on
  the host they name (see :func:`rebase`).
* Concurrency is bounded twice: a global semaphore (``concurrency``) and, when
  the caller names an endpoint, a per-endpoint one (Autotask allows 3 threads
  per endpoint, and its client keeps below that). Both are held only while a request is on the wire, never while
  sleeping between retries, so one throttled endpoint does not starve others.
* Every attempt counts, including retries: the PSA's rate limit counts them too.
  ``max_requests`` turns the count into a hard budget.
* Retries: 429/502/503/504 and transport failures (refused, reset, DNS,
  timeouts) are retried with capped exponential backoff plus jitter; a numeric
  ``Retry-After`` replaces the backoff but is capped too. 500 is retried for
  idempotent requests only (ConnectWise documents 500 as often transient),
  except a 500 whose JSON body carries an ``errors`` list of strings: that is
  Autotask refusing deterministically (wrong user name, integration code or
  permission), so it fails at once with Autotask's own message, unless the
  caller's ``transient_refusal`` says the refusal is one to wait out (Autotask's
  thread-limit refusal, which may come with any status): that one is retried
  with backoff, a non-idempotent request too, because it was refused, not done.
  A non-idempotent request (an Autotask delta adjustment) is retried only when
  the PSA certainly did not apply it (429, or the connection never opened);
  anything ambiguous is raised so the caller can re-read and recompute.
* Bounded responses: a body is streamed and refused by name once it passes
  :data:`MAX_RESPONSE_BYTES` (a ``Content-Length`` over it is refused before
  the body is read), and every attempt has an overall deadline (``deadline``,
  by default 4x the per-read ``timeout``) that covers connecting, sending, the
  headers and the whole body: a server that dribbles one byte per read timeout
  cannot hold a run forever. Each socket operation's timeout is cut to what is
  left of the deadline (:class:`_DeadlineBackend`).
* Errors: 401/403 -> AuthRefused, unreachable after retries -> Unreachable
  (NoAnswer when a non-idempotent request was sent but its answer never
  came: it may have been applied), anything else -> RemoteError with the status
  and a short body excerpt. A caller's ``go`` is asked once the request holds
  its slots; false, and the request is neither sent nor counted (Halted). Every
  message passes through :meth:`HttpClient.scrub`: this client's secrets and
  the Authorization value are scrubbed from the full text (raw, URL-encoded,
  JSON-escaped and base64 forms), then :func:`psabill.text.clean.message`
  escapes control characters, folds and cuts it, so an excerpt's cut can never
  leave part of a secret. JSON nested too deeply to be an answer is refused.
  The client also registers those secrets with the process-wide redactor.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import random
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, TypeVar
from urllib.parse import urlsplit

import httpcore
import httpx

from psabill.net.errors import AuthRefused, Halted, NoAnswer, RemoteError, Unreachable
from psabill.text import clean, redact
from psabill.text.files import check_private, read_ca

log = logging.getLogger("psabill.psa")

T = TypeVar("T")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RESPONSE_BYTES = 50 * 1024 * 1024
DEADLINE_FACTOR = 4  # the overall deadline per attempt, in per-read timeouts
EXCERPT_CHARS = 200


def is_loopback_host(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> None:
    """Refuse anything but https, or http to loopback. The message names the URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme == "https" and host:
        return
    if scheme == "http" and host and is_loopback_host(host):
        return
    if scheme == "http":
        raise RemoteError(f"refusing plain-HTTP URL {_bare(url)}: use https:// (http:// is only for loopback)")
    raise RemoteError(f"URL {_bare(url)} is not an https:// URL")


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}"


def rebase(link: str, base: str) -> str:
    """A paging link's path and query on ``base``'s origin.

    Paging links come from the PSA; following their host would let a response
    send our credentials anywhere, and a PSA may name itself by another alias
    than the one configured. Only the path and query are taken.
    """
    parts = urlsplit(link)
    return origin(base) + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def batches(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start: start + size]


def _bare(url: str) -> str:
    """The URL without query or userinfo: queries can carry user names or filters."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


_attempt = threading.local()  # .deadline: time.monotonic() by which this thread's attempt must end


def _bounded(timeout: Optional[float], kind: type) -> Optional[float]:
    """``timeout`` cut to what is left of this thread's deadline; past it, ``kind`` is raised."""
    deadline = getattr(_attempt, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        _attempt.expired = True
        raise kind("the overall deadline for this request has passed")
    return left if timeout is None else min(timeout, left)


@functools.lru_cache(maxsize=None)
def _default_tls() -> ssl.SSLContext:
    """The verifying TLS context for PSAs without a ``ca_file`` (certifi's CAs, as httpx's default), made
    once a process: building one loads the CA bundle, some 15 ms, and a run opens a client per service."""
    return httpx.create_ssl_context(verify=True, trust_env=False)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: Optional[str] = None,
                  timeout: Optional[float] = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                     _bounded(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with every socket operation bounded by the attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: Optional[float] = None,
                    local_address: Optional[str] = None, socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(host, port, _bounded(timeout, httpcore.ConnectTimeout),
                                                       local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: Optional[float] = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:  # pragma: no cover
        return _DeadlineStream(self._inner.connect_unix_socket(path, _bounded(timeout, httpcore.ConnectTimeout),
                                                               socket_options))

    def sleep(self, seconds: float) -> None:  # pragma: no cover
        self._inner.sleep(seconds)


class _TooLarge(Exception):
    pass


class _NotSent(Exception):
    pass


class HttpClient:
    """A thread-safe, counting, retrying JSON client for one API origin."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        secrets: Iterable[str] = (),
        timeout: float = 30.0,
        max_retries: int = 5,
        ca_file: Optional[str] = None,
        concurrency: int = 8,
        per_endpoint: Optional[int] = None,
        max_requests: Optional[int] = None,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        deadline: Optional[float] = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
        transient_refusal: Optional[Callable[[str], bool]] = None,
        ca_label: str = "ca_file",
    ) -> None:
        """``transient_refusal`` says which ``{"errors": [...]}`` refusals are worth a retry whatever their
        status (Autotask's thread limit); every other such refusal fails at once."""
        self._transient_refusal = transient_refusal
        self.deadline = float(deadline) if deadline is not None else DEADLINE_FACTOR * float(timeout)
        self.max_bytes = int(max_bytes)
        self.max_retries = max(0, int(max_retries))
        self.max_requests = max_requests
        self.backoff = backoff
        self.max_wait = max_wait
        self._sleep = sleep
        own: List[str] = [s for s in secrets if s]
        auth = headers.get("Authorization")
        if auth:
            own.append(auth.split(" ", 1)[-1])
        # Registered before the first request, so no text about it can leave unscrubbed.
        self._redactor = redact.Redactor(own)
        redact.register(*own)
        self._count = 0
        self._count_lock = threading.Lock()
        self._global = threading.BoundedSemaphore(max(1, concurrency))
        self._per_endpoint = per_endpoint
        self._endpoint_sems: Dict[str, threading.BoundedSemaphore] = {}
        self._endpoint_lock = threading.Lock()
        verify: Any = _default_tls()
        if ca_file:
            # A CA file another user could rewrite would let them read our credentials.
            check_private(Path(ca_file), ca_label, RemoteError)

            try:  # read without blocking: OpenSSL's own open of a FIFO would wait for a writer forever
                verify = ssl.create_default_context(cadata=read_ca(Path(ca_file), ca_label, RemoteError))
            except (OSError, ssl.SSLError) as exc:
                raise RemoteError(f"cannot load CA file {ca_file}: {getattr(exc, 'strerror', None) or exc}") from None
        limits = httpx.Limits(max_connections=max(1, concurrency), max_keepalive_connections=max(1, concurrency))
        transport = httpx.HTTPTransport(verify=verify, limits=limits, trust_env=False)
        pool = getattr(transport, "_pool", None)
        if pool is None or not hasattr(pool, "_network_backend"):  # pragma: no cover - a changed httpx
            raise RemoteError("this httpx cannot bound a request's duration: install httpx 0.28")
        pool._network_backend = _DeadlineBackend(pool._network_backend)
        self._client = httpx.Client(
            headers=dict(headers),
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,  # a redirect could carry our headers to another host
            trust_env=False,  # a stray HTTPS_PROXY must not see our credentials
        )

    # -- counting ---------------------------------------------------------

    @property
    def request_count(self) -> int:
        with self._count_lock:
            return self._count

    def _take_ticket(self, method: str, url: str) -> None:
        with self._count_lock:
            if self.max_requests is not None and self._count >= self.max_requests:
                raise RemoteError(
                    f"request budget of {self.max_requests} PSA requests for this run is used up "
                    f"(next: {method} {_bare(url)}); run again later"
                )
            self._count += 1

    # -- scrubbing --------------------------------------------------------

    def scrub(self, text: str, limit: Optional[int] = None) -> str:
        """``text`` as one outbound line: scrubbed whole, controls escaped, folded, then cut to ``limit``."""
        return clean.message(self._redactor.scrub(text), limit)

    def _excerpt(self, response: httpx.Response) -> str:
        """The start of an error body, scrubbed on its full length before the cut."""
        try:
            text = response.text
        except Exception:  # pragma: no cover - undecodable body
            text = ""
        text = self.scrub(text, EXCERPT_CHARS)
        return text or self.scrub(response.reason_phrase or "") or "(empty body)"

    # -- requests ---------------------------------------------------------

    def _endpoint_sem(self, endpoint: Optional[str]) -> Optional[threading.BoundedSemaphore]:
        if endpoint is None or self._per_endpoint is None:
            return None
        with self._endpoint_lock:
            sem = self._endpoint_sems.get(endpoint)
            if sem is None:
                sem = self._endpoint_sems[endpoint] = threading.BoundedSemaphore(self._per_endpoint)
            return sem

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Optional[Mapping[str, Any]] = None,
        json: Any = None,
        endpoint: Optional[str] = None,
        idempotent: bool = True,
        headers: Optional[Mapping[str, str]] = None,
        go: Optional[Callable[[], bool]] = None,
    ) -> httpx.Response:
        """Send one logical request; return a 2xx response or raise a RemoteError.

        ``go``, if given, is asked once the request holds its slots: false, and
        it is not sent (nor counted) and :class:`Halted` is raised.
        """
        check_url(url)
        endpoint_sem = self._endpoint_sem(endpoint)
        where = f"{method} {_bare(url)}"
        attempt = 0
        while True:
            self._take_ticket(method, url)
            retry_after: Optional[float] = None
            failure: str
            try:
                # Built before taking a slot: a slot is held only while the request is on the wire.
                outgoing = self._client.build_request(method, url, params=params, json=json, headers=headers)
                # The endpoint's slot first: a request queued behind its endpoint's cap must not hold
                # one of the global slots that requests to other endpoints are waiting for.
                if endpoint_sem is not None:
                    with endpoint_sem, self._global:
                        response = self._send(outgoing, go)
                else:
                    with self._global:
                        response = self._send(outgoing, go)
            except _NotSent:
                with self._count_lock:
                    self._count -= 1
                raise Halted(f"{where}: not sent, the run is stopping") from None
            except _TooLarge:
                raise RemoteError(self.scrub(f"{where}: the response is over the {_megabytes(self.max_bytes)} limit; "
                                          "it was refused and nothing in it was used")) from None
            except httpx.TimeoutException as exc:
                # A connect timeout never reached the PSA; a read timeout may have been applied.
                sent = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
                if getattr(_attempt, "expired", False):
                    failure = f"no complete response within the {self.deadline:g}s deadline"
                else:
                    failure = f"timed out ({type(exc).__name__})"
                if sent and not idempotent:
                    raise NoAnswer(self.scrub(f"{where}: {failure} after {attempt + 1} attempt(s)")) from None
                if attempt >= self.max_retries:
                    raise Unreachable(self.scrub(f"{where}: {failure} after {attempt + 1} attempt(s)")) from None
            except httpx.ConnectError as exc:
                failure = f"cannot connect: {exc}"
                if attempt >= self.max_retries:
                    raise Unreachable(self.scrub(f"{where}: {failure}")) from None
            except httpx.TransportError as exc:
                failure = f"connection failed: {type(exc).__name__}: {exc}"
                if not idempotent:
                    raise NoAnswer(self.scrub(f"{where}: {failure}")) from None
                if attempt >= self.max_retries:
                    raise Unreachable(self.scrub(f"{where}: {failure}")) from None
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return response
                if status in (401, 403):
                    raise AuthRefused(self.scrub(f"{where}: HTTP {status} (credentials refused): {self._excerpt(response)}"))
                refusal = _refusal(response)
                throttled = refusal is not None and self._transient_refusal is not None \
                    and self._transient_refusal(refusal)
                if refusal is not None and status == 500 and not throttled:
                    raise RemoteError(self.scrub(f"{where}: HTTP 500: {refusal}"), status=0)  # a refusal: final
                retryable = status in RETRY_STATUSES or (status == 500 and idempotent) or throttled
                if not idempotent and status != 429 and not throttled:
                    retryable = False  # it may have been applied: the caller re-reads before anything else
                failure = f"HTTP {status}: {refusal if throttled else self._excerpt(response)}"
                if not retryable or attempt >= self.max_retries:
                    suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise RemoteError(self.scrub(f"{where}: {failure}{suffix}"), status=status)
                retry_after = _retry_after(response)
            wait = self._wait(attempt, retry_after)
            log.info("%s: %s; retry %d/%d in %.2fs", where, self.scrub(failure), attempt + 1, self.max_retries, wait)
            self._sleep(wait)
            attempt += 1

    def _send(self, request: httpx.Request, go: Optional[Callable[[], bool]] = None) -> httpx.Response:
        """One attempt, bounded: the body streamed up to ``max_bytes``, everything within ``deadline``."""
        if go is not None and not go():
            raise _NotSent()
        deadline = time.monotonic() + self.deadline
        _attempt.deadline, _attempt.expired = deadline, False
        try:
            try:
                response = self._client.send(request, stream=True)
            except httpx.TimeoutException:
                # A socket operation cut to what was left of the deadline timed out.
                _attempt.expired = _attempt.expired or time.monotonic() >= deadline - 0.05
                raise
            try:
                length = response.headers.get("Content-Length", "").strip()
                if length.isdigit() and int(length) > self.max_bytes:
                    raise _TooLarge()
                chunks: List[bytes] = []
                size = 0
                try:
                    for chunk in response.iter_bytes():  # decoded: a compressed bomb is capped too
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise _TooLarge()
                        chunks.append(chunk)
                except httpx.TimeoutException:
                    _attempt.expired = _attempt.expired or time.monotonic() >= deadline - 0.05
                    raise
                response._content = b"".join(chunks)  # what Response.read() sets
            finally:
                response.close()
            return response
        finally:
            _attempt.deadline = None

    def _wait(self, attempt: int, retry_after: Optional[float]) -> float:
        if retry_after is not None:
            return max(0.0, min(self.max_wait, retry_after))
        ceiling = min(self.max_wait, self.backoff * (2 ** attempt))
        # Full jitter keeps 16 workers that were throttled together from retrying together.
        return random.uniform(ceiling / 2, ceiling)

    def get_json(self, url: str, **kwargs: Any) -> Any:
        return self.json_of(self.request("GET", url, **kwargs), f"GET {_bare(url)}")

    def json_of(self, response: httpx.Response, where: str) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except RecursionError:
            raise RemoteError(f"{where}: HTTP {response.status_code} but the JSON is nested too deeply to be an "
                              "answer of this API; nothing in it was used") from None
        except ValueError:
            raise RemoteError(self.scrub(f"{where}: HTTP {response.status_code} but the body is not JSON: "
                                         f"{self._excerpt(response)}")) from None

    def close(self) -> None:
        self._client.close()


def _megabytes(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit} bytes"


def _refusal(response: httpx.Response) -> Optional[str]:
    """Autotask's deterministic refusal: a body ``{"errors": ["...", ...]}`` (strings), joined."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return None
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors or not all(isinstance(e, str) for e in errors):
        return None
    return "; ".join(errors)  # whole: the caller scrubs before anything is cut


def _retry_after(response: httpx.Response) -> Optional[float]:
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date (or junk): fall back to our own backoff
    return seconds if seconds >= 0 else None
