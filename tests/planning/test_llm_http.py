"""The LLM planner over real HTTP against a replaying OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import logging

import pytest

from scenecraft.planning import BackendError, BackendSpecError, PlanValidationError, plan_scene
from scenecraft.planning.backends import make_backend, parse_spec, redact
from scenecraft.planning.cache import PlanCache, default_cache_dir
from scenecraft.planning.templates import TEMPLATE_VERSION
from scenecraft.scene import Box, Cell

PROMPT = "two red circles to the left of a blue square"
GOOD = json.dumps({"prompt": PROMPT, "negative_prompt": "", "background_prompt": "a plain grey background",
                   "regions": [{"prompt": "a red circle, glossy", "box": [0.05, 0.1, 0.3, 0.35]},
                               {"prompt": "a red circle, matte", "box": [0.05, 0.6, 0.3, 0.85]},
                               {"prompt": "a blue square", "box": [0.6, 0.35, 0.9, 0.65]}]})
WRONG_COUNT = json.dumps({"regions": [{"prompt": "a red circle", "box": [0.05, 0.1, 0.3, 0.35]},
                                      {"prompt": "a blue square", "box": [0.6, 0.35, 0.9, 0.65]}]})
SECRET = "sk-test-SECRET-0123456789"


def plan(server, **kwargs):
    kwargs.setdefault("use_cache", False)
    kwargs.setdefault("timeout", 1.0)
    kwargs.setdefault("transport_retries", 0)
    return plan_scene(PROMPT, llm=f"openai:test-model@{server.url}", **kwargs)


def test_good_reply_uses_json_schema_mode(replay_server):
    replay_server.script = [("reply", "Reasoning first.\n" + GOOD)]
    scene = plan(replay_server, width=640)
    assert [r.prompt for r in scene.regions] == ["a red circle, glossy", "a red circle, matte", "a blue square"]
    assert scene.prompt == PROMPT and scene.width == 640 and scene.background_prompt == "a plain grey background"
    headers, body = replay_server.requests[0]
    assert len(replay_server.requests) == 1
    assert body["model"] == "test-model" and body["temperature"] == 0
    assert body["response_format"]["type"] == "json_schema"
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["title"] == "scenecraft Scene" and body["max_tokens"] == 1024
    assert schema["properties"]["regions"]["items"]["required"] == ["prompt", "box"]
    assert body["messages"][0]["role"] == "system" and body["messages"][-1]["content"] == f"Prompt: {PROMPT}"


@pytest.mark.parametrize("first", [
    "this is not json at all",
    GOOD[: len(GOOD) // 2],  # truncated
    WRONG_COUNT,
    json.dumps({"regions": [{"prompt": "a red circle", "box": [0.1, 0.1, 0.3, 0.3]},
                            {"prompt": "a red circle", "box": [0.1, 0.5, 0.3, 0.7]},
                            {"prompt": "a blue square", "box": [0.6, 0.3, 0.9, 0.6]},
                            {"prompt": "a green square", "box": "left"}]}),
])
def test_one_retry_feeds_the_error_back(replay_server, first):
    replay_server.script = [("reply", first), ("reply", GOOD)]
    scene = plan(replay_server)
    assert len(scene.regions) == 3
    assert len(replay_server.requests) == 2
    retry = replay_server.requests[1][1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": first}
    assert retry[-1]["role"] == "user" and "rejected" in retry[-1]["content"]
    if first == WRONG_COUNT:
        assert "two red circles" in retry[-1]["content"] and "1 region(s)" in retry[-1]["content"]


def test_two_bad_replies_give_a_clear_error_and_no_more_calls(replay_server):
    replay_server.script = [("reply", WRONG_COUNT)]
    with pytest.raises(PlanValidationError, match=r"no valid plan in 2 attempt\(s\).*two red circles"):
        plan(replay_server)
    assert len(replay_server.requests) == 2
    replay_server.requests.clear()
    with pytest.raises(PlanValidationError):
        plan(replay_server, retries=0)
    assert len(replay_server.requests) == 1


def test_negated_object_in_a_region_is_rejected(replay_server):
    reply = json.dumps({"regions": [{"prompt": "a blue circle", "box": [0.1, 0.1, 0.4, 0.4]},
                                    {"prompt": "a red square", "box": [0.5, 0.5, 0.9, 0.9]}]})
    replay_server.script = [("reply", reply)]
    with pytest.raises(PlanValidationError, match="excludes 'red square'"):
        plan_scene("a blue circle and no red square", llm=f"openai:m@{replay_server.url}", use_cache=False,
                   timeout=1.0, transport_retries=0)


def test_split_layout(replay_server):
    reply = json.dumps({"split": "1,1,1", "regions": [{"prompt": "a red circle", "cell": 0},
                                                      {"prompt": "a red circle", "cell": 1},
                                                      {"prompt": "a blue square", "cell": 2}]})
    replay_server.script = [("reply", GOOD), ("reply", reply)]
    scene = plan(replay_server, layout="split")  # the boxes reply is rejected for a split layout
    assert scene.split == "1,1,1" and all(isinstance(r.geometry, Cell) for r in scene.regions)
    assert "split" in replay_server.requests[0][1]["messages"][0]["content"]


def test_http_500_is_reported_with_status_and_attempts(replay_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    replay_server.script = [("status", 500, f"internal error, your key was {SECRET}")]
    with pytest.raises(BackendError) as caught:
        plan(replay_server, transport_retries=1)
    message = str(caught.value)
    assert "HTTP 500" in message and "2 attempt(s)" in message
    assert SECRET not in message and "***" in message
    assert len(replay_server.requests) == 2  # one transport retry, then stop
    assert replay_server.requests[0][0]["authorization"] == f"Bearer {SECRET}"


def test_timeout_is_bounded_and_reported(replay_server):
    replay_server.script = [("sleep", 2.0, GOOD)]
    with pytest.raises(BackendError, match=r"timed out after 1 attempt\(s\) of 0.3 s"):
        plan(replay_server, timeout=0.3)


def test_unreachable_server():
    with pytest.raises(BackendError, match="unreachable"):
        plan_scene(PROMPT, llm="openai:m@http://127.0.0.1:9/v1", use_cache=False, timeout=0.5, transport_retries=0)


def test_api_key_never_in_errors_or_logs(replay_server, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    replay_server.script = [("status", 401, f"bad key {SECRET}")]
    with pytest.raises(BackendError) as caught:
        plan(replay_server)
    replay_server.script = [("reply", WRONG_COUNT)]
    with pytest.raises(PlanValidationError) as caught_validation:
        plan(replay_server)
    assert "HTTP 401" in str(caught.value)
    for text in (str(caught.value), repr(caught.value), str(caught_validation.value), caplog.text):
        assert SECRET not in text
    assert SECRET not in repr(make_backend("openai:m"))
    assert redact(f"x {SECRET} y") == "x *** y"


def test_openai_without_base_url_needs_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        plan_scene(PROMPT, llm="openai:gpt-4o", use_cache=False)


def test_cache_second_run_makes_no_call(replay_server, tmp_path):
    replay_server.script = [("reply", GOOD)]
    first = plan(replay_server, use_cache=True, cache_dir=tmp_path)
    second = plan(replay_server, use_cache=True, cache_dir=tmp_path)
    assert first == second and len(replay_server.requests) == 1
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and not list(tmp_path.glob(".tmp-*"))
    entry = json.loads(files[0].read_text())
    assert entry["key"]["template"] == TEMPLATE_VERSION and entry["key"]["model"] == "test-model"
    plan(replay_server, use_cache=True, cache_dir=tmp_path, layout="boxes", width=256)  # another size: a miss
    assert len(replay_server.requests) == 2
    files[0].write_text("{broken")  # an unreadable entry is a miss, then rewritten
    plan(replay_server, use_cache=True, cache_dir=tmp_path)
    assert len(replay_server.requests) == 3 and isinstance(
        PlanCache(tmp_path).get(entry["key"]).regions[0].geometry, Box)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SCENECRAFT_CACHE", str(tmp_path / "sc"))
    assert default_cache_dir() == tmp_path / "sc" / "plans"
    monkeypatch.delenv("SCENECRAFT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "scenecraft" / "plans"


@pytest.mark.parametrize("spec, reason", [
    ("gpt-4", "KIND:MODEL"), ("claude:x", "unknown LLM kind"), ("openai:", "names no model"),
    ("openai:m@ftp://x", "http"), ("anthropic:m@x", "http"),
])
def test_bad_specs(spec, reason):
    with pytest.raises(BackendSpecError, match=reason):
        parse_spec(spec)


def test_specs_and_local_model_errors(tmp_path):
    assert str(parse_spec("openai:qwen2.5@http://localhost:8000/v1")) == "openai:qwen2.5@http://localhost:8000/v1"
    assert parse_spec("local:/models/x.gguf").model == "/models/x.gguf"
    with pytest.raises(BackendError, match="does not exist"):
        make_backend("local:/no/such/model.gguf").complete([], schema=None, max_tokens=1)
    random_gguf = tmp_path / "random.gguf"
    random_gguf.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    with pytest.raises(BackendError, match="cannot load the local model .*random.gguf"):
        make_backend(f"local:{random_gguf}").complete([], schema=None, max_tokens=1)
    not_a_model = tmp_path / "folder"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text("[]")
    with pytest.raises(BackendError, match="cannot load the local model"):
        make_backend(f"local:{not_a_model}").complete([], schema=None, max_tokens=1)


def test_layout_schemas_accept_only_valid_scenes_of_their_layout():
    import jsonschema

    from scenecraft.planning.templates import examples, layout_schema
    from scenecraft.scene import scene_json_schema

    for layout, other in (("boxes", "split"), ("split", "boxes")):
        schema = layout_schema(layout)
        jsonschema.Draft202012Validator.check_schema(schema)
        for _, scene in examples(layout):
            data = {k: v for k, v in scene.to_dict().items() if k not in ("version", "width", "height", "base_ratio")}
            jsonschema.validate(data, schema)
            jsonschema.validate(data, scene_json_schema())
        for _, scene in examples(other):
            data = {k: v for k, v in scene.to_dict().items() if k not in ("version", "width", "height", "base_ratio")}
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(data, schema)


def test_in_context_examples_pass_their_own_checks():
    from scenecraft.planning.grammar import parse_prompt
    from scenecraft.planning.templates import build_messages, examples
    from scenecraft.planning.validate import check_scene

    for layout in ("boxes", "split"):
        pairs = examples(layout)
        prompts = [p for p, _ in pairs]
        assert any(p.startswith("three") for p in prompts)  # counting
        assert any("without" in p for p in prompts)  # negation
        assert any("left of" in p for p in prompts)  # spatial
        assert "un chat noir sur une chaise rouge" in prompts  # non-English
        for prompt, scene in pairs:
            assert check_scene(scene, parse_prompt(prompt)) is scene
        messages = build_messages("a cat", layout)
        assert len(messages) == 2 + 2 * len(pairs) and messages[-1]["content"] == "Prompt: a cat"
        assert all(json.loads(m["content"]) for m in messages if m["role"] == "assistant")


def test_cli_plan_with_llm_and_cache(replay_server, tmp_path):
    from typer.testing import CliRunner

    from scenecraft.cli import plan as _commands  # noqa: F401
    from scenecraft.cli.app import app
    from scenecraft.scene import Scene

    replay_server.script = [("reply", GOOD)]
    args = ["plan", PROMPT, "--llm", f"openai:m@{replay_server.url}", "--cache-dir", str(tmp_path), "--timeout", "1"]
    first = CliRunner().invoke(app, args)
    second = CliRunner().invoke(app, args)
    assert first.exit_code == 0 and second.exit_code == 0, first.output
    assert Scene.from_json(first.stdout) == Scene.from_json(second.stdout)
    assert len(replay_server.requests) == 1
    replay_server.script = [("reply", WRONG_COUNT)]
    bad = CliRunner().invoke(app, [*args, "--no-cache"])
    assert bad.exit_code == 2 and "no valid plan" in bad.output


@pytest.mark.parametrize("kind, env, key_header", [("anthropic", "ANTHROPIC_API_KEY", "x-api-key"),
                                                   ("gemini", "GEMINI_API_KEY", "x-goog-api-key")])
def test_gemini_and_anthropic_over_http(replay_server, monkeypatch, kind, env, key_header):
    monkeypatch.setenv(env, SECRET)
    replay_server.script = [("reply", WRONG_COUNT), ("reply", GOOD)]
    scene = plan_scene(PROMPT, llm=f"{kind}:test-model@{replay_server.root}", use_cache=False, timeout=2.0,
                       transport_retries=0)
    assert len(scene.regions) == 3 and len(replay_server.requests) == 2
    assert replay_server.paths[0] == ("/v1/messages" if kind == "anthropic"
                                      else "/v1beta/models/test-model:generateContent")
    headers, body = replay_server.requests[1]
    assert headers[key_header] == SECRET and "authorization" not in headers
    if kind == "anthropic":
        assert headers["anthropic-version"] and body["model"] == "test-model" and body["temperature"] == 0
        assert "scene" in body["system"].lower() and body["messages"][-1]["role"] == "user"
        assert [m["role"] for m in body["messages"][-3:-1]] == ["user", "assistant"]  # the corrective retry
    else:
        assert body["generationConfig"]["responseMimeType"] == "application/json"
        assert body["systemInstruction"]["parts"][0]["text"] and body["contents"][-2]["role"] == "model"
    replay_server.script = [("status", 500, f"oops {SECRET}")]
    with pytest.raises(BackendError, match="HTTP 500") as caught:
        plan_scene(PROMPT, llm=f"{kind}:test-model@{replay_server.root}", use_cache=False, timeout=2.0,
                   transport_retries=0)
    assert SECRET not in str(caught.value)


def test_bench_plan_with_an_llm_planner(replay_server, tmp_path):
    from scenecraft.evaluation.plan_bench import run_plan_bench

    replay_server.script = [("reply", "[('a dog', [10, 10, 100, 100])]\nBackground prompt: a room\nNegative prompt: ")]
    result = run_plan_bench(f"llm:openai:m@{replay_server.url}", limit=1, cache_dir=tmp_path)
    assert result.per_category["negation"] == (1, 1)  # an LMD-format reply with no backpack
    assert result.per_category["numeracy"] == (0, 1)  # "one backpack": rejected twice, scored as a failure
    assert any("no valid plan" in reason for _, reason in result.failures)
    assert result.per_category["spatial"] == (0, 1)
