"""JSON over HTTP(S) in bounded time and memory: the one transport every remote LLM backend uses.

What a hostile or broken server can cost is bounded by :class:`TransportLimits`: a total deadline
per attempt (connecting, sending, waiting and reading together, so a server dripping one byte at a
time is cut off), a cap on the body as sent and once inflated (gzip/deflate are decoded here, in
bounded steps), a cap on how long a ``Retry-After`` may make us wait, and a bounded number of
redirects (307/308 only: the POST is repeated; keys are dropped when a redirect leaves the origin).
Error texts are scrubbed of the keys sent. Proxies come from the usual ``HTTPS_PROXY`` /
``HTTP_PROXY`` / ``NO_PROXY`` variables. Standard library only.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import ipaddress
import json
import math
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..scene import SceneError, SceneLimits, load_json
from .errors import BackendError, BackendSpecError

__all__ = ["TransportLimits", "post_json", "check_base_url", "scrub"]

MiB = 1024 * 1024
_RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_FOLLOWED = frozenset({307, 308})
_MOVED = frozenset({301, 302, 303})
_KEY_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "api-key"})
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class TransportLimits:
    """What one request may cost.

    Attributes:
        timeout: total seconds per attempt, from connecting to the last byte of the body (default 60).
        retries: attempts after the first on a connection error, a timeout or HTTP 408/409/425/429/5xx
            (default 2, at most 5).
        max_body_bytes: largest body as sent, before decoding (default 8 MiB).
        max_inflated_bytes: largest body after gzip/deflate decoding (default 8 MiB; a 1024-token
            reply is a few kB).
        max_retry_after: longest ``Retry-After`` wait honoured, in seconds (default 10); a server asking
            for longer ends the request with an error saying so.
        max_redirects: 307/308 redirects followed per attempt (default 3).
    """

    timeout: float = 60.0
    retries: int = 2
    max_body_bytes: int = 8 * MiB
    max_inflated_bytes: int = 8 * MiB
    max_retry_after: float = 10.0
    max_redirects: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) \
                or not 0 < self.timeout <= 3600:
            raise BackendSpecError(f"timeout must be in (0, 3600] seconds, got {self.timeout!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or not 0 <= self.retries <= 5:
            raise BackendSpecError(f"transport_retries must be an integer in 0..5, got {self.retries!r}")
        if isinstance(self.max_retry_after, bool) or not isinstance(self.max_retry_after, (int, float)) \
                or not 0 <= self.max_retry_after <= 3600:
            raise BackendSpecError(f"max_retry_after must be in [0, 3600] seconds, got {self.max_retry_after!r}")
        for name in ("max_body_bytes", "max_inflated_bytes", "max_redirects"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BackendSpecError(f"TransportLimits.{name} must be a non-negative integer, got {value!r}")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret (and its URL-encoded and base64 forms) replaced by ``***``."""
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        forms = {secret, urllib.parse.quote(secret, safe=""), base64.b64encode(secret.encode()).decode()}
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "***")
    return text


