"""LMD (method "layout") and LMD+ ("layout+") on the tiny pipelines."""

import numpy as np
import pytest
import torch

import scenecraft.generation.layout as layout
from scenecraft.generation import LayoutConfig, LayoutPlusConfig, generate, generate_layout
from scenecraft.generation.guidance import AttentionCapture, default_guidance_layers
from scenecraft.generation.prompts import PromptEncoder
from scenecraft.generation.sampling import conditioning, image_generators, prepare_latents
from scenecraft.scene import Box, Region, Scene

STEPS = 6


def fast_config(**kwargs):
    return LayoutConfig(**({"num_inference_steps": STEPS, "seed": 3, "output_type": "np"} | kwargs))


def two_boxes(**kwargs):
    return Scene(prompt="a cat and a dog", width=64, height=64, regions=[
        Region("a cat", Box(0.05, 0.3, 0.45, 0.9)), Region("a dog", Box(0.55, 0.2, 0.95, 0.8))], **kwargs)


def images(pipe, scene, **kwargs):
    return np.stack(generate_layout(pipe, scene, fast_config(**kwargs)).images)


@pytest.mark.parametrize("which", ["sd_pipe", "sdxl_pipe"])
def test_scene_without_boxes_is_the_plain_pipeline(which, request):
    pipe = request.getfixturevalue(which)
    generator = [torch.Generator().manual_seed(3)]
    expected = pipe("a red circle", num_inference_steps=STEPS, guidance_scale=7.5, height=64, width=64,
                    generator=generator, output_type="np").images
    np.testing.assert_array_equal(images(pipe, Scene(prompt="a red circle", width=64, height=64)), expected)


@pytest.mark.parametrize("which", ["sd_pipe", "sd2_pipe", "sdxl_pipe"])
def test_layout_runs_reproduces_and_depends_on_the_boxes(which, request):
    pipe = request.getfixturevalue(which)
    first = images(pipe, two_boxes())
    assert first.shape == (1, 64, 64, 3) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, images(pipe, two_boxes()))
    moved = two_boxes()
    moved = Scene.from_dict(moved.to_dict() | {"regions": [
        {"prompt": "a cat", "box": [0.5, 0.1, 0.95, 0.5]}, {"prompt": "a dog", "box": [0.05, 0.5, 0.5, 0.95]}]})
    assert np.abs(images(pipe, moved) - first).max() > 1e-3


def test_image_i_of_three_is_the_one_image_call_with_its_seed(sd_pipe):
    result = generate_layout(sd_pipe, two_boxes(), fast_config(num_images=3, seed=20))
    assert result.seeds == [20, 21, 22]
    alone = generate_layout(sd_pipe, two_boxes(), fast_config(seed=22)).images[0]
    np.testing.assert_array_equal(result.images[2], alone)
    assert np.abs(result.images[0] - result.images[1]).max() > 1e-3


def test_seed_none_is_drawn_and_recorded(sd_pipe):
    drawn = generate_layout(sd_pipe, two_boxes(), fast_config(seed=None))
    np.testing.assert_array_equal(drawn.images[0], images(sd_pipe, two_boxes(), seed=drawn.seed)[0])


def box_energy_of(pipe, scene, latents, t, capture, layers):
    items = layout.scene_boxes(scene)
    encoder = PromptEncoder(pipe, pipe._execution_device)
    prompt, tokens = layout._box_prompt(pipe.tokenizer, None, items[0].phrase)
    slots = encoder.encode_slots([prompt], [""])
    text = conditioning(pipe, slots.cond, slots.uncond, None, None, 64, 64)
    energy = layout._box_energy(capture, LayoutConfig(), [tokens], [items[0].box])
    return text, energy


def test_energy_decreases_under_guidance(sd_pipe):
    pipe, scene = sd_pipe, two_boxes()
    pipe.scheduler.set_timesteps(STEPS)
    t = pipe.scheduler.timesteps[0]
    layers = default_guidance_layers(pipe.unet)
    capture = AttentionCapture(layers, (8, 8))
    latents = prepare_latents(pipe, image_generators(0, 1), 8, 8, torch.float32)
    text, energy = box_energy_of(pipe, scene, latents, t, capture, layers)

    def measure(x):
        guide = layout._Guide(pipe, capture, layers, text, energy, 1, (1,), 1.0, 0.0)
        losses, _ = guide._gradient(x, t, 0, torch.tensor([0]))
        return float(losses[0].detach())

    with capture.installed(pipe.unet):
        before = measure(latents)
        guide = layout._Guide(pipe, capture, layers, text, energy, guided_steps=1, iterations=(5,), loss_scale=200.0,
                              loss_threshold=0.0)
        guided = guide(0, t, latents)
        after = measure(guided)
    assert not torch.equal(guided, latents)
    assert after < before, (before, after)


