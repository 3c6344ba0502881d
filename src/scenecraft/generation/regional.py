"""RPG: complementary regional diffusion (Yang et al., "Mastering Text-to-Image Diffusion:
Recaptioning, Planning, and Generating with Multimodal LLMs", ICML 2024).

Every cross-attention layer of the UNet attends each region's pixels to that region's prompt and
mixes the result with the base prompt by ``base_ratio``; the area no region covers follows the
background prompt (or the base prompt). Everything else is the unmodified diffusers pipeline:
its scheduler, classifier-free guidance, VAE and SDXL conditioning (pooled embedding and time ids
from the base prompt). The attention processors are installed for the call and restored after.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ..scene import Scene
from .attention import RegionalAttnProcessor, SlotLayout, installed_cross_attention_processors
from .latents import latent_size
from .prompts import PromptEncoder
from .result import GenerationResult, check_common_settings, resolve_seed

__all__ = ["RegionalConfig", "generate_regional", "slot_prompts", "slot_coefficients"]

StepCallback = Callable[[int, int], None]


@dataclass
class RegionalConfig:
    """Knobs of RPG regional generation.

    Attributes:
        num_inference_steps: denoising steps (default 30; RPG's examples use 20-30).
        guidance_scale: classifier-free guidance scale (default 7.0; <= 1 disables guidance).
        seed: random seed; ``None`` draws one, which the result records (default ``None``).
        num_images: images per call, each from its own noise (default 1).
        base_ratio: overrides ``scene.base_ratio`` when not ``None`` (default ``None``): the
            weight of the base prompt in every region, 0..1 (RPG's examples: 0.3-0.5).
        output_type: ``"pil"`` (default), ``"np"``, ``"pt"`` or ``"latent"``, as diffusers takes.
    """

    num_inference_steps: int = 30
    guidance_scale: float = 7.0
    seed: int | None = None
    num_images: int = 1
    base_ratio: float | None = None
    output_type: str = "pil"


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


def _check_inputs(pipe, scene: Scene, config: RegionalConfig) -> tuple[float, tuple[int, int]]:
    """Reject bad arguments; return the base ratio to use and the latent ``(height, width)``."""
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a scenecraft Scene, got {type(scene).__name__}")
    for part in ("unet", "vae", "tokenizer", "encode_prompt"):
        if not hasattr(pipe, part):
            raise TypeError(f"pipe must be a diffusers Stable Diffusion (1.x/2.x/XL) pipeline; it has no {part!r}")
    check_common_settings(config.num_inference_steps, config.guidance_scale, config.num_images, config.seed)
    base_ratio = scene.base_ratio if config.base_ratio is None else config.base_ratio
    if not isinstance(base_ratio, (int, float)) or not math.isfinite(base_ratio) or not 0 <= base_ratio <= 1:
        raise ValueError(f"base_ratio must lie in [0, 1], got {base_ratio!r}")
    return float(base_ratio), latent_size(scene.height, scene.width, pipe.vae_scale_factor)


def generate_regional(
    pipe,
    scene: Scene,
    config: RegionalConfig | None = None,
    *,
    on_step: StepCallback | None = None,
) -> GenerationResult:
    """Generate ``scene`` with RPG's regional cross-attention on a diffusers SD/SDXL pipeline.

    Args:
        pipe: a ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` (see ``load_pipeline``).
        scene: the scene; its regions may be split cells, boxes or masks.
        config: the knobs (see :class:`RegionalConfig`); defaults when ``None``.
        on_step: called as ``on_step(done, total)`` after every denoising step (progress bars).
    """
    config = config or RegionalConfig()
    base_ratio, (latent_height, latent_width) = _check_inputs(pipe, scene, config)
    seed, generator = resolve_seed(config.seed)

    prompts, negatives = slot_prompts(scene)
    slots = PromptEncoder(pipe, pipe._execution_device).encode_slots(prompts, negatives)
    layout = SlotLayout(
        spans=slots.spans,
        coefficients=lambda h, w: slot_coefficients(scene, base_ratio, h, w),
        latent_height=latent_height,
        latent_width=latent_width,
    )

    call_kwargs = dict(
        prompt_embeds=slots.cond,
        negative_prompt_embeds=slots.uncond,
        height=scene.height,
        width=scene.width,
        num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale,
        num_images_per_prompt=config.num_images,
        generator=generator,
        output_type=config.output_type,
    )
    if slots.pooled is not None:
        call_kwargs.update(pooled_prompt_embeds=slots.pooled, negative_pooled_prompt_embeds=slots.negative_pooled)
    if on_step is not None:
        total = config.num_inference_steps

        def report_step(_pipe, step: int, _timestep, callback_kwargs: dict) -> dict:
            on_step(step + 1, total)
            return callback_kwargs

        call_kwargs["callback_on_step_end"] = report_step

    if len(slots.spans) == 1:  # nothing regional: the plain pipeline on the base prompt
        images = pipe(**call_kwargs).images
    else:
        with installed_cross_attention_processors(pipe.unet, RegionalAttnProcessor(layout)):
            images = pipe(**call_kwargs).images

    settings = asdict(config) | {"seed": seed, "base_ratio": base_ratio, "scheduler": type(pipe.scheduler).__name__}
    return GenerationResult(images=list(images), seed=seed, scene=scene, method="regional", settings=settings)
