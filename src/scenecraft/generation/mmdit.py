"""The sampling core for MMDiT backbones (SD3, Flux): prompt slots, flow-matching denoisers, decoding.

What ``StableDiffusion3Pipeline.__call__`` and ``FluxPipeline.__call__`` compute, operation for
operation, from their public pieces (``encode_prompt``, ``prepare_latents``, the scheduler with
``retrieve_timesteps``/``calculate_shift``, the VAE and ``image_processor``), on the shared step loop
:func:`~scenecraft.generation.sampling.sample`, so that a call with one prompt gives the plain
pipeline's image bit for bit and a regional call differs from it only in the joint attention's mask.

Prompt slots: the base slot is encoded as the pipeline encodes a prompt (SD3: CLIP-L + CLIP-G, 77
tokens, then T5, 256; Flux: T5, 512; the pooled embedding comes from the base prompt). Region slots
hold only their prompt's own tokens (``region_tokens=None``: no padding; CLIP is causal, so its
tokens are the padded encoding's; T5's differ slightly from a padded encoding) or a fixed number of T5
tokens, the full pipeline encoding with ``region_tokens`` equal to its ``max_sequence_length``. Short
slots keep regional attention cheap: 16 regions of 20 tokens add 320 tokens to Flux's 4096 + 512.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .backbones import Backbone
from .sampling import ProgressCallback, _vae_tiling, sample

__all__ = ["MMDiTSlots", "encode_mmdit_slots", "mmdit_latents", "mmdit_timesteps", "SD3Denoiser", "FluxDenoiser",
           "mmdit_denoiser", "decode_mmdit", "denoise_mmdit", "max_sequence_length"]

_SEQUENCE_LENGTH = {"sd3": 256, "flux": 512}  # the pipelines' default max_sequence_length


def max_sequence_length(family: str) -> int:
    """The T5 tokens of a prompt as the plain pipeline encodes it by default (SD3 256, Flux 512)."""
    return _SEQUENCE_LENGTH[family]


@dataclass
class MMDiTSlots:
    """The text of all slots along one sequence: ``cond``/``uncond`` ``(1, T, D)`` (``uncond`` is ``None`` without
    classifier-free guidance), the base prompt's pooled embeddings, and each slot's ``(start, end)``."""

    cond: torch.Tensor
    uncond: torch.Tensor | None
    pooled: torch.Tensor
    negative_pooled: torch.Tensor | None
    spans: list[tuple[int, int]]


def _token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=True, verbose=False).input_ids)


def _ids(tokenizer, text: str, length: int) -> torch.Tensor:
    return tokenizer(text, padding="max_length", max_length=length, truncation=True, add_special_tokens=True,
                     return_tensors="pt").input_ids


def _check_t5_length(pipe, family: str, text: str, limit: int) -> None:
    tokenizer = pipe.tokenizer_2 if family == "flux" else getattr(pipe, "tokenizer_3", None)
    if tokenizer is None or getattr(pipe, "text_encoder_3" if family == "sd3" else "text_encoder_2", None) is None:
        return
    count = _token_count(tokenizer, text)
    if count > limit:
        raise ValueError(f"the prompt {text[:60]!r}... is {count} T5 tokens; {family} encodes at most {limit} "
                         f"(max_sequence_length): shorten it or split it into regions")


class _SlotEncoder:
    """Encodes region slots of one pipeline at chosen lengths (SD3: CLIP part + T5 part; Flux: T5)."""

    def __init__(self, pipe, family: str, device: torch.device) -> None:
        self.pipe, self.family, self.device = pipe, family, device
        self.dtype = pipe.text_encoder.dtype if pipe.text_encoder is not None else pipe.transformer.dtype

    def t5_encoder(self):
        return self.pipe.text_encoder_2 if self.family == "flux" else getattr(self.pipe, "text_encoder_3", None)

    def t5_tokenizer(self):
        return self.pipe.tokenizer_2 if self.family == "flux" else getattr(self.pipe, "tokenizer_3", None)

    def lengths(self, texts: Sequence[str], region_tokens: int | None) -> tuple[int, int]:
        """``(clip tokens, t5 tokens)`` of a slot holding ``texts`` (its prompt and negative)."""
        clip = 0
        if self.family == "sd3":
            full = self.pipe.tokenizer_max_length
            clip = full if region_tokens is not None else min(full, max(_token_count(self.pipe.tokenizer, t)
                                                                        for t in texts))
        if self.t5_encoder() is None:
            return clip, 0
        t5 = region_tokens if region_tokens is not None else max(_token_count(self.t5_tokenizer(), t) for t in texts)
        return clip, t5

    @torch.no_grad()
    def encode(self, text: str, clip_length: int, t5_length: int) -> torch.Tensor:
        parts = []
        if clip_length:
            parts.append(self._sd3_clip(text, clip_length))
        if t5_length:
            ids = _ids(self.t5_tokenizer(), text, t5_length).to(self.device)
            encoder = self.t5_encoder()
            parts.append(encoder(ids)[0].to(dtype=encoder.dtype, device=self.device))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def _sd3_clip(self, text: str, length: int) -> torch.Tensor:
        pipe = self.pipe
        pieces = []
        for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
            states = encoder(_ids(tokenizer, text, length).to(self.device), output_hidden_states=True).hidden_states
            pieces.append(states[-2].to(dtype=pipe.text_encoder.dtype, device=self.device))
        clip = torch.cat(pieces, dim=-1)
        width = pipe.transformer.config.joint_attention_dim
        return F.pad(clip, (0, width - clip.shape[-1])).to(self.dtype)


def _base_slot(pipe, family: str, prompt: str, negative: str, guided: bool, device: torch.device):
    length = max_sequence_length(family)
    _check_t5_length(pipe, family, prompt, length)
    if family == "flux":
        embeds, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=device, num_images_per_prompt=1,
                                               max_sequence_length=length)
        return embeds, None, pooled, None
    _check_t5_length(pipe, family, negative, length)
    embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
        prompt=prompt, prompt_2=None, prompt_3=None, device=device, num_images_per_prompt=1,
        do_classifier_free_guidance=guided, negative_prompt=negative, max_sequence_length=length)
    return embeds, negative_embeds, pooled, negative_pooled


@torch.no_grad()  # as the pipelines encode: grad mode picks other kernels, whose last bits differ
def encode_mmdit_slots(pipe, family: str, prompts: Sequence[str], negatives: Sequence[str], *, guided: bool,
                       region_tokens: int | None, device: torch.device) -> MMDiTSlots:
    """Encode slot 0 as the pipeline encodes a prompt, the others as region slots (see the module docstring).

    ``guided`` (SD3's classifier-free guidance) also encodes each slot's negative at the slot's length.
    """
    cond, uncond, pooled, negative_pooled = _base_slot(pipe, family, prompts[0], negatives[0], guided, device)
    cond_parts, uncond_parts = [cond], [uncond] if guided else []
    spans = [(0, cond.shape[1])]
    encoder = _SlotEncoder(pipe, family, device)
    limit = max_sequence_length(family)
    for prompt, negative in zip(prompts[1:], negatives[1:], strict=True):
        _check_t5_length(pipe, family, prompt, limit)
        texts = (prompt, negative) if guided else (prompt,)
        clip_length, t5_length = encoder.lengths(texts, region_tokens)
        part = encoder.encode(prompt, clip_length, t5_length)
        cond_parts.append(part)
        if guided:
            uncond_parts.append(encoder.encode(negative, clip_length, t5_length))
        spans.append((spans[-1][1], spans[-1][1] + part.shape[1]))
    return MMDiTSlots(torch.cat(cond_parts, dim=1), torch.cat(uncond_parts, dim=1) if guided else None, pooled,
                      negative_pooled, spans)


def mmdit_latents(pipe, family: str, generators: Sequence[torch.Generator], height: int, width: int,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Initial noise through the pipeline's own ``prepare_latents``: ``(latents, image ids)``; Flux's latents are
    packed ``(B, tokens, 4C)`` with their ids, SD3's ``(B, C, h, w)`` with ``None``."""
    device = pipe._execution_device
    channels = pipe.transformer.config.in_channels
    if family == "flux":
        return pipe.prepare_latents(len(generators), channels // 4, height, width, dtype, device, list(generators))
    return pipe.prepare_latents(len(generators), channels, height, width, dtype, device, list(generators)), None


def mmdit_timesteps(pipe, family: str, num_inference_steps: int, latents: torch.Tensor) -> torch.Tensor:
    """The scheduler's timesteps as the plain pipeline sets them (Flux: its sigmas and resolution shift ``mu``)."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

    scheduler, device = pipe.scheduler, pipe._execution_device
    config = scheduler.config
    kwargs = {}
    if family == "flux":
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        kwargs["sigmas"] = None if config.get("use_flow_sigmas", False) else sigmas
        kwargs["mu"] = calculate_shift(latents.shape[1], config.get("base_image_seq_len", 256),
                                       config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                                       config.get("max_shift", 1.15))
    elif config.get("use_dynamic_shifting", None):
        patch = pipe.transformer.config.patch_size
        tokens = (latents.shape[2] // patch) * (latents.shape[3] // patch)
        kwargs["mu"] = calculate_shift(tokens, config.get("base_image_seq_len", 256),
                                       config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                                       config.get("max_shift", 1.16))
    timesteps, _ = retrieve_timesteps(scheduler, num_inference_steps, device, **kwargs)
    if family == "flux":
        scheduler.set_begin_index(0)
    return timesteps


@dataclass
class SD3Denoiser:
    """``denoise(latents, t)`` of SD3 with classifier-free guidance (on when ``guidance_scale > 1``), as its pipeline."""

    transformer: torch.nn.Module
    embeds: torch.Tensor  # (B, T, D) cond, or (2B, T, D) [uncond, cond] when guided
    pooled: torch.Tensor
    guidance_scale: float

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1

    def __call__(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        model_input = torch.cat([latents] * 2) if self.guided else latents
        noise = self.transformer(hidden_states=model_input, timestep=t.expand(model_input.shape[0]),
                                 encoder_hidden_states=self.embeds, pooled_projections=self.pooled,
                                 return_dict=False)[0]
        if not self.guided:
            return noise
        noise_uncond, noise_text = noise.chunk(2)
        return noise_uncond + self.guidance_scale * (noise_text - noise_uncond)


@dataclass
class FluxDenoiser:
    """``denoise(latents, t)`` of Flux: guidance-distilled (the scale is an input of Flux-dev, unused by schnell),
    no classifier-free guidance batch, as its pipeline."""

    transformer: torch.nn.Module
    embeds: torch.Tensor
    pooled: torch.Tensor
    text_ids: torch.Tensor
    image_ids: torch.Tensor
    guidance_scale: float

    def __call__(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full([1], self.guidance_scale, device=latents.device, dtype=torch.float32)
            guidance = guidance.expand(latents.shape[0])
        timestep = t.expand(latents.shape[0]).to(latents.dtype)
        return self.transformer(hidden_states=latents, timestep=timestep / 1000, guidance=guidance,
                                pooled_projections=self.pooled, encoder_hidden_states=self.embeds,
                                txt_ids=self.text_ids, img_ids=self.image_ids, return_dict=False)[0]


def _batched(x: torch.Tensor, count: int) -> torch.Tensor:
    return x.repeat_interleave(count, dim=0)


def mmdit_denoiser(pipe, family: str, slots: MMDiTSlots, guidance_scale: float, count: int,
                   image_ids: torch.Tensor | None):
    """The denoiser of a batch of ``count`` images that all use ``slots``."""
    if family == "flux":
        text_ids = torch.zeros(slots.cond.shape[1], 3, device=slots.cond.device, dtype=slots.cond.dtype)
        return FluxDenoiser(pipe.transformer, _batched(slots.cond, count), _batched(slots.pooled, count), text_ids,
                            image_ids, guidance_scale)
    guided = guidance_scale > 1
    embeds, pooled = _batched(slots.cond, count), _batched(slots.pooled, count)
    if guided:
        embeds = torch.cat([_batched(slots.uncond, count), embeds])
        pooled = torch.cat([_batched(slots.negative_pooled, count), pooled])
    return SD3Denoiser(pipe.transformer, embeds, pooled, guidance_scale)


def unpack_flux_latents(latents: torch.Tensor, latent_height: int, latent_width: int) -> torch.Tensor:
    """Flux's packed ``(B, tokens, 4C)`` latents back to ``(B, C, h, w)`` (each token a 2x2 latent patch)."""
    batch, _, channels = latents.shape
    grid = latents.view(batch, latent_height // 2, latent_width // 2, channels // 4, 2, 2)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels // 4, latent_height, latent_width)


@torch.no_grad()
def decode_mmdit(pipe, family: str, latents: torch.Tensor, latent_size: tuple[int, int], output_type: str = "pil",
                 *, tiled: bool = False):
    """Latents to images as the SD3/Flux pipelines decode them (the VAE's scaling and shift factors);
    ``output_type="latent"`` returns ``(B, C, h, w)`` latents (Flux's unpacked)."""
    if family == "flux":
        latents = unpack_flux_latents(latents, *latent_size)
    if output_type == "latent":
        return latents
    vae = pipe.vae
    latents = latents / vae.config.scaling_factor + vae.config.shift_factor
    with _vae_tiling(vae, tiled):
        image = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type=output_type)


def denoise_mmdit(adapter: Backbone, slots: MMDiTSlots, *, num_inference_steps: int, guidance_scale: float,
                  generators: Sequence[torch.Generator], height: int, width: int,
                  on_step: ProgressCallback | None = None) -> torch.Tensor:
    """Denoise ``len(generators)`` images of ``height x width`` from their noise with ``slots``' text."""
    pipe, family = adapter.pipe, adapter.family
    latents, image_ids = mmdit_latents(pipe, family, generators, height, width, slots.cond.dtype)
    timesteps = mmdit_timesteps(pipe, family, num_inference_steps, latents)
    denoise = mmdit_denoiser(pipe, family, slots, guidance_scale, len(generators), image_ids)
    return sample(pipe.scheduler, denoise, latents, timesteps, on_step=on_step)
