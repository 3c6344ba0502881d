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
from .backbones import FAMILIES, Backbone, backbone, check_pipeline
from .control import ControlInput
from .joint_attention import (
    JointSlotLayout, RegionalFluxAttnProcessor, RegionalJointAttnProcessor, installed_joint_attention_processors,
)
from .mmdit import decode_mmdit, denoise_mmdit, encode_mmdit_slots
from .prompts import PromptEncoder
from .result import GenerationResult, resolve_seed
from .sampling import (
    ProgressCallback, SamplingConfig, conditioning, decode_latents, generate_latents, image_generators,
)

__all__ = ["RegionalConfig", "generate_regional", "slot_prompts", "slot_coefficients", "merged_slots"]

MAX_REGION_TOKENS = 512  # Flux's max_sequence_length


@dataclass
class RegionalConfig(SamplingConfig):
    """Knobs of RPG regional generation: :class:`SamplingConfig`'s (steps 30, guidance 7, seed,
    images, output type, tiled decode) and

    Attributes:
        base_ratio: overrides ``scene.base_ratio`` when not ``None`` (default ``None``): the
            weight of the base prompt in every region, 0..1 (RPG's examples: 0.3-0.5).
        region_tokens: SD3 and Flux only: T5 tokens of each region's prompt slot; ``None`` (default)
            encodes each region prompt at its own length (cheapest), a number pads or cuts every region
            slot to it, and SD3's CLIP part to its full 77 (the plain pipeline's encoding at its
            ``max_sequence_length``: 256 SD3, 512 Flux).
    """

    base_ratio: float | None = None
    region_tokens: int | None = None

    def check(self) -> None:
        super().check()
        value = self.base_ratio
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or not 0 <= value <= 1):
            raise ValueError(f"base_ratio must be None or lie in [0, 1], got {value!r}")
        tokens = self.region_tokens
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)
                                   or not 1 <= tokens <= MAX_REGION_TOKENS):
            raise ValueError(f"region_tokens must be None or a whole number in [1, {MAX_REGION_TOKENS}], got {tokens!r}")


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
                  control: ControlInput | None = None) -> tuple[Backbone, float, tuple[int, int]]:
    """Reject bad arguments; return the backbone, the base ratio to use and the latent ``(height, width)``."""
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a scenecraft Scene, got {type(scene).__name__}")
    check_pipeline(pipe, FAMILIES)
    adapter = backbone(pipe)
    config.check()
    if adapter.is_mmdit and control is not None:
        raise ValueError(f"ControlNet guidance runs on SD 1.x/2.x and SDXL pipelines; this one is {adapter.name}")
    if not adapter.is_mmdit and config.region_tokens is not None:
        raise ValueError(f"region_tokens sets the T5 tokens of SD3 and Flux region slots; {adapter.name} encodes "
                         f"prompts in 77-token CLIP chunks, so leave it None")
    if control is not None:
        check_control(control, scene, config.num_images)
    base_ratio = scene.base_ratio if config.base_ratio is None else config.base_ratio
    if not isinstance(base_ratio, (int, float)) or not math.isfinite(base_ratio) or not 0 <= base_ratio <= 1:
        raise ValueError(f"base_ratio must lie in [0, 1], got {base_ratio!r}")
    return adapter, float(base_ratio), adapter.latent_size(scene.height, scene.width)


