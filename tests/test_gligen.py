import copy
import json

import pytest
import torch
from diffusers import StableDiffusionPipeline

from scenecraft.generation import load_pipeline
from scenecraft.generation.gligen import (
    MAX_OBJECTS, gligen_conditioning, gligen_fuser, is_gligen_unet, scheduled_fuser_steps,
)
from scenecraft.generation.loading import ModelLoadError, detect_family, is_gligen_model
from scenecraft.testing import save_tiny_pipeline, tiny_gligen_pipeline

PHRASES = ["a cat", "a red ball on the grass"]
BOXES = [(0.1, 0.2, 0.5, 0.6), (0.5, 0.5, 0.9, 0.95)]


@pytest.fixture(scope="module")
def gligen_pipe():
    return tiny_gligen_pipeline()


@pytest.fixture(scope="module")
def unet_inputs():
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    text = torch.randn(1, 77, 32, generator=generator)
    return latents, text


def _fusers(unet):
    from diffusers.models.attention import GatedSelfAttentionDense

    return [module for module in unet.modules() if isinstance(module, GatedSelfAttentionDense)]


@torch.no_grad()
def _unet(pipe, inputs, conditioning=None):
    latents, text = inputs
    kwargs = {"gligen": conditioning} if conditioning is not None else None
    return pipe.unet(latents, 10, encoder_hidden_states=text, cross_attention_kwargs=kwargs).sample


def _pooled(pipe, phrase):
    ids = pipe.tokenizer(phrase, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids).pooler_output[0]


def test_tiny_gligen_pipeline_is_a_plain_sd_pipeline_with_a_gated_unet(gligen_pipe, sd_pipe):
    assert type(gligen_pipe) is StableDiffusionPipeline and gligen_pipe.unet.config.attention_type == "gated"
    assert is_gligen_unet(gligen_pipe.unet) and not is_gligen_unet(sd_pipe.unet)
    # One fuser per transformer block: 2 down, 1 mid, 2 x 2 up.
    assert len(_fusers(gligen_pipe.unet)) == 7
    assert gligen_pipe.unet.position_net.positive_len == gligen_pipe.text_encoder.config.hidden_size == 32


def test_conditioning_holds_the_boxes_masks_and_pooled_phrase_embeddings(gligen_pipe):
    cond = gligen_conditioning(gligen_pipe, PHRASES, BOXES, batch_size=2)
    assert cond["boxes"].shape == (2, MAX_OBJECTS, 4)
    assert cond["positive_embeddings"].shape == (2, MAX_OBJECTS, 32)
    assert cond["masks"].shape == (2, MAX_OBJECTS)
    assert all(t.dtype == gligen_pipe.unet.dtype and t.device.type == "cpu" for t in cond.values())
    for row in range(2):
        torch.testing.assert_close(cond["boxes"][row, :2], torch.tensor(BOXES))
        assert cond["masks"][row].tolist() == [1.0, 1.0] + [0.0] * (MAX_OBJECTS - 2)
        # Each phrase encoded in one padded batch equals it encoded alone (CLIP's causal mask, pooled at EOS).
        for index, phrase in enumerate(PHRASES):
            torch.testing.assert_close(cond["positive_embeddings"][row, index], _pooled(gligen_pipe, phrase))
    assert not cond["boxes"][:, 2:].any() and not cond["positive_embeddings"][:, 2:].any()


def test_conditioning_takes_the_unets_dtype(gligen_pipe, unet_inputs):
    # A bfloat16 UNet with a float32 text encoder: the position net's linears need its own dtype.
    unet = copy.deepcopy(gligen_pipe.unet).to(torch.bfloat16)
    pipe = StableDiffusionPipeline(**{**gligen_pipe.components, "unet": unet}, requires_safety_checker=False)
    cond = gligen_conditioning(pipe, PHRASES, BOXES, batch_size=1)
    assert all(t.dtype == torch.bfloat16 for t in cond.values())
    with gligen_fuser(unet, enabled=True):
        out = _unet(pipe, [t.to(torch.bfloat16) for t in unet_inputs], cond)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_cfg_batch_is_uncond_then_cond_and_the_uncond_half_has_no_objects(gligen_pipe):
    single = gligen_conditioning(gligen_pipe, PHRASES, BOXES, batch_size=1)
    cond = gligen_conditioning(gligen_pipe, PHRASES, BOXES, batch_size=1, cfg=True)
    assert cond["masks"].shape == (2, MAX_OBJECTS)
    assert not cond["masks"][0].any() and torch.equal(cond["masks"][1:], single["masks"])
    for key in ("boxes", "positive_embeddings"):  # diffusers keeps them in both halves; masks 0 nulls them
        assert torch.equal(cond[key], single[key].repeat(2, 1, 1))


