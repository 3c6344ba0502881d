"""RPG: complementary regional diffusion (Yang et al., "Mastering Text-to-Image Diffusion:
Recaptioning, Planning, and Generating with Multimodal LLMs", ICML 2024).

Every cross-attention layer of the UNet attends each region's pixels to that region's prompt and
mixes the result with the base prompt by ``base_ratio``; the area no region covers follows the
background prompt (or the base prompt). Everything else is the sampling core, which computes what
``pipe(...)`` computes: its scheduler, classifier-free guidance, VAE and SDXL conditioning (pooled
embedding and time ids from the base prompt). The attention processors are installed for the call
and restored after.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np

from ..scene import Scene
from .attention import RegionalAttnProcessor, SlotLayout, installed_cross_attention_processors
from .control import ControlInput
from .latents import latent_size
from .prompts import PromptEncoder
from .result import GenerationResult, resolve_seed
from .sampling import (
    ProgressCallback, SamplingConfig, check_pipeline, conditioning, decode_latents, generate_latents, image_generators,
)

__all__ = ["RegionalConfig", "generate_regional", "slot_prompts", "slot_coefficients"]


@dataclass
class RegionalConfig(SamplingConfig):
    """Knobs of RPG regional generation: :class:`SamplingConfig`'s (steps 30, guidance 7, seed,
    images, output type, tiled decode) and

    Attributes:
        base_ratio: overrides ``scene.base_ratio`` when not ``None`` (default ``None``): the
            weight of the base prompt in every region, 0..1 (RPG's examples: 0.3-0.5).
    """

    base_ratio: float | None = None

    def check(self) -> None:
        super().check()
        value = self.base_ratio
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or not 0 <= value <= 1):
            raise ValueError(f"base_ratio must be None or lie in [0, 1], got {value!r}")


def slot_prompts(scene: Scene) -> tuple[list[str], list[str]]:
    """Positive and negative prompt of every slot: base, background (if any), then each region."""
    prompts = [scene.base_prompt if scene.base_prompt is not None else scene.prompt]
    negatives = [scene.negative_prompt]
    if scene.background_prompt is not None:
        prompts.append(scene.background_prompt)
        negatives.append(scene.negative_prompt)
    for region in scene.regions:
        prompts.append(region.prompt)
        negatives.append(region.negative_prompt if region.negative_prompt is not None else scene.negative_prompt)
    return prompts, negatives


def slot_coefficients(scene: Scene, base_ratio: float, height: int, width: int) -> np.ndarray:
    """``(num_slots, height * width)`` mixing weights on a layer grid; every column sums to one."""
    weights, rest = scene.weights(height, width)
    rest = rest.ravel()
    rows = []
    if scene.background_prompt is not None:
        rows += [np.full(rest.shape, base_ratio), (1.0 - base_ratio) * rest]
    else:
        rows.append(base_ratio + (1.0 - base_ratio) * rest)
    rows += [(1.0 - base_ratio) * w.ravel() for w in weights]
    return np.stack(rows)


def _check_inputs(pipe, scene: Scene, config: RegionalConfig,
                  control: ControlInput | None = None) -> tuple[float, tuple[int, int]]:
    """Reject bad arguments; return the base ratio to use and the latent ``(height, width)``."""
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a scenecraft Scene, got {type(scene).__name__}")
    check_pipeline(pipe)
    config.check()
    if control is not None:
        check_control(control, scene, config.num_images)
    base_ratio = scene.base_ratio if config.base_ratio is None else config.base_ratio
    if not isinstance(base_ratio, (int, float)) or not math.isfinite(base_ratio) or not 0 <= base_ratio <= 1:
        raise ValueError(f"base_ratio must lie in [0, 1], got {base_ratio!r}")
    return float(base_ratio), latent_size(scene.height, scene.width, pipe.vae_scale_factor)


@contextmanager
def _regional_attention(pipe, control: ControlInput | None, processor: RegionalAttnProcessor) -> Iterator[None]:
    """The regional processor on the UNet's cross-attention, and on the ControlNet's when there is one."""
    with ExitStack() as stack:
        stack.enter_context(installed_cross_attention_processors(pipe.unet, processor))
        if control is not None:
            stack.enter_context(installed_cross_attention_processors(control.model, processor))
        yield


def check_control(control: ControlInput, scene: Scene, num_images: int) -> None:
    """Reject a control that is bad, not ``scene``'s size, or of another batch than ``num_images`` (the
    sampling core's denoiser rejects one made for another UNet)."""
    if not isinstance(control, ControlInput):
        raise TypeError(f"control must be a scenecraft ControlInput, got {type(control).__name__}")
    control.check()
    control.check_size(scene.height, scene.width)
    control.check_batch(num_images)


def generate_regional(
    pipe,
    scene: Scene,
    config: RegionalConfig | None = None,
    *,
    on_step: ProgressCallback | None = None,
    control: ControlInput | None = None,
) -> GenerationResult:
    """Generate ``scene`` with RPG's regional cross-attention on a diffusers SD/SDXL pipeline.

    Args:
        pipe: a ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` (see ``load_pipeline``).
        scene: the scene; its regions may be split cells, boxes or masks.
        config: the knobs (see :class:`RegionalConfig`); defaults when ``None``.
        on_step: called as ``on_step(done, total)`` after every denoising step (progress bars).
        control: a ControlNet and its control image at the scene's size (default ``None``: none). Its
            cross-attention is made regional too, like the UNet's; a scene without regions gives
            diffusers' ``StableDiffusion(XL)ControlNetPipeline``'s images.
    """
    config = config or RegionalConfig()
    base_ratio, latent_hw = _check_inputs(pipe, scene, config, control)
    seed = resolve_seed(config.seed, config.num_images)
    generators = image_generators(seed, config.num_images)

    prompts, negatives = slot_prompts(scene)
    slots = PromptEncoder(pipe, pipe._execution_device).encode_slots(prompts, negatives)
    text = conditioning(pipe, slots.cond, slots.uncond, slots.pooled, slots.negative_pooled, scene.height, scene.width)
    layout = SlotLayout(
        spans=slots.spans,
        coefficients=lambda h, w: slot_coefficients(scene, base_ratio, h, w),
        latent_height=latent_hw[0],
        latent_width=latent_hw[1],
    )
    run = partial(generate_latents, pipe, text.repeat(config.num_images), config, generators, latent_hw,
                  on_step=on_step, control=control)
    if len(slots.spans) == 1:  # nothing regional: the plain pipeline on the base prompt
        latents = run()
    else:
        with _regional_attention(pipe, control, RegionalAttnProcessor(layout)):
            latents = run()
    images = decode_latents(pipe, latents, config.output_type, tiled=config.tiled_decode, generators=generators)

    settings = asdict(config) | {"seed": seed, "base_ratio": base_ratio, "scheduler": type(pipe.scheduler).__name__}
    return GenerationResult(images=list(images), seed=seed, scene=scene, method="regional", settings=settings,
                            seeds=[seed + i for i in range(config.num_images)])
