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


def _mask_png(path, width, height, left, right):
    array = np.zeros((height, width), dtype=np.uint8)
    array[:, left:right] = 255
    Image.fromarray(array).save(path)
    return path


def test_generate_takes_png_masks_for_the_regions(tmp_path, tiny_model):
    left = _mask_png(tmp_path / "left.png", 128, 64, 0, 50)
    right = _mask_png(tmp_path / "right.png", 128, 64, 70, 128)
    out = tmp_path / "masks.png"
    result = run("generate", "a cat and a dog", "--region", "a cat", "--region", "a dog", "--mask", left, "--mask",
                 right, "--method", "multidiffusion", "--model", tiny_model, "--steps", "2", "--set", "stride=32",
                 "--seed", "1", "--out", out)
    assert result.exit_code == 0, result.output
    scene, _ = read_png_metadata(out)
    assert (scene.width, scene.height) == (128, 64)  # the masks' size
    cat, dog = (region.geometry.to_array() for region in scene.regions)
    assert cat[:, :50].all() and not cat[:, 50:].any() and dog[:, 70:].all() and not dog[:, :70].any()
    regional = run("generate", "a cat and a dog", "--region", "a cat", "--region", "a dog", "--mask", left, "--mask",
                   right, "--model", tiny_model, "--steps", "1", "--seed", "1", "--out", tmp_path / "rpg.png")
    assert regional.exit_code == 0, regional.output  # RPG takes mask regions too


def test_mask_mistakes_are_found_before_the_model_loads(tmp_path, tiny_model):
    left = _mask_png(tmp_path / "left.png", 128, 64, 0, 50)
    empty = _mask_png(tmp_path / "empty.png", 128, 64, 0, 0)
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    cases = [
        (["--region", "a", "--region", "b", "--mask", left], "one --region prompt per mask"),
        (["--region", "a", "--mask", empty], "no white pixel"),
        (["--region", "a", "--mask", text], "not a picture"),
        (["--region", "a", "--mask", left, "--split", "1"], "either --split or --mask"),
    ]
    for args, message in cases:
        result = run("generate", "x", *args, "--model", tiny_model, "--steps", "1", "--out", tmp_path / "o.png")
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_a_panorama_takes_a_control_image(tmp_path, tiny_model):
    from scenecraft.testing import save_tiny_controlnet

    controlnet = save_tiny_controlnet(tmp_path / "controlnet")
    picture = tmp_path / "edges.png"
    Image.fromarray((np.random.default_rng(0).random((64, 128, 3)) * 255).astype(np.uint8)).save(picture)
    out = tmp_path / "controlled.png"
    result = run("panorama", "a beach", "--model", tiny_model, "--steps", "2", "--width", "128", "--height", "64",
                 "--stride", "32", "--control", picture, "--controlnet", controlnet, "--control-scale", "0.5",
                 "--seed", "1", "--out", out)
    assert result.exit_code == 0, result.output
    assert read_generation(out)["control"]["control_scale"] == 0.5
