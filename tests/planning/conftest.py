"""Fixtures of the planning tests: an OpenAI-compatible HTTP server on 127.0.0.1 that replays replies."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


class ReplayServer:
    """Answers POST .../chat/completions with the next scripted action.

    Actions: ``("reply", text)`` a 200 completion whose message content is ``text``;
    ``("status", code, body)`` an HTTP error; ``("sleep", seconds, text)`` a reply after a delay.
    The last action repeats when the script runs out. ``requests`` records (headers, JSON body).
    """

    def __init__(self) -> None:
        self.script: list[tuple] = []
        self.requests: list[tuple[dict[str, str], dict]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    server.paths.append(self.path)
                    action = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                if action[0] == "sleep":
                    time.sleep(action[1])
                    action = ("reply", action[2])
                if action[0] == "status":
                    payload = json.dumps({"error": {"message": action[2], "type": "server_error"}}).encode()
                    self.send_response(action[1])
                elif self.path.endswith("/messages"):  # Anthropic's messages API
                    payload = json.dumps({
                        "id": "msg_1", "type": "message", "role": "assistant", "model": body.get("model"),
                        "content": [{"type": "text", "text": action[1]}], "stop_reason": "end_turn",
                        "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1},
                    }).encode()
                    self.send_response(200)
                elif ":generateContent" in self.path:  # Gemini
                    payload = json.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": action[1]}]},
                                                          "finishReason": "STOP", "index": 0}]}).encode()
                    self.send_response(200)
                else:
                    payload = json.dumps({
                        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body.get("model"),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": action[1]}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = f"{self.root}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def replay_server():
    server = ReplayServer()
    yield server
    server.close()
