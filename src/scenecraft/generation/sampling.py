"""The sampling core every method shares: latents, a classifier-free-guidance denoiser, a step loop
with hooks, and decoding, built from the diffusers pipeline's own pieces.

The shape follows k-diffusion: the loop takes any denoiser callable, and a method changes what it
needs through two hooks instead of copying the loop.

- ``before_step(i, t, latents) -> latents | None``: runs before the UNet call of step ``i``
  (LMD's gradient guidance moves the latents here).
- ``after_step(i, t, latents) -> latents | None``: runs after ``scheduler.step`` (LMD's latent
  composition and MultiDiffusion's fusion replace latents here).

Hooks that must reach a method without changing its entry point (masked latent blending when an
edit is re-rendered, recording a trajectory) are installed for a ``with`` block by
:func:`step_hooks`: every *image pass* run inside the block (a loop whose latents are the picture's,
not LMD's per-box passes) runs them around the method's own hooks, and they are gone after the block,
even on error. They are per thread and per context (a :class:`~contextvars.ContextVar`), never global.

Everything matches ``pipe(...)`` operation for operation (noise from ``pipe.prepare_latents``, the
scheduler's ``set_timesteps``/``scale_model_input``/``step`` with ``pipe.prepare_extra_step_kwargs``,
``[uncond, cond]`` batching, guidance rescale, SDXL's pooled embedding and time ids, the VAE's
scaling and ``pipe.image_processor.postprocess``), so a call without hooks gives the plain pipeline's
images bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .backbones import check_pipeline, pipeline_family
from .result import MAX_SEED, check_common_settings

if TYPE_CHECKING:
    from .control import ControlInput

__all__ = [
    "SamplingConfig", "TextConditioning", "CFGDenoiser", "StepHook", "ProgressCallback", "OUTPUT_TYPES",
    "image_generators", "prepare_latents", "prepare_timesteps", "sample", "decode_latents", "encode_latents",
    "sdxl_time_ids", "pipeline_family", "check_pipeline", "step_hooks",
]

StepHook = Callable[[int, torch.Tensor, torch.Tensor], "torch.Tensor | None"]
ProgressCallback = Callable[[int, int], None]
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
#: Hooks installed by :func:`step_hooks`, innermost last: ``(before_step, after_step)`` pairs.
_SCOPED_HOOKS: ContextVar[tuple[tuple[StepHook | None, StepHook | None], ...]] = ContextVar(
    "scenecraft_step_hooks", default=())


@dataclass
class SamplingConfig:
    """The knobs every method shares; each method's config extends this one.

    Attributes:
        num_inference_steps: denoising steps (default 30).
        guidance_scale: classifier-free guidance scale (default 7.0; <= 1 disables guidance).
        seed: random seed; ``None`` draws one, which the result records (default ``None``). Image
            ``i`` of a call uses ``seed + i``, so it can be regenerated alone.
        num_images: images per call, each from its own noise (default 1).
        output_type: ``"pil"`` (default), ``"np"``, ``"pt"`` or ``"latent"``, as diffusers takes.
        tiled_decode: decode the latents with the VAE in tiles (default ``False``): less memory at
            large sizes, at the cost of faint seams.
    """

    num_inference_steps: int = 30
    guidance_scale: float = 7.0
    seed: int | None = None
    num_images: int = 1
    output_type: str = "pil"
    tiled_decode: bool = False

    def check(self) -> None:
        """Reject bad values with a sentence naming the field."""
        check_common_settings(self.num_inference_steps, self.guidance_scale, self.num_images, self.seed)
        if self.seed is not None and self.seed + self.num_images - 1 > MAX_SEED:
            raise ValueError(f"seed + num_images - 1 must stay <= {MAX_SEED} (image i uses seed + i), got seed {self.seed}")
        if self.output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {self.output_type!r}")


@dataclass
class TextConditioning:
    """The UNet's text inputs for a batch of ``B`` latents.

    Attributes:
        cond: ``(B, L, D)`` prompt embeddings.
        uncond: ``(B, L, D)`` negative-prompt embeddings (used when guidance is on).
        pooled, negative_pooled: SDXL's ``(B, P)`` pooled embeddings (else ``None``).
        time_ids: SDXL's ``(B, 6)`` micro-conditioning (else ``None``).
    """

    cond: torch.Tensor
    uncond: torch.Tensor
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.cond.shape[0]

    def repeat(self, times: int) -> TextConditioning:
        """Each entry repeated ``times`` along the batch (``[a, b] -> [a, a, b, b]``, as diffusers does)."""
        def rep(x):
            return None if x is None else x.repeat_interleave(times, dim=0)

        return TextConditioning(rep(self.cond), rep(self.uncond), rep(self.pooled), rep(self.negative_pooled),
                                rep(self.time_ids))

    def unet_inputs(self, guided: bool) -> tuple[torch.Tensor, dict | None]:
        """``(encoder_hidden_states, added_cond_kwargs)``: ``[uncond, cond]`` when ``guided``."""
        embeds = torch.cat([self.uncond, self.cond]) if guided else self.cond
        if self.pooled is None:
            return embeds, None
        pooled = torch.cat([self.negative_pooled, self.pooled]) if guided else self.pooled
        time_ids = torch.cat([self.time_ids, self.time_ids]) if guided else self.time_ids
        return embeds, {"text_embeds": pooled, "time_ids": time_ids}

    def cond_only(self) -> tuple[torch.Tensor, dict | None]:
        """The conditional half alone (what gradient guidance runs the UNet on)."""
        return self.unet_inputs(guided=False)


def sdxl_time_ids(height: int, width: int, batch_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """SDXL's micro-conditioning ``(original size, crop top-left, target size)`` with no crop, as the pipeline's default."""
    row = torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype)
    return row.to(device).repeat(batch_size, 1)


@dataclass
class CFGDenoiser:
    """``denoise(latents, t) -> noise prediction`` with classifier-free guidance, as ``pipe(...)`` computes it.

    Attributes:
        unet: the pipeline's UNet.
        scheduler: its scheduler (for ``scale_model_input``).
        text: the batch's text conditioning.
        guidance_scale: CFG scale; guidance runs when it is > 1 and the UNet has no guidance embedding.
        guidance_rescale: rescale of the guided prediction (0 = off; Lin et al. 2023, 0.7 for v-prediction).
        cross_attention_kwargs: passed to the UNet (e.g. ``{"gligen": ...}``), or a callable
            ``(step index) -> kwargs`` for kwargs that change over the steps.
        timestep_cond: guidance embedding of UNets with ``time_cond_proj_dim`` (LCM), else ``None``.
        control: a ControlNet and its image (see :mod:`~scenecraft.generation.control`), whose residuals
            the UNet adds to its skip connections; ``None`` (default): no control. It must be made for
            ``unet`` (checked).
        total_steps: the run's number of steps, over which ``control``'s guidance window is measured;
            needed with ``control`` (default ``None``).
    """

    unet: torch.nn.Module
    scheduler: Any
    text: TextConditioning
    guidance_scale: float
    guidance_rescale: float = 0.0
    cross_attention_kwargs: dict | Callable[[int], dict | None] | None = None
    timestep_cond: torch.Tensor | None = None
    control: ControlInput | None = None
    total_steps: int | None = None
    step_index: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.control is None:
            return
        if self.total_steps is None:
            raise ValueError("total_steps must be given with control (its guidance window is a share of the steps)")
        self.control.check_fits(self.unet)

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None

    def attention_kwargs(self) -> dict | None:
        kwargs = self.cross_attention_kwargs
        return kwargs(self.step_index) if callable(kwargs) else kwargs

    def control_residuals(self, model_input: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor,
                          added: dict | None) -> dict:
        """The UNet's ControlNet kwargs for this step; ``{}`` without control or outside its window."""
        if self.control is None:
            return {}
        residuals = self.control.residuals(model_input, t, embeds, added, self.step_index, self.total_steps)
        if residuals is None:
            return {}
        return {"down_block_additional_residuals": residuals[0], "mid_block_additional_residual": residuals[1]}

    def __call__(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        model_input = torch.cat([latents] * 2) if self.guided else latents
        model_input = self.scheduler.scale_model_input(model_input, t)
        embeds, added = self.text.unet_inputs(self.guided)
        noise = self.unet(model_input, t, encoder_hidden_states=embeds, timestep_cond=self.timestep_cond,
                          cross_attention_kwargs=self.attention_kwargs(), added_cond_kwargs=added,
                          **self.control_residuals(model_input, t, embeds, added), return_dict=False)[0]
        if not self.guided:
            return noise
        noise_uncond, noise_text = noise.chunk(2)
        guided = noise_uncond + self.guidance_scale * (noise_text - noise_uncond)
        if self.guidance_rescale > 0:
            from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

            guided = rescale_noise_cfg(guided, noise_text, guidance_rescale=self.guidance_rescale)
        return guided


def image_generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded ``seed + i`` (the same noise on every device)."""
    return [torch.Generator(device="cpu").manual_seed(seed + i) for i in range(count)]


def prepare_latents(pipe, generators: Sequence[torch.Generator], latent_height: int, latent_width: int,
                    dtype: torch.dtype) -> torch.Tensor:
    """Initial noise for ``len(generators)`` images through the pipeline's own ``prepare_latents``."""
    scale = pipe.vae_scale_factor
    return pipe.prepare_latents(len(generators), pipe.unet.config.in_channels, latent_height * scale,
                                latent_width * scale, dtype, pipe._execution_device, list(generators), None)


def prepare_timesteps(scheduler, num_inference_steps: int, device: torch.device) -> torch.Tensor:
    """Set the scheduler's timesteps for a fresh run (as ``pipe(...)`` does) and return them."""
    scheduler.set_timesteps(num_inference_steps, device=device)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    return scheduler.timesteps


def sample(
    scheduler,
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    timesteps: Sequence[torch.Tensor],
    *,
    extra_step_kwargs: dict | None = None,
    before_step: StepHook | None = None,
    after_step: StepHook | None = None,
    on_step: ProgressCallback | None = None,
    image_pass: bool = True,
) -> torch.Tensor:
    """Run the denoising loop: ``before_step``, ``denoise``, ``scheduler.step``, ``after_step``, progress.

    A hook returns new latents or ``None`` (keep them). ``denoise`` may carry a ``step_index``
    attribute, which the loop keeps current (for kwargs that change over the steps). When
    ``image_pass`` (default ``True``) the hooks of :func:`step_hooks` run too: their ``before_step``
    before the method's, their ``after_step`` after it; ``False`` is for loops whose latents are not
    the picture's (LMD's per-box passes).
    """
    scoped = _SCOPED_HOOKS.get() if image_pass else ()
    befores = [hook for hook, _ in scoped] + [before_step]
    afters = [after_step] + [hook for _, hook in scoped]
    total = len(timesteps)
    for index, t in enumerate(timesteps):
        latents = _hooked(befores, index, t, latents)
        if hasattr(denoise, "step_index"):
            denoise.step_index = index
        with torch.no_grad():
            noise = denoise(latents, t)
            latents = scheduler.step(noise, t, latents, **(extra_step_kwargs or {}), return_dict=False)[0]
        latents = _hooked(afters, index, t, latents)
        if on_step is not None:
            on_step(index + 1, total)
    return latents


def _hooked(hooks: Sequence[StepHook | None], index: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    for hook in hooks:
        if hook is not None:
            changed = hook(index, t, latents)
            latents = latents if changed is None else changed
    return latents


@contextmanager
def step_hooks(*, before_step: StepHook | None = None, after_step: StepHook | None = None) -> Iterator[None]:
    """Run ``before_step`` / ``after_step`` in every image pass of :func:`sample` inside the ``with`` block.

    Nested blocks' hooks run in the order they were installed, outer first (so an inner ``after_step``
    sees what the outer one returned). They are removed when the block ends, even on error, and other
    threads never see them.
    """
    token = _SCOPED_HOOKS.set(_SCOPED_HOOKS.get() + ((before_step, after_step),))
    try:
        yield
    finally:
        _SCOPED_HOOKS.reset(token)


@contextmanager
def _vae_tiling(vae, enabled: bool) -> Iterator[None]:
    was_tiling = getattr(vae, "use_tiling", False)
    if enabled:
        vae.enable_tiling()
    try:
        yield
    finally:
        if enabled and not was_tiling:
            vae.disable_tiling()


def _needs_upcast(pipe) -> bool:
    """An fp16 SDXL VAE that asks to run in fp32 (``force_upcast``), as diffusers' SDXL pipelines upcast it."""
    vae = pipe.vae
    return vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False) and pipeline_family(pipe) == "sdxl"


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor, output_type: str = "pil", *, tiled: bool = False,
                   generators: Sequence[torch.Generator] | None = None, wrap: int = 0):
    """Latents to images as ``pipe(...)`` decodes them (SDXL's fp16 upcast and latent mean/std included).

    ``wrap`` (default 0) latent columns of each edge are decoded beside the other edge and cropped
    away after, so a circular panorama's seam decodes like its middle.
    """
    if output_type == "latent":
        return latents
    if wrap:
        latents = torch.cat([latents[..., -wrap:], latents, latents[..., :wrap]], dim=-1)
    vae = pipe.vae
    upcast = _needs_upcast(pipe)
    if upcast:
        pipe.upcast_vae()
        latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
    try:
        latents = _unscale(vae, latents)
        with _vae_tiling(vae, tiled):
            if pipeline_family(pipe) == "sdxl":
                image = vae.decode(latents, return_dict=False)[0]
            else:
                image = vae.decode(latents, return_dict=False, generator=_one_or_list(generators))[0]
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    if wrap:
        image = image[..., wrap * pipe.vae_scale_factor : image.shape[-1] - wrap * pipe.vae_scale_factor]
    return pipe.image_processor.postprocess(image, output_type=output_type, do_denormalize=[True] * image.shape[0])


