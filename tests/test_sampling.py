"""The sampling core against ``pipe(...)``: bit for bit in one process and one load path."""

import numpy as np
import pytest
import torch

from scenecraft.generation.sampling import (
    SamplingConfig, conditioning, decode_latents, generate_latents, image_generators, pipeline_family,
)
from scenecraft.generation.prompts import PromptEncoder

STEPS = 4


def plain(pipe, prompt, seeds, negative=None, guidance=7.0, height=64, width=64):
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(prompt, negative_prompt=negative, num_inference_steps=STEPS, guidance_scale=guidance, height=height,
                width=width, generator=generators, num_images_per_prompt=len(seeds), output_type="np").images


def core(pipe, prompt, seeds, negative="", guidance=7.0, height=64, width=64, **hooks):
    encoder = PromptEncoder(pipe, pipe._execution_device)
    slots = encoder.encode_slots([prompt], [negative])
    text = conditioning(pipe, slots.cond, slots.uncond, slots.pooled, slots.negative_pooled, height, width)
    config = SamplingConfig(num_inference_steps=STEPS, guidance_scale=guidance)
    generators = image_generators(seeds[0], len(seeds))
    scale = pipe.vae_scale_factor
    latents = generate_latents(pipe, text.repeat(len(seeds)), config, generators, (height // scale, width // scale),
                               **hooks)
    return decode_latents(pipe, latents, "np", generators=generators)


@pytest.mark.parametrize("which", ["sd_pipe", "sd2_pipe", "sdxl_pipe"])
def test_core_reproduces_the_pipeline_bit_for_bit(which, request):
    pipe = request.getfixturevalue(which)
    np.testing.assert_array_equal(core(pipe, "a red circle", [3]), plain(pipe, "a red circle", [3]))


@pytest.mark.parametrize("which", ["sd_pipe", "sdxl_pipe"])
def test_core_reproduces_a_batch_with_a_seed_per_image(which, request):
    pipe = request.getfixturevalue(which)
    batch = core(pipe, "a cat", [5, 6, 7], negative="blurry")
    np.testing.assert_array_equal(batch, plain(pipe, "a cat", [5, 6, 7], negative="blurry"))
    # Image i of the batch is the 1-image call with seed + i: the same noise exactly; the same image up to the
    # rounding of another batch size's kernels.
    from scenecraft.generation.sampling import prepare_latents

    noise = prepare_latents(pipe, image_generators(5, 3), 8, 8, torch.float32)
    assert torch.equal(noise[2:], prepare_latents(pipe, image_generators(7, 1), 8, 8, torch.float32))
    np.testing.assert_allclose(batch[2], core(pipe, "a cat", [7], negative="blurry")[0], rtol=0, atol=1e-4)


def test_core_without_guidance_and_at_an_odd_size(sd_pipe):
    np.testing.assert_array_equal(core(sd_pipe, "a cat", [1], guidance=1.0, height=72, width=136),
                                  plain(sd_pipe, "a cat", [1], guidance=1.0, height=72, width=136))


def test_hooks_see_every_step_and_can_change_the_latents(sd_pipe):
    seen = []

    def before(index, t, latents):
        seen.append(("before", index, int(t)))

    def after(index, t, latents):
        seen.append(("after", index, int(t)))
        return torch.zeros_like(latents) if index == STEPS - 1 else None

    progress = []
    images = core(sd_pipe, "a cat", [1], before_step=before, after_step=after,
                  on_step=lambda done, total: progress.append((done, total)))
    timesteps = [int(t) for t in sd_pipe.scheduler.timesteps]
    assert seen == [(kind, i, timesteps[i]) for i in range(STEPS) for kind in ("before", "after")]
    assert progress == [(i, STEPS) for i in range(1, STEPS + 1)]
    # Zero latents decode to the VAE's image of zeros, whatever the prompt.
    zeros = decode_latents(sd_pipe, torch.zeros(1, 4, 8, 8), "np")
    np.testing.assert_array_equal(images, zeros)


def test_before_step_hook_may_take_gradients(sd_pipe):
    grads = []

    def before(index, t, latents):
        x = latents.detach().requires_grad_(True)
        (x ** 2).sum().backward()
        grads.append(x.grad.abs().sum().item())

    core(sd_pipe, "a cat", [1], before_step=before)
    assert len(grads) == STEPS and all(g > 0 for g in grads)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="output_type must be one of"):
        SamplingConfig(output_type="jpeg").check()
    with pytest.raises(ValueError, match="seed must be None or an integer"):
        SamplingConfig(seed=-1).check()
    with pytest.raises(ValueError, match=r"seed \+ num_images - 1"):
        SamplingConfig(seed=2**32 - 1, num_images=2).check()


def test_pipeline_family(sd_pipe, sdxl_pipe):
    assert pipeline_family(sd_pipe) == "sd" and pipeline_family(sdxl_pipe) == "sdxl"