def test_no_objects_gives_empty_conditioning(gligen_pipe):
    cond = gligen_conditioning(gligen_pipe, [], [], batch_size=1, max_objects=4)
    assert cond["boxes"].shape == (1, 4, 4) and not any(t.any() for t in cond.values())


def test_conditioning_matches_what_diffusers_gligen_pipeline_feeds_the_unet(gligen_pipe):
    """Oracle: diffusers' own (deprecated) GLIGEN pipeline, used here only to read what it passes the UNet."""
    diffusers = pytest.importorskip("diffusers")
    pipeline_class = getattr(diffusers, "StableDiffusionGLIGENPipeline", None)
    if pipeline_class is None:
        pytest.skip("this diffusers has no StableDiffusionGLIGENPipeline to compare with")
    components = {k: v for k, v in gligen_pipe.components.items() if k != "image_encoder"}
    reference = pipeline_class(**components, requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)
    seen = []
    hook = gligen_pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["cross_attention_kwargs"]["gligen"]), with_kwargs=True)
    # diffusers' pipeline switches the fusers off after its grounded steps and leaves them off: restore them.
    try:
        with gligen_fuser(gligen_pipe.unet, enabled=True):
            reference(prompt="a park", gligen_phrases=PHRASES, gligen_boxes=[list(b) for b in BOXES], height=64,
                      width=64, num_inference_steps=1, guidance_scale=5.0, output_type="latent")
    finally:
        hook.remove()
    assert all(fuser.enabled for fuser in _fusers(gligen_pipe.unet))
    ours = gligen_conditioning(gligen_pipe, PHRASES, BOXES, batch_size=1, cfg=True)
    assert seen[0].keys() == ours.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], seen[0][key], rtol=0, atol=0)


def test_fuser_context_sets_and_restores_each_flag_even_on_error(gligen_pipe):
    fusers = _fusers(gligen_pipe.unet)
    fusers[0].enabled = False  # a mixed starting state must come back as it was
    before = [fuser.enabled for fuser in fusers]
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with gligen_fuser(gligen_pipe.unet, enabled=True):
                assert all(fuser.enabled for fuser in fusers)
                with gligen_fuser(gligen_pipe.unet, enabled=False):
                    assert not any(fuser.enabled for fuser in fusers)
                assert all(fuser.enabled for fuser in fusers)
                raise RuntimeError("boom")
        assert [fuser.enabled for fuser in fusers] == before
    finally:
        fusers[0].enabled = True


def test_fuser_context_on_a_plain_unet_is_an_error(sd_pipe):
    with pytest.raises(ValueError, match="not a GLIGEN UNet"):
        with gligen_fuser(sd_pipe.unet, enabled=False):
            pass


def test_fuser_off_is_the_plain_sd_unet_and_ignores_the_boxes(gligen_pipe, sd_pipe, unet_inputs):
    cond = gligen_conditioning(gligen_pipe, PHRASES, BOXES, batch_size=1)
    moved = gligen_conditioning(gligen_pipe, PHRASES, [(0.0, 0.0, 0.3, 0.3), BOXES[1]], batch_size=1)
    base = _unet(sd_pipe, unet_inputs)
    # The tiny GLIGEN UNet is tiny_sd_pipeline's plus GLIGEN layers: off (or without kwargs), exactly that UNet.
    assert torch.equal(_unet(gligen_pipe, unet_inputs), base)
    with gligen_fuser(gligen_pipe.unet, enabled=False):
        assert torch.equal(_unet(gligen_pipe, unet_inputs, cond), base)
        assert torch.equal(_unet(gligen_pipe, unet_inputs, moved), base)


def test_fuser_on_grounds_the_unet_on_the_boxes(gligen_pipe, sd_pipe, unet_inputs):
    cond = gligen_conditioning(gligen_pipe, PHRASES, BOXES, batch_size=1)
    moved = gligen_conditioning(gligen_pipe, PHRASES, [(0.0, 0.0, 0.3, 0.3), BOXES[1]], batch_size=1)
    with gligen_fuser(gligen_pipe.unet, enabled=True):
        grounded, regrounded = _unet(gligen_pipe, unet_inputs, cond), _unet(gligen_pipe, unet_inputs, moved)
    base = _unet(sd_pipe, unet_inputs)
    assert (grounded - base).abs().max() > 1e-2
    assert (grounded - regrounded).abs().max() > 1e-3


