"""``bench plan`` figures and the ``plan`` command line."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from scenecraft.cli import plan as _plan_commands  # noqa: F401  (registers the commands)
from scenecraft.cli.app import app
from scenecraft.evaluation.plan_bench import CATEGORIES, BenchItem, lmd_benchmark, run_plan_bench, score_scene
from scenecraft.planning import read_lmd
from scenecraft.scene import Scene

FIXTURES = Path(__file__).parent / "fixtures"
GPT4 = FIXTURES / "cache_lmd_v0.1_gpt-4.json"
GPT35 = FIXTURES / "cache_lmd_v0.1_gpt-3.5-turbo.json"


def test_generator_reproduces_lmd_prompts():
    items = lmd_benchmark()
    assert len(items) == 400
    assert {c: sum(i.category == c for i in items) for c in CATEGORIES} == dict.fromkeys(CATEGORIES, 100)
    recorded = json.loads(GPT4.read_text())
    # the 250 distinct prompts LMD's GPT-4 run answered, in the order it answered them
    assert list(dict.fromkeys(i.prompt for i in items)) == list(recorded)
    assert items[200].prompt == "A realistic photo of a scene with a blue dog and a white bowl"


def test_offline_planner_scores_at_least_99_percent_both_layouts():
    for layout in ("boxes", "split"):
        result = run_plan_bench("offline", layout=layout)
        assert result.overall >= 0.99, result.failures[:5]
        assert all(result.accuracy(c) >= 0.97 for c in CATEGORIES)


def test_limit_takes_the_first_prompts_of_each_category_and_reports_progress():
    calls = []
    result = run_plan_bench(f"replay:{GPT4}", limit=3, on_prompt=lambda done, total: calls.append((done, total)))
    assert result.per_category == dict.fromkeys(CATEGORIES, (3, 3))
    assert calls == [(i, 12) for i in range(1, 13)]


def test_replay_calibrates_the_scorer():
    gpt4 = run_plan_bench(f"replay:{GPT4}")
    assert gpt4.per_category == dict.fromkeys(CATEGORIES, (100, 100))  # LMD reports 100% for GPT-4
    gpt35 = run_plan_bench(f"replay:{GPT35}")
    assert 0.985 <= gpt35.overall < 1.0  # LMD reports 99.0% for GPT-3.5
    assert any("one cat" in prompt for prompt, _ in gpt35.failures)  # its full-canvas "cat" box is background


def test_scorer_fails_wrong_layouts():
    spatial = BenchItem("p", "spatial", (("dog", None, None, "left"), ("cat", None, None, "right")))
    good = read_lmd("[('a dog', [0, 0, 100, 100]), ('a cat', [300, 0, 100, 100])]")
    swapped = read_lmd("[('a dog', [300, 0, 100, 100]), ('a cat', [0, 0, 100, 100])]")
    assert score_scene(spatial, good)[0] and not score_scene(spatial, swapped)[0]
    binding = BenchItem("p", "attribution", (("dog", "red", None, None), ("cat", "blue", None, None)))
    assert score_scene(binding, read_lmd("[('a red dog', [0,0,9,9]), ('a blue cat', [20,20,9,9])]"))[0]
    assert not score_scene(binding, read_lmd("[('a blue dog', [0,0,9,9]), ('a red cat', [20,20,9,9])]"))[0]
    count = BenchItem("p", "numeracy", (("car", None, 2, None),))
    assert not score_scene(count, read_lmd("[('a car', [0,0,9,9]), ('a cartoon', [20,20,9,9])]"))[0]
    assert score_scene(count, read_lmd("[('a car', [0,0,9,9]), ('two cars', [20,20,9,9])]"))[0]


def test_cli_bench_plan_prints_overall_and_json():
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "plan", "--limit", "10"])
    assert result.exit_code == 0, result.output
    assert "overall 100.0%" in result.output and "ms/prompt" in result.output
    result = runner.invoke(app, ["bench", "plan", "--planner", f"replay:{GPT4}", "--json"])
    data = json.loads(result.output)
    assert data["overall"] == 100.0 and data["categories"]["spatial"]["correct"] == 100
    assert data["offline_ms_per_prompt"] > 0
    result = runner.invoke(app, ["bench", "plan", "--planner", "nonsense"])
    assert result.exit_code == 2


def test_cli_plan_json_plain_and_picture(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["plan", "a green triangle above a yellow circle", "--width", "640"])
    assert result.exit_code == 0, result.output
    scene = Scene.from_json(result.stdout)
    assert [r.prompt for r in scene.regions] == ["a green triangle", "a yellow circle"] and scene.width == 640
    picture = tmp_path / "layout.png"
    result = runner.invoke(app, ["plan", "three purple squares and no red circle", "--layout", "split", "--plain",
                                 "--picture", str(picture)])
    assert result.exit_code == 0, result.output
    assert "split: " in result.stdout and "negative: red circle" in result.stdout
    image = Image.open(picture).convert("RGB")
    pixels = image.tobytes()
    colours = {pixels[i:i + 3] for i in range(0, len(pixels), 3)}
    assert image.size[0] == 512 and len(colours) > 3  # outlines in several colours were drawn  # outlines in several colours were drawn
    result = runner.invoke(app, ["plan", "a cat", "--layout", "grid"])
    assert result.exit_code == 2 and "layout must be one of" in result.output
