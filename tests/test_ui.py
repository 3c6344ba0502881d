"""The web UI's functions without a browser: limits, hostile JSON, the region table, the plan picture, the PNG of
the download (as ``scenecraft generate`` writes it), the pipeline's lock, the handlers and the command."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from scenecraft.cli import app
from scenecraft.imagefile import read_metadata
from scenecraft.scene import Box, Mask, Region, Scene
from scenecraft.ui.core import (SharedPipeline, UIError, UILimits, apply_editor, apply_rows, editor_value, message,
                                pipeline_lock, plan, plan_picture, read_scene, region_rows, render, request_view)

LIMITS = UILimits.for_native_size(64)  # the toy model's: sides up to 128 px
PROMPT = "a red circle to the left of a blue square"


@pytest.fixture(scope="module")
def toy_pipe():
    from scenecraft.generation import load_pipeline

    return load_pipeline("toyworld")


@pytest.fixture
def shared(toy_pipe):
    return SharedPipeline(toy_pipe, "toyworld")


def two_boxes(**kwargs) -> Scene:
    return Scene(PROMPT, (Region("a red circle", Box(0.0625, 0.21875, 0.4375, 0.78125)),
                          Region("a blue square", Box(0.5625, 0.21875, 0.9375, 0.78125))),
                 width=64, height=64, **kwargs)


# ------------------------------------------------------------------------------------------------ limits
def test_limits_default_to_twice_the_native_size_and_reach_the_scene_layer():
    assert LIMITS.max_side == 128 and UILimits.for_native_size(512).max_side == 1024
    assert UILimits.for_native_size(512, max_side=None, max_steps=7).max_steps == 7
    scene_limits = LIMITS.scene_limits()
    assert (scene_limits.max_side, scene_limits.max_pixels, scene_limits.max_regions,
            scene_limits.max_prompt_chars) == (128, 128 * 128, 16, 1000)
    for bad in ({"max_steps": 0}, {"max_steps": 5000}, {"max_side": 4}, {"max_regions": True}, {"max_history": 1.5}):
        with pytest.raises(UIError, match="UILimits"):
            UILimits(**bad)


@pytest.mark.parametrize("change, words", [
    ({"width": 4096}, "width is 4096, more than the 128 pixels per side allowed (this server's limit; start "
                      "`scenecraft ui --max-side ...` to raise it)"),
    ({"regions": [{"prompt": f"circle {i}", "box": [0, 0, 1, 1]} for i in range(17)]},
     "regions has 17 entries, more than the 16 allowed (this server's limit; start `scenecraft ui --max-regions"),
    ({"prompt": "x" * 1001}, "--max-prompt-chars"),
    ({"regions": [{"prompt": "a cat", "box": [0, 0, 1, 1], "lora": [{"path": "/etc/passwd.safetensors"}]}]},
     "does not load per-region LoRAs"),
])
def test_scenes_past_the_servers_limits_are_refused_with_the_flag_that_raises_them(change, words):
    text = json.dumps(two_boxes().to_dict() | change)
    with pytest.raises(ValueError) as error:
        read_scene(text, LIMITS)
    assert words in message(error.value)


@pytest.mark.parametrize("text, words", [
    ("", "the scene JSON is empty"),
    ("{bad", "scene is not valid JSON"),
    ("[" * 100 + "]" * 100, "scene nests 65 levels deep at line 1 column 65, more than the 64 allowed (a fixed limit)"),
    ('{"prompt": "a", "width": 1' + "0" * 200 + "}", "digits"),
    ('{"prompt": "a", "base_ratio": NaN}', "NaN"),
    ("[1, 2]", "a scene must be a JSON object"),
    ('{"prompt": "a", "regions": [{"prompt": "b", "box": [0.5, 0, 0.2, 1]}]}', "empty"),
    ('{"prompt": "a", "sneaky": 1}', "sneaky"),
    ("x" * 200_001, "scene has 200,001 characters, more than the 200,000 allowed (a fixed limit)"),
])
def test_hostile_json_gives_one_sentence(text, words):
    with pytest.raises(ValueError) as error:
        read_scene(text, LIMITS)
    sentence = message(error.value)
    assert words in sentence and "Traceback" not in sentence and "\n" not in sentence.strip()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["prompt", "regions", "box", "cell", "split", "width", "height", "mask", "lora", "x"]),
        children, max_size=5), max_leaves=30).map(json.dumps)))
def test_any_editor_text_is_a_scene_or_a_sentence(text):
    try:
        scene = read_scene(text, LIMITS)
    except ValueError as error:
        assert message(error)
    else:
        assert scene.width <= 128 and len(scene.regions) <= 16


def test_the_handlers_put_mistakes_and_bugs_in_the_status_never_a_traceback(toy_pipe, tmp_path):
    from scenecraft.ui import build_app

    handlers = build_app(toy_pipe, out_dir=tmp_path).scenecraft
    *kept, status = handlers.apply_json('{"prompt": "a", "width": 99999}')
    assert status.startswith("error: width is 99999, more than the 128 pixels") and all(
        type(item).__name__ == "skip" or item == {"__type__": "update"} for item in kept)
    *_, status = handlers.plan("", "boxes", 64, 64)
    assert status.startswith("error: write a prompt first")
    *_, status = handlers.generate(two_boxes().to_json(), "regional", 1, 5000, 3.0, [], progress=lambda *a, **k: None)
    assert "steps is 5,000; this server allows 1 to 100" in status and "--max-steps" in status

    def bug():
        raise RuntimeError("a secret path /root/x")

    *_, status = handlers._guard(2, bug)
    assert status.startswith("error: scenecraft hit a bug") and "secret" not in status


# ------------------------------------------------------------------------------------------------ planning
def test_plan_gives_boxes_within_the_limits():
    scene = plan(PROMPT, "boxes", 64, 64, LIMITS)
    assert [r.prompt for r in scene.regions] == ["a red circle", "a blue square"] and scene.width == 64
    assert plan(PROMPT, "split", 64, 64.0, LIMITS).split == "1,1"
    with pytest.raises(ValueError, match="regions has 5 entries, more than the 4 allowed"):
        plan("five red circles", "boxes", 64, 64, UILimits(max_regions=4))


@pytest.mark.parametrize("prompt, size, words", [
    ("  ", 64, "write a prompt first"),
    ("a cat " * 200, 64, "1,200 characters, more than the 1,000"),
    (PROMPT, 4096, "width is 4,096; this server allows 8 to 128 (start `scenecraft ui --max-side"),
    (PROMPT, 63.5, "width must be a whole number"),
    (PROMPT, None, "width must be a whole number"),
])
def test_plan_refuses_what_the_server_does_not_allow(prompt, size, words):
    with pytest.raises(ValueError) as error:
        plan(prompt, "boxes", size, 64, LIMITS)
    assert words in message(error.value)


# ------------------------------------------------------------------------------------------------ the table
def test_editing_one_number_moves_that_edge_and_keeps_the_others_exact():
    scene = two_boxes()
    rows = region_rows(scene)
    assert rows[0] == ["a red circle", 0.0625, 0.2188, 0.4375, 0.7812]
    rows[0][1] = 0.2
    edited = apply_rows(scene, rows, LIMITS)
    assert edited.regions[0].geometry == Box(0.2, 0.21875, 0.4375, 0.78125)
    assert edited.regions[1] == scene.regions[1] and apply_rows(scene, region_rows(scene), LIMITS) == scene


def test_table_rows_add_drop_and_rename_regions():
    scene = two_boxes()
    rows = [["a green triangle", 0.0625, 0.2188, 0.4375, 0.7812], ["", None, None, None, None],
            ["a yellow circle", "0.1", "0.1", "0.3", "0.3"]]
    edited = apply_rows(scene, rows, LIMITS)
    assert [r.prompt for r in edited.regions] == ["a green triangle", "a yellow circle"]
    assert edited.regions[0].geometry == scene.regions[0].geometry
    assert edited.regions[1].geometry == Box(0.1, 0.1, 0.3, 0.3)
    import pandas

    frame = pandas.DataFrame(region_rows(scene), columns=["prompt", "x0", "y0", "x1", "y1"])
    assert apply_rows(scene, frame, LIMITS) == scene


def test_moving_a_cell_turns_a_split_into_boxes_and_leaving_it_keeps_the_split():
    scene = Scene.from_split("two shapes", "1,1", ["a red circle", "a blue square"], width=64, height=64)
    assert apply_rows(scene, region_rows(scene), LIMITS) == scene
    rows = region_rows(scene)
    rows[1][3] = 0.8
    edited = apply_rows(scene, rows, LIMITS)
    assert edited.split is None
    assert [r.geometry for r in edited.regions] == [Box(0, 0, 0.5, 1), Box(0.5, 0, 0.8, 1)]


@pytest.mark.parametrize("row, words", [
    (["a cat", "left", 0, 1, 1], "region 0, x0: 'left' is not a number"),
    (["a cat", 0, 0, 1.5, 1], "box x1"),
    (["a cat", 0.5, 0, 0.5, 1], "is empty"),
    (["a cat", 0, 0, None, 1], "needs all four numbers"),
    (["a cat", 0, 0], "must have 5 cells"),
])
def test_bad_table_cells_are_sentences(row, words):
    with pytest.raises(ValueError, match=words):
        apply_rows(two_boxes(), [row], LIMITS)


def test_the_box_editor_moves_what_was_dragged_and_nothing_else():
    scene = Scene.from_split("two shapes", "1,1", ["a red circle", "a blue square"], width=64, height=64)
    value = json.loads(editor_value(scene))
    assert value == {"width": 64, "height": 64, "regions": [{"prompt": "a red circle", "box": [0.0, 0.0, 0.5, 1.0]},
                                                           {"prompt": "a blue square", "box": [0.5, 0.0, 1.0, 1.0]}]}
    assert apply_editor(scene, json.dumps(value), LIMITS) == scene  # nothing dragged: still a split
    value["regions"][1]["box"] = [0.6, 0.1, 0.9, 0.7]
    moved = apply_editor(scene, json.dumps(value), LIMITS)
    assert moved.split is None and [r.geometry for r in moved.regions] == [Box(0, 0, 0.5, 1), Box(0.6, 0.1, 0.9, 0.7)]
    blob = np.zeros((64, 64))
    blob[10:30, 20:40] = 1
    masked = Scene("a blob and a cat", (Region("a blob", Mask.from_array(blob)), Region("a cat", Box(0, 0, 0.5, 0.5))),
                   width=64, height=64)
    assert json.loads(editor_value(masked))["regions"][0]["box"] is None  # masks are not boxes to drag
    assert apply_editor(masked, editor_value(masked), LIMITS) == masked


@pytest.mark.parametrize("value, words", [
    ("not json", "box editor value is not valid JSON"),
    ("[" * 70 + "]" * 70, "nests 65 levels deep"),
    ('{"regions": [1]}', "the box editor sent 1 regions for a scene of 2"),
    ('{"regions": "x"}', "the box editor sent no list of regions"),
    ('{"regions": [{"box": [0, 0, 1]}, {}]}', "region 0's box as [0, 0, 1], not [x0, y0, x1, y1]"),
    ('{"regions": [{"box": [0, 0, 2, 1]}, {}]}', "box x1"),
    ('{"regions": [{"box": [0, 0, "1", 1e999]}, {}]}', "numbers must be finite"),
    ('{"regions": [{"box": [0, 0, true, 1]}, {}]}', "region 0, x1: True is not a number"),
    (None, "box editor value"),
])
def test_hostile_box_editor_values_are_sentences(value, words):
    with pytest.raises(ValueError) as error:
        apply_editor(two_boxes(), value, LIMITS)
    assert words in message(error.value)


def test_plan_picture_outlines_each_box_in_its_colour_with_its_prompt():
    picture = plan_picture(two_boxes(), size=256)
    assert picture.size == (256, 256 + 36)  # the header strip holds the background prompt
    pixels = np.asarray(picture)
    x0, y_mid = round(0.0625 * 256), 36 + 128
    assert tuple(pixels[y_mid, x0 + 1]) == (230, 25, 75)  # region 0's left edge, the palette's first colour
    assert tuple(pixels[y_mid, round(0.5625 * 256) + 1]) == (60, 180, 75)
    label = pixels[36 + round(0.21875 * 256) + 3: 36 + round(0.21875 * 256) + 14, x0 + 4: x0 + 60].astype(int)
    assert ((label[..., 0] > 150) & (label[..., 1] < 120)).sum() > 20  # its prompt is written inside, in its colour


# ------------------------------------------------------------------------------------------------ generation
def test_the_download_carries_the_scene_and_settings_exactly_as_scenecraft_generate_writes_them(
        shared, toy_pipe, tmp_path, monkeypatch):
    scene = two_boxes(negative_prompt="blurry")
    rendered = render(shared, scene, "regional", 7, 3, None, tmp_path, LIMITS)
    assert rendered.seed == 7 and rendered.path.parent == tmp_path
    scene_file = tmp_path / "scene.json"
    scene_file.write_text(scene.to_json())
    monkeypatch.setattr("scenecraft.generation.load_pipeline", lambda *args, **kwargs: toy_pipe)
    cli_png = tmp_path / "cli.png"
    result = CliRunner().invoke(app, ["generate", "--scene", str(scene_file), "--seed", "7", "--steps", "3",
                                      "--out", str(cli_png)])
    assert result.exit_code == 0, result.output
    ui, cli = read_metadata(rendered.path), read_metadata(cli_png)
    assert ui.scene == cli.scene == scene
    assert ui.generation == cli.generation and ui.generation["seed"] == 7
    assert ui.generation["config"]["num_inference_steps"] == 3 and ui.generation["config"]["guidance_scale"] == 3.0
    assert ui.parameters == cli.parameters
    np.testing.assert_array_equal(np.asarray(Image.open(rendered.path)), np.asarray(Image.open(cli_png)))


@pytest.mark.parametrize("seed, steps, guidance, method, words", [
    (1, 101, None, "regional", "steps is 101; this server allows 1 to 100"),
    (2**32, 2, None, "regional", "seed is 4,294,967,296; this server allows 0 to 4,294,967,295"),
    (1.5, 2, None, "regional", "seed must be a whole number"),
    (1, 2, float("nan"), "regional", "guidance must be a number"),
    (1, 2, None, "magic", "unknown method 'magic'; available: regional, layout"),
    (1, 2, None, "layout+", "method layout+ runs on sd-gligen pipelines"),
])
def test_render_refuses_bad_settings(shared, tmp_path, seed, steps, guidance, method, words):
    with pytest.raises(ValueError) as error:
        render(shared, two_boxes(), method, seed, steps, guidance, tmp_path, LIMITS)
    assert words in message(error.value)


def test_a_size_the_model_cannot_take_is_a_sentence(shared, tmp_path):
    with pytest.raises(ValueError, match="width 60 is not a multiple of 8"):
        render(shared, two_boxes().with_size(60, 64), "regional", 1, 2, None, tmp_path, LIMITS)


def test_a_negative_seed_draws_one_and_records_it(shared, tmp_path):
    rendered = render(shared, two_boxes(), "regional", -1, 2, None, tmp_path, LIMITS)
    assert read_metadata(rendered.path).generation["seed"] == rendered.seed >= 0


def test_each_request_has_its_own_scheduler_and_shares_the_models(toy_pipe, shared, tmp_path):
    view = request_view(toy_pipe)
    assert view.scheduler is not toy_pipe.scheduler and view.unet is toy_pipe.unet and view.vae is toy_pipe.vae
    before = toy_pipe.scheduler.num_inference_steps
    render(shared, two_boxes(), "regional", 3, 2, None, tmp_path, LIMITS)
    assert toy_pipe.scheduler.num_inference_steps == before  # the shared scheduler was never stepped
    from scenecraft.cli.generate import method_config
    from scenecraft.generation.methods import generate

    config = method_config("regional", "toyworld", [], steps=2, seed=3)
    np.testing.assert_array_equal(np.asarray(generate(view, two_boxes(), config).images[0]),
                                  np.asarray(generate(toy_pipe, two_boxes(), config).images[0]))


def test_concurrent_requests_run_one_at_a_time_and_each_gets_its_own_image(toy_pipe, tmp_path):
    first, second = SharedPipeline(toy_pipe, "toyworld"), SharedPipeline(toy_pipe, "toyworld")
    assert pipeline_lock(toy_pipe) is pipeline_lock(toy_pipe)  # two servers over one pipeline share its lock
    scenes = {"a": (first, two_boxes(), 11), "b": (second, Scene("a green triangle", (
        Region("a green triangle", Box(0.25, 0.25, 0.75, 0.75)),), width=64, height=64), 22)}
    steps: list[str] = []
    results = {}

    def work(name):
        owner, scene, seed = scenes[name]
        results[name] = render(owner, scene, "regional", seed, 6, None, tmp_path / name, LIMITS,
                               on_step=lambda done, total: (steps.append(name), time.sleep(0.01)))

    threads = [threading.Thread(target=work, args=(name,)) for name in scenes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(steps) == ["a"] * 6 + ["b"] * 6
    assert steps in (["a"] * 6 + ["b"] * 6, ["b"] * 6 + ["a"] * 6)  # never interleaved
    for name, (owner, scene, seed) in scenes.items():
        alone = render(owner, scene, "regional", seed, 6, None, tmp_path / "alone", LIMITS)
        meta = read_metadata(results[name].path)
        assert meta.scene == scene and meta.generation["seed"] == seed
        np.testing.assert_array_equal(np.asarray(Image.open(results[name].path)), np.asarray(Image.open(alone.path)))


def test_a_pipeline_factory_loads_once_at_the_first_generation(toy_pipe, tmp_path):
    calls = []
    lazy = SharedPipeline(lambda: calls.append(1) or toy_pipe, "toyworld")
    assert not lazy.loaded and calls == []
    render(lazy, two_boxes(), "regional", 1, 2, None, tmp_path, LIMITS)
    render(lazy, two_boxes(), "regional", 2, 2, None, tmp_path, LIMITS)
    assert calls == [1]


def test_a_failed_request_leaves_the_next_one_its_correct_image(shared, tmp_path):
    good = render(shared, two_boxes(), "regional", 4, 4, None, tmp_path / "good", LIMITS)

    def stop(done, total):
        if done == 2:
            raise KeyboardInterrupt  # a request abandoned half-way

    with pytest.raises(KeyboardInterrupt):
        render(shared, two_boxes(), "regional", 9, 4, None, tmp_path, LIMITS, on_step=stop)
    again = render(shared, two_boxes(), "regional", 4, 4, None, tmp_path / "again", LIMITS)
    np.testing.assert_array_equal(np.asarray(Image.open(good.path)), np.asarray(Image.open(again.path)))


# ------------------------------------------------------------------------------------------------ the command
def test_ui_without_gradio_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)
    result = CliRunner().invoke(app, ["ui"])
    assert result.exit_code == 2 and "pip install 'scenecraft[ui]'" in result.output


@pytest.mark.parametrize("args, words", [
    (["--max-steps", "5000"], "UILimits.max_steps is 5000"),
    (["--port", "70000"], "--port must be 1 to 65535"),
    (["--max-side", "0"], "UILimits.max_side must be a positive integer"),
])
def test_ui_options_are_checked_before_the_model_loads(args, words, monkeypatch):
    monkeypatch.setattr("scenecraft.generation.load_pipeline", lambda *a, **k: pytest.fail("the model loaded"))
    result = CliRunner().invoke(app, ["ui", *args])
    assert result.exit_code == 2 and words in result.output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_scenecraft_ui_serves_the_page_on_loopback_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-c", "from scenecraft.cli import main; main()", "ui", "--port", str(port),
               "--out-dir", str(tmp_path / "out")]
    # Ctrl+C must reach the server even when this run was started with SIGINT ignored (nohup, some CI shells).
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            lines.append(line)
            if "scenecraft ui on" in line or not line:
                break
        assert f"scenecraft ui on http://127.0.0.1:{port}" in "".join(lines), "".join(lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200 and b"scenecraft" in page.read()
        if (outside := _outside_address()) is not None:
            with pytest.raises(OSError):  # bound to loopback only
                socket.create_connection((outside, port), timeout=2).close()
        server.send_signal(signal.SIGINT)
        assert server.wait(30) in (0, 1, -signal.SIGINT)
    finally:
        if server.poll() is None:
            server.kill()
        server.stdout.close()


def _outside_address() -> str | None:
    """This machine's address on its network (not loopback); ``None`` when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address