def test_guidance_stops_below_the_threshold(sd_pipe):
    calls = []
    hook = sd_pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        generate_layout(sd_pipe, two_boxes(), fast_config(loss_threshold=1e9, ref_ca_loss_weight=0.0))
        unguided = len(calls)
        calls.clear()
        generate_layout(sd_pipe, two_boxes(), fast_config(loss_threshold=0.0, ref_ca_loss_weight=0.0))
    finally:
        hook.remove()
    # With an unreachable threshold only the first iteration of each pass runs (the loss starts unknown).
    assert len(calls) > unguided


def test_processors_are_restored_even_on_error(sd_pipe):
    before = dict(sd_pipe.unet.attn_processors)

    def explode(done, total):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        generate_layout(sd_pipe, two_boxes(), fast_config(), on_step=explode)
    assert dict(sd_pipe.unet.attn_processors) == before
    generate_layout(sd_pipe, two_boxes(), fast_config())
    assert dict(sd_pipe.unet.attn_processors) == before


def test_composition_masks_cover_their_boxes(sd_pipe, monkeypatch):
    seen = {}
    original = layout.compose_latents

    def spy(background, trajectories, masks):
        seen["masks"] = [m.clone() for m in masks]
        return original(background, trajectories, masks)

    monkeypatch.setattr(layout, "compose_latents", spy)
    scene = two_boxes()
    for source in ("box", "attention"):
        generate_layout(sd_pipe, scene, fast_config(mask_source=source))
        for mask, item in zip(seen["masks"], layout.scene_boxes(scene)):
            box = layout.box_mask(item.box, 8, 8) > 0
            assert mask.any() and (mask & box).any()
            if source == "box":
                assert torch.equal(mask, box)
            x, y = layout._mask_center(mask.float())
            assert item.box[0] <= x <= item.box[2] and item.box[1] <= y <= item.box[3]


def test_compose_puts_smaller_masks_on_top_and_freezes_their_union():
    background = torch.zeros(4, 8, 8)
    big, small = torch.zeros(8, 8, dtype=torch.bool), torch.zeros(8, 8, dtype=torch.bool)
    big[1:7, 1:7], small[3:5, 3:5] = True, True
    trajectories = [torch.full((3, 4, 8, 8), 1.0), torch.full((3, 4, 8, 8), 2.0)]
    composed, owner = layout.compose_latents(background, trajectories, [small, big])
    assert torch.equal(owner > 0, big) and (owner[small] == 1).all() and (owner[big & ~small] == 2).all()
    assert (composed[1][:, small] == 1).all() and (composed[1][:, big & ~small] == 2).all()
    assert (composed[1][:, ~big] == 0).all()


def test_phrases_missing_from_the_prompt_get_a_slot_of_their_own(sd_pipe):
    encoder = PromptEncoder(sd_pipe, sd_pipe._execution_device)
    tokenizer = sd_pipe.tokenizer
    slots, positions = layout._final_slots(encoder, "three red circles above a blue square", "",
                                          ["a red circle", "a blue square"])
    assert len(slots.spans) == 2  # the prompt, then one slot for "a red circle"
    ids = tokenizer("three red circles above a blue square").input_ids
    assert [ids[p] for p in positions["a blue square"]] == tokenizer("a blue square", add_special_tokens=False).input_ids
    start = slots.spans[1][0]
    extra = tokenizer("a red circle").input_ids
    assert [extra[p - start] for p in positions["a red circle"]] == extra[1:-1]


def test_a_phrase_past_the_encoder_window_is_found_in_a_later_window(sd_pipe):
    encoder = PromptEncoder(sd_pipe, sd_pipe._execution_device)
    prompt = ", ".join(["a quiet sunny meadow with tall grass"] * 12) + ", a purple giraffe"
    slots, positions = layout._final_slots(encoder, prompt, "", ["a purple giraffe"])
    assert len(slots.spans) == 1 and slots.cond.shape[1] > 77 and min(positions["a purple giraffe"]) >= 77


def test_fast_mode_makes_fewer_unet_calls(sd_pipe):
    calls = []
    hook = sd_pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        generate_layout(sd_pipe, two_boxes(), fast_config(num_inference_steps=20))
        default = len(calls)
        calls.clear()
        generate_layout(sd_pipe, two_boxes(), fast_config(num_inference_steps=20, fast=True))
    finally:
        hook.remove()
    assert len(calls) < default


