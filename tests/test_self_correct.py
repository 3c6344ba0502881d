"""Self-correction: the loop fixes planted errors on the toy model, stops when the verifier passes, runs at most R
rounds, counts the denoiser's calls; ``generate --self-correct`` and ``bench toyworld --self-correct``.

The planted errors are toy-world renders (pictures scenecraft did not draw: the loop corrects any generator's
picture) missing an object, with a wrong colour, with a stray object; LMD corrects them at 10 steps. Plumbing
(rounds, counting, dropped rounds) runs on the tiny random SD pipeline with stub verifiers.
"""

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from scenecraft.correction import Found, ToyVerifier, Verdict, match_regions
from scenecraft.correction.counting import count_denoiser_calls
from scenecraft.correction.loop import self_correct
from scenecraft.generation import LayoutConfig, RegionalConfig
from scenecraft.generation.editing import render_scene
from scenecraft.scene import Box, Region, Scene
from scenecraft.toyworld.render import ShapeObject, draw

LEFT, RIGHT = (0.05, 0.1, 0.45, 0.5), (0.55, 0.1, 0.95, 0.5)
TOY_STEPS = 10
TWO = Scene(prompt="a red circle and a blue square", width=64, height=64,
            regions=[Region("a red circle", Box(*LEFT)), Region("a blue square", Box(*RIGHT))])
CIRCLE = ("red", "circle", (8, 10, 26, 28))


def picture(*objects):
    return draw([ShapeObject(c, s, box) for c, s, box in objects])


@pytest.fixture(scope="module")
def toy():
    from scenecraft.generation import load_pipeline

    return load_pipeline("toyworld")


def toy_layout(pipe):
    from scenecraft.generation.loading import method_settings

    return LayoutConfig(**(method_settings(pipe.name_or_path, "layout") | {"num_inference_steps": TOY_STEPS,
                                                                          "guidance_scale": 3.0}))


def objects(image):
    from scenecraft.toyworld.score import score_image

    return sorted((d.color, d.shape) for d in score_image(np.asarray(image)))


# ----------------------------------------------------------------------------------------------- planted errors
@pytest.mark.parametrize("planted, problem", [
    (picture(CIRCLE), "missing"),
    (picture(CIRCLE, ("green", "square", (40, 10, 58, 28))), "attribute"),
    (picture(CIRCLE, ("blue", "square", (40, 10, 58, 28)), ("yellow", "triangle", (24, 42, 40, 58))), "extra"),
], ids=["missing", "wrong colour", "extra"])
def test_the_loop_fixes_a_planted_error_and_keeps_the_rest(toy, planted, problem):
    verifier = ToyVerifier()
    rounds = []
    fixed = self_correct(toy, TWO, planted, verifier, rounds=3, config=toy_layout(toy), seed=0, on_round=rounds.append)
    assert [p.kind for p in fixed.first.problems] == [problem]
    assert fixed.passed and fixed.verdict.passed and rounds == fixed.rounds and 1 <= len(rounds) <= 3
    image = fixed.result.images[0]
    assert objects(image) == [("blue", "square"), ("red", "circle")]
    assert verifier.verify(image, TWO).passed
    for done in rounds:
        assert "r1" not in done.regenerate and done.cost.calls > 0 and done.kept in (True, False)
    np.testing.assert_array_equal(np.asarray(image)[8:30, 6:28], planted[8:30, 6:28])  # outside every mask: kept
    record = json.loads(json.dumps(fixed.record(3)))
    assert record["passed"] and record["rounds_run"] == len(rounds) and record["unet_calls"] == fixed.cost.calls
    assert record["per_round"][0]["problems"] == [p.describe() for p in fixed.first.problems]


def test_a_picture_the_verifier_passes_costs_nothing(toy):
    good = picture(CIRCLE, ("blue", "square", (40, 10, 58, 28)))
    with count_denoiser_calls(toy) as count:
        fixed = self_correct(toy, TWO, good, ToyVerifier(), rounds=3, config=toy_layout(toy), seed=0)
    assert fixed.passed and fixed.rounds == [] and fixed.cost.calls == 0 and count.calls == 0
    assert fixed.result is good


def test_an_lmd_picture_keeps_its_boxes_and_redraws_the_wrong_one_from_a_fresh_seed(toy):
    """A first picture by LMD itself: its trajectory and per-box generations are reused; only the redrawn box runs."""
    config = toy_layout(toy)
    scene = Scene(prompt="two red circles", width=64, height=64,
                  regions=[Region("a red circle", Box(*LEFT)), Region("a red circle", Box(*RIGHT))])
    config = dataclasses.replace(config, num_inference_steps=6)  # plumbing: any steps
    first = render_scene(toy, scene, config, method="layout", seed=3)
    missing = match_regions(scene, [Found("red circle", (0.1, 0.2, 0.4, 0.4))], ["red circle", "red circle"])
    stub = _Scripted([missing, Verdict((), ())], scene)  # the second circle is missing, then all is well
    fixed = self_correct(toy, scene, first, stub, rounds=2, config=config)
    (done,) = fixed.rounds
    assert done.regenerate == ("r2",) and fixed.render_scene.regions[1].id == "r2.fix1"
    assert (fixed.result.box_hits, fixed.result.box_misses) == (1, 1)  # r1 reused, r2 from a fresh per-box seed
    assert fixed.result.scene == scene.with_ids() and fixed.result.seed == 3


