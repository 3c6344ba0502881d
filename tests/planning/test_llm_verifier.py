"""The LLM verifier over real HTTP against the replaying server on 127.0.0.1: the picture goes out as each API
takes images, the reply is read with the bounded readers (never evaluated), bad replies are retried once."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from scenecraft.correction import LLMVerifier, VerifierError
from scenecraft.planning.backends import make_backend, supports_images
from scenecraft.scene import Box, Region, Scene

SCENE = Scene(prompt="a red circle and a blue square", width=64, height=64,
              regions=[Region("a red circle", Box(0.05, 0.1, 0.45, 0.5)),
                       Region("a blue square", Box(0.55, 0.1, 0.95, 0.5))])
PICTURE = np.zeros((64, 64, 3), np.uint8)
PICTURE[10:30, 5:25] = (220, 0, 0)
GOOD = json.dumps({"objects": [
    {"label": "a red circle", "box": [0.08, 0.15, 0.4, 0.45], "region": "r1", "matches": True},
    {"label": "a green square", "box": [0.6, 0.15, 0.9, 0.45], "region": "r2", "matches": False},
    {"label": "a yellow star", "box": [0.3, 0.7, 0.5, 0.9], "region": None}]})


def verifier(server, kind="openai", **kwargs):
    base = server.url if kind == "openai" else server.root
    backend = make_backend(f"{kind}:vision-model@{base}", timeout=2.0, transport_retries=0)
    return LLMVerifier(backend, **kwargs)


def test_openai_gets_a_data_url_and_the_reply_becomes_a_verdict(replay_server):
    replay_server.script = [("reply", "Looking at it...\n" + GOOD)]
    verdict = verifier(replay_server).verify(PICTURE, SCENE)
    assert [(p.kind, p.region) for p in verdict.problems] == [("extra", None), ("attribute", "r2")]
    assert verdict.problems[1].label == "a green square" and verdict.verifier.startswith("llm:openai:vision-model")
    (headers, body), = replay_server.requests
    system, user = body["messages"]
    assert system["role"] == "system" and "JSON" in system["content"] and "response_format" not in body
    text, image = user["content"][1], user["content"][0]
    assert text["type"] == "text" and '"id": "r2"' in text["text"] and "a blue square" in text["text"]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(image["image_url"]["url"].split(",", 1)[1])))
    np.testing.assert_array_equal(np.asarray(sent.convert("RGB")), PICTURE)


@pytest.mark.parametrize("kind, key", [("anthropic", "ANTHROPIC_API_KEY"), ("gemini", "GEMINI_API_KEY")])
def test_anthropic_and_gemini_get_their_own_image_parts(replay_server, monkeypatch, kind, key):
    monkeypatch.setenv(key, "test-key-0123456789")
    replay_server.script = [("reply", GOOD)]
    verdict = verifier(replay_server, kind).verify(PICTURE, SCENE)
    assert len(verdict.problems) == 2
    (_, body), = replay_server.requests
    if kind == "anthropic":
        block, text = body["messages"][-1]["content"]
        assert block["type"] == "image" and block["source"]["media_type"] == "image/png" and text["type"] == "text"
        data = block["source"]["data"]
    else:
        image, text = body["contents"][-1]["parts"]
        assert image["inline_data"]["mime_type"] == "image/png" and "Regions:" in text["text"]
        data = image["inline_data"]["data"]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")), PICTURE)


def test_a_bad_reply_is_sent_back_once_with_the_error(replay_server):
    replay_server.script = [("reply", "I see a red circle."), ("reply", GOOD)]
    verdict = verifier(replay_server).verify(PICTURE, SCENE)
    assert len(verdict.problems) == 2 and len(replay_server.requests) == 2
    retry = replay_server.requests[1][1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": "I see a red circle."}
    assert "rejected" in retry[-1]["content"][1]["text"] and "no JSON object" in retry[-1]["content"][1]["text"]


HOSTILE = [
    "__import__('os').system('echo pwned')",
    json.dumps({"objects": "everything"}),
    json.dumps({"objects": [{"label": "x", "box": [0.1, 0.1, 0.2]}]}),
    json.dumps({"objects": [{"label": "x", "box": [0.5, 0.1, 0.2, 0.3]}]}),
    '{"objects": [{"label": "x", "box": [NaN, 0.1, 0.2, 0.3]}]}',
    '{"objects": [{"label": "x", "box": [' + "9" * 400 + ', 0.1, 0.2, 0.3]}]}',
    json.dumps({"objects": [{"label": "x", "box": [0.1, 0.1, 0.2, 0.3], "region": "r9"}]}),
    json.dumps({"objects": [{"label": "x", "box": [0.1, 0.1, 0.2, 0.3], "matches": "yes"}]}),
    json.dumps({"objects": [{"label": "x" * 500, "box": [0.1, 0.1, 0.2, 0.3]}]}),
    json.dumps({"objects": [{"label": "x", "box": [0.1, 0.1, 0.2, 0.3]}] * 65}),
    "[" * 5000 + "]" * 5000,
    "{" + '"a": ' * 200 + "1" + "}" * 200,
    "x" * 60_000,
]


def test_hostile_replies_are_refused_after_the_retries(replay_server):
    for reply in HOSTILE:  # one server for all (its shutdown is slow)
        replay_server.script = [("reply", reply)]
        replay_server.requests.clear()
        with pytest.raises(VerifierError, match="gave no readable list of objects in 2 attempt"):
            verifier(replay_server).verify(PICTURE, SCENE)
        assert len(replay_server.requests) == 2, reply[:80]  # one retry, then stop


def test_no_retry_when_told_and_the_knobs_are_checked(replay_server):
    replay_server.script = [("reply", "nothing")]
    with pytest.raises(VerifierError, match="in 1 attempt"):
        verifier(replay_server, retries=0).verify(PICTURE, SCENE)
    assert len(replay_server.requests) == 1
    for knobs, message in ((dict(retries=4), "retries"), (dict(max_side=8), "max_side"),
                           (dict(max_tokens=True), "max_tokens")):
        with pytest.raises(VerifierError, match=message):
            verifier(replay_server, **knobs)


def test_a_large_picture_is_sent_scaled_down(replay_server):
    replay_server.script = [("reply", json.dumps({"objects": []}))]
    big = np.full((300, 200, 3), 230, np.uint8)
    verdict = verifier(replay_server, max_side=100).verify(big, SCENE.with_size(200, 300))
    assert [p.kind for p in verdict.problems] == ["missing", "missing"]
    url = replay_server.requests[0][1]["messages"][-1]["content"][0]["image_url"]["url"]
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (67, 100)


def test_which_backends_take_images():
    assert supports_images(make_backend("openai:gpt-4o")) and supports_images(make_backend("gemini:g"))
    assert supports_images(make_backend("anthropic:c")) and not supports_images(make_backend("local:/models/x"))
