import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from scenecraft.cli import app
from scenecraft.imagefile import read_png_metadata

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random SD 1.x pipeline saved as a diffusers folder (what a user passes to --model)."""
    from scenecraft.testing import save_tiny_pipeline

    return str(save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd"))


@pytest.fixture
def TINY(tiny_model):
    return ["--model", tiny_model, "--steps", "3", "--width", "64", "--height", "64"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_generate_with_split_and_regions_writes_a_png_that_show_reads_back(tmp_path, TINY):
    out = tmp_path / "cats.png"
    result = run("generate", "a cat and a dog", "--split", "1,1", "--region", "a fluffy cat", "--region", "a big dog",
                 "--seed", "5", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    scene, parameters = read_png_metadata(out)
    # typer keeps each --region whole (RPG's argparse type=list split strings into characters).
    assert [r.prompt for r in scene.regions] == ["a fluffy cat", "a big dog"]
    assert scene.split == "1,1" and (scene.width, scene.height) == (64, 64)
    assert "Seed: 5" in parameters and "Steps: 3" in parameters and "a fluffy cat BREAK a big dog" in parameters
    shown = run("show", out)
    assert shown.exit_code == 0 and "Seed: 5" in shown.output and '"a fluffy cat"' in shown.output


def test_seed_is_drawn_recorded_and_reproduces(tmp_path, TINY):
    first = tmp_path / "first.png"
    result = run("generate", "a cat", "--region", "a cat", "--region", "a dog", "--out", first, *TINY)
    assert result.exit_code == 0, result.output
    _, parameters = read_png_metadata(first)
    seed = int(parameters.split("Seed: ")[1].split(",")[0])
    again = tmp_path / "again.png"
    assert run("generate", "a cat", "--region", "a cat", "--region", "a dog", "--seed", seed, "--out", again, *TINY).exit_code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))


def test_generate_from_a_scene_file(tmp_path, tiny_model):
    scene_file = tmp_path / "scene.json"
    scene_file.write_text(json.dumps({"prompt": "two pets", "width": 64, "height": 72, "regions": [
        {"prompt": "a cat", "box": [0, 0, 0.5, 1]}, {"prompt": "a dog", "box": [0.5, 0, 1, 1]}]}))
    out = tmp_path / "scene.png"
    result = run("generate", "--scene", scene_file, "--model", tiny_model, "--steps", "2", "--seed", "1", "--out", out,
                 "-n", "2")
    assert result.exit_code == 0, result.output
    images = sorted(tmp_path.glob("scene-*.png"))
    assert len(images) == 2 and Image.open(images[0]).size == (64, 72)


@pytest.mark.parametrize("args, message", [
    (["a cat", "--split", "1,x", "--region", "a", "--region", "b"], "expected a number"),
    (["a cat", "--split", "1,1,1", "--region", "a", "--region", "b"], "has 3 regions but 2 region prompts"),
    (["a cat", "--split", "1,1"], "needs one --region prompt per region"),
    (["a cat", "--region", "a", "--height", "70"], "not a multiple of 8"),
    ([], "give a prompt"),
])
def test_bad_input_exits_with_a_message(args, message, tmp_path, tiny_model):
    result = run("generate", *args, "--model", tiny_model, "--steps", "1", "--out", tmp_path / "x.png")
    assert result.exit_code == 2
    assert message in result.output


def test_show_rejects_a_png_without_metadata(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    result = run("show", path)
    assert result.exit_code == 2 and "no scenecraft metadata" in result.output


def test_generate_without_regions_plans_first(tmp_path, TINY):
    out = tmp_path / "planned.png"
    result = run("generate", "a red circle to the left of a blue square", "--seed", "3", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    scene, _ = read_png_metadata(out)
    assert len(scene.regions) == 2


def test_readme_demo_draws_what_it_says_with_the_shipped_toy_world(tmp_path):
    from scenecraft.toyworld.score import relation, score_image

    out = tmp_path / "demo.png"
    result = run("generate", "a yellow triangle above a purple square", "--seed", "2", "--out", out)
    assert result.exit_code == 0, result.output
    scene, parameters = read_png_metadata(out)
    assert "Model: toyworld" in parameters and "Steps: 20" in parameters and "CFG scale: 3.0" in parameters
    assert (scene.width, scene.height) == (64, 64) and len(scene.regions) == 2
    detected = score_image(np.asarray(Image.open(out).convert("RGB")))
    assert sorted((d.color, d.shape) for d in detected) == [("purple", "square"), ("yellow", "triangle")]
    assert relation(detected, ("yellow", "triangle"), "above", ("purple", "square"))


def test_readme_layout_figure_four_circles_where_rpg_draws_one(tmp_path):
    from scenecraft.imagefile import read_generation
    from scenecraft.toyworld.score import count, score_image

    drawn = {}
    for method in ("regional", "layout"):
        out = tmp_path / f"{method}.png"
        result = run("generate", "four red circles", "--method", method, "--seed", "0", "--out", out)
        assert result.exit_code == 0, result.output
        drawn[method] = score_image(np.asarray(Image.open(out).convert("RGB")))
    # The model's scenecraft.json settings for LMD reach the config through the CLI.
    assert read_generation(out)["config"]["frozen_step_ratio"] == 1.0
    assert len(drawn["layout"]) == 4 and count(drawn["layout"], "red", "circle") == 4
    assert len(drawn["regional"]) == 1


def test_method_layout_with_settings_records_method_config_and_each_images_seed(tmp_path, tiny_model):
    from scenecraft.imagefile import read_generation

    out = tmp_path / "lmd.png"
    result = run("generate", "a cat and a dog", "--region", "a cat", "--region", "a dog", "--method", "layout",
                 "--model", tiny_model, "--steps", "4", "--width", "64", "--height", "64", "--seed", "11", "-n", "2",
                 "--set", "frozen_step_ratio=0.25", "--set", "mask_source=box", "--out", out)
    assert result.exit_code == 0, result.output
    first, second = read_generation(tmp_path / "lmd-0.png"), read_generation(tmp_path / "lmd-1.png")
    assert first["method"] == "layout" and first["config"]["frozen_step_ratio"] == 0.25
    from scenecraft.generation.methods import make_config

    assert make_config("layout", second["config"]).seed == 12  # the record's config rebuilds the method's config
    assert (first["seed"], second["seed"]) == (11, 12) and second["config"]["num_images"] == 1
    _, parameters = read_png_metadata(tmp_path / "lmd-1.png")
    assert "Seed: 12" in parameters and "Method: layout" in parameters
    # Image 1 regenerated alone from its record.
    again = tmp_path / "again.png"
    assert run("generate", "a cat and a dog", "--region", "a cat", "--region", "a dog", "--method", "layout",
               "--model", tiny_model, "--steps", "4", "--width", "64", "--height", "64", "--seed", "12",
               "--set", "frozen_step_ratio=0.25", "--set", "mask_source=box", "--out", again).exit_code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(tmp_path / "lmd-1.png")))
    assert '"method": "layout"' in run("show", again).output


@pytest.mark.parametrize("args, message", [
    (["--method", "nope"], "unknown method 'nope'"),
    (["--method", "layout", "--set", "frozen=1"], "layout has no setting frozen"),
    (["--method", "layout", "--set", "noequals"], "must look like key=value"),
    (["--method", "layout", "--base-ratio", "0.5"], "--base-ratio is a setting of methods regional and multidiffusion"),
    (["--method", "layout+"], "method layout+ runs on sd-gligen pipelines (a GLIGEN UNet"),
])
def test_method_errors_are_one_sentence(args, message, tmp_path, tiny_model):
    result = run("generate", "a cat", "--region", "a cat", "--model", tiny_model, "--steps", "1", "--width", "64",
                 "--height", "64", *args, "--out", tmp_path / "x.png")
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