# ----------------------------------------------------------------------------------------------- plumbing
class _Scripted:
    """A verifier that answers the verdicts of ``script`` in turn (the last one repeats)."""

    name = "scripted"

    def __init__(self, script, scene):
        self.script, self.scene, self.calls = script, scene, 0

    def verify(self, image, scene):
        self.calls += 1
        return self.script[min(self.calls - 1, len(self.script) - 1)]


MISSING = match_regions(TWO, [Found("red circle", (0.1, 0.2, 0.4, 0.4))], ["red circle", "blue square"])
WORSE = match_regions(TWO, [], ["red circle", "blue square"])


def tiny_config(**kwargs):
    return RegionalConfig(**({"num_inference_steps": 3, "output_type": "np", "guidance_scale": 2.0} | kwargs))


def test_rounds_bound_the_loop_and_each_costs_what_the_counter_sees(sd_pipe):
    first = render_scene(sd_pipe, TWO, tiny_config(), method="regional", seed=1)
    for rounds in (0, 1, 3):
        stub = _Scripted([MISSING], TWO)
        with count_denoiser_calls(sd_pipe) as count:
            fixed = self_correct(sd_pipe, TWO, first, stub, rounds=rounds, correct_with="regional",
                                 config=tiny_config())
        assert len(fixed.rounds) == rounds and stub.calls == rounds + 1 and not fixed.passed
        assert [r.index for r in fixed.rounds] == list(range(1, rounds + 1))
        assert fixed.cost.calls == count.calls == 3 * rounds  # one call per step: CFG's two rows in one batch
        assert fixed.cost.rows == count.rows == 6 * rounds
    with pytest.raises(ValueError, match="rounds must be a whole number in 0..10, got 11"):
        self_correct(sd_pipe, TWO, first, stub, rounds=11)


def test_a_round_with_more_problems_is_dropped_and_the_next_corrects_the_better_picture(sd_pipe):
    first = render_scene(sd_pipe, TWO, tiny_config(), method="regional", seed=1)
    stub = _Scripted([MISSING, WORSE, MISSING], TWO)
    fixed = self_correct(sd_pipe, TWO, first, stub, rounds=2, correct_with="regional", config=tiny_config())
    assert [r.kept for r in fixed.rounds] == [False, True]
    assert fixed.rounds[1].before == MISSING  # round 2 corrected the first picture again
    assert fixed.result is not first and fixed.result.images[0] is not first.images[0]


def test_fresh_noise_changes_the_inside_only(sd_pipe):
    first = render_scene(sd_pipe, TWO, tiny_config(), method="regional", seed=1)
    with_noise = self_correct(sd_pipe, TWO, first, _Scripted([MISSING, MISSING], TWO), rounds=1,
                              correct_with="regional", config=tiny_config())
    without = self_correct(sd_pipe, TWO, first, _Scripted([MISSING, MISSING], TWO), rounds=1,
                           correct_with="regional", config=tiny_config(), fresh_noise=False)
    from scenecraft.generation.editing import boxes_mask

    mask = boxes_mask([RIGHT], 64, 64)
    a, b = with_noise.result.images[0], without.result.images[0]
    np.testing.assert_array_equal(a[mask == 0], first.images[0][mask == 0])
    np.testing.assert_array_equal(b[mask == 0], first.images[0][mask == 0])
    assert np.abs(a - b)[mask > 0].max() > 1e-3
    np.testing.assert_array_equal(b, first.images[0])  # the same scene, seed and noise: the same picture


def test_counting_counts_calls_and_rows_and_removes_its_hook(sd_pipe):
    from scenecraft.generation import generate

    with count_denoiser_calls(sd_pipe) as count:
        generate(sd_pipe, TWO, tiny_config(seed=0))
        generate(sd_pipe, TWO, tiny_config(seed=0, guidance_scale=1.0))
    assert (count.calls, count.rows) == (6, 9)
    generate(sd_pipe, TWO, tiny_config(seed=0))
    assert count.calls == 6 and not sd_pipe.unet._forward_pre_hooks