@torch.no_grad()
def encode_latents(pipe, images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` images in [-1, 1] to the latents the UNet sees: the inverse of :func:`decode_latents`.

    Deterministic (the mean of the VAE's latent distribution, no sample drawn); the VAE's scaling factor
    and SDXL's latent mean/std where set; an fp16 SDXL VAE that asks for it is upcast for the call.
    """
    vae = pipe.vae
    upcast = _needs_upcast(pipe)
    if upcast:
        pipe.upcast_vae()
    try:
        dtype = next(iter(vae.encoder.parameters())).dtype
        latents = vae.encode(images.to(device=vae.device, dtype=dtype)).latent_dist.mean
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    stats = latent_mean_std(vae, latents)
    if stats is not None:
        return (latents - stats[0]) * vae.config.scaling_factor / stats[1]
    return latents * vae.config.scaling_factor


def latent_mean_std(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The VAE's per-channel latent mean and std (SDXL-family VAEs that set them) as ``(1, C, 1, 1)``
    tensors on ``like``'s device and dtype; ``None`` for VAEs that only scale."""
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        return None
    shape = (1, like.shape[1], 1, 1)
    return (torch.tensor(mean).view(shape).to(like.device, like.dtype),
            torch.tensor(std).view(shape).to(like.device, like.dtype))


def _unscale(vae, latents: torch.Tensor) -> torch.Tensor:
    stats = latent_mean_std(vae, latents)
    if stats is not None:
        return latents * stats[1] / vae.config.scaling_factor + stats[0]
    return latents / vae.config.scaling_factor


def _one_or_list(generators: Sequence[torch.Generator] | None):
    if not generators:
        return None
    return generators[0] if len(generators) == 1 else list(generators)


def noise_scale(scheduler, t: torch.Tensor) -> float:
    """``sqrt(1 - alpha_bar_t)``: the noise's share of the latents at timestep ``t`` (classifier guidance's step scale)."""
    return math.sqrt(1 - float(scheduler.alphas_cumprod[int(t)]))


def conditioning(pipe, cond: torch.Tensor, uncond: torch.Tensor, pooled: torch.Tensor | None,
                 negative_pooled: torch.Tensor | None, height: int, width: int) -> TextConditioning:
    """A batch-of-one :class:`TextConditioning` from encoded prompts (SDXL's time ids added for ``height x width``)."""
    time_ids = None
    if pooled is not None:
        time_ids = sdxl_time_ids(height, width, 1, cond.dtype, cond.device)
    return TextConditioning(cond, uncond, pooled, negative_pooled, time_ids)


def guidance_embedding(pipe, guidance_scale: float, batch_size: int, dtype: torch.dtype) -> torch.Tensor | None:
    """The guidance-scale embedding of UNets that take one (``time_cond_proj_dim``), else ``None``."""
    dim = pipe.unet.config.time_cond_proj_dim
    if dim is None:
        return None
    scale = torch.tensor(guidance_scale - 1).repeat(batch_size)
    return pipe.get_guidance_scale_embedding(scale, embedding_dim=dim).to(device=pipe._execution_device, dtype=dtype)


@torch.no_grad()
def generate_latents(
    pipe,
    text: TextConditioning,
    config: SamplingConfig,
    generators: Sequence[torch.Generator],
    latent_size: tuple[int, int],
    *,
    latents: torch.Tensor | None = None,
    timesteps: Sequence[torch.Tensor] | None = None,
    cross_attention_kwargs: dict | Callable[[int], dict | None] | None = None,
    before_step: StepHook | None = None,
    after_step: StepHook | None = None,
    on_step: ProgressCallback | None = None,
    control: ControlInput | None = None,
    image_pass: bool = True,
) -> torch.Tensor:
    """Denoise a batch from its noise (``pipe.prepare_latents`` of ``generators`` unless ``latents`` is given).

    ``text`` must have one entry per latent. ``timesteps`` defaults to the scheduler's for
    ``config.num_inference_steps`` (set afresh). ``control`` (default ``None``) guides the UNet with a
    ControlNet, its guidance window measured over ``timesteps``. ``image_pass`` (default ``True``):
    whether :func:`step_hooks`' hooks run (see :func:`sample`).
    """
    device = pipe._execution_device
    if timesteps is None:
        timesteps = prepare_timesteps(pipe.scheduler, config.num_inference_steps, device)
    if latents is None:
        latents = prepare_latents(pipe, generators, *latent_size, text.cond.dtype)
    denoise = CFGDenoiser(pipe.unet, pipe.scheduler, text, config.guidance_scale,
                          cross_attention_kwargs=cross_attention_kwargs,
                          timestep_cond=guidance_embedding(pipe, config.guidance_scale, len(latents), latents.dtype),
                          control=control, total_steps=len(timesteps))
    extra = pipe.prepare_extra_step_kwargs(_one_or_list(generators), 0.0)
    with torch.enable_grad():  # hooks may take gradients; the loop itself runs without
        return sample(pipe.scheduler, denoise, latents, timesteps, extra_step_kwargs=extra,
                      before_step=before_step, after_step=after_step, on_step=on_step, image_pass=image_pass)
