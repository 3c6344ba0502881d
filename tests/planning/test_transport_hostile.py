"""Hostile and broken LLM servers (issue 12, causes 5 and 6): every one a BackendError in bounded time and memory.

Each test runs a raw HTTP server on 127.0.0.1 whose handler the test writes, byte by byte where it matters.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from scenecraft.planning import BackendError, BackendSpecError, plan_scene
from scenecraft.planning.backends import make_backend, parse_spec
from scenecraft.planning.transport import TransportLimits, post_json

PROMPT = "two red circles to the left of a blue square"
SECRET = "sk-test-SECRET-0123456789"


def completion(content: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()


GOOD_SCENE = json.dumps({"regions": [{"prompt": "a red circle", "box": [0.05, 0.1, 0.3, 0.35]},
                                     {"prompt": "a red circle", "box": [0.05, 0.6, 0.3, 0.85]},
                                     {"prompt": "a blue square", "box": [0.6, 0.35, 0.9, 0.65]}]})


class RawServer:
    """Calls ``respond(handler)`` for each request; ``requests`` records (path, headers)."""

    def __init__(self) -> None:
        self.respond: Callable[[BaseHTTPRequestHandler], None] = lambda h: None
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                try:
                    server.respond(self)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = f"{self.root}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def raw_server():
    server = RawServer()
    yield server
    server.close()


@pytest.fixture
def other_server():
    server = RawServer()
    yield server
    server.close()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for key, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}.items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


def call(server: RawServer, **limits) -> object:
    limits.setdefault("timeout", 2.0)
    limits.setdefault("retries", 0)
    return post_json(f"{server.url}/chat/completions", {"x": 1}, headers={"Authorization": f"Bearer {SECRET}"},
                     limits=TransportLimits(**limits), label="openai:m", secrets=(SECRET,))


def timed(function: Callable[[], object]) -> tuple[BaseException | None, float]:
    start = time.monotonic()
    try:
        function()
    except BaseException as error:  # noqa: BLE001 - the test inspects it
        return error, time.monotonic() - start
    return None, time.monotonic() - start


def test_a_dripping_body_is_cut_off_at_the_total_deadline(raw_server):
    def drip(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        for _ in range(100):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.1)

    raw_server.respond = drip
    error, elapsed = timed(lambda: call(raw_server, timeout=0.8))
    assert isinstance(error, BackendError) and "timed out after 1 attempt(s) of 0.8 s" in str(error)
    assert elapsed < 2.0  # a per-read timeout would wait the whole 10 s


def test_dripping_headers_are_cut_off_too(raw_server):
    def drip(handler):
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(0.05)

    raw_server.respond = drip
    error, elapsed = timed(lambda: call(raw_server, timeout=0.6))
    assert isinstance(error, BackendError) and "timed out" in str(error) and elapsed < 1.8


def test_each_retry_gets_its_own_deadline_and_the_message_counts_them(raw_server):
    raw_server.respond = lambda handler: time.sleep(1.0)
    error, elapsed = timed(lambda: call(raw_server, timeout=0.3, retries=1))
    assert isinstance(error, BackendError) and "timed out after 2 attempt(s) of 0.3 s" in str(error)
    assert len(raw_server.requests) == 2 and elapsed < 2.0


def test_a_long_retry_after_ends_the_request_instead_of_waiting(raw_server):
    raw_server.respond = lambda h: send(h, 429, b'{"error": {"message": "slow down"}}', {"Retry-After": "120"})
    error, elapsed = timed(lambda: call(raw_server, retries=3))
    assert isinstance(error, BackendError) and elapsed < 1.0 and len(raw_server.requests) == 1
    assert "retry after 120 s" in str(error) and "max_retry_after" in str(error)


def test_a_short_retry_after_is_honoured(raw_server):
    replies = [(429, b'{"error": {"message": "busy"}}', {"Retry-After": "0.3"}), (200, completion("hello"), {})]
    raw_server.respond = lambda h: send(h, *replies.pop(0))
    result, elapsed = None, time.monotonic()
    result = call(raw_server, retries=1)
    elapsed = time.monotonic() - elapsed
    assert result["choices"][0]["message"]["content"] == "hello" and 0.3 <= elapsed < 2.0
    assert len(raw_server.requests) == 2


def test_an_http_date_retry_after_is_read(raw_server):
    raw_server.respond = lambda h: send(h, 503, b"{}", {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    error, _ = timed(lambda: call(raw_server, retries=1))
    assert isinstance(error, BackendError) and "asked to retry after" in str(error)


def test_a_gzip_bomb_is_refused_in_bounded_memory(raw_server):
    bomb = gzip.compress(b"\0" * (256 * 1024 * 1024), compresslevel=9)  # 256 MiB inflated, about 250 kB sent
    raw_server.respond = lambda h: send(h, 200, bomb, {"Content-Encoding": "gzip"})
    tracemalloc.start()
    try:
        error, _ = timed(lambda: call(raw_server))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(error, BackendError) and "inflating to more than 8,388,608" in str(error)
    assert peak < 64 * 1024 * 1024  # the cap (8 MiB) and the compressed body, not the 256 MiB


def test_a_gzip_reply_within_the_caps_is_decoded(raw_server):
    raw_server.respond = lambda h: send(h, 200, gzip.compress(completion("fine")), {"Content-Encoding": "gzip"})
    assert call(raw_server)["choices"][0]["message"]["content"] == "fine"
    assert "gzip" in raw_server.requests[0][1]["accept-encoding"]


@pytest.mark.parametrize("headers, streamed", [({"Content-Length": str(50 * 1024 * 1024)}, False),
                                              ({"Transfer-Encoding": "chunked"}, True)])
def test_a_body_larger_than_the_cap_is_refused(raw_server, headers, streamed):
    def respond(handler):
        handler.send_response(200)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if streamed:
            chunk = b"x" * 65536
            for _ in range(64):  # 4 MiB against a 1 MiB cap
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    raw_server.respond = respond
    error, _ = timed(lambda: call(raw_server, max_body_bytes=1024 * 1024))
    assert isinstance(error, BackendError) and "max_body_bytes" in str(error)


@pytest.mark.parametrize("encoding, message", [("br", "'br' encoding"), ("gzip", "does not decode")])
def test_unknown_or_broken_encodings(raw_server, encoding, message):
    raw_server.respond = lambda h: send(h, 200, b"not compressed at all", {"Content-Encoding": encoding})
    with pytest.raises(BackendError, match=message):
        call(raw_server)


@pytest.mark.parametrize("body, content_type", [
    (b"<!DOCTYPE html><html><body>Welcome to nginx!</body></html>", "application/json"),
    (b"<html>login required</html>", "text/html"),
    (b"\xff\xfe\x00garbage", "application/json"),
    (b"[" * 100_000, "application/json"),
    (b'{"choices": [{"message": {"content": 1' + b"9" * 5000 + b"}}]}", "application/json"),
    (b"", "application/json"),
])
def test_a_body_that_is_not_json_is_one_sentence(raw_server, body, content_type):
    raw_server.respond = lambda h: send(h, 200, body, {"Content-Type": content_type})
    with pytest.raises(BackendError, match="sent a reply that is not JSON") as caught:
        call(raw_server)
    assert len(str(caught.value)) < 600


def test_a_redirect_loop_is_bounded_and_not_retried(raw_server):
    raw_server.respond = lambda h: send(h, 307, b"", {"Location": "/v1/chat/completions"})
    with pytest.raises(BackendError, match="more than 3 redirects"):
        call(raw_server, retries=2)
    assert len(raw_server.requests) == 4  # the first request and 3 redirects


def test_a_redirect_to_another_origin_drops_the_key(raw_server, other_server):
    other_server.respond = lambda h: send(h, 200, completion("moved"))
    raw_server.respond = lambda h: send(h, 308, b"", {"Location": f"{other_server.url}/chat/completions"})
    assert call(raw_server)["choices"][0]["message"]["content"] == "moved"
    assert raw_server.requests[0][1]["authorization"] == f"Bearer {SECRET}"
    assert "authorization" not in other_server.requests[0][1]


def test_a_moved_post_names_the_new_url(raw_server):
    raw_server.respond = lambda h: send(h, 301, b"", {"Location": "https://example.invalid/v1/chat/completions"})
    with pytest.raises(BackendError, match="moved to 'https://example.invalid/v1/chat/completions'"):
        call(raw_server)
    assert len(raw_server.requests) == 1


def test_a_closed_connection_is_reported_as_unreachable(raw_server):
    raw_server.respond = lambda h: h.connection.shutdown(2)
    with pytest.raises(BackendError, match=r"unreachable after 2 attempt\(s\)"):
        call(raw_server, retries=1)


@pytest.mark.parametrize("spec", ["openai:m@http://[::1/v1", "openai:m@http://host:99999/v1", "openai:m@http:///v1",
                                  "openai:m@http://a b/v1", "openai:m@http://host:0/v1", "gemini:m@https://",
                                  "openai:m@http://h/\x1b[31m"])
def test_malformed_base_urls_are_spec_errors(spec):
    with pytest.raises(BackendSpecError, match="base URL"):
        parse_spec(spec)


def test_bad_transport_limits_are_spec_errors():
    for bad in ({"timeout": 0}, {"timeout": float("nan")}, {"retries": 9}, {"max_retry_after": -1},
                {"max_body_bytes": -1}, {"max_redirects": True}):
        with pytest.raises(BackendSpecError):
            TransportLimits(**bad)
    with pytest.raises(BackendSpecError, match="timeout"):
        make_backend("openai:m", timeout=1e9)


def echoing(raw_server):
    """A server that echoes the Authorization header it got into the plan (and into an error body)."""
    def respond(handler):
        echoed = handler.headers.get("Authorization", "")
        scene = json.loads(GOOD_SCENE)
        scene["regions"][0]["prompt"] = f"a red circle, {echoed}"
        scene["negative_prompt"] = f"key {echoed.removeprefix('Bearer ')}"
        send(handler, 200, completion(json.dumps(scene)))
    raw_server.respond = respond


def test_an_echoed_key_never_reaches_the_plan_stdout_or_cache(raw_server, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from scenecraft.cli import plan as _commands  # noqa: F401
    from scenecraft.cli.app import app

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    echoing(raw_server)
    scene = plan_scene(PROMPT, llm=f"openai:m@{raw_server.url}", use_cache=False, timeout=2.0, transport_retries=0)
    assert SECRET not in scene.to_json() and "***" in scene.regions[0].prompt
    result = CliRunner().invoke(app, ["plan", PROMPT, "--llm", f"openai:m@{raw_server.url}", "--cache-dir",
                                      str(tmp_path), "--timeout", "2"])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.stdout and "***" in result.stdout
    cached = list(tmp_path.glob("*.json"))
    assert len(cached) == 1 and SECRET not in cached[0].read_text()
    assert raw_server.requests[0][1]["authorization"] == f"Bearer {SECRET}"  # it was sent, and only sent


@pytest.mark.parametrize("status", [400, 500])
def test_an_echoed_key_never_reaches_an_error(raw_server, monkeypatch, status):
    import base64

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    encoded = base64.b64encode(SECRET.encode()).decode()

    def respond(handler):
        echoed = handler.headers.get("Authorization", "")
        send(handler, status, json.dumps({"error": {"message": f"bad {echoed} / {encoded}"}}).encode())

    raw_server.respond = respond
    with pytest.raises(BackendError) as caught:
        plan_scene(PROMPT, llm=f"openai:m@{raw_server.url}", use_cache=False, timeout=2.0, transport_retries=0)
    assert f"HTTP {status}" in str(caught.value) and SECRET not in str(caught.value) and encoded not in str(caught.value)


def test_an_echoed_key_in_a_non_json_body_is_scrubbed(raw_server):
    raw_server.respond = lambda h: send(h, 200, f"<html>{h.headers.get('Authorization')}</html>".encode())
    with pytest.raises(BackendError) as caught:
        call(raw_server)
    assert "not JSON" in str(caught.value) and SECRET not in str(caught.value)


def test_a_local_server_is_reached_directly_even_with_a_proxy_set(raw_server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    raw_server.respond = lambda h: send(h, 200, completion("direct"))
    assert call(raw_server)["choices"][0]["message"]["content"] == "direct"


def test_a_remote_host_goes_through_the_proxy(raw_server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", raw_server.root)  # the test server plays the proxy
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    raw_server.respond = lambda h: send(h, 200, completion("proxied"))
    reply = post_json("http://llm.example.invalid/v1/chat/completions", {}, headers={}, limits=TransportLimits(
        timeout=2.0, retries=0), label="openai:m")
    assert reply["choices"][0]["message"]["content"] == "proxied"
    assert raw_server.requests[0][0] == "http://llm.example.invalid/v1/chat/completions"  # the absolute form
