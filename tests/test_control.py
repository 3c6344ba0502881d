"""ControlNet on the sampling core: a scene without regions is diffusers' ControlNet pipeline, the knobs
(scale, guidance window, per-image images) act as diffusers' do, regional scenes take a control, and
bad inputs are sentences naming the argument, in the API and in the CLI."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline
from PIL import Image
from typer.testing import CliRunner

import scenecraft.generation
from scenecraft.cli import app
from scenecraft.generation import RegionalConfig, generate_regional
from scenecraft.generation.attention import RegionalAttnProcessor
from scenecraft.generation.control import (
    ControlInput,
    ControlNetLoadError,
    check_controlnet_source,
    load_controlnet,
    prepare_control_image,
    takes_control,
)
from scenecraft.generation.methods import METHODS
from scenecraft.generation.methods import generate as run_method
from scenecraft.imagefile import read_generation, read_png_metadata
from scenecraft.scene import Box, Region, Scene
from scenecraft.testing import save_tiny_controlnet, save_tiny_pipeline, tiny_controlnet

STEPS = 4
PROMPT = "a red circle"


@pytest.fixture(scope="module")
def controlnets(sd_pipe, sd2_pipe, sdxl_pipe):
    return {"sd_pipe": tiny_controlnet(sd_pipe), "sd2_pipe": tiny_controlnet(sd2_pipe),
            "sdxl_pipe": tiny_controlnet(sdxl_pipe)}


def control_image(batch=1, seed=3, height=64, width=64):
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def plain_scene(**changes):
    return Scene(**({"prompt": PROMPT, "negative_prompt": "blurry", "width": 64, "height": 64} | changes))


def two_regions():
    return Scene(prompt="pets", width=64, height=64, regions=[
        Region("a cat", Box(0.0, 0.0, 0.5, 1.0)), Region("a dog", Box(0.5, 0.0, 1.0, 1.0))])


def ours(pipe, scene, control=None, num_images=1, **config):
    config = RegionalConfig(num_inference_steps=STEPS, seed=1, output_type="latent", num_images=num_images, **config)
    return torch.stack(generate_regional(pipe, scene, config, control=control).images)


def theirs(pipe, controlnet, image, prompt=PROMPT, num_images=1, **kwargs):
    """diffusers' ControlNet pipeline on the tiny pipeline's components, seeded as scenecraft seeds image i."""
    sdxl = hasattr(pipe, "text_encoder_2")
    cls = StableDiffusionXLControlNetPipeline if sdxl else StableDiffusionControlNetPipeline
    extra = {} if sdxl else {"requires_safety_checker": False}
    controlled = cls(**pipe.components, controlnet=controlnet, **extra)
    controlled.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(1 + i) for i in range(num_images)]
    return controlled([prompt] * num_images, image=image, negative_prompt=["blurry"] * num_images,
                      num_inference_steps=STEPS, guidance_scale=7.0, height=64, width=64, generator=generators,
                      **({"output_type": "latent"} | kwargs)).images


# --- 1. Equivalence with diffusers -----------------------------------------------------------------

@pytest.mark.parametrize("which", ["sd_pipe", "sd2_pipe", "sdxl_pipe"])
def test_a_scene_without_regions_is_diffusers_controlnet_pipeline(which, request, controlnets):
    pipe, controlnet = request.getfixturevalue(which), controlnets[which]
    image = control_image()
    expected = theirs(pipe, controlnet, image)
    torch.testing.assert_close(ours(pipe, plain_scene(), ControlInput(controlnet, image)), expected, atol=1e-5, rtol=0)


def test_one_control_image_per_image_is_diffusers_with_an_image_batch(sd_pipe, controlnets):
    controlnet, images = controlnets["sd_pipe"], control_image(batch=2)
    expected = theirs(sd_pipe, controlnet, images, num_images=2)
    got = ours(sd_pipe, plain_scene(), ControlInput(controlnet, images), num_images=2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(got[0], got[1])


def test_pixels_decode_as_diffusers_decodes_them(sd_pipe, controlnets):
    controlnet, image = controlnets["sd_pipe"], control_image()
    config = RegionalConfig(num_inference_steps=STEPS, seed=1, output_type="np")
    got = np.stack(generate_regional(sd_pipe, plain_scene(), config, control=ControlInput(controlnet, image)).images)
    expected = theirs(sd_pipe, controlnet, image, output_type="np")
    np.testing.assert_allclose(got, expected, atol=1e-5)


# --- 2. The knobs --------------------------------------------------------------------------------

def test_control_changes_the_output_and_scale_zero_is_no_control(sd_pipe, controlnets):
    controlnet, image = controlnets["sd_pipe"], control_image()
    none = ours(sd_pipe, plain_scene())
    assert (ours(sd_pipe, plain_scene(), ControlInput(controlnet, image)) - none).abs().max() > 1e-2
    torch.testing.assert_close(ours(sd_pipe, plain_scene(), ControlInput(controlnet, image, 0.0)), none, atol=0, rtol=0)
    half = ours(sd_pipe, plain_scene(), ControlInput(controlnet, image, 0.5))
    torch.testing.assert_close(half, theirs(sd_pipe, controlnet, image, controlnet_conditioning_scale=0.5), atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize("start, end", [(0.0, 0.3), (0.5, 1.0)])
def test_the_guidance_window_is_diffusers_control_guidance_start_and_end(start, end, sd_pipe, controlnets):
    controlnet, image = controlnets["sd_pipe"], control_image()
    got = ours(sd_pipe, plain_scene(), ControlInput(controlnet, image, guidance_start=start, guidance_end=end))
    expected = theirs(sd_pipe, controlnet, image, control_guidance_start=start, control_guidance_end=end)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (got - ours(sd_pipe, plain_scene())).abs().max() > 1e-3  # a window of some steps still acts
    assert (got - ours(sd_pipe, plain_scene(), ControlInput(controlnet, image))).abs().max() > 1e-3


def test_the_controlnet_runs_only_on_the_steps_of_its_window(sd_pipe, controlnets):
    calls = []
    controlnet = controlnets["sd_pipe"]
    handle = controlnet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        ours(sd_pipe, plain_scene(), ControlInput(controlnet, control_image(), guidance_end=0.3))
        assert len(calls) == 1  # of 4 steps, only step 0 ends before 30% of them
        calls.clear()
        # No step lies inside [0.5, 0.5]: the control never acts, bit for bit no control.
        empty = ours(sd_pipe, plain_scene(), ControlInput(controlnet, control_image(), guidance_start=0.5,
                                                          guidance_end=0.5))
        assert calls == []
    finally:
        handle.remove()
    torch.testing.assert_close(empty, ours(sd_pipe, plain_scene()), atol=0, rtol=0)


# --- 3. Regional scenes --------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["sd_pipe", "sdxl_pipe"])
def test_a_regional_scene_takes_a_control_and_its_controlnet_attends_regionally(which, request, controlnets):
    pipe, controlnet = request.getfixturevalue(which), controlnets[which]
    before = {name: type(proc) for name, proc in controlnet.attn_processors.items()}
    seen = []

    def on_step(done, total):
        seen.append({type(proc) for proc in controlnet.attn_processors.values()})

    control = ControlInput(controlnet, control_image())
    config = RegionalConfig(num_inference_steps=STEPS, seed=1, output_type="latent")
    with_control = torch.stack(generate_regional(pipe, two_regions(), config, control=control, on_step=on_step).images)
    assert (with_control - ours(pipe, two_regions())).abs().max() > 1e-2
    assert len(seen) == STEPS and all(RegionalAttnProcessor in kinds for kinds in seen)
    assert {name: type(proc) for name, proc in controlnet.attn_processors.items()} == before  # restored


def test_regions_that_all_carry_the_prompt_with_control_are_the_plain_controlnet_pipeline(sd_pipe, controlnets):
    controlnet, image = controlnets["sd_pipe"], control_image()
    scene = Scene(prompt=PROMPT, negative_prompt="blurry", width=64, height=64, regions=[
        Region(PROMPT, Box(0.1, 0.1, 0.6, 0.7)), Region(PROMPT, Box(0.4, 0.3, 1.0, 0.9))])
    torch.testing.assert_close(ours(sd_pipe, scene, ControlInput(controlnet, image)),
                               theirs(sd_pipe, controlnet, image), atol=1e-4, rtol=0)


# --- 4. Checks -----------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"conditioning_scale": float("nan")}, "conditioning_scale must be a finite number"),
    ({"conditioning_scale": True}, "conditioning_scale must be a finite number"),
    ({"conditioning_scale": "1"}, "conditioning_scale must be a finite number"),
    ({"guidance_start": -0.1}, "guidance_start must lie in [0, 1]"),
    ({"guidance_end": 1.5}, "guidance_end must lie in [0, 1]"),
    ({"guidance_start": 0.6, "guidance_end": 0.4}, "must not be greater than guidance_end"),
    ({"image": torch.rand(3, 64, 64)}, "must have shape (1 or B, 3, H, W)"),
    ({"image": torch.rand(1, 4, 64, 64)}, "must have shape (1 or B, 3, H, W)"),
    ({"image": torch.rand(1, 3, 60, 64)}, "a multiple of 8"),
    ({"image": torch.ones(1, 3, 64, 64, dtype=torch.uint8)}, "must be a float tensor"),
    ({"image": np.ones((1, 3, 64, 64))}, "must be a float tensor"),
    ({"image": torch.full((1, 3, 64, 64), 2.0)}, "values must lie in [0, 1]"),
    ({"image": torch.full((1, 3, 64, 64), -0.5)}, "values must lie in [0, 1]"),
    ({"image": torch.full((1, 3, 64, 64), float("nan"))}, "values must lie in [0, 1]"),
    ({"model": torch.nn.Linear(2, 2)}, "model must be a diffusers ControlNetModel"),
])
def test_check_rejects_bad_fields_naming_them(changes, message, controlnets):
    fields = {"model": controlnets["sd_pipe"], "image": control_image()} | changes
    with pytest.raises(ValueError) as caught:
        ControlInput(**fields).check()
    assert message in str(caught.value)


def test_size_and_batch_checks(sd_pipe, controlnets):
    control = ControlInput(controlnets["sd_pipe"], control_image(batch=2, height=64, width=48))
    control.check_size(64, 48)
    with pytest.raises(ValueError, match="must be the output's size, 48x64 pixels"):
        control.check_size(48, 64)
    control.check_batch(2)
    with pytest.raises(ValueError, match=r"1 control image or one per image \(3\), got 2"):
        control.check_batch(3)
    ControlInput(controlnets["sd_pipe"], control_image()).check_batch(3)
    with pytest.raises(ValueError, match="output's size"):
        ours(sd_pipe, plain_scene(), ControlInput(controlnets["sd_pipe"], control_image(height=32)))
    with pytest.raises(ValueError, match="one per image"):
        ours(sd_pipe, plain_scene(), ControlInput(controlnets["sd_pipe"], control_image(batch=2)), num_images=3)
    with pytest.raises(TypeError, match="control must be a scenecraft ControlInput"):
        ours(sd_pipe, plain_scene(), control_image())


def test_a_controlnet_for_another_model_or_dtype_is_refused_before_sampling(sdxl_pipe, controlnets):
    calls = []
    handle = sdxl_pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with pytest.raises(ValueError, match="does not fit the pipeline's UNet: its cross_attention_dim is 32"):
            ours(sdxl_pipe, plain_scene(), ControlInput(controlnets["sd_pipe"], control_image()))
    finally:
        handle.remove()
    assert calls == []
    half = ControlInput(tiny_controlnet(sdxl_pipe).to(torch.bfloat16), control_image())
    with pytest.raises(ValueError, match="model is torch.bfloat16 but the pipeline's UNet is torch.float32"):
        half.check_fits(sdxl_pipe.unet)
    ControlInput(controlnets["sdxl_pipe"], control_image()).check_fits(sdxl_pipe.unet)  # its own fits


def test_crop_returns_the_window_and_rejects_one_outside(controlnets):
    image = control_image(height=64, width=48)
    control = ControlInput(controlnets["sd_pipe"], image, 0.7, 0.1, 0.9)
    window = control.crop(8, 16, 32, 24)
    assert torch.equal(window.image, image[:, :, 8:40, 16:40])
    assert (window.model, window.conditioning_scale, window.guidance_start, window.guidance_end) == (
        control.model, 0.7, 0.1, 0.9)
    assert torch.equal(control.image, image)  # the original keeps its image
    for bad in [(40, 0, 32, 48), (0, 8, 64, 48), (0, 0, 0, 8), (-8, 0, 8, 8), (0, 0, 8.0, 8), (True, 0, 8, 8)]:
        with pytest.raises(ValueError, match="must be an integer >= 0|must be non-empty and lie inside"):
            control.crop(*bad)


def test_prepare_control_image_resizes_a_picture_to_a_unit_range_rgb_tensor(sd_pipe, tmp_path):
    picture = Image.new("RGBA", (40, 30), (255, 0, 51, 128))
    tensor = prepare_control_image(sd_pipe, picture, 64, 48)
    assert tensor.shape == (1, 3, 64, 48) and tensor.dtype == torch.float32
    assert tensor.min() >= 0 and tensor.max() <= 1
    expected = torch.tensor([1.0, 0.0, 0.2]).view(1, 3, 1, 1).expand_as(tensor)
    torch.testing.assert_close(tensor, expected, atol=1 / 255, rtol=0)
    path = tmp_path / "edges.png"
    Image.new("L", (16, 16), 255).save(path)
    assert torch.equal(prepare_control_image(8, path, 16, 24), torch.ones(1, 3, 16, 24))
    with pytest.raises(ValueError, match="height must be a positive multiple of 8 pixels, got 60"):
        prepare_control_image(sd_pipe, picture, 60, 48)
    with pytest.raises(ValueError, match="must be a PIL image or a picture file's path"):
        prepare_control_image(sd_pipe, np.zeros((8, 8, 3)), 64, 64)


# --- 5. Loading ----------------------------------------------------------------------------------

def test_a_saved_tiny_controlnet_loads_back_to_the_same_outputs(sd_pipe, controlnets, tmp_path):
    folder = save_tiny_controlnet(tmp_path / "cn")
    loaded = load_controlnet(folder)
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    image = control_image()
    torch.testing.assert_close(ours(sd_pipe, plain_scene(), ControlInput(loaded, image)),
                               ours(sd_pipe, plain_scene(), ControlInput(controlnets["sd_pipe"], image)),
                               atol=1e-5, rtol=0)
    assert load_controlnet(str(folder), dtype=torch.bfloat16).dtype == torch.bfloat16


def test_check_controlnet_source_names_what_is_wrong(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    checkpoint = tmp_path / "cn.ckpt"
    checkpoint.write_bytes(b"not a checkpoint")
    cases = [
        (tmp_path / "missing", "does not exist"),
        (str(tmp_path / "missing.safetensors"), "does not exist"),
        ("./models/cn", "does not exist"),
        ("a/b/c", "does not exist"),
        (folder, "has no config.json"),
        (checkpoint, "must be a .safetensors file"),
    ]
    for source, message in cases:
        with pytest.raises(ControlNetLoadError, match=message) as caught:
            check_controlnet_source(source)
        assert isinstance(caught.value, ValueError)
    assert check_controlnet_source("lllyasviel/sd-controlnet-canny") == "lllyasviel/sd-controlnet-canny"
    save_tiny_controlnet(tmp_path / "cn")
    assert check_controlnet_source(str(tmp_path / "cn")) == tmp_path / "cn"


def test_load_controlnet_wraps_a_broken_folder_and_an_offline_hub_id(tmp_path):
    folder = save_tiny_controlnet(tmp_path / "cn")
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ControlNetLoadError, match="could not load the controlnet") as caught:
        load_controlnet(folder)
    assert "corrupt, incomplete" in str(caught.value)
    with pytest.raises(ControlNetLoadError, match="download it first"):
        load_controlnet("nobody-here/no-such-controlnet")


# --- 6. The method table --------------------------------------------------------------------------

def test_only_methods_that_take_control_accept_one(sd_pipe, controlnets):
    control = ControlInput(controlnets["sd_pipe"], control_image())
    assert takes_control(generate_regional) and not takes_control(METHODS["layout"].run)
    with pytest.raises(ValueError, match="method layout does not take a control image") as caught:
        run_method(sd_pipe, plain_scene(), METHODS["layout"].config(num_inference_steps=1), method="layout",
                   control=control)
    assert "methods that do: " in str(caught.value) and "regional" in str(caught.value).split("methods that do: ")[1]
    config = RegionalConfig(num_inference_steps=STEPS, seed=1, output_type="latent")
    through_the_table = run_method(sd_pipe, plain_scene(), config, method="regional", control=control).images
    torch.testing.assert_close(torch.stack(through_the_table), ours(sd_pipe, plain_scene(), control), atol=0, rtol=0)


# --- 7. The CLI ----------------------------------------------------------------------------------

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_sentence(result, message):
    """Exit code 2, ``error: ...`` with ``message`` and no traceback (the CLI's error contract)."""
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny SD pipeline, the ControlNet that fits it, and a control picture."""
    root = tmp_path_factory.mktemp("control-models")
    picture = root / "edges.png"
    pixels = (control_image(height=48, width=40)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    Image.fromarray(pixels).save(picture)
    return {"model": str(save_tiny_pipeline(root / "tiny-sd")), "controlnet": str(save_tiny_controlnet(root / "cn")),
            "picture": picture}


@pytest.fixture
def no_expensive_work(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("expensive work started before the input was checked")

    monkeypatch.setattr(scenecraft.generation, "load_pipeline", forbidden)


def test_generate_with_control_records_it_in_the_png(saved, tmp_path):
    common = ["generate", PROMPT, "--region", "a cat", "--region", "a dog", "--model", saved["model"], "--steps", "3",
              "--width", "64", "--height", "64", "--seed", "4"]
    out = tmp_path / "controlled.png"
    result = run(*common, "--control", saved["picture"], "--controlnet", saved["controlnet"], "--control-scale", "0.5",
                 "--out", out)
    assert result.exit_code == 0, result.output
    record = read_generation(out)
    assert record["control"] == {"control": str(saved["picture"]), "controlnet": saved["controlnet"],
                                 "control_scale": 0.5}
    assert record["method"] == "regional" and "control" not in record["config"]
    _, parameters = read_png_metadata(out)
    assert f'ControlNet 0: "Model: {saved["controlnet"]}, Image: {saved["picture"]}, Weight: 0.5"' in parameters
    plain = tmp_path / "plain.png"
    assert run(*common, "--out", plain).exit_code == 0
    assert "control" not in read_generation(plain) and "ControlNet" not in read_png_metadata(plain)[1]
    assert not np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(plain)))


@pytest.mark.parametrize("flags, message", [
    (["--control", "PICTURE"], ("--control needs --controlnet: give both the control image (--control) and the "
                                "ControlNet that reads it (--controlnet), or neither")),
    (["--controlnet", "CONTROLNET"], "--controlnet needs --control"),
    (["--control-scale", "0.5"], "--control-scale needs --control and --controlnet"),
    (["--control", "PICTURE", "--controlnet", "CONTROLNET", "--control-scale", "nan"],
     "--control-scale must be a finite number, got nan"),
    (["--control", "PICTURE", "--controlnet", "CONTROLNET", "--method", "layout"],
     "--control: method layout does not take a control image; methods that do: regional"),
    (["--control", "PICTURE", "--controlnet", "MISSING"], "does not exist: give a diffusers ControlNet folder"),
    (["--control", "NOT_A_PICTURE", "--controlnet", "CONTROLNET"], "is not a picture Pillow can read"),
])
def test_control_flag_errors_come_before_loading_the_model(flags, message, saved, tmp_path, no_expensive_work):
    not_a_picture = tmp_path / "notes.png"
    not_a_picture.write_text("not a picture")
    names = {"PICTURE": saved["picture"], "CONTROLNET": saved["controlnet"], "MISSING": tmp_path / "no-such-cn",
             "NOT_A_PICTURE": not_a_picture}
    flags = [names.get(flag, flag) for flag in flags]
    result = run("generate", PROMPT, "--region", "a cat", "--model", saved["model"], "--steps", "1", "--width", "64",
                 "--height", "64", "--out", tmp_path / "x.png", *flags)
    assert_sentence(result, message)