def merged_slots(prompts: list[str], negatives: list[str],
                 coefficients: np.ndarray) -> tuple[list[str], list[str], np.ndarray]:
    """Slots with the same prompt and negative merged into the first of them, their weights summed (an MMDiT's
    slot text evolves with the image tokens it sees, so two slots of one text would be one slot, at twice the
    cost); a region that repeats the base prompt joins the base slot."""
    kept: dict[tuple[str, str], int] = {}
    rows: list[np.ndarray] = []
    for prompt, negative, row in zip(prompts, negatives, coefficients, strict=True):
        index = kept.setdefault((prompt, negative), len(rows))
        if index == len(rows):
            rows.append(row.copy())
        else:
            rows[index] = rows[index] + row
    pairs = list(kept)
    return [p for p, _ in pairs], [n for _, n in pairs], np.stack(rows)


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
    """Generate ``scene`` with RPG's regional attention on a diffusers SD/SDXL/SD3/Flux pipeline.

    On a UNet (SD 1.x/2.x, SDXL) each region's pixels attend to its prompt in every cross-attention layer;
    on an MMDiT (SD3, Flux) the regions are a mask on the joint attention
    (:mod:`~scenecraft.generation.joint_attention`).

    Args:
        pipe: a ``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``, ``StableDiffusion3Pipeline`` or
            ``FluxPipeline`` (see ``load_pipeline``).
        scene: the scene; its regions may be split cells, boxes or masks.
        config: the knobs (see :class:`RegionalConfig`); defaults when ``None``.
        on_step: called as ``on_step(done, total)`` after every denoising step (progress bars).
        control: a ControlNet and its control image at the scene's size (default ``None``: none). Its
            cross-attention is made regional too, like the UNet's; a scene without regions gives
            diffusers' ``StableDiffusion(XL)ControlNetPipeline``'s images. SD 1.x/2.x and SDXL only.
    """
    config = config or RegionalConfig()
    adapter, base_ratio, latent_hw = _check_inputs(pipe, scene, config, control)
    seed = resolve_seed(config.seed, config.num_images)
    generators = image_generators(seed, config.num_images)
    if adapter.is_mmdit:
        images = _generate_mmdit(adapter, scene, config, base_ratio, latent_hw, generators, on_step)
    else:
        images = _generate_unet(pipe, scene, config, base_ratio, latent_hw, generators, on_step, control)
    settings = asdict(config) | {"seed": seed, "base_ratio": base_ratio, "scheduler": type(pipe.scheduler).__name__}
    return GenerationResult(images=list(images), seed=seed, scene=scene, method="regional", settings=settings,
                            seeds=[seed + i for i in range(config.num_images)])


def _generate_unet(pipe, scene: Scene, config: RegionalConfig, base_ratio: float, latent_hw: tuple[int, int],
                   generators: list, on_step: ProgressCallback | None, control: ControlInput | None):
    """RPG on a UNet: one text slot per prompt, the regional processor on every cross-attention layer."""
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
    return decode_latents(pipe, latents, config.output_type, tiled=config.tiled_decode, generators=generators)


def _generate_mmdit(adapter: Backbone, scene: Scene, config: RegionalConfig, base_ratio: float,
                    latent_hw: tuple[int, int], generators: list, on_step: ProgressCallback | None):
    """RPG's regions on SD3/Flux: one text slot per distinct prompt, a mask on the joint attention."""
    pipe, family = adapter.pipe, adapter.family
    guided = family == "sd3" and config.guidance_scale > 1
    grid = (latent_hw[0] // adapter.patch_size, latent_hw[1] // adapter.patch_size)
    prompts, negatives = slot_prompts(scene)
    if family == "flux":  # guidance-distilled: no negative prompts
        negatives = [""] * len(prompts)
    prompts, negatives, coefficients = merged_slots(prompts, negatives, slot_coefficients(scene, base_ratio, *grid))
    slots = encode_mmdit_slots(pipe, family, prompts, negatives, guided=guided, region_tokens=config.region_tokens,
                               device=pipe._execution_device)
    run = partial(denoise_mmdit, adapter, slots, num_inference_steps=config.num_inference_steps,
                  guidance_scale=config.guidance_scale, generators=generators, height=scene.height,
                  width=scene.width, on_step=on_step)
    if len(slots.spans) == 1:  # nothing regional: the plain pipeline on the base prompt
        latents = run()
    else:
        layout = JointSlotLayout(slots.spans, coefficients, text_first=family == "flux")
        processor = RegionalFluxAttnProcessor(layout) if family == "flux" else RegionalJointAttnProcessor(layout)
        with installed_joint_attention_processors(pipe.transformer, processor):
            latents = run()
    return decode_mmdit(pipe, family, latents, latent_hw, config.output_type, tiled=config.tiled_decode)
