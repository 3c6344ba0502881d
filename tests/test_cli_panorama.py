"""``scenecraft panorama`` and ``generate --method multidiffusion`` through the CLI."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from scenecraft.cli import app
from scenecraft.imagefile import read_generation, read_png_metadata

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from scenecraft.testing import save_tiny_pipeline

    return str(save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd"))


def test_readme_panorama_figure_fills_the_whole_width_with_what_the_prompt_names(tmp_path):
    from scenecraft.toyworld.score import score_image

    out = tmp_path / "panorama.png"
    result = run("panorama", "a red circle and a blue square", "--width", "512", "--seed", "0", "--out", out)
    assert result.exit_code == 0, result.output
    scene, parameters = read_png_metadata(out)
    assert (scene.width, scene.height) == (512, 64) and "multidiffusion" in parameters
    detected = score_image(np.asarray(Image.open(out).convert("RGB")))
    assert {(d.color, d.shape) for d in detected} == {("red", "circle"), ("blue", "square")}
    quarters = {int(d.center[0] // 128) for d in detected}
    assert quarters == {0, 1, 2, 3}  # objects all the way to the right edge, none left as noise


def test_panorama_flags_reach_the_config(tmp_path, tiny_model):
    out = tmp_path / "p.png"
    result = run("panorama", "a beach", "--model", tiny_model, "--steps", "2", "--width", "192", "--height", "64",
                 "--stride", "32", "--view-batch-size", "2", "--circular", "--tiled-decode", "--seed", "5", "--out", out)
    assert result.exit_code == 0, result.output
    config = read_generation(out)["config"]
    assert (config["stride"], config["view_batch_size"], config["circular"], config["tiled_decode"]) == (32, 2, True, True)
    assert config["window"] == 64 and config["fast"] is False and config["seed"] == 5
    assert Image.open(out).size == (192, 64)


def test_generate_with_method_multidiffusion_runs_a_planned_scene(tmp_path, tiny_model):
    out = tmp_path / "regions.png"
    result = run("generate", "a red circle to the left of a blue square", "--method", "multidiffusion", "--model",
                 tiny_model, "--steps", "2", "--width", "128", "--height", "64", "--set", "stride=32", "--seed", "1",
                 "--out", out)
    assert result.exit_code == 0, result.output
    assert read_generation(out)["method"] == "multidiffusion"
    scene, _ = read_png_metadata(out)
    assert len(scene.regions) == 2


@pytest.mark.parametrize("args,message", [
    (["--stride", "12"], "stride 12 px is not a multiple"),
    (["--width", "250"], "not a multiple of 8"),
    (["--width", "64", "--circular"], "wider than one window"),
    (["--view-batch-size", "0"], "view_batch_size"),
])
def test_panorama_mistakes_are_one_sentence_and_exit_code_2(tmp_path, tiny_model, args, message):
    result = run("panorama", "a beach", "--model", tiny_model, "--steps", "1", "--height", "64",
                 "--out", tmp_path / "x.png", *args)
    assert result.exit_code == 2 and message in result.output, result.output
