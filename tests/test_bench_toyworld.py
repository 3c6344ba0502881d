"""The toy-world benchmark: suite, predicates, and an oracle that draws the plan perfectly."""

import numpy as np
import pytest

from scenecraft.evaluation.bench_toyworld import (
    CATEGORIES, ToyPrompt, build_suite, check, contact_sheet, run_toyworld_benchmark,
)
from scenecraft.planning import plan_scene
from scenecraft.scene import Scene
from scenecraft.toyworld.render import COLORS, SHAPES, ShapeObject, draw
from scenecraft.toyworld.score import score_image


def oracle(scene: Scene, seed: int) -> np.ndarray:
    """A perfect generator: draws each region's object, centred in its box or cell."""
    objects = []
    for region in scene.regions:
        words = region.prompt.split()
        colour, shape = words[-2], words[-1]
        x0, y0, x1, y1 = scene.region_rect(region)
        side = int(0.7 * min((x1 - x0) * scene.width, (y1 - y0) * scene.height))
        cx, cy = (x0 + x1) / 2 * scene.width, (y0 + y1) / 2 * scene.height
        left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
        objects.append(ShapeObject(colour, shape, (left, top, left + side, top + side)))
    return draw(objects, image_size=scene.width)


def test_suite_is_fixed_and_covers_every_category():
    suite = build_suite(5)
    assert [p.text for p in suite] == [p.text for p in build_suite(5)]
    assert [p.text for p in suite] != [p.text for p in build_suite(5, seed=1)]
    assert {p.category for p in suite} == set(CATEGORIES) and len(suite) == 30
    numbers = {sum(n for *_, n in p.objects) for p in suite if p.category == "numeracy"}
    assert numbers <= {2, 3, 4, 5}
    assert all(len(p.objects) in (3, 4) for p in suite if p.category == "complex")
    for p in suite:
        for colour, shape, _ in p.objects:
            assert colour in COLORS and shape in SHAPES


@pytest.mark.parametrize("layout", ["boxes", "split"])
def test_the_offline_plans_drawn_perfectly_score_one_hundred_percent(layout):
    suite = build_suite(6)
    methods = {"oracle": (lambda text: plan_scene(text, layout=layout, width=64, height=64), oracle)}
    (report,) = run_toyworld_benchmark(methods, suite, seeds=[0])
    failures = [p.text for p in suite if not check(p, score_image(oracle(plan_scene(p.text, layout=layout, width=64, height=64), 0)))]
    assert report.accuracy()["overall"] == 1.0, failures
    assert report.images == len(suite)


def test_a_blank_canvas_fails_every_category():
    blank = lambda scene, seed: np.full((64, 64, 3), 230, dtype=np.uint8)  # noqa: E731
    (report,) = run_toyworld_benchmark({"blank": (lambda t: Scene(prompt=t, width=64, height=64), blank)},
                                       build_suite(2), seeds=[0, 1])
    accuracy = report.accuracy()
    assert accuracy["overall"] == 0.0 and report.images == 24
    assert set(accuracy) == {*CATEGORIES, "compositional", "overall"}


def picture(*objects):
    return score_image(draw([ShapeObject(c, s, box) for c, s, box in objects]))


def test_check_reads_relations_counts_extras_and_negation():
    red, blue = ("red", "circle"), ("blue", "square")
    spatial = ToyPrompt("spatial", "", ((*red, 1), (*blue, 1)), ((red, "left", blue),))
    assert check(spatial, picture(("red", "circle", (4, 20, 20, 36)), ("blue", "square", (40, 20, 56, 36))))
    assert not check(spatial, picture(("red", "circle", (40, 20, 56, 36)), ("blue", "square", (4, 20, 20, 36))))
    extra = picture(("red", "circle", (4, 20, 20, 36)), ("blue", "square", (40, 20, 56, 36)), ("green", "triangle", (20, 44, 36, 60)))
    assert not check(spatial, extra)
    numeracy = ToyPrompt("numeracy", "", (("red", "circle", 2),))
    assert check(numeracy, picture(("red", "circle", (4, 4, 20, 20)), ("red", "circle", (40, 40, 56, 56))))
    assert not check(numeracy, picture(("red", "circle", (4, 4, 20, 20))))
    negation = ToyPrompt("negation", "", ((*red, 1),), absent=(blue,))
    assert check(negation, picture(("red", "circle", (4, 4, 20, 20))))
    assert not check(negation, picture(("red", "circle", (4, 4, 20, 20)), ("blue", "square", (40, 40, 56, 56))))


def test_contact_sheet_has_a_row_per_prompt_and_a_column_per_method():
    from PIL import Image

    image = np.zeros((64, 64, 3), dtype=np.uint8)
    rows = [(f"prompt {i}", Image.new("RGB", (64, 80)), [("plain", image, True), ("regional", image, False)]) for i in range(3)]
    sheet = contact_sheet(rows, cell=96)
    assert sheet.height >= 3 * 96 and sheet.width >= 3 * 96


def test_cli_quick_suite_runs_on_the_shipped_model(tmp_path):
    import json

    from typer.testing import CliRunner

    from scenecraft.cli import app

    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["bench", "toyworld", "--quick", "--json", "--methods", "plain,regional-split,layout-fast",
                                      "--steps", "8", "--sheet", str(sheet)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert set(payload["methods"]) == {"plain", "regional-split", "layout-fast"} and payload["seeds"] == 1
    for report in payload["methods"].values():
        assert set(report["accuracy"]) == {*CATEGORIES, "compositional", "overall"}
        assert all(0 <= v <= 1 for v in report["accuracy"].values()) and report["seconds_per_image"] > 0
        assert report["images"] == {c: 2 for c in CATEGORIES}
        assert all(report["correct"].get(c, 0) / 2 == report["accuracy"][c] for c in CATEGORIES)
    assert sheet.is_file()