def check_base_url(url: str) -> urllib.parse.SplitResult:
    """``url`` split, or BackendSpecError when it is not an ``http(s)://host[:port][/path]`` URL."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise BackendSpecError(f"base URL {url!r} is malformed: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise BackendSpecError(f"base URL must start with http:// or https://, got {url!r}")
    if not parts.hostname:
        raise BackendSpecError(f"base URL {url!r} names no host")
    if port == 0:
        raise BackendSpecError(f"base URL {url!r} has port 0")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise BackendSpecError(f"base URL {url!r} holds spaces or control characters")
    return parts


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.expired = False

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            self.expired = True
            raise _Expired
        return left


class _Expired(Exception):
    pass


class _Retryable(Exception):
    def __init__(self, message: str, wait: float | None = None) -> None:
        self.wait = wait
        super().__init__(message)


def post_json(url: str, payload: dict[str, Any], *, headers: dict[str, str], limits: TransportLimits,
              label: str, secrets: Iterable[str] = ()) -> Any:
    """POST ``payload`` as JSON to ``url`` and return the reply's parsed JSON.

    Args:
        url: the endpoint (``http://`` or ``https://``).
        payload: the request body.
        headers: extra headers (keys included; they never reach an error text).
        limits: the bounds (see :class:`TransportLimits`).
        label: how errors name the backend (e.g. ``openai:gpt-4o``).
        secrets: strings scrubbed from every error text (the keys in ``headers``).

    Raises:
        BackendError: the server was unreachable, too slow, too large, not JSON, or answered an
            HTTP error; the message names the attempts made.
    """
    secrets = tuple(secrets)
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    request_headers = {"Content-Type": "application/json", "Accept": "application/json",
                       "Accept-Encoding": "gzip, deflate", "User-Agent": "scenecraft", **headers}
    attempts = 1 + limits.retries
    for attempt in range(1, attempts + 1):
        try:
            status, reply_headers, data = _attempt(url, body, request_headers, limits)
        except _Expired:
            if attempt == attempts:
                raise BackendError(f"{label} timed out after {attempt} attempt(s) of {limits.timeout:g} s") from None
            _sleep(_backoff(attempt))
            continue
        except _Retryable as error:
            if attempt == attempts:
                raise BackendError(scrub(f"{label} unreachable after {attempt} attempt(s): {error}", secrets)) \
                    from None
            _sleep(_backoff(attempt))
            continue
        if status in _RETRY_STATUSES and attempt < attempts:
            wait = _retry_after(reply_headers)
            if wait is not None and wait > limits.max_retry_after:
                raise BackendError(scrub(f"{label} answered HTTP {status} and asked to retry after {wait:g} s, longer "
                                         f"than the {limits.max_retry_after:g} s allowed "
                                         "(TransportLimits.max_retry_after); try again later: "
                                         f"{_snippet(data)}", secrets))
            _sleep(wait if wait is not None else _backoff(attempt))
            continue
        if status >= 400:
            raise BackendError(scrub(f"{label} answered HTTP {status} after {attempt} attempt(s): "
                                     f"{_error_message(data)}", secrets))
        if not 200 <= status < 300:
            raise BackendError(scrub(f"{label} answered HTTP {status}, not a reply: {_snippet(data)}", secrets))
        return _parse(data, reply_headers, label, secrets)
    raise AssertionError("unreachable")  # pragma: no cover


def _attempt(url: str, body: bytes, headers: dict[str, str],
             limits: TransportLimits) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One attempt, redirects included, within one deadline."""
    deadline = _Deadline(limits.timeout)
    origin = _origin(url)
    for _ in range(limits.max_redirects + 1):
        status, reply_headers, data = _exchange(url, body, headers, limits, deadline)
        location = reply_headers.get("Location")
        if status in _MOVED and location:
            raise _moved_error(status, urllib.parse.urljoin(url, location))
        if status not in _FOLLOWED or not location:
            return status, reply_headers, data
        url = urllib.parse.urljoin(url, location)
        try:
            check_base_url(url)
        except BackendSpecError as error:
            raise BackendError(f"redirected to an unusable URL: {error}") from None
        if _origin(url) != origin:  # never hand a key to another host
            headers = {k: v for k, v in headers.items() if k.lower() not in _KEY_HEADERS}
    raise BackendError(f"more than {limits.max_redirects} redirects (TransportLimits.max_redirects); the last one "
                       f"went to {url!r}")


def _moved_error(status: int, location: str) -> BackendError:
    return BackendError(f"the server answered HTTP {status}, moved to {location!r}: use that URL as the base URL "
                        "(a moved POST is not repeated)")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


def _exchange(url: str, body: bytes, headers: dict[str, str], limits: TransportLimits,
              deadline: _Deadline) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Send one POST and read the whole reply; a watchdog shuts the socket at the deadline."""
    connection, target = _connection(url, deadline.remaining())
    watchdog: threading.Timer | None = None
    try:
        connection.connect()
        sock = connection.sock  # kept: http.client drops its own reference once a reply says "close"
        watchdog = threading.Timer(deadline.remaining(), _shut, (sock, deadline))
        watchdog.daemon = True
        watchdog.start()
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        data = _read_body(response, sock, limits, deadline)
        return response.status, response.headers, data
    except (OSError, http.client.HTTPException) as error:
        if deadline.expired or time.monotonic() >= deadline.end:
            raise _Expired from None
        raise _Retryable(_reason(error)) from None
    finally:
        if watchdog is not None:
            watchdog.cancel()
        connection.close()


def _shut(sock: socket.socket, deadline: _Deadline) -> None:
    deadline.expired = True
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection for ``url`` (through a proxy if the environment names one) and the request target."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    proxy = _proxy_for(parts.scheme, host)
    context = ssl.create_default_context() if parts.scheme == "https" else None
    if proxy is None:
        if context is not None:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=context), target
        return http.client.HTTPConnection(host, port, timeout=timeout), target
    proxy_parts = urllib.parse.urlsplit(proxy)
    proxy_headers = {}
    if proxy_parts.username:
        credentials = f"{urllib.parse.unquote(proxy_parts.username)}:{urllib.parse.unquote(proxy_parts.password or '')}"
        proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    if context is not None:
        connection = http.client.HTTPSConnection(proxy_parts.hostname or "", proxy_parts.port, timeout=timeout,
                                                 context=context)
        connection.set_tunnel(host, port, headers=proxy_headers)
        return connection, target
    connection = http.client.HTTPConnection(proxy_parts.hostname or "", proxy_parts.port, timeout=timeout)
    return connection, url  # a plain-HTTP proxy takes the absolute URL


def _proxy_for(scheme: str, host: str) -> str | None:
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or _is_loopback(host) or urllib.request.proxy_bypass(host):
        return None
    if "://" not in proxy:
        proxy = f"http://{proxy}"
    try:
        check_base_url(proxy)
    except BackendSpecError as error:
        raise BackendError(f"the {scheme} proxy in the environment is unusable: {error}") from None
    return proxy


def _is_loopback(host: str) -> bool:
    """A server on this machine (a local vLLM or Ollama) is never reached through a proxy."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_body(response: http.client.HTTPResponse, sock: socket.socket, limits: TransportLimits,
               deadline: _Deadline) -> bytes:
    """The body, decoded from gzip/deflate, within both size caps and the deadline."""
    declared = response.getheader("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > limits.max_body_bytes:
        raise BackendError(_too_large("announced a body of", int(declared), "max_body_bytes", limits.max_body_bytes))
    chunks, size = [], 0
    while True:
        sock.settimeout(deadline.remaining())  # the next read waits no longer than the time left
        chunk = response.read1(_CHUNK)  # what has arrived: one slow byte at a time still meets the deadline
        if not chunk:
            break
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise BackendError(_too_large("sent a body of more than", limits.max_body_bytes, "max_body_bytes",
                                          limits.max_body_bytes))
        chunks.append(chunk)
    deadline.remaining()
    data = b"".join(chunks)
    encodings = [e.strip().lower() for e in (response.getheader("Content-Encoding") or "").split(",") if e.strip()]
    for encoding in reversed(encodings):
        data = _inflate(data, encoding, limits)
    return data


def _inflate(data: bytes, encoding: str, limits: TransportLimits) -> bytes:
    if encoding == "identity":
        return data
    if encoding in ("gzip", "x-gzip"):
        decoders = [zlib.decompressobj(16 + zlib.MAX_WBITS)]
    elif encoding == "deflate":  # zlib-wrapped, as the RFC says, or raw, as some servers send
        decoders = [zlib.decompressobj(), zlib.decompressobj(-zlib.MAX_WBITS)]
    else:
        raise BackendError(f"the server sent a body in the {encoding!r} encoding, which scenecraft does not decode "
                           "(it asks for gzip or deflate)")
    cap = limits.max_inflated_bytes
    for decoder in decoders:
        try:
            out = decoder.decompress(data, cap + 1)
        except zlib.error:
            continue
        if len(out) > cap or decoder.unconsumed_tail:
            raise BackendError(_too_large(f"sent a {encoding} body inflating to more than", cap, "max_inflated_bytes",
                                          cap))
        return out
    raise BackendError(f"the server sent a body marked {encoding!r} that does not decode")


def _too_large(what: str, size: int, knob: str, cap: int) -> str:
    return (f"the server {what} {size:,} bytes, more than the {cap:,} allowed (TransportLimits.{knob}); an LLM "
            "reply is a few kB")


def _parse(data: bytes, headers: http.client.HTTPMessage, label: str, secrets: tuple[str, ...]) -> Any:
    kind = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    try:
        return load_json(data, limits=_REPLY_LIMITS, what="reply body")
    except SceneError as error:
        sent = f" ({kind})" if kind else ""
        raise BackendError(scrub(f"{label} sent a reply that is not JSON{sent}: {error}; it begins "
                                 f"{_snippet(data)}", secrets)) from None


_REPLY_LIMITS = SceneLimits(max_json_chars=8 * MiB, max_json_depth=64, max_number_digits=100)


def _snippet(data: bytes, length: int = 120) -> str:
    text = data[: length * 4].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return repr(text[:length] + ("..." if len(text) > length else ""))


def _error_message(data: bytes) -> str:
    """The ``error.message`` of a JSON error body (OpenAI, Anthropic, Gemini all use it), else a snippet."""
    try:
        parsed = load_json(data, limits=_REPLY_LIMITS, what="error body")
    except SceneError:
        return _snippet(data, 300)
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:300] if message else _snippet(data, 300)


def _retry_after(headers: http.client.HTTPMessage) -> float | None:
    """Seconds a ``Retry-After`` (seconds or an HTTP date) asks for; None if absent or unreadable."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if len(value) <= 12:
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds):
            return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _backoff(attempt: int) -> float:
    return min(0.25 * 2 ** (attempt - 1), 4.0)


def _sleep(seconds: float) -> None:
    time.sleep(max(0.0, seconds))


def _reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host name ({error.strerror or error})"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed ({error.reason or error})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