# ----------------------------------------------------------------------------------------------- the CLI
def test_generate_self_correct_prints_rounds_and_records_them(tmp_path):
    from scenecraft.cli.app import app
    from scenecraft.imagefile import read_metadata

    out = tmp_path / "fixed.png"
    result = CliRunner().invoke(app, ["generate", "a red circle to the left of a blue square", "--method", "regional",
                                      "--steps", "6", "--seed", "5", "--self-correct", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = read_metadata(out).generation
    account = record["self_correct"]
    assert account["rounds"] == 1 and account["correct_with"] == "layout" and account["verifier"] == "toy"
    assert account["config"]["num_inference_steps"] == 6 and record["method"] == "regional"
    assert len(account["per_round"]) == account["rounds_run"] <= 1
    lines = [line for line in result.output.splitlines() if line.startswith(("round", "self-correction", "first"))]
    assert len(lines) == account["rounds_run"] + 1
    from PIL import Image

    verdict = ToyVerifier().verify(Image.open(out), read_metadata(out).scene)
    assert verdict.passed == account["passed"]


@pytest.mark.parametrize("args, message", [
    (["--self-correct", "11"], "--self-correct must be a number of rounds in 0..10, got 11"),
    (["--verifier", "owlv2:/x"], "--verifier is a setting of self-correction"),
    (["--self-correct", "1", "--verifier", "sam:/x"], "unknown verifier 'sam:/x'"),
    (["--self-correct", "1", "--correct-with", "nope"], "unknown method 'nope'"),
    (["--self-correct", "1", "--verifier", "llm:local:/m"], "does not accept images"),
    (["--self-correct", "1", "--verifier", "owlv2:./no-such-folder"], "folder './no-such-folder' does not exist"),
    (["--self-correct", "1", "--control", __file__, "--controlnet", "x"], "--self-correct does not take --control"),
    (["--sam", "./sam"], "--sam is a setting of self-correction"),
    (["--self-correct", "1", "--sam", "./sam"], "--sam segments a detector's boxes"),
    (["--self-correct", "1", "--verifier", f"owlv2:{__file__}", "--sam", "./no-such-sam"],
     "the SAM folder './no-such-sam' does not exist"),
])
def test_generate_self_correct_mistakes_are_clear_errors(args, message):
    from scenecraft.cli.app import app

    result = CliRunner().invoke(app, ["generate", "a red circle", *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


# ----------------------------------------------------------------------------------------------- the bench
def test_the_self_correct_bench_accounts_calls_and_budgets():
    from scenecraft.evaluation.bench_toyworld import (
        CorrectionArm, ToyPrompt, best_of_outcome, format_self_correct_table, run_self_correct_benchmark, Attempt,
    )

    prompt = ToyPrompt("binding", "a red circle and a blue square", (("red", "circle", 1), ("blue", "square", 1)))
    good = picture(CIRCLE, ("blue", "square", (40, 10, 58, 28)))
    bad = picture(CIRCLE)
    verifier = ToyVerifier()
    # seed 0 draws a bad picture, and so does best-of-N's second seed; its third is good. Drawing costs 10 calls,
    # the loop 4 and always fixes.
    draws = {0: bad, 1000: bad, 2000: good, 1: good}
    def correct(scene, first, seed):  # as self_correct: nothing to do for a picture that passes
        return good, 0 if verifier.verify(first, scene).passed else 4, 1, verifier.verify(good, scene)

    arm = CorrectionArm(lambda text: TWO, lambda scene, seed: (draws.get(seed, bad), 10, draws.get(seed, bad)),
                        correct, verifier.verify)
    (report,) = run_self_correct_benchmark({"stub": arm}, [prompt], [0, 1], budget=3.0, max_n=5)
    first, fixed = report.first_report().accuracy(), report.loop_report().accuracy()
    assert first["binding"] == 0.5 and fixed["binding"] == 1.0
    assert report.mean_calls("first") == 10 and report.mean_calls("loop") == 12  # (14 + 10) / 2: seed 1 passes
    assert [a.calls for a in report.cases[0].best_of] == [10, 20, 30] and len(report.cases[1].best_of) == 1
    at_1x, spent = report.best_of(12)
    assert at_1x.accuracy()["binding"] == 0.5 and spent == 10
    at_3x, spent = report.best_of(36)
    assert at_3x.accuracy()["binding"] == 1.0 and spent == 20
    assert report.calls_to_reach(1.0) == 20  # loop 12 / best-of-N 20 = 0.6
    table = format_self_correct_table([report], rounds=1, correct_with="stub", budget=3.0)
    assert "upper bound on any real detector" in table and "= 12.0 / 20.0 = 0.60" in table and ") met;" in table
    cheap, dear = Attempt(5, False, 2, False), Attempt(9, False, 1, True)
    assert best_of_outcome([cheap, dear], 8) == (cheap, 5) and best_of_outcome([cheap, dear], 9) == (dear, 9)


def test_bench_toyworld_self_correct_runs_on_a_tiny_suite(tmp_path):
    from scenecraft.cli.app import app

    result = CliRunner().invoke(app, ["bench", "toyworld", "--self-correct", "1", "--methods", "regional-split",
                                      "--correct-with", "same", "--prompts", "1", "--seeds", "1", "--steps", "4",
                                      "--best-of", "2", "--json",
                                      "--sheet", str(tmp_path / "sheet.png")])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    entry = payload["methods"]["regional-split"]
    assert payload["verifier"].startswith("toy") and payload["rounds"] == 1
    assert sum(entry["first"]["images"].values()) == 6 and entry["self_correct"]["unet_calls"] >= entry["first"][
        "unet_calls"] > 0
    assert set(entry) >= {"best_of_1x", "best_of_2x", "loop_over_best_of_calls"}
    assert (tmp_path / "sheet.png").exists()
