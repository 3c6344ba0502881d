"""RPG regions on SD3 and Flux (MMDiT): backbone adapters, the joint-attention mask, equivalences with the plain
pipelines, captured attention, odd sizes, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scenecraft.generation import joint_attention
from scenecraft.generation.backbones import backbone, check_pipeline, pipeline_family
from scenecraft.generation.joint_attention import JointSlotLayout, joint_attention_names
from scenecraft.generation.methods import generate
from scenecraft.generation.mmdit import encode_mmdit_slots
from scenecraft.generation.regional import RegionalConfig, generate_regional, merged_slots, slot_coefficients
from scenecraft.scene import Scene
from scenecraft.testing import tiny_flux_pipeline, tiny_sd_pipeline, tiny_sd3_pipeline, tiny_sdxl_pipeline

SIZE = 64
TWO_BOXES = [{"prompt": "a red circle", "box": [0, 0, 0.5, 1]}, {"prompt": "a blue square", "box": [0.5, 0, 1, 1]}]
BASE = "a red circle and a blue square"
# Tolerance where the regional path computes the plain result through a masked attention (other kernel).
CLOSE = 1e-5


@pytest.fixture(scope="module")
def flux():
    return tiny_flux_pipeline(seed=0)


@pytest.fixture(scope="module")
def sd3():
    return tiny_sd3_pipeline(seed=0)


@pytest.fixture(scope="module")
def sd35():
    return tiny_sd3_pipeline(seed=1, dual_attention=True)


@pytest.fixture(params=["flux", "sd3", "sd35"])
def mmdit(request):
    return request.getfixturevalue(request.param)


def scene(regions=(), base_ratio=0.3, prompt=BASE, width=SIZE, height=SIZE, **extra):
    return Scene.from_dict({"prompt": prompt, "width": width, "height": height, "base_ratio": base_ratio,
                            "regions": list(regions), **extra})


def settings(pipe, **extra):
    guidance = 3.5 if pipeline_family(pipe) == "flux" else 5.0
    return dict(num_inference_steps=2, guidance_scale=guidance, seed=3, output_type="np") | extra


def plain(pipe, prompt=BASE, *, width=SIZE, height=SIZE, seed=3, **embeds):
    kwargs = dict(height=height, width=width, num_inference_steps=2, output_type="np",
                  generator=[torch.Generator().manual_seed(seed)])
    if pipeline_family(pipe) == "flux":
        kwargs |= dict(guidance_scale=3.5, max_sequence_length=512)
    else:
        kwargs |= dict(guidance_scale=5.0, negative_prompt=None if embeds else "")
    text = {} if embeds else {"prompt": prompt}
    return pipe(**text, **embeds, **kwargs).images[0]


def regional(pipe, the_scene, **extra):
    return generate_regional(pipe, the_scene, RegionalConfig(**settings(pipe, **extra))).images[0]


# --- the backbone adapter -------------------------------------------------------------------------------------------

def test_families_come_from_the_denoiser_not_from_a_second_text_encoder(flux, sd3):
    assert pipeline_family(tiny_sd_pipeline()) == "sd"
    assert pipeline_family(tiny_sdxl_pipeline()) == "sdxl"
    assert pipeline_family(sd3) == "sd3"  # it has text_encoder_2 too, which once meant SDXL
    assert pipeline_family(flux) == "flux"
    with pytest.raises(TypeError, match="neither a unet nor a transformer"):
        pipeline_family(object())


def test_adapter_sizes_and_token_grids(flux, sd3):
    for pipe in (flux, sd3):
        adapter = backbone(pipe)
        assert adapter.is_mmdit and adapter.denoiser is pipe.transformer and adapter.patch_size == 2
        assert adapter.native_size == SIZE
        step = adapter.pixel_multiple
        assert step == max(pipe.vae_scale_factor * 2, 8)
        assert adapter.latent_size(3 * step, 5 * step) == (3 * step // pipe.vae_scale_factor,
                                                            5 * step // pipe.vae_scale_factor)
        assert adapter.token_grid(6, 10, 15) == (3, 5)
        with pytest.raises(ValueError, match=rf"width {5 * step + step // 2} is not a multiple of {step}"):
            adapter.latent_size(3 * step, 5 * step + step // 2)
        with pytest.raises(ValueError, match="not the 3x5 patch grid"):
            adapter.token_grid(6, 10, 16)
    unet = backbone(tiny_sd_pipeline())
    assert not unet.is_mmdit and unet.patch_size == 1 and unet.token_grid(8, 8, 16) == (4, 4)


def test_unet_methods_refuse_mmdit_pipelines_by_name(flux):
    with pytest.raises(ValueError, match="method layout runs on sd, sdxl, sd-gligen pipelines; this one is flux"):
        generate(flux, scene(TWO_BOXES), method="layout")
    with pytest.raises(ValueError, match="this one is Flux"):
        check_pipeline(flux)


# --- the mask -------------------------------------------------------------------------------------------------------

def _layout(text_first=True):
    # 2x2 token grid; slot 0 (base, 2 tokens) owns all with 0.25; slot 1 (3 tokens) owns the left column with 0.75;
    # slot 2 (1 token) the right column with 0.75.
    coefficients = np.array([[0.25] * 4, [0.75, 0, 0.75, 0], [0, 0.75, 0, 0.75]])
    return JointSlotLayout([(0, 2), (2, 5), (5, 6)], coefficients, text_first=text_first)


@pytest.mark.parametrize("text_first", [True, False])
def test_mask_lets_each_token_see_only_its_slots(text_first):
    layout = _layout(text_first)
    mask = layout.mask(torch.device("cpu"), torch.float32).numpy()
    text, image = layout.text_slice(), layout.image_slice()
    assert mask.shape == (10, 10)
    assert (mask[image, image] == 0).all()
    slots = [range(0, 2), range(2, 5), range(5, 6)]
    for slot, tokens in enumerate(slots):
        for token in tokens:
            row = mask[text.start + token]
            seen_text = [t for t in range(6) if row[text.start + t] == 0]
            assert seen_text == list(tokens)  # its own slot's text, no other
            owned = layout.coefficients[slot] > 0
            assert (row[image][owned] == 0).all() and np.isneginf(row[image][~owned]).all()
    for pixel in range(4):
        row = mask[image.start + pixel, text]
        weights = [math.exp(row[t]) if not np.isneginf(row[t]) else 0.0 for t in (0, 2, 5)]
        assert sum(weights) == pytest.approx(1.0)  # the slots share one prompt's attention mass
        assert layout.seen_slots(pixel) == ([0, 1] if pixel % 2 == 0 else [0, 2])


def test_layout_rejects_rows_that_do_not_match_the_slots():
    with pytest.raises(ValueError, match="2 slots but 3 rows"):
        JointSlotLayout([(0, 2), (2, 4)], np.ones((3, 4)) / 3, text_first=True)


def test_identical_slots_merge_and_a_region_repeating_the_base_joins_it():
    coefficients = np.array([[0.5, 0.5], [0.5, 0.0], [0.0, 0.5]])
    prompts, negatives, merged = merged_slots([BASE, BASE, "x"], ["", "", ""], coefficients)
    assert prompts == [BASE, "x"] and negatives == ["", ""]
    np.testing.assert_array_equal(merged, [[1.0, 0.5], [0.0, 0.5]])
    assert np.allclose(merged.sum(axis=0), 1)


# --- equivalences with the plain pipelines --------------------------------------------------------------------------

def test_no_regions_is_the_plain_pipeline_bit_for_bit(mmdit):
    assert np.array_equal(regional(mmdit, scene()), plain(mmdit))


def test_regions_that_repeat_the_prompt_are_the_plain_pipeline_bit_for_bit(mmdit):
    same = [dict(region, prompt=BASE) for region in TWO_BOXES]
    assert np.array_equal(regional(mmdit, scene(same, base_ratio=0.4)), plain(mmdit))


def test_base_ratio_one_is_the_base_prompt(mmdit):
    image = regional(mmdit, scene(TWO_BOXES, base_ratio=1.0))
    assert np.abs(image - plain(mmdit)).max() <= CLOSE


def test_a_full_canvas_region_is_the_plain_pipeline_on_its_text(mmdit):
    family = pipeline_family(mmdit)
    full = {"flux": 512, "sd3": 256}[family]
    image = regional(mmdit, scene([{"prompt": "a green triangle", "box": [0, 0, 1, 1]}], base_ratio=0.0),
                     region_tokens=full)
    with torch.no_grad():
        if family == "flux":
            embeds, _, _ = mmdit.encode_prompt("a green triangle", None, max_sequence_length=512)
            _, pooled, _ = mmdit.encode_prompt(BASE, None, max_sequence_length=512)
            reference = plain(mmdit, prompt_embeds=embeds, pooled_prompt_embeds=pooled)
        else:
            embeds, negative, _, _ = mmdit.encode_prompt("a green triangle", None, None, negative_prompt="",
                                                         do_classifier_free_guidance=True)
            _, _, pooled, negative_pooled = mmdit.encode_prompt(BASE, None, None, negative_prompt="",
                                                                do_classifier_free_guidance=True)
            reference = plain(mmdit, prompt_embeds=embeds, negative_prompt_embeds=negative,
                              pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=negative_pooled)
    assert np.abs(image - reference).max() <= CLOSE
    assert np.abs(image - plain(mmdit)).max() > 100 * CLOSE  # and it is not the base prompt's picture


def test_regions_change_the_picture_where_they_are(mmdit):
    image = regional(mmdit, scene(TWO_BOXES, base_ratio=0.2))
    assert np.abs(image - plain(mmdit)).max() > 1e-3


# --- captured attention ---------------------------------------------------------------------------------------------

def test_captured_attention_sees_only_own_slots(mmdit, monkeypatch):
    captured = []

    def explicit_attention(query, key, value, mask):
        weights = torch.softmax(query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1]) + mask, dim=-1)
        captured.append(weights)
        return weights @ value

    monkeypatch.setattr(joint_attention, "attend", explicit_attention)
    the_scene = scene(TWO_BOXES, base_ratio=0.3)
    regional(mmdit, the_scene)
    family = pipeline_family(mmdit)
    adapter = backbone(mmdit)
    grid = (SIZE // mmdit.vae_scale_factor // 2,) * 2
    slots = encode_mmdit_slots(mmdit, family, [BASE, "a red circle", "a blue square"], ["", "", ""],
                               guided=family == "sd3", region_tokens=None, device=torch.device("cpu"))
    layout = JointSlotLayout(slots.spans, slot_coefficients(the_scene, 0.3, *grid), text_first=family == "flux")
    joint_layers = len(joint_attention_names(mmdit.transformer))
    assert len(captured) == 2 * joint_layers  # every joint layer, both steps
    text, image = layout.text_slice(), layout.image_slice()
    left = np.zeros(grid, dtype=bool)
    left[:, : grid[1] // 2] = True
    left = left.ravel()
    for weights in captured:
        assert weights.shape[-1] == layout.sequence_length
        w = weights[0, 0].numpy()  # batch 0, head 0
        to_text = w[image, text]
        region_1 = slice(*layout.spans[1])
        region_2 = slice(*layout.spans[2])
        assert (to_text[left][:, region_2] == 0).all() and (to_text[~left][:, region_1] == 0).all()
        assert (to_text[left][:, region_1] > 0).all() and (to_text[:, slice(*layout.spans[0])] > 0).all()
        region_1_text = w[text.start + layout.spans[1][0] : text.start + layout.spans[1][1]]
        assert (region_1_text[:, image][:, ~left] == 0).all() and (region_1_text[:, image][:, left] > 0).all()
        assert adapter.is_mmdit


def test_sd35_image_self_attention_keeps_its_processor(sd35):
    names = joint_attention_names(sd35.transformer)
    assert names and not any(".attn2." in name for name in names)
    before = {name: type(proc) for name, proc in sd35.transformer.attn_processors.items()}
    regional(sd35, scene(TWO_BOXES))
    assert {name: type(proc) for name, proc in sd35.transformer.attn_processors.items()} == before


def test_processors_are_restored_after_a_failing_call(flux, monkeypatch):
    before = dict(flux.transformer.attn_processors)

    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(joint_attention, "attend", fail)
    with pytest.raises(RuntimeError, match="boom"):
        regional(flux, scene(TWO_BOXES))
    assert dict(flux.transformer.attn_processors) == before


# --- slots, sizes, seeds --------------------------------------------------------------------------------------------

def test_region_slots_hold_their_own_tokens_unless_told(mmdit):
    family = pipeline_family(mmdit)
    guided = family == "sd3"
    args = dict(guided=guided, device=torch.device("cpu"))
    own = encode_mmdit_slots(mmdit, family, [BASE, "a red circle"], ["", ""], region_tokens=None, **args)
    t5 = mmdit.tokenizer_2 if family == "flux" else mmdit.tokenizer_3
    t5_count = len(t5("a red circle").input_ids)
    clip_count = len(mmdit.tokenizer("a red circle").input_ids) if family == "sd3" else 0
    base_length = {"flux": 512, "sd3": 77 + 256}[family]
    assert own.spans == [(0, base_length), (base_length, base_length + clip_count + t5_count)]
    fixed = encode_mmdit_slots(mmdit, family, [BASE, "a red circle"], ["", ""], region_tokens=40, **args)
    assert fixed.spans[1][1] - fixed.spans[1][0] == 40 + (77 if guided else 0)
    assert (own.uncond is not None) == guided and own.cond.shape[1] == own.spans[-1][1]


@pytest.mark.parametrize("width,height", [(48, 80), (80, 48), (112, 16)])
def test_odd_sizes_run(mmdit, width, height):
    step = backbone(mmdit).pixel_multiple
    if width % step or height % step:
        pytest.skip(f"not a multiple of this VAE's {step}")
    image = regional(mmdit, scene(TWO_BOXES, width=width, height=height))
    assert image.shape == (height, width, 3) and np.isfinite(image).all()


def test_a_size_off_the_patch_grid_is_a_clear_error(flux):
    step = backbone(flux).pixel_multiple
    with pytest.raises(ValueError, match=rf"width {4 * step + step // 2} is not a multiple of {step}.*patch size"):
        regional(flux, scene(TWO_BOXES, width=4 * step + step // 2))


def test_seeds_reproduce_and_image_i_uses_seed_plus_i(mmdit):
    the_scene = scene(TWO_BOXES)
    first = regional(mmdit, the_scene)
    assert np.array_equal(first, regional(mmdit, the_scene))
    pair = generate_regional(mmdit, the_scene, RegionalConfig(**settings(mmdit, num_images=2)))
    assert pair.seeds == [3, 4]
    alone = regional(mmdit, the_scene, seed=4)
    assert np.abs(pair.images[1] - alone).max() <= CLOSE
    assert np.abs(pair.images[0] - first).max() <= CLOSE


def test_mmdit_mistakes_are_clear(flux):
    with pytest.raises(ValueError, match="region_tokens must be None or a whole number in"):
        regional(flux, scene(TWO_BOXES), region_tokens=0)
    with pytest.raises(ValueError, match="region_tokens sets the T5 tokens of SD3 and Flux"):
        generate_regional(tiny_sd_pipeline(), scene(TWO_BOXES), RegionalConfig(num_inference_steps=1, region_tokens=8))
    long_prompt = " ".join(["red"] * 600)
    with pytest.raises(ValueError, match="is 601 T5 tokens; flux encodes at most 512"):
        regional(flux, scene(TWO_BOXES, prompt=long_prompt))


def test_mask_and_cell_regions_own_the_tokens_under_them(flux):
    from scenecraft.scene import Mask, Region

    disc = np.zeros((SIZE, SIZE))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc[(yy - 20) ** 2 + (xx - 40) ** 2 < 15 ** 2] = 1
    masked = Scene(prompt=BASE, width=SIZE, height=SIZE, base_ratio=0.3,
                   regions=[Region("a red circle", Mask.from_array(disc))])
    split = Scene.from_split(BASE, "1,1", ["a red circle", "a blue square"], width=SIZE, height=SIZE)
    for the_scene in (masked, split):
        image = regional(flux, the_scene)
        assert image.shape == (SIZE, SIZE, 3) and np.abs(image - plain(flux)).max() > 1e-3
    grid = SIZE // flux.vae_scale_factor // 2
    coefficients = slot_coefficients(masked, 0.3, grid, grid)
    layout = JointSlotLayout([(0, 4), (4, 6)], coefficients, text_first=True)
    weights = masked.weights(grid, grid)[0][0].ravel()
    assert [1 in layout.seen_slots(token) for token in range(grid * grid)] == list(weights > 1e-6)
    assert any(weights > 1e-6) and not all(weights > 1e-6)