def test_masked_out_objects_do_not_ground_but_the_fuser_still_acts(gligen_pipe, sd_pipe, unet_inputs):
    # The cfg batch's uncond half (masks 0): the position net swaps every object for its null object.
    uncond = gligen_conditioning(gligen_pipe, PHRASES, BOXES, batch_size=1, cfg=True)
    other = gligen_conditioning(gligen_pipe, ["a dog"], [(0.3, 0.3, 0.4, 0.4)], batch_size=1, cfg=True)
    take_uncond = {key: value[:1] for key, value in uncond.items()}
    take_other = {key: value[:1] for key, value in other.items()}
    with gligen_fuser(gligen_pipe.unet, enabled=True):
        a, b = _unet(gligen_pipe, unet_inputs, take_uncond), _unet(gligen_pipe, unet_inputs, take_other)
    assert torch.equal(a, b)
    assert not torch.allclose(a, _unet(sd_pipe, unet_inputs))


def test_plain_pipeline_call_without_gligen_kwargs_runs_the_sd_backbone(gligen_pipe, sd_pipe):
    kwargs = dict(num_inference_steps=2, height=64, width=64, output_type="np")
    a = gligen_pipe("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    b = sd_pipe("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    assert a.shape == (1, 64, 64, 3) and (a == b).all()


@pytest.mark.parametrize("phrases, boxes, kwargs, message", [
    (["a cat"], BOXES, {}, "same length .* 1 phrases and 2 boxes"),
    (["a cat"], [(0.1, 0.2, 1.5, 0.6)], {}, r"boxes\[0\] .* got \(0.1, 0.2, 1.5, 0.6\)"),
    (["a cat"], [(0.5, 0.2, 0.5, 0.6)], {}, r"boxes\[0\] .* 0 <= x0 < x1 <= 1"),
    (PHRASES, [BOXES[0], (0.1, 0.7, 0.5, 0.6)], {}, r"boxes\[1\] .* 0 <= y0 < y1 <= 1"),
    (["a cat"], [(0.1, 0.2, 0.5)], {}, r"boxes\[0\] must be \(x0, y0, x1, y1\)"),
    (["a"] * 3, [BOXES[0]] * 3, {"max_objects": 2}, "at most max_objects=2 objects, got 3 boxes"),
    (["a cat"], BOXES[:1], {"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ("a cat", BOXES[:1], {}, "phrases must be a list .* got the string 'a cat'"),
])
def test_conditioning_input_errors_name_the_argument_and_value(gligen_pipe, phrases, boxes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gligen_conditioning(gligen_pipe, phrases, boxes, **{"batch_size": 1, **kwargs})


def test_conditioning_on_a_plain_sd_pipeline_is_an_error(sd_pipe):
    with pytest.raises(ValueError, match="no GLIGEN position net"):
        gligen_conditioning(sd_pipe, ["a cat"], BOXES[:1], batch_size=1)


def test_scheduled_fuser_steps_is_the_first_beta_of_the_steps():
    assert scheduled_fuser_steps(50) == 15 and scheduled_fuser_steps(20, 0.3) == 6
    assert scheduled_fuser_steps(25, 0.0) == 0 and scheduled_fuser_steps(25, 1.0) == 25
    assert scheduled_fuser_steps(7, 0.5) == 3
    with pytest.raises(ValueError, match="beta must be within"):
        scheduled_fuser_steps(20, 1.5)


def test_gligen_folder_loads_as_a_plain_sd_pipeline_offline(tmp_path, gligen_pipe, sd_pipe, unet_inputs):
    folder = save_tiny_pipeline(tmp_path / "gligen", kind="gligen")
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionGLIGENPipeline"
    assert detect_family(folder) == "sd" and is_gligen_model(folder)
    assert not is_gligen_model(save_tiny_pipeline(tmp_path / "sd", kind="sd")) and not is_gligen_model("toyworld")
    assert not is_gligen_model(tmp_path / "model.safetensors")
    pipe = load_pipeline(folder, device="cpu")
    assert type(pipe) is StableDiffusionPipeline and is_gligen_unet(pipe.unet)
    cond = gligen_conditioning(pipe, PHRASES, BOXES, batch_size=1)
    with gligen_fuser(pipe.unet, enabled=True), gligen_fuser(gligen_pipe.unet, enabled=True):
        loaded, built = _unet(pipe, unet_inputs, cond), _unet(gligen_pipe, unet_inputs, cond)
    # Two load paths (built in memory, read from disk): equal on most CPUs, not guaranteed on all.
    torch.testing.assert_close(loaded, built, rtol=0, atol=1e-5)


def test_gligen_hub_id_offline_says_what_to_download():
    # conftest sets HF_HUB_OFFLINE=1: the real hub path runs and fails with the loader's usual advice.
    with pytest.raises(ModelLoadError, match="huggingface-cli download longlian/lmd_plus"):
        load_pipeline("longlian/lmd_plus")
    with pytest.raises(ModelLoadError, match="offline, download it first"):
        is_gligen_model("longlian/lmd_plus")