def test_per_region_and_scene_negative_prompts_are_used(sd_pipe):
    plain = images(sd_pipe, two_boxes())
    assert np.abs(images(sd_pipe, two_boxes(negative_prompt="blurry")) - plain).max() > 1e-4
    scene = two_boxes()
    scene = Scene.from_dict(scene.to_dict() | {"regions": [
        {"prompt": "a cat", "box": [0.05, 0.3, 0.45, 0.9], "negative_prompt": "a dog"},
        {"prompt": "a dog", "box": [0.55, 0.2, 0.95, 0.8]}]})
    assert np.abs(images(sd_pipe, scene) - plain).max() > 1e-4


@pytest.mark.parametrize("knob, value, message", [
    ("frozen_step_ratio", 1.5, "frozen_step_ratio must lie in"),
    ("rescaled_hold_ratio", -0.1, "rescaled_hold_ratio must lie in"),
    ("rescale_resized", "yes", "rescale_resized must be true or false"),
    ("mask_source", "magic", "mask_source must be one of"),
    ("mask_source", "sam", "needs sam_model"),
    ("max_iter", (), "max_iter must be"),
    ("loss_scale", -1.0, "loss_scale must be"),
])
def test_bad_settings_are_errors_naming_the_knob(sd_pipe, knob, value, message):
    with pytest.raises(ValueError, match=message):
        generate_layout(sd_pipe, two_boxes(), fast_config(**{knob: value}))


def test_unknown_layer_names_list_the_real_ones(sd_pipe):
    with pytest.raises(ValueError, match="no cross-attention layer .*'up_blocks.9'.* this UNet's: down_blocks"):
        generate_layout(sd_pipe, two_boxes(), fast_config(guidance_layers=("up_blocks.9",)))


@pytest.fixture(scope="module")
def gligen_pipe():
    from scenecraft.testing import tiny_gligen_pipeline

    return tiny_gligen_pipeline()


def test_layout_plus_feeds_gligen_the_boxes_for_the_first_steps(gligen_pipe):
    seen = []

    def record(module, args, kwargs):
        seen.append((kwargs.get("cross_attention_kwargs") or {}).get("gligen") is not None)

    hook = gligen_pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        config = LayoutPlusConfig(num_inference_steps=10, seed=1, output_type="np", gligen_scheduled_sampling_beta=0.4,
                                  final_max_index_step=0)
        result = generate(gligen_pipe, two_boxes(), config, method="layout+")
    finally:
        hook.remove()
    assert np.isfinite(result.images[0]).all() and result.method == "layout+"
    # Two passes (per-box, final) of 10 steps each; GLIGEN grounds the first 4 of each.
    assert seen == ([True] * 4 + [False] * 6) * 2
    from diffusers.models.attention import GatedSelfAttentionDense

    assert all(m.enabled for m in gligen_pipe.unet.modules() if isinstance(m, GatedSelfAttentionDense))


def test_layout_plus_on_a_model_without_gligen_is_a_clear_error(sd_pipe):
    with pytest.raises(ValueError, match="runs on sd-gligen pipelines"):
        generate(sd_pipe, two_boxes(), LayoutPlusConfig(num_inference_steps=2), method="layout+")


def test_capturing_attention_does_not_change_the_unet_output(sd_pipe):
    from scenecraft.generation.guidance import cross_attention_layers

    unet = sd_pipe.unet
    latents, context = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    with torch.no_grad():
        expected = unet(latents, 500, encoder_hidden_states=context).sample
        capture = AttentionCapture(cross_attention_layers(unet), (8, 8))
        with capture.installed(unet), capture.capturing(lambda layer, probs: probs) as maps:
            captured = unet(latents, 500, encoder_hidden_states=context).sample
    torch.testing.assert_close(captured, expected, rtol=0, atol=1e-5)
    assert set(maps) == set(capture.layers)
    for layer, probs in maps.items():
        heads = unet.get_submodule(layer).heads
        assert probs.shape[:2] == (2, heads) and probs.shape[-1] == 77
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))


def test_seeds_reproduce_with_an_ancestral_scheduler(sd_pipe):
    from diffusers import EulerAncestralDiscreteScheduler

    original = sd_pipe.scheduler
    sd_pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(original.config)
    try:
        first, again = images(sd_pipe, two_boxes()), images(sd_pipe, two_boxes())
        other = images(sd_pipe, two_boxes(), seed=4)
    finally:
        sd_pipe.scheduler = original
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


@pytest.mark.parametrize("knob, value, message", [
    ("max_iter", 5, "max_iter must be"),
    ("fast", "yes", "fast must be true or false"),
    ("guidance_layers", "up_blocks.1", "guidance_layers must be a list"),
])
def test_settings_of_the_wrong_type_are_value_errors(knob, value, message):
    with pytest.raises(ValueError, match=message):
        LayoutConfig(**{knob: value}).check()
