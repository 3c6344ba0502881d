"""MultiDiffusion's building blocks: windows that cover every edge, and the closed-form fusion."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scenecraft.generation.multidiffusion import View, fuse_views, window_views


@settings(max_examples=200, deadline=None)
@given(height=st.integers(1, 300), width=st.integers(1, 600), window=st.integers(8, 128), data=st.data())
def test_windows_cover_every_latent_pixel_and_stay_inside(height, width, window, data):
    stride = data.draw(st.integers(max(1, window // 4), window))
    views = window_views(height, width, window=window, stride=stride)
    covered = torch.zeros(height, width, dtype=torch.int32)
    for view in views:
        assert 0 <= view.top and view.top + view.height <= height
        assert 0 <= view.left and view.left + view.width <= width
        assert view.height == min(window, height) and view.width == min(window, width)
        rows, cols = view.slices()
        covered[rows, cols] += 1
    assert covered.min() >= 1  # the right and bottom edges included, for any size
    assert len(set(views)) == len(views)


@pytest.mark.parametrize("factor", [4, 8])
def test_a_panorama_whose_stride_misses_the_edge_still_gets_an_edge_window(factor):
    # 2050 px wide: the reference layout's last window ends short of the right edge.
    views = window_views(512 // factor, 2050 // factor, window=512 // factor, stride=8)
    assert max(v.left + v.width for v in views) == 2050 // factor
    assert window_views(64, 64, window=64, stride=8) == [View(0, 0, 64, 64)]


def test_bad_window_arguments():
    with pytest.raises(ValueError, match="stride"):
        window_views(64, 256, window=64, stride=65)
    with pytest.raises(ValueError, match="window"):
        window_views(64, 256, window=0, stride=8)


def test_fusion_is_the_per_pixel_weighted_mean():
    generator = torch.Generator().manual_seed(0)
    full = torch.randn(2, 4, 16, 40, generator=generator)
    views = window_views(16, 40, window=16, stride=6)
    same = [full[..., v.slices()[0], v.slices()[1]] for v in views]
    assert torch.allclose(fuse_views(full.shape, views, same), full)  # agreeing views give the latent back
    a, b = View(0, 0, 1, 2), View(0, 1, 1, 2)
    fused = fuse_views((1, 1, 1, 3), [a, b], [torch.tensor([[[[1.0, 2.0]]]]), torch.tensor([[[[4.0, 8.0]]]])],
                       weights=[torch.tensor([[[[1.0, 1.0]]]]), torch.tensor([[[[3.0, 1.0]]]])])
    assert torch.allclose(fused, torch.tensor([[[[1.0, (2.0 + 12.0) / 4, 8.0]]]]))
    uncovered = fuse_views((1, 1, 1, 3), [a], [torch.ones(1, 1, 1, 2)], weights=[torch.zeros(1, 1, 1, 2)])
    assert torch.equal(uncovered, torch.zeros(1, 1, 1, 3))


# ------------------------------------------------------------------------------------------ the method
import dataclasses  # noqa: E402

import numpy as np  # noqa: E402

from scenecraft.generation import METHODS, generate  # noqa: E402
from scenecraft.generation.multidiffusion import (  # noqa: E402
    MultiDiffusionConfig, circular_views, crop_view, fused_denoiser, generate_multidiffusion, shifted_views,
)
from scenecraft.generation.regional import RegionalConfig, generate_regional  # noqa: E402
from scenecraft.generation.sampling import image_generators, prepare_latents, prepare_timesteps  # noqa: E402
from scenecraft.scene import Box, Region, Scene  # noqa: E402


@pytest.fixture(scope="module")
def toy_pipe():
    from scenecraft.generation import load_pipeline

    return load_pipeline(device="cpu")  # the shipped toy-world model: VAE factor 4


def _config(**values) -> MultiDiffusionConfig:
    return MultiDiffusionConfig(**({"num_inference_steps": 3, "seed": 7, "output_type": "latent"} | values))


def _native(pipe) -> int:
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def _two_regions(width: int, height: int) -> Scene:
    return Scene("a cat and a dog in a field", width=width, height=height, regions=(
        Region("a black cat", Box(0.0, 0.1, 0.45, 1.0)), Region("a brown dog", Box(0.5, 0.3, 0.95, 0.9))))


@pytest.mark.parametrize("fixture", ["sd_pipe", "sdxl_pipe", "sd2_pipe"])
def test_a_canvas_of_one_window_is_the_plain_pipeline_bit_for_bit(fixture, request):
    pipe = request.getfixturevalue(fixture)
    side = _native(pipe)
    ours = generate_multidiffusion(pipe, Scene("a red fox", width=side, height=side), _config())
    plain = pipe("a red fox", num_inference_steps=3, guidance_scale=7.0, height=side, width=side,
                 generator=torch.Generator().manual_seed(7), output_type="latent").images
    assert torch.equal(ours.images[0], plain[0])


def test_the_fused_step_is_the_weighted_mean_of_each_paths_step(sd_pipe):
    """One DDIM step of the method equals stepping every path's window on its own and fusing the
    stepped windows by the masks (the paper's closed form)."""
    pipe = sd_pipe
    scene = _two_regions(width=160, height=64)
    config = _config(num_inference_steps=1, stride=16, guidance_scale=5.0, bootstrap=0.0)
    ours = generate_multidiffusion(pipe, scene, config).images[0]

    latents = prepare_latents(pipe, image_generators(7, 1), 8, 20, torch.float32)
    t = prepare_timesteps(pipe.scheduler, 1, "cpu")[0]
    weights, rest = scene.weights(8, 20)
    prompts = [(scene.prompt, rest)] + [(region.prompt, w) for region, w in zip(scene.regions, weights)]
    views, values, masks = [], [], []
    for view in window_views(8, 20, window=8, stride=2):
        window = crop_view(latents, view)
        for prompt, weight in prompts:
            mask = torch.as_tensor(weight, dtype=torch.float32)[None, None][..., view.slices()[0], view.slices()[1]]
            if mask.max() <= 1e-6:
                continue
            cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, True, negative_prompt="")
            with torch.no_grad():
                noise = pipe.unet(torch.cat([window] * 2), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
            noise_uncond, noise_text = noise.chunk(2)
            guided = noise_uncond + 5.0 * (noise_text - noise_uncond)
            views.append(view)
            values.append(pipe.scheduler.step(guided, t, window).prev_sample)
            masks.append(mask)
    expected = fuse_views(latents.shape, views, values, masks)
    assert torch.allclose(ours, expected[0], atol=1e-5)


def test_path_weights_sum_to_one_on_every_latent_pixel(sd_pipe):
    scene = _two_regions(width=192, height=64)
    with fused_denoiser(sd_pipe, scene, _config(stride=16)) as denoise:
        total = sum(prompt.weight for prompt in denoise.prompts)
        assert torch.allclose(total, torch.ones_like(total), atol=1e-9)
        assert [prompt.bootstrap for prompt in denoise.prompts] == [False, True, True]
        covered = torch.zeros(1, 1, 8, 24)
        for path in denoise.paths():
            rows, cols = path.view.slices()
            covered[..., rows, cols] += denoise._weight(path.prompt, path.view)
        assert covered.min() >= 1 - 1e-6  # every pixel has a full share from some window


@pytest.mark.parametrize("fixture,extra", [("sd_pipe", 8), ("sd_pipe", 3 * 8), ("toy_pipe", 4), ("toy_pipe", 9 * 4)])
def test_awkward_widths_denoise_every_latent_pixel(fixture, extra, request):
    pipe = request.getfixturevalue(fixture)
    factor, side = pipe.vae_scale_factor, _native(pipe)
    width = side + extra + (8 - (side + extra) % 8) % 8  # a multiple of 8 px that no stride lands on
    config = _config(num_inference_steps=2, stride=3 * factor)
    result = generate_multidiffusion(pipe, Scene("a long wall", width=width, height=side), config)
    latent = result.images[0]
    assert latent.shape[-1] == width // factor
    noise = prepare_latents(pipe, image_generators(7, 1), side // factor, width // factor, torch.float32)[0]
    changed = (latent - noise).abs().amax(dim=(0, 1))  # per latent column
    assert changed.min() > 1e-3  # no column left as noise (the reference code's black right edge)
    image = generate_multidiffusion(pipe, Scene("a long wall", width=width, height=side),
                                    dataclasses.replace(config, output_type="np")).images[0]
    assert image.shape == (side, width, 3) and np.isfinite(image).all()


def test_circular_views_wrap_and_cover_evenly():
    views = circular_views(8, 24, window=8, stride=2)
    assert len(views) == 12 and all(v.width == 8 for v in views)
    covered = torch.zeros(8, 24)
    for view in views:
        window = torch.ones(1, 1, 8, 8)
        from scenecraft.generation.multidiffusion import _add_view

        canvas = covered[None, None].clone()
        _add_view(canvas, view, window)
        covered = canvas[0, 0]
    assert torch.equal(covered, torch.full((8, 24), 4.0))  # the seam as covered as the middle
    canvas = torch.arange(24.0).reshape(1, 1, 1, 24)
    assert crop_view(canvas, View(0, 20, 1, 8)).flatten().tolist() == [20, 21, 22, 23, 0, 1, 2, 3]


def test_a_circular_panorama_wraps_rolling_the_noise_rolls_the_picture(sd_pipe):
    scene = Scene("a mountain range", width=192, height=64)
    config = _config(circular=True, stride=16)
    noise = prepare_latents(sd_pipe, image_generators(3, 1), 8, 24, torch.float32)
    first = generate_multidiffusion(sd_pipe, scene, config, latents=noise).images[0]
    rolled = generate_multidiffusion(sd_pipe, scene, config, latents=noise.roll(6, dims=-1)).images[0]
    assert torch.allclose(rolled, first.roll(6, dims=-1), atol=1e-5)
    flat = generate_multidiffusion(sd_pipe, scene, dataclasses.replace(config, circular=False), latents=noise).images[0]
    assert not torch.allclose(flat, first, atol=1e-3)
    image = generate_multidiffusion(sd_pipe, scene, dataclasses.replace(config, output_type="np")).images[0]
    assert image.shape == (64, 192, 3)


def test_fast_shifted_windows_cover_everything_with_fewer_calls(sd_pipe):
    for offset in [(0, 0), (3, 5), (7, 7)]:
        for circular in (False, True):
            views = shifted_views(8, 40, window=8, offset=offset, circular=circular)
            covered = torch.zeros(1, 1, 8, 40)
            from scenecraft.generation.multidiffusion import _add_view

            for view in views:
                _add_view(covered, view, torch.ones(1, 1, view.height, view.width))
            assert covered.min() >= 1 and len(views) <= 6
    scene = Scene("a long beach", width=512, height=64)
    calls = {}
    for fast in (False, True):
        with fused_denoiser(sd_pipe, scene, _config(fast=fast, stride=16, num_inference_steps=4)) as denoise:
            calls[fast] = sum(len(denoise.views_at(step)) for step in range(4))
    assert calls[False] >= 3 * calls[True]
    fast = generate_multidiffusion(sd_pipe, scene, _config(fast=True, stride=16))
    again = generate_multidiffusion(sd_pipe, scene, _config(fast=True, stride=16))
    assert torch.equal(fast.images[0], again.images[0])


def test_view_batching_gives_the_same_picture(sd_pipe):
    scene = _two_regions(width=192, height=64)
    one = generate_multidiffusion(sd_pipe, scene, _config(stride=16)).images[0]
    batched = generate_multidiffusion(sd_pipe, scene, _config(stride=16, view_batch_size=5)).images[0]
    assert torch.allclose(one, batched, atol=1e-5)


def test_seeds_reproduce_and_image_i_regenerates_alone(sd_pipe):
    scene = _two_regions(width=128, height=64)
    config = _config(stride=32, num_images=2, bootstrap=0.5)
    first = generate_multidiffusion(sd_pipe, scene, config)
    again = generate_multidiffusion(sd_pipe, scene, config)
    assert torch.equal(torch.stack(first.images), torch.stack(again.images))
    alone = generate_multidiffusion(sd_pipe, scene, dataclasses.replace(config, num_images=1, seed=8))
    assert torch.allclose(alone.images[0], first.images[1], atol=1e-4, rtol=1e-4)  # batch size moves floats
    assert first.seeds == [7, 8] and first.settings["window"] == 64 and first.settings["stride"] == 32
    other = generate_multidiffusion(sd_pipe, scene, dataclasses.replace(config, seed=9))
    assert not torch.allclose(other.images[0], first.images[0], atol=1e-3)
    fast = dataclasses.replace(config, fast=True, num_images=2)
    assert torch.allclose(generate_multidiffusion(sd_pipe, scene, fast).images[1],
                          generate_multidiffusion(sd_pipe, scene, dataclasses.replace(fast, num_images=1,
                                                                                       seed=8)).images[0])


def test_bootstrapping_puts_a_noised_solid_colour_outside_the_region(sd_pipe):
    scene = _two_regions(width=128, height=64)
    config = _config(stride=16, bootstrap=0.5, num_inference_steps=4)
    latents = prepare_latents(sd_pipe, image_generators(7, 1), 8, 16, torch.float32)
    from scenecraft.generation.multidiffusion import _make_bootstrap

    with fused_denoiser(sd_pipe, scene, config) as denoise:
        timesteps = prepare_timesteps(sd_pipe.scheduler, 4, "cpu")
        denoise.bootstrap = _make_bootstrap(sd_pipe, config, latents, 7)
        assert denoise.bootstrap.steps == 2
        path = max((p for p in denoise.paths() if p.prompt == 1), key=lambda p: p.view.left)
        mask = denoise._weight(1, path.view)
        window = denoise._path_input(latents, path, timesteps[0])
        inside = mask[0, 0] == 1
        assert torch.equal(window[..., inside], crop_view(latents, path.view)[..., inside])
        outside = mask[0, 0] == 0
        assert outside.any() and inside.any()
        assert not torch.allclose(window[..., outside], crop_view(latents, path.view)[..., outside])
        denoise.step_index = 2  # past the bootstrapping
        assert torch.equal(denoise._path_input(latents, path, timesteps[2]), crop_view(latents, path.view))
        background = next(p for p in denoise.paths() if p.prompt == 0)
        denoise.step_index = 0
        assert torch.equal(denoise._path_input(latents, background, timesteps[0]), crop_view(latents, background.view))
    with_bootstrap = generate_multidiffusion(sd_pipe, scene, config).images[0]
    without = generate_multidiffusion(sd_pipe, scene, dataclasses.replace(config, bootstrap=0.0)).images[0]
    assert not torch.allclose(with_bootstrap, without, atol=1e-4)


def test_regional_mode_on_one_window_is_rpg_bit_for_bit(sd_pipe, sdxl_pipe):
    for pipe in (sd_pipe, sdxl_pipe):
        side = _native(pipe)
        scene = _two_regions(width=side, height=side)
        ours = generate_multidiffusion(pipe, scene, _config(regions="regional")).images[0]
        rpg = generate_regional(pipe, scene, RegionalConfig(num_inference_steps=3, seed=7, output_type="latent"))
        assert torch.equal(ours, rpg.images[0])


def test_regional_mode_renders_a_split_scene_wider_than_native(sd_pipe):
    scene = Scene.from_split("two houses", "1;1,1", ["a red house", "a blue house"], width=192, height=64)
    result = generate_multidiffusion(sd_pipe, scene, _config(regions="regional", stride=16, output_type="np"))
    assert result.images[0].shape == (64, 192, 3)
    swapped = Scene.from_split("two houses", "1;1,1", ["a blue house", "a red house"], width=192, height=64)
    other = generate_multidiffusion(sd_pipe, swapped, _config(regions="regional", stride=16, output_type="np"))
    assert not np.allclose(result.images[0], other.images[0], atol=1e-3)


def test_sdxl_windows_get_their_own_crop_time_ids(sdxl_pipe):
    side = _native(sdxl_pipe)
    scene = Scene("a harbour", width=3 * side, height=side)
    with fused_denoiser(sdxl_pipe, scene, _config(stride=16)) as denoise:
        factor = sdxl_pipe.vae_scale_factor
        ids = denoise._time_ids(View(0, 2, side // factor, side // factor), denoise.prompts[0].text.cond)
        assert ids.tolist() == [[side, 3 * side, 0, 2 * factor, side, side]]
    image = generate_multidiffusion(sdxl_pipe, scene, _config(stride=16, output_type="np")).images[0]
    assert image.shape == (side, 3 * side, 3)


def test_tiled_decoding_of_a_panorama(sd_pipe):
    scene = Scene("a long wall", width=256, height=64)
    plain = generate_multidiffusion(sd_pipe, scene, _config(stride=32, output_type="np")).images[0]
    tiled = generate_multidiffusion(sd_pipe, scene, _config(stride=32, output_type="np", tiled_decode=True)).images[0]
    assert tiled.shape == plain.shape and np.abs(tiled - plain).mean() < 0.1


def test_multidiffusion_is_registered_and_runs_through_the_registry(sd_pipe):
    assert "multidiffusion" in METHODS and METHODS["multidiffusion"].config is MultiDiffusionConfig
    result = generate(sd_pipe, Scene("a desert", width=128, height=64), _config(stride=32), method="multidiffusion")
    assert result.method == "multidiffusion" and result.images[0].shape == (4, 8, 16)


@pytest.mark.parametrize("values,match", [
    ({"window": 60}, "multiple"), ({"stride": 12}, "multiple"), ({"window": 64, "stride": 128}, "stride"),
    ({"view_batch_size": 0}, "view_batch_size"), ({"view_batch_size": True}, "view_batch_size"),
    ({"regions": "boxes"}, "regions"), ({"bootstrap": 1.5}, "bootstrap"), ({"bootstrap": float("nan")}, "bootstrap"),
    ({"circular": "yes"}, "circular"), ({"window": -8}, "window"), ({"base_ratio": 2.0}, "base_ratio"),
])
def test_bad_knobs_are_refused_with_their_name(sd_pipe, values, match):
    with pytest.raises(ValueError, match=match):
        generate_multidiffusion(sd_pipe, Scene("x", width=128, height=64), _config(**values))


def test_a_circular_panorama_must_be_wider_than_a_window_and_latents_must_fit(sd_pipe):
    with pytest.raises(ValueError, match="wider than one window"):
        generate_multidiffusion(sd_pipe, Scene("x", width=64, height=64), _config(circular=True))
    with pytest.raises(ValueError, match="latents must have shape"):
        generate_multidiffusion(sd_pipe, Scene("x", width=128, height=64), _config(), latents=torch.zeros(1, 4, 8, 8))


@pytest.fixture(scope="module")
def lora_pipe_and_file(tmp_path_factory):
    """A tiny SD pipeline of its own (LoRA layers are loaded into it) and a LoRA for its UNet with
    non-zero weights, saved the way diffusers saves LoRAs."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from scenecraft.testing import tiny_sd_pipeline

    donor = tiny_sd_pipeline()
    torch.manual_seed(1)
    donor.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                      target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    folder = tmp_path_factory.mktemp("lora")
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(donor.unet),
                                              safe_serialization=True)
    return tiny_sd_pipeline(), next(folder.glob("*.safetensors"))


def _first_step_predictions(pipe, scene, config):
    latents = prepare_latents(pipe, image_generators(7, 1), 8, 16, torch.float32)
    with fused_denoiser(pipe, scene, config) as denoise, torch.no_grad():
        t = prepare_timesteps(pipe.scheduler, config.num_inference_steps, "cpu")[0]
        return {path: noise.clone() for path, noise in denoise.predictions(latents, t)}


def test_a_regions_lora_changes_only_its_own_path(lora_pipe_and_file):
    from scenecraft.scene import LoraRef

    pipe, lora = lora_pipe_and_file
    plain = _two_regions(width=128, height=64)
    styled = Scene.from_dict(plain.to_dict() | {"regions": [
        plain.to_dict()["regions"][0] | {"lora": [{"path": str(lora), "scale": 0.9}]}, plain.to_dict()["regions"][1]]})
    assert styled.regions[0].lora == (LoraRef(str(lora), 0.9),)
    config = _config(stride=16)  # one path per UNet call: a batch's make-up moves float results
    before = _first_step_predictions(pipe, plain, config)
    with_lora = _first_step_predictions(pipe, styled, config)
    assert before.keys() == with_lora.keys()
    for path, noise in before.items():
        if path.prompt == 1:  # the region that names the LoRA
            assert not torch.allclose(noise, with_lora[path], atol=1e-4)
        else:
            assert torch.equal(noise, with_lora[path])
    assert not pipe.get_list_adapters().get("unet")  # the adapters are gone after the call
    assert all(torch.equal(noise, before[path]) for path, noise in _first_step_predictions(pipe, plain, config).items())
    image = generate_multidiffusion(pipe, styled, _config(stride=16, output_type="np")).images[0]
    assert image.shape == (64, 128, 3)


def test_a_lora_that_will_not_load_is_a_clear_error(sd_pipe, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    scene = Scene.from_dict(_two_regions(128, 64).to_dict() | {"regions": [
        {"prompt": "a cat", "box": [0, 0, 0.5, 1], "lora": [{"path": str(bad)}]}]})
    with pytest.raises(ValueError, match="could not load the LoRA"):
        generate_multidiffusion(sd_pipe, scene, _config(stride=16))


@pytest.fixture(scope="module")
def sd_controlnet(sd_pipe):
    from scenecraft.testing import tiny_controlnet

    return tiny_controlnet(sd_pipe)


def _control(controlnet, width: int, height: int = 64, seed: int = 3):
    from scenecraft.generation.control import ControlInput

    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
    return ControlInput(controlnet, image)


def test_control_on_a_canvas_of_one_window_is_regional_with_control(sd_pipe, sd_controlnet):
    scene = Scene("a red fox", width=64, height=64)
    control = _control(sd_controlnet, 64)
    ours = generate_multidiffusion(sd_pipe, scene, _config(), control=control).images[0]
    rpg = generate_regional(sd_pipe, scene, RegionalConfig(num_inference_steps=3, seed=7, output_type="latent"),
                            control=control).images[0]
    assert torch.equal(ours, rpg)


def test_control_is_cropped_to_every_window(sd_pipe, sd_controlnet):
    scene = Scene("a long wall", width=192, height=64)
    control = _control(sd_controlnet, 192)
    with fused_denoiser(sd_pipe, scene, _config(stride=16), control=control) as denoise:
        path = denoise.paths()[3]
        left = path.view.left * 8
        cropped = denoise._control([path], images=2)
        assert torch.equal(cropped.image, control.image[..., left : left + 64].repeat(2, 1, 1, 1))
    with_control = generate_multidiffusion(sd_pipe, scene, _config(stride=16), control=control).images[0]
    without = generate_multidiffusion(sd_pipe, scene, _config(stride=16)).images[0]
    assert not torch.allclose(with_control, without, atol=1e-4)
    regions = generate_multidiffusion(sd_pipe, _two_regions(192, 64), _config(stride=16), control=control).images[0]
    regional = generate_multidiffusion(sd_pipe, _two_regions(192, 64), _config(stride=16, regions="regional"),
                                       control=control).images[0]
    assert regions.shape == regional.shape == (4, 8, 24)
    with pytest.raises(ValueError, match="output's size"):
        generate_multidiffusion(sd_pipe, scene, _config(stride=16), control=_control(sd_controlnet, 128))
