"""``scenecraft generate`` on SD3 and Flux folders: the family's defaults, the PNG record, the plain pipeline's picture."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from scenecraft.cli import app
from scenecraft.cli.generate import method_config
from scenecraft.generation.backbones import family_settings
from scenecraft.imagefile import read_generation, read_png_metadata

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from scenecraft.testing import save_tiny_flux, save_tiny_sd3

    folder = tmp_path_factory.mktemp("models")
    return {"flux": str(save_tiny_flux(folder / "flux")), "sd3": str(save_tiny_sd3(folder / "sd3")),
            "schnell": str(save_tiny_flux(folder / "schnell", guidance_embeds=False))}


@pytest.mark.parametrize("family,steps,guidance", [("flux", 28, 3.5), ("sd3", 28, 7.0), ("schnell", 4, 0.0)])
def test_generate_takes_the_family_defaults_and_records_them(tmp_path, models, family, steps, guidance):
    out = tmp_path / "out.png"
    result = run("generate", "a red circle to the left of a blue square", "--model", models[family], "--width", "64",
                 "--height", "64", "--seed", "2", "--out", out, *([] if family == "schnell" else ["--steps", "2"]))
    assert result.exit_code == 0, result.output
    record = read_generation(out)
    assert record["method"] == "regional" and record["seed"] == 2
    assert record["config"]["num_inference_steps"] == (steps if family == "schnell" else 2)
    assert record["config"]["guidance_scale"] == guidance
    scene, _ = read_png_metadata(out)
    assert len(scene.regions) == 2 and Image.open(out).size == (64, 64)


def test_generate_on_flux_without_regions_is_the_plain_pipeline(tmp_path, models):
    from scenecraft.generation import load_pipeline

    out, scene_file = tmp_path / "plain.png", tmp_path / "scene.json"
    scene_file.write_text('{"prompt": "a green triangle", "width": 64, "height": 64}')
    result = run("generate", "--scene", scene_file, "--model", models["flux"], "--steps", "2", "--guidance", "3.5",
                 "--seed", "4", "--out", out)
    assert result.exit_code == 0, result.output
    pipe = load_pipeline(models["flux"], device="cpu")
    scene, _ = read_png_metadata(out)
    expected = pipe(scene.prompt, height=64, width=64, num_inference_steps=2, guidance_scale=3.5, output_type="pil",
                    generator=[torch.Generator().manual_seed(4)]).images[0]
    difference = np.abs(np.asarray(Image.open(out).convert("RGB"), dtype=int) - np.asarray(expected, dtype=int))
    assert difference.max() <= 1  # one PNG rounding step; the same load path and process otherwise


def test_flags_override_the_family_defaults(tmp_path):
    assert family_settings("flux") == {"num_inference_steps": 28, "guidance_scale": 3.5}
    assert family_settings("sd") == {} and family_settings(None) == {}
    config = method_config("regional", str(tmp_path), [], family="flux", steps=5, guidance=None)
    assert (config.num_inference_steps, config.guidance_scale) == (5, 3.5)
    config = method_config("regional", str(tmp_path), ["guidance_scale=2"], family="sd3")
    assert (config.num_inference_steps, config.guidance_scale) == (28, 2)
    assert method_config("regional", "toyworld", [], family="flux").guidance_scale == 3.0  # the model's own wins


@pytest.mark.parametrize("args,message", [
    (["--method", "layout"], "method layout runs on sd, sdxl, sd-gligen pipelines; this one is flux"),
    (["--width", "72"], "width 72 is not a multiple of 16"),
    (["--offload"], "offload"),
])
def test_flux_mistakes_are_one_sentence_and_exit_code_2(tmp_path, models, args, message):
    result = run("generate", "a red circle", "--model", models["flux"], "--steps", "1", "--width", "64", "--height",
                 "64", *args, "--out", tmp_path / "x.png")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
