"""LMD: layout-grounded generation (Lian et al., "LLM-grounded Diffusion", TMLR 2024), and LMD+ with GLIGEN.

For each box, one single-object generation ("<background> with <phrase>") whose cross-attention
energy pulls the phrase into its box; the object's mask comes from its attention; the per-box
latents are composed onto the background noise (largest mask first) and frozen for the first
``frozen_step_ratio`` of the final pass, which is guided on every box with each box's per-box
attention transferred. All passes run on the sampling core; per-box passes are batched.

Defaults are the reference code's (``generation/lmd.py`` and ``lmd_plus.py`` in
TonyLianLong/LLM-groundedDiffusion), with two documented departures: energies are normalised
per head (see :mod:`.guidance`), and every scheduler takes the gradient step
``latents -= sqrt(1 - alpha_bar_t) * grad`` that the reference takes with its default DDIM
scheduler (it switches to ``sigma_t ** 2`` for schedulers with ``sigmas``, which is a ~200x larger
step at the first steps of SD's schedule).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..scene import Box, Scene
from .guidance import (
    AttentionCapture, EnoughAttention, box_mask, default_guidance_layers, default_mask_layers, phrase_energy,
    resolve_layers, transfer_energy,
)
from .latents import latent_size
from .prompts import PromptEncoder
from .result import GenerationResult, resolve_seed
from .sampling import (
    ProgressCallback, SamplingConfig, TextConditioning, check_pipeline, conditioning, decode_latents, generate_latents,
    image_generators, noise_scale, pipeline_family, prepare_latents, prepare_timesteps,
)

__all__ = ["LayoutConfig", "LayoutPlusConfig", "generate_layout", "generate_layout_plus", "BoxItem", "BoxCache",
           "BoxPass", "scene_boxes", "centered_box", "LMD_BOX_NEGATIVE_PROMPT", "LMD_NEGATIVE_PROMPT"]

LMD_BOX_NEGATIVE_PROMPT = ("artifacts, blurry, smooth texture, bad quality, distortions, unrealistic, distorted image, "
                           "bad proportions, duplicate, two, many, group, occlusion, occluded, side, border, collate")
LMD_NEGATIVE_PROMPT = ("artifacts, blurry, smooth texture, bad quality, distortions, unrealistic, distorted image, "
                       "bad proportions, duplicate")
MASK_SOURCES = ("attention", "box", "sam")


@dataclass
class LayoutConfig(SamplingConfig):
    """Knobs of LMD; defaults are the reference code's (paper values). Besides :class:`SamplingConfig`'s:

    Attributes:
        num_inference_steps: denoising steps (50).
        guidance_scale: classifier-free guidance (7.5).
        frozen_step_ratio: share of the final pass's first steps in which the composed foreground is
            frozen to the per-box latents (0.5).
        loss_scale: energy multiplier in the gradient step (5).
        loss_threshold: no gradient step while the energy is below this (5.0; per-head normalised).
        max_iter: gradient iterations at each step index, for a 50-step schedule (4 x5, 3 x5, 2 x10, 1 x10).
        max_index_step: per-box passes are guided for this many steps of 50 (30).
        final_max_index_step: the final pass is guided for this many steps of 50 (30).
        schedule_steps: the step count the three schedules above are written for (50); at another
            ``num_inference_steps`` they are rescaled proportionally.
        fg_top_p, bg_top_p: shares of the strongest attention inside / outside a box the energy
            averages (0.2, 0.2).
        fg_weight, bg_weight: weights of the inside and outside terms (1.0, 4.0).
        ref_ca_loss_weight: weight of the attention transfer from the per-box passes (2.0; 0 = off).
        fg_blending_ratio: how far each box's initial noise departs from the background's (0.01).
        center_boxes: per-box passes draw the object in a box of the same size centred horizontally,
            its bottom at ``1 - floor_padding`` (True), then move it to its place.
        floor_padding: see ``center_boxes`` (0.2).
        align_with_boxes: move each per-box object so its mask's centre is its box's centre (True).
        mask_source: ``"attention"`` (threshold of the object's smoothed attention), ``"box"`` (the box
            itself) or ``"sam"`` (SAM prompted at the attention peak; needs ``sam_model``) ("attention").
        mask_threshold: threshold of the min-max normalised attention (0.25).
        mask_sigma: gaussian smoothing of the attention map, in attention cells (1.5).
        mask_aggregation_start: attention for the mask is averaged from this step of 50 (10).
        sam_model: SAM folder or hub id for ``mask_source="sam"`` (None).
        box_negative_prompt: appended to each box's negative prompt (LMD's single-object list).
        extra_negative_prompt: appended to the scene's negative prompt in the final pass (LMD's list).
        guidance_layers: cross-attention layers the energy reads, by name or prefix such as
            ``"up_blocks.1"`` (None: the mid block and ``up_blocks.1``, LMD's).
        mask_layers: layers the mask is read from, by name or prefix (None: ``down_blocks.2.attentions.1``,
            LMD's, else the last down-block cross-attention).
        fast: trade accuracy for time (False): per-box passes stop at the last step the composition
            needs, ``frozen_step_ratio`` becomes at most ``fast_frozen_step_ratio``, and both passes are
            guided for the first ``fast_guided_steps`` of 50 steps with one iteration each.
        fast_frozen_step_ratio: the frozen share in fast mode, at most (0.2); the mask's attention is then
            averaged over the per-box steps that run (from ``mask_aggregation_start`` or earlier).
        fast_guided_steps: guided steps of 50 in fast mode (5).
        rescale_resized: with a :class:`BoxCache`, a box whose region (the same id, prompt and negative
            prompt) the cache holds drawn at another size takes that drawing scaled to its new size (the same
            object, bigger or smaller) instead of a new one (True). Needs per-box passes that run every step
            (not ``fast``, unless ``mask_source="sam"``); otherwise the box is drawn again.
        rescaled_hold_ratio: share of the final pass's first steps in which a rescaled box's latents are held,
            over its mask's bounding box (the object and the background around it) (0.8). Held only for the
            frozen steps, a shrunk object is grown back (or doubled) by the free steps towards the size the
            model would draw; held longer, it keeps its new size and the last steps blend it in.
    """

    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    frozen_step_ratio: float = 0.5
    loss_scale: float = 5.0
    loss_threshold: float = 5.0
    max_iter: tuple[int, ...] = (4,) * 5 + (3,) * 5 + (2,) * 10 + (1,) * 10
    max_index_step: int = 30
    final_max_index_step: int = 30
    schedule_steps: int = 50
    fg_top_p: float = 0.2
    bg_top_p: float = 0.2
    fg_weight: float = 1.0
    bg_weight: float = 4.0
    ref_ca_loss_weight: float = 2.0
    fg_blending_ratio: float = 0.01
    center_boxes: bool = True
    floor_padding: float = 0.2
    align_with_boxes: bool = True
    mask_source: str = "attention"
    mask_threshold: float = 0.25
    mask_sigma: float = 1.5
    mask_aggregation_start: int = 10
    sam_model: str | None = None
    box_negative_prompt: str = LMD_BOX_NEGATIVE_PROMPT
    extra_negative_prompt: str = LMD_NEGATIVE_PROMPT
    guidance_layers: tuple[str, ...] | None = None
    mask_layers: tuple[str, ...] | None = None
    fast: bool = False
    fast_frozen_step_ratio: float = 0.2
    fast_guided_steps: int = 5
    rescale_resized: bool = True
    rescaled_hold_ratio: float = 0.8

    def check(self) -> None:
        super().check()
        for name in ("frozen_step_ratio", "fast_frozen_step_ratio", "fg_top_p", "bg_top_p", "fg_blending_ratio",
                     "mask_threshold", "floor_padding", "rescaled_hold_ratio"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        for name in ("loss_scale", "loss_threshold", "fg_weight", "bg_weight", "ref_ca_loss_weight", "mask_sigma"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if (not isinstance(self.max_iter, (tuple, list)) or not self.max_iter
                or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in self.max_iter)):
            raise ValueError(f"max_iter must be a non-empty sequence of integers >= 0, got {self.max_iter!r}")
        for name in ("center_boxes", "align_with_boxes", "fast", "rescale_resized"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("guidance_layers", "mask_layers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, str) or not all(isinstance(v, str) for v in value)):
                raise ValueError(f"{name} must be a list of layer names or prefixes, got {value!r}")
        if self.mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source must be one of {', '.join(MASK_SOURCES)}, got {self.mask_source!r}")
        if self.mask_source == "sam" and not self.sam_model:
            raise ValueError('mask_source="sam" needs sam_model (a SAM folder or hub id, e.g. facebook/sam-vit-base)')


@dataclass
class LayoutPlusConfig(LayoutConfig):
    """LMD+'s knobs: :class:`LayoutConfig` with the reference's ``lmd_plus.py`` defaults (GLIGEN places
    each per-box object, so per-box passes are not energy-guided, not centred nor moved), and

    Attributes:
        gligen_scheduled_sampling_beta: share of the first steps in which GLIGEN's gated attention
            sees the boxes, in the per-box and the final passes (0.4).
    """

    max_index_step: int = 0
    center_boxes: bool = False
    align_with_boxes: bool = False
    fg_blending_ratio: float = 0.1
    gligen_scheduled_sampling_beta: float = 0.4

    def check(self) -> None:
        super().check()
        if not 0 <= self.gligen_scheduled_sampling_beta <= 1:
            raise ValueError(f"gligen_scheduled_sampling_beta must lie in [0, 1], got {self.gligen_scheduled_sampling_beta!r}")


@dataclass(frozen=True)
class BoxItem:
    """One object instance: its phrase, its ``[x0, y0, x1, y1]`` box and negative prompt."""

    phrase: str
    box: tuple[float, float, float, float]
    negative_prompt: str


def scene_boxes(scene: Scene) -> list[BoxItem]:
    """Every region as a box (a split cell is its rectangle, a mask its bounding box)."""
    items = []
    for index, region in enumerate(scene.regions):
        negative = region.negative_prompt if region.negative_prompt is not None else scene.negative_prompt
        items.append(BoxItem(region.prompt, _region_box(scene, index), negative))
    return items


def _region_box(scene: Scene, index: int) -> tuple[float, float, float, float]:
    """A box region's box; a cell's or mask's bounding box on a 64x64 grid."""
    geometry = scene.regions[index].geometry
    if isinstance(geometry, Box):
        return (geometry.x0, geometry.y0, geometry.x1, geometry.y1)
    weights, _ = scene.weights(64, 64)
    rows, cols = torch.nonzero(torch.as_tensor(weights[index]) > 0, as_tuple=True)
    if len(rows) == 0:
        raise ValueError(f"region {index} ({scene.regions[index].prompt!r}) covers no part of the canvas")
    return (cols.min().item() / 64, rows.min().item() / 64, (cols.max().item() + 1) / 64, (rows.max().item() + 1) / 64)


def _drawn_boxes(config: LayoutConfig, items: list[BoxItem]) -> list[tuple[float, float, float, float]]:
    """Where each per-box pass draws its object: its box, or (``center_boxes``) the box centred."""
    return [centered_box(item.box, config.floor_padding) if config.center_boxes else tuple(item.box) for item in items]


def centered_box(box: Sequence[float], floor_padding: float) -> tuple[float, float, float, float]:
    """LMD's per-box placement: the same size, centred horizontally, bottom at ``1 - floor_padding``.

    The size is rounded to 1e-9, so a box moved by adding an offset to its sides (which can change its
    width in the last bit) is drawn in the same box, and reuses its pass from a :class:`BoxCache`.
    """
    width, height = round(box[2] - box[0], 9), round(box[3] - box[1], 9)
    bottom = 1 - floor_padding
    return (0.5 - width / 2, max(bottom - height, 0.0), 0.5 + width / 2, bottom)


# ----------------------------------------------------------------------------------------------
# Schedules


@dataclass(frozen=True)
class _Schedule:
    steps: int
    frozen: int
    box_guided: int
    final_guided: int
    box_steps: int  # how far the per-box passes run
    aggregation_start: int
    iterations: tuple[int, ...]


def _schedule(config: LayoutConfig) -> _Schedule:
    steps = config.num_inference_steps
    scale = steps / config.schedule_steps

    def rescaled(value: int) -> int:
        return min(steps, round(value * scale))

    iterations = tuple(config.max_iter[min(int(i / scale), len(config.max_iter) - 1)] for i in range(steps))
    frozen_ratio = config.frozen_step_ratio
    if config.fast:
        frozen_ratio = min(frozen_ratio, config.fast_frozen_step_ratio)
    frozen = int(steps * frozen_ratio)
    box_guided, final_guided = rescaled(config.max_index_step), rescaled(config.final_max_index_step)
    if config.fast:
        guided = rescaled(config.fast_guided_steps)
        box_guided, final_guided = min(box_guided, guided), min(final_guided, guided)
        iterations = tuple(min(n, 1) for n in iterations)
    aggregation = rescaled(config.mask_aggregation_start)
    if config.fast:  # the mask's attention is averaged over the steps the per-box passes still run
        aggregation = min(aggregation, max(frozen - 1, 0))
    # Fast mode stops the per-box passes once the composition has its frozen steps and the mask its attention;
    # SAM needs the finished object.
    needs_full = not config.fast or config.mask_source == "sam"
    box_steps = steps if needs_full else min(max(frozen, aggregation + 1, 1), steps)
    return _Schedule(steps, frozen, box_guided, final_guided, box_steps, min(aggregation, box_steps - 1), iterations)


# ----------------------------------------------------------------------------------------------
# Prompts and their tokens


def _token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, verbose=False).input_ids


def _window(tokenizer) -> int:
    return tokenizer.model_max_length - 2


def _find(haystack: Sequence[int], needle: Sequence[int]) -> int:
    """Index of the first occurrence of ``needle`` in ``haystack``, else -1 (token ids, not strings)."""
    for start in range(len(haystack) - len(needle) + 1):
        if list(haystack[start:start + len(needle)]) == list(needle):
            return start
    return -1


def _box_prompt(tokenizer, background: str | None, phrase: str) -> tuple[str, list[int]]:
    """LMD's single-object prompt ``"<background> with <phrase>"`` and the phrase's token positions.

    Positions count the BOS token and stay inside the encoder's window (long phrases are cut there).
    """
    window = _window(tokenizer)
    phrase_ids = _token_ids(tokenizer, phrase)
    if background:
        prefix = f"{background} with"
        prefix_ids = _token_ids(tokenizer, prefix)
        if len(prefix_ids) + len(phrase_ids) <= window:
            return f"{prefix} {phrase}", list(range(1 + len(prefix_ids), 1 + len(prefix_ids) + len(phrase_ids)))
    return phrase, list(range(1, 1 + min(len(phrase_ids), window)))


@dataclass
class _Phrase:
    text: str
    tokens: list[int]  # positions in the final pass's text sequence
    boxes: list[int]  # indices into the scene's box items


def _final_slots(encoder: PromptEncoder, prompt: str, negative: str, phrases: list[str]):
    """The final pass's text: the prompt, plus a slot listing the phrases the prompt does not contain.

    Returns the encoded slots and each phrase's token positions (found among the prompt's token ids,
    else inside the extra slot, where they are placed by construction).
    """
    tokenizer = encoder.pipe.tokenizer
    chunk_ids = _prompt_chunk_ids(encoder, prompt)
    found, missing = {}, []
    for phrase in phrases:
        positions = _locate(tokenizer, chunk_ids, phrase, encoder.chunk_length)
        if positions:
            found[phrase] = positions
        else:
            missing.append(phrase)
    extra_texts, extra_positions = _extra_slots(tokenizer, missing)
    slots = encoder.encode_slots([prompt, *extra_texts], [negative, *[""] * len(extra_texts)])
    for (start, _), positions in zip(slots.spans[1:], extra_positions):
        found.update({phrase: [start + p for p in where] for phrase, where in positions.items()})
    return slots, found


def _prompt_chunk_ids(encoder: PromptEncoder, prompt: str) -> list[list[int]]:
    from .prompts import split_into_chunks

    tokenizer = encoder.pipe.tokenizer
    return [_token_ids(tokenizer, chunk) for chunk in (split_into_chunks(tokenizer, prompt) if prompt else [""])]


def _locate(tokenizer, chunk_ids: list[list[int]], phrase: str, chunk_length: int) -> list[int]:
    """Positions of ``phrase`` (or of it without its article) among the prompt's chunks, else ``[]``."""
    words = phrase.split()
    candidates = [phrase] + ([" ".join(words[1:])] if len(words) > 1 and words[0] in ("a", "an", "the", "one") else [])
    for candidate in candidates:
        needle = _token_ids(tokenizer, candidate)
        for chunk, ids in enumerate(chunk_ids):
            start = _find(ids, needle) if needle else -1
            if start >= 0:
                return [chunk * chunk_length + 1 + start + k for k in range(len(needle))]
    return []


def _extra_slots(tokenizer, phrases: list[str]) -> tuple[list[str], list[dict[str, list[int]]]]:
    """``", "``-joined phrases packed into window-sized slots, with each phrase's positions in its slot."""
    window = _window(tokenizer)
    texts, positions = [], []
    current, where, used = [], {}, 0
    for phrase in phrases:
        ids = _token_ids(tokenizer, phrase)[:window]
        separator = 1 if current else 0  # the comma
        if current and used + separator + len(ids) > window:
            texts.append(", ".join(current))
            positions.append(where)
            current, where, used, separator = [], {}, 0, 0
        where[phrase] = list(range(1 + used + separator, 1 + used + separator + len(ids)))
        current.append(tokenizer.decode(ids) if len(ids) < len(_token_ids(tokenizer, phrase)) else phrase)
        used += separator + len(ids)
    if current:
        texts.append(", ".join(current))
        positions.append(where)
    return texts, positions


def _phrases(items: list[BoxItem], positions: dict[str, list[int]]) -> list[_Phrase]:
    """Boxes grouped by phrase (LMD guides a phrase's token to the union of its boxes)."""
    grouped: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        grouped.setdefault(item.phrase, []).append(index)
    return [_Phrase(text, positions[text], boxes) for text, boxes in grouped.items()]


def _join_negative(*parts: str) -> str:
    return ", ".join(part for part in parts if part)


# ----------------------------------------------------------------------------------------------
# Guidance


@dataclass
class _Guide:
    """Gradient guidance of a batch before each step: LMD's ``latent_backward_guidance``."""

    pipe: object
    capture: AttentionCapture
    layers: Sequence[str]
    text: TextConditioning
    energy: Callable[[dict, torch.Tensor, int], torch.Tensor]  # (maps, sample indices, step) -> (n,) energies
    guided_steps: int
    iterations: tuple[int, ...]
    loss_scale: float
    loss_threshold: float
    cross_attention_kwargs: Callable[[int, torch.Tensor], dict | None] | None = None
    last_loss: torch.Tensor | None = None

    def __call__(self, index: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        if self.last_loss is None:
            self.last_loss = torch.full((len(latents),), math.inf)
        if index >= self.guided_steps:
            return latents
        latents = latents.clone()
        for _ in range(self.iterations[index]):
            active = torch.nonzero(self.last_loss > self.loss_threshold).flatten()
            if len(active) == 0:
                break
            losses, grad = self._gradient(latents[active], t, index, active)
            latents[active] = latents[active] - grad * noise_scale(self.pipe.scheduler, t)
            self.last_loss[active] = losses.detach().float().cpu()
        return latents

    def _gradient(self, latents: torch.Tensor, t: torch.Tensor, index: int, samples: torch.Tensor):
        x = latents.detach().requires_grad_(True)
        embeds, added = self.text.cond_only()
        embeds = embeds[samples]
        added = None if added is None else {key: value[samples] for key, value in added.items()}
        kwargs = self.cross_attention_kwargs(index, samples) if self.cross_attention_kwargs else None
        wanted = set(self.layers)
        keep = lambda layer, probs: probs if layer in wanted else None  # noqa: E731
        with torch.enable_grad(), self.capture.capturing(keep, until=self.layers) as maps:
            try:
                self.pipe.unet(self.pipe.scheduler.scale_model_input(x, t), t, encoder_hidden_states=embeds,
                               added_cond_kwargs=added, cross_attention_kwargs=kwargs, return_dict=False)
            except EnoughAttention:
                pass
            losses = self.energy(maps, samples, index)
            grad = torch.autograd.grad(losses.sum() * self.loss_scale, x)[0]
        return losses, grad


def _layer_mask(capture: AttentionCapture, probs: torch.Tensor, box: Sequence[float]) -> torch.Tensor:
    height, width = capture.grid(probs.shape[-2])
    return box_mask(box, height, width, device=probs.device, dtype=probs.dtype)


def _box_energy(capture: AttentionCapture, config: LayoutConfig, tokens: list[list[int]], boxes: list[Sequence[float]]):
    """Per-box passes: sample ``i``'s phrase tokens into its (per-box) box, averaged over layers."""
    knobs = dict(fg_top_p=config.fg_top_p, bg_top_p=config.bg_top_p, fg_weight=config.fg_weight,
                 bg_weight=config.bg_weight)

    def energy(maps: dict, samples: torch.Tensor, index: int) -> torch.Tensor:
        losses = []
        for row, sample in enumerate(samples.tolist()):
            per_layer = [phrase_energy(probs[row], tokens[sample], _layer_mask(capture, probs, boxes[sample]), **knobs)
                         for probs in maps.values()]
            losses.append(torch.stack(per_layer).mean())
        return torch.stack(losses)

    return energy


def _final_energy(capture: AttentionCapture, config: LayoutConfig, items: list[BoxItem], phrases: list[_Phrase],
                  references: list[list[dict]] | None):
    """The final pass: every phrase into the union of its boxes, plus each box's attention transfer."""
    knobs = dict(fg_top_p=config.fg_top_p, bg_top_p=config.bg_top_p, fg_weight=config.fg_weight,
                 bg_weight=config.bg_weight)

    def energy(maps: dict, samples: torch.Tensor, index: int) -> torch.Tensor:
        total = 0
        for probs in maps.values():
            for phrase in phrases:
                union = torch.stack([_layer_mask(capture, probs, items[b].box) for b in phrase.boxes]).amax(dim=0)
                total = total + phrase_energy(probs[0], phrase.tokens, union, **knobs)
        total = total / (len(phrases) * len(maps))
        if references is not None and config.ref_ca_loss_weight > 0:
            total = total + _transfer(capture, config, maps, items, phrases, references, index)
        return total.reshape(1)

    return energy


def _transfer(capture, config, maps, items, phrases, references, index) -> torch.Tensor:
    total = 0
    for layer, probs in maps.items():
        for phrase in phrases:
            saved = [references[b][index][layer] for b in phrase.boxes if index < len(references[b])]
            if not saved:
                continue
            word = phrase.tokens[-1]
            part = sum(transfer_energy(probs[0], word, ref, _layer_mask(capture, probs, items[b].box))
                       for b, ref in zip(phrase.boxes, saved))
            total = total + config.ref_ca_loss_weight * part / len(saved)
    return total / (len(phrases) * len(maps))


# ----------------------------------------------------------------------------------------------
# Latents: blend, shift, compose


def _blend(background: torch.Tensor, foreground: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """LMD's ``blend_latents``: inside the box, the background noise mixed with a little independent noise."""
    mixed = background * math.sqrt(1 - ratio) + foreground * math.sqrt(ratio)
    return background * (1 - mask) + mixed * mask


def _shift(tensor: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """Move the last two (spatial) dims by a fraction of their size, filling with zeros."""
    height, width = tensor.shape[-2:]
    x, y = round(dx * width), round(dy * height)
    out = torch.zeros_like(tensor)
    if abs(x) >= width or abs(y) >= height:
        return out
    src_y, dst_y = (slice(0, height - y), slice(y, height)) if y >= 0 else (slice(-y, height), slice(0, height + y))
    src_x, dst_x = (slice(0, width - x), slice(x, width)) if x >= 0 else (slice(-x, width), slice(0, width + x))
    out[..., dst_y, dst_x] = tensor[..., src_y, src_x]
    return out


def _mask_center(mask: torch.Tensor) -> tuple[float, float]:
    """Centre of mass of a 2-D mask, in fractions of its size (cell centres at (i + 0.5) / n)."""
    height, width = mask.shape
    total = mask.sum().clamp(min=1e-6)
    x = (mask.sum(dim=0) * (torch.arange(width, dtype=mask.dtype) + 0.5)).sum() / total / width
    y = (mask.sum(dim=1) * (torch.arange(height, dtype=mask.dtype) + 0.5)).sum() / total / height
    return float(x), float(y)


def _box_center(box: Sequence[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _bounding_box_mask(mask: torch.Tensor) -> torch.Tensor:
    """LMD's ``binary_mask_to_box_mask``: the mask's bounding box grown by one cell."""
    rows, cols = torch.nonzero(mask, as_tuple=True)
    out = torch.zeros_like(mask)
    if len(rows):
        out[max(int(rows.min()) - 1, 0): int(rows.max()) + 2, max(int(cols.min()) - 1, 0): int(cols.max()) + 2] = 1
    return out


def compose_latents(background: torch.Tensor, trajectories: list[torch.Tensor], masks: list[torch.Tensor]):
    """LMD's ``compose_latents``: per-box latents over the background noise, largest mask first.

    ``trajectories[k]`` is ``(steps + 1, C, H, W)`` (noise first); ``masks[k]`` is ``(H, W)``. Returns
    the composed ``(steps + 1, C, H, W)`` latents and the ``(H, W)`` index map (0 background,
    ``k + 1`` box ``k``). At the noise, each box brings its bounding box's noise, so the blended
    initial noise travels with its object.
    """
    steps = trajectories[0].shape[0] if trajectories else 1
    composed = torch.zeros((steps, *background.shape), dtype=background.dtype, device=background.device)
    composed[0] = background
    owner = torch.zeros(background.shape[-2:], dtype=torch.long, device=background.device)
    order = sorted(range(len(masks)), key=lambda k: -float(masks[k].sum()))
    for k in order:
        box = _bounding_box_mask(masks[k]).to(background)
        composed[0] = composed[0] * (1 - box) + trajectories[k][0] * box
    for k in order:
        mask = masks[k].to(background)
        owner = torch.where(masks[k].bool(), k + 1, owner)
        composed = composed * (1 - mask) + trajectories[k] * mask
    return composed, owner


# ----------------------------------------------------------------------------------------------
# Masks from attention


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable gaussian blur of a 2-D map (edge values repeated), radius 3 sigma."""
    if sigma <= 0:
        return image
    radius = max(int(math.ceil(3 * sigma)), 1)
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(image[None, None], (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return F.conv2d(x, kernel.view(1, 1, -1, 1))[0, 0]


def attention_mask(attention: torch.Tensor, latent: tuple[int, int], threshold: float, sigma: float) -> torch.Tensor:
    """Object mask on the latent grid from a ``(h, w)`` attention map: smoothed, min-max normalised, thresholded."""
    smooth = _gaussian_blur(attention.float(), sigma)
    span = smooth.max() - smooth.min()
    normalised = (smooth - smooth.min()) / span if span > 0 else torch.zeros_like(smooth)
    coarse = (normalised > threshold).float()
    return F.interpolate(coarse[None, None], size=latent, mode="nearest")[0, 0] > 0.5


def _mean_attention(capture: AttentionCapture, recorded: list[dict], layers: Sequence[str], sample: int,
                    latent: tuple[int, int]) -> torch.Tensor:
    """The word token's attention for the mask: mean over recorded steps and heads, layers averaged at latent size."""
    maps = []
    for layer in layers:
        stacked = torch.stack([step[layer][sample] for step in recorded if layer in step]).float().mean(dim=(0, 1))
        grid = capture.grid(stacked.shape[-1])
        maps.append(F.interpolate(stacked.view(1, 1, *grid), size=latent, mode="bilinear", align_corners=False)[0, 0]
                    if len(layers) > 1 else stacked.view(*grid))
    return torch.stack(maps).mean(dim=0) if len(maps) > 1 else maps[0]


# ----------------------------------------------------------------------------------------------
# The two passes


@dataclass
class _Run:
    """What both passes of one image share."""

    pipe: object
    scene: Scene
    config: LayoutConfig
    schedule: _Schedule
    encoder: PromptEncoder
    capture: AttentionCapture
    guidance_layers: list[str]
    mask_layers: list[str]
    latent: tuple[int, int]
    gligen: bool = False
    on_step: ProgressCallback | None = None
    box_cache: BoxCache | None = None


@dataclass
class _BoxPasses:
    trajectories: list[torch.Tensor]  # per box: (steps + 1, C, H, W), where drawn or placed at its box
    masks: list[torch.Tensor]  # per box: (H, W) bool on the latent grid
    references: list[list[dict[str, torch.Tensor]]]  # per box, per step: layer -> (heads, pixels) word attention
    holds: list[torch.Tensor] | None = None  # per box: (H, W) bool, where the final pass takes its latents (masks)
    hold_steps: list[int | None] | None = None  # per box: for how many first steps (None: the frozen steps)


def _box_seed(seed: int, identity: Hashable) -> int:
    """Seed of a box's own noise (LMD: ``fg_seed_start + index``; here derived from the image's seed).

    ``identity`` is the region's (see :func:`_region_identities`): a whole number keeps the index formula,
    anything else is hashed (SHA-256, the same in every process).
    """
    if isinstance(identity, int) and not isinstance(identity, bool):
        return (seed * 1_000_003 + 7_919 * (identity + 1)) % 2**32
    digest = hashlib.sha256(f"{seed}\x00{identity!r}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


_INDEX_ID = re.compile(r"r([1-9][0-9]{0,8})")


def _region_identities(scene: Scene) -> list[Hashable]:
    """What each region's box seed is drawn from: its ``id``, so that the seed survives edits that add, remove
    or reorder regions; a scene's regions without one are named as ``Scene.with_ids`` names them.

    ``"rN"``, the name ``with_ids`` gives the ``N``-th region of a scene without ids, counts as the index
    ``N - 1``: a scene without ids draws every box from its index, as before ids existed, and its edited
    versions (whose regions carry those names) draw each kept region from the same seed. Other ids are hashed.
    """
    named = scene.with_ids() if hasattr(scene, "with_ids") else scene
    identities: list[Hashable] = []
    for index, region in enumerate(named.regions):
        identity = getattr(region, "id", None)
        match = _INDEX_ID.fullmatch(identity) if isinstance(identity, str) else None
        identities.append(index if identity is None else int(match.group(1)) - 1 if match else identity)
    return identities


def _stack_text(run: _Run, prompts: list[str], negatives: list[str]) -> TextConditioning:
    """One conditioning entry per prompt; shorter token sequences padded with empty windows."""
    encoded = [run.encoder.encode_slots([p], [n]) for p, n in zip(prompts, negatives)]
    length = max(e.cond.shape[1] for e in encoded)
    pad_cond, pad_uncond = run.encoder.encode_chunk("")[0], run.encoder.encode_chunk("", negative=True)[0]

    def padded(x, pad):
        return torch.cat([x] + [pad] * ((length - x.shape[1]) // pad.shape[1]), dim=1)

    texts = [conditioning(run.pipe, padded(e.cond, pad_cond), padded(e.uncond, pad_uncond), e.pooled, e.negative_pooled,
                          run.scene.height, run.scene.width) for e in encoded]
    return TextConditioning(*(None if getattr(texts[0], name) is None else torch.cat([getattr(t, name) for t in texts])
                              for name in ("cond", "uncond", "pooled", "negative_pooled", "time_ids")))


def _box_text(run: _Run, items: list[BoxItem]) -> TextConditioning:
    """The per-box passes' text: each box's ``"<background> with <phrase>"`` and negative prompt."""
    prompts = [_box_prompt(run.pipe.tokenizer, run.scene.background_prompt, item.phrase)[0] for item in items]
    return _stack_text(run, prompts, [_join_negative(item.negative_prompt, run.config.box_negative_prompt)
                                      for item in items])


def _text_rows(text: TextConditioning, rows: Sequence[int]) -> TextConditioning:
    index = torch.tensor(list(rows), dtype=torch.long)
    return TextConditioning(*(None if getattr(text, name) is None else getattr(text, name)[index.to(text.cond.device)]
                              for name in ("cond", "uncond", "pooled", "negative_pooled", "time_ids")))


def _gligen_kwargs(run: _Run, phrases: list[list[str]], boxes: list[list[Sequence[float]]], guided: bool):
    """``(step) -> kwargs`` for the denoiser and ``(step, samples) -> kwargs`` for guidance (GLIGEN's schedule)."""
    if not run.gligen:
        return None, None
    from .gligen import gligen_conditioning, scheduled_fuser_steps

    rows = [gligen_conditioning(run.pipe, p, b, batch_size=1) for p, b in zip(phrases, boxes)]
    cond = {key: torch.cat([row[key] for row in rows]) for key in rows[0]}
    uncond = cond | {"masks": torch.zeros_like(cond["masks"])}
    both = {key: torch.cat([uncond[key], cond[key]]) for key in cond} if guided else cond
    grounded = scheduled_fuser_steps(run.schedule.steps, run.config.gligen_scheduled_sampling_beta)

    def denoiser_kwargs(step: int):
        return {"gligen": both} if step < grounded else None

    def guidance_kwargs(step: int, samples: torch.Tensor):
        return {"gligen": {key: value[samples] for key, value in cond.items()}} if step < grounded else None

    return denoiser_kwargs, guidance_kwargs


def _box_passes(run: _Run, items: list[BoxItem], background: torch.Tensor, seed: int,
                rows: Sequence[int] | None = None) -> _BoxPasses:
    """Every box's single-object generation, batched; their trajectories, masks and attention, where drawn
    (:func:`_drawn_boxes`; :func:`_placed` moves them to their boxes).

    ``rows`` (default: all) picks the boxes to run; the others' prompts still set the padded text length.
    """
    config, schedule, tokenizer = run.config, run.schedule, run.pipe.tokenizer
    text = _box_text(run, items)
    if rows is not None:
        text, items = _text_rows(text, rows), [items[k] for k in rows]
    rows = range(len(items)) if rows is None else rows
    boxes = _drawn_boxes(config, items)
    tokens = [_box_prompt(tokenizer, run.scene.background_prompt, item.phrase)[1] for item in items]
    # Each box's own generator draws its noise, then any noise its scheduler steps take (ancestral samplers).
    identities = _region_identities(run.scene)
    generators = [image_generators(_box_seed(seed, identities[k]), 1)[0] for k in rows]
    own_noise = prepare_latents(run.pipe, generators, *run.latent, background.dtype)
    noise = torch.cat([_blend(background, own_noise[k:k + 1],
                              box_mask(box, *run.latent, device=background.device, dtype=background.dtype),
                              config.fg_blending_ratio) for k, box in enumerate(boxes)])
    denoiser_kwargs, guidance_kwargs = _gligen_kwargs(run, [[i.phrase] for i in items], [[b] for b in boxes],
                                                      config.guidance_scale > 1)
    guide = _Guide(run.pipe, run.capture, run.guidance_layers, text, _box_energy(run.capture, config, tokens, boxes),
                   schedule.box_guided, schedule.iterations, config.loss_scale, config.loss_threshold, guidance_kwargs)
    recorder = _Recorder(run, [t[-1] for t in tokens])
    trajectory = [noise]

    def before(index, t, latents):
        latents = guide(index, t, latents)
        recorder.start(index)
        return latents

    def after(index, t, latents):
        recorder.finish(index)
        trajectory.append(latents)

    timesteps = prepare_timesteps(run.pipe.scheduler, schedule.steps, run.pipe._execution_device)[:schedule.box_steps]
    final = generate_latents(run.pipe, text, config, generators, run.latent, latents=noise, timesteps=timesteps,
                             cross_attention_kwargs=denoiser_kwargs, before_step=before, after_step=after,
                             on_step=run.on_step, image_pass=False)
    stacked = torch.stack(trajectory)  # (steps + 1, K, C, H, W)
    masks = _masks(run, recorder, final, boxes)
    return _BoxPasses([stacked[:, k] for k in range(len(items))], masks, recorder.references)


class _Recorder:
    """Keeps each box's word-token attention from the main UNet calls: for the mask and the transfer."""

    def __init__(self, run: _Run, words: list[int]) -> None:
        self.run = run
        self.words = torch.tensor(words)
        self.for_mask: list[dict] = []
        self.references: list[list[dict]] = [[] for _ in words]

    def _layers(self, index: int) -> set[str]:
        schedule, config = self.run.schedule, self.run.config
        layers = set()
        if index >= schedule.aggregation_start and config.mask_source != "box":
            layers |= set(self.run.mask_layers)
        if index < schedule.final_guided and config.ref_ca_loss_weight > 0:
            layers |= set(self.run.guidance_layers)
        return layers

    def start(self, index: int) -> None:
        wanted = self._layers(index)
        if wanted:
            self.run.capture.start(lambda layer, probs: self._keep(layer, probs) if layer in wanted else None)

    def _keep(self, layer: str, probs: torch.Tensor) -> torch.Tensor:
        count = len(self.words)
        cond = probs[-count:]  # the conditional half of the CFG batch
        return cond[torch.arange(count), :, :, self.words.to(cond.device)].detach()

    def finish(self, index: int) -> None:
        maps = self.run.capture.stop() if self.run.capture.keep is not None else {}
        if not maps:
            return
        if index >= self.run.schedule.aggregation_start:
            self.for_mask.append({layer: maps[layer] for layer in self.run.mask_layers if layer in maps})
        if index < self.run.schedule.final_guided and self.run.config.ref_ca_loss_weight > 0:
            for k, reference in enumerate(self.references):
                reference.append({layer: maps[layer][k] for layer in self.run.guidance_layers if layer in maps})


def _masks(run: _Run, recorder: _Recorder, final: torch.Tensor, boxes: list[Sequence[float]]) -> list[torch.Tensor]:
    """Each box's object mask on the latent grid (``mask_source``); an empty mask falls back to the box."""
    config, device = run.config, final.device
    masks = []
    for k, box in enumerate(boxes):
        fallback = box_mask(box, *run.latent, device=device) > 0
        if config.mask_source == "box" or not recorder.for_mask:
            masks.append(fallback)
            continue
        attention = _mean_attention(run.capture, recorder.for_mask, run.mask_layers, k, run.latent)
        if config.mask_source == "sam":
            mask = _sam_mask(run, final[k:k + 1], attention)
        else:
            mask = attention_mask(attention, run.latent, config.mask_threshold, config.mask_sigma)
        masks.append(mask.to(device) if mask.any() else fallback)
    return masks


def _sam_mask(run: _Run, latents: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    from .sam import SamMaskRefiner

    image = decode_latents(run.pipe, latents, "pil")[0]
    refiner = SamMaskRefiner(run.config.sam_model, device=run.pipe._execution_device, gaussian_sigma=run.config.mask_sigma,
                             mask_threshold=run.config.mask_threshold)
    return torch.as_tensor(refiner.refine(image, attention.cpu().numpy(), run.latent))


def _placed(run: _Run, items: list[BoxItem], passes: _BoxPasses) -> _BoxPasses:
    """Move each per-box object from where it was drawn to its box (LMD's ``align_with_bboxes``); new tensors,
    so cached passes stay as they are."""
    trajectories, masks, references = list(passes.trajectories), list(passes.masks), list(passes.references)
    holds = list(passes.holds) if passes.holds is not None else list(masks)
    for k, (item, drawn) in enumerate(zip(items, _drawn_boxes(run.config, items))):
        source = _mask_center(masks[k].float().cpu()) if run.config.align_with_boxes else _box_center(drawn)
        target = _box_center(item.box)
        dx, dy = target[0] - source[0], target[1] - source[1]
        if dx == 0 and dy == 0:
            continue
        trajectories[k] = _shift(trajectories[k], dx, dy)
        masks[k] = _shift(masks[k].float(), dx, dy) > 0.5
        holds[k] = _shift(holds[k].float(), dx, dy) > 0.5
        references[k] = [{layer: _shift_map(run.capture, m, dx, dy) for layer, m in step.items()} for step in references[k]]
    return _BoxPasses(trajectories, masks, references, holds, passes.hold_steps)


def _shift_map(capture: AttentionCapture, attention: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """Shift a ``(heads, pixels)`` attention map on its layer's grid."""
    grid = capture.grid(attention.shape[-1])
    return _shift(attention.reshape(attention.shape[0], *grid), dx, dy).reshape(attention.shape)


def _scaled(tensor: torch.Tensor, centre: tuple[float, float], sx: float, sy: float,
            to: tuple[float, float] | None = None) -> torch.Tensor:
    """Scale the last two (spatial) dims by ``sx``, ``sy`` about ``centre`` (fractions), bilinearly, the centre
    landing on ``to`` (default: where it was); zeros where nothing maps."""
    shape, to = tensor.shape, centre if to is None else to
    x = tensor.reshape(1, -1, *shape[-2:]).float()
    (cx, cy), (tx, ty) = ((2 * a - 1, 2 * b - 1) for a, b in (centre, to))
    theta = torch.tensor([[[1 / sx, 0, cx - tx / sx], [0, 1 / sy, cy - ty / sy]]], device=x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).reshape(shape).to(tensor.dtype)


def _scaled_map(capture: AttentionCapture, attention: torch.Tensor, *args) -> torch.Tensor:
    """:func:`_scaled` on a ``(heads, pixels)`` attention map, on its layer's grid."""
    grid = capture.grid(attention.shape[-1])
    return _scaled(attention.reshape(attention.shape[0], *grid), *args).reshape(attention.shape)


def _rescaled_pass(run: _Run, source: BoxPass, old: Sequence[float], new: Sequence[float], background: torch.Tensor,
                   seed: int, identity: Hashable) -> BoxPass | None:
    """A per-box pass drawn in box ``old``, scaled to box ``new``: the same object at the new size.

    The finished object's latents and mask are scaled about the mask's centre, which moves as far as the box's
    centre does (nowhere, after the move to the box, with ``align_with_boxes``); the trajectory is those latents
    noised to every step's level with the noise a pass drawn in ``new`` would start from (as
    ``scheduler.add_noise`` does), so the final pass's frozen steps see a consistent sample. The final pass
    holds the mask's bounding box (grown by a cell) for ``rescaled_hold_ratio`` of its steps. ``None`` when the
    scaled mask is empty (the object shrank below one latent cell).
    """
    sx, sy = (new[2] - new[0]) / (old[2] - old[0]), (new[3] - new[1]) / (old[3] - old[1])
    centre = _mask_center(source.mask.float().cpu())
    (ox, oy), (nx, ny) = _box_center(old), _box_center(new)
    warp = (centre, sx, sy, (centre[0] + nx - ox, centre[1] + ny - oy))
    mask = _scaled(source.mask.float(), *warp) > 0.5
    if not mask.any():
        return None
    scheduler, steps = run.pipe.scheduler, run.schedule.steps
    generator = image_generators(_box_seed(seed, identity), 1)[0]
    own = prepare_latents(run.pipe, [generator], *run.latent, background.dtype)
    noise = _blend(background, own, box_mask(new, *run.latent, device=background.device, dtype=background.dtype),
                   run.config.fg_blending_ratio)
    clean = _scaled(source.trajectory[-1], *warp)[None]
    # A fresh copy, with no begin index: schedulers that keep one (DPM-Solver, Euler) noise every call to the
    # level of that index, whatever the timestep asked.
    noiser = type(scheduler).from_config(scheduler.config)
    noiser.set_timesteps(steps, device=run.pipe._execution_device)
    timesteps = noiser.timesteps
    unit = noise / noiser.init_noise_sigma
    levels = [noiser.add_noise(clean, unit, timesteps[i:i + 1]) for i in range(1, steps)]
    trajectory = torch.cat([noise, *levels, clean]).to(source.trajectory.dtype)
    references = [{layer: _scaled_map(run.capture, m, *warp) for layer, m in step.items()}
                  for step in source.references]
    hold = _bounding_box_mask(mask).bool().to(source.mask.device)
    return BoxPass(trajectory, mask.to(source.mask.device), references, hold,
                   int(steps * run.config.rescaled_hold_ratio))


def _final_pass(run: _Run, items: list[BoxItem], passes: _BoxPasses | None, background: torch.Tensor,
                generators: list[torch.Generator]) -> torch.Tensor:
    """The whole scene from the composed latents, the foreground frozen for the first steps, guided on every box."""
    config, schedule, scene = run.config, run.schedule, run.scene
    phrase_texts = list(dict.fromkeys(item.phrase for item in items))
    prompt = scene.base_prompt if scene.base_prompt is not None else scene.prompt
    slots, positions = _final_slots(run.encoder, prompt, _join_negative(scene.negative_prompt,
                                                                          config.extra_negative_prompt), phrase_texts)
    text = conditioning(run.pipe, slots.cond, slots.uncond, slots.pooled, slots.negative_pooled, scene.height, scene.width)
    phrases = _phrases(items, positions)
    holds = passes.masks if passes.holds is None else passes.holds
    composed, owner = compose_latents(background[0], passes.trajectories, holds)
    held_for = torch.zeros(owner.shape, dtype=torch.long, device=owner.device)  # steps each cell stays frozen
    for k, steps in enumerate(passes.hold_steps or [None] * len(holds)):
        held_for[owner == k + 1] = schedule.frozen if steps is None else steps
    references = passes.references if config.ref_ca_loss_weight > 0 else None
    denoiser_kwargs, guidance_kwargs = _gligen_kwargs(run, [[i.phrase for i in items]], [[i.box for i in items]],
                                                      config.guidance_scale > 1)
    guide = _Guide(run.pipe, run.capture, run.guidance_layers, text,
                   _final_energy(run.capture, config, items, phrases, references), schedule.final_guided,
                   schedule.iterations, config.loss_scale, config.loss_threshold, guidance_kwargs)

    def freeze(index, t, latents):
        frozen = (held_for > index).to(latents.dtype)
        if frozen.any():
            return composed[index + 1] * frozen + latents * (1 - frozen)
        return None

    return generate_latents(run.pipe, text, config, generators, run.latent, latents=composed[:1].clone(),
                            cross_attention_kwargs=denoiser_kwargs, before_step=guide, after_step=freeze,
                            on_step=run.on_step)


# ----------------------------------------------------------------------------------------------
# Per-box generations kept between calls (multi-round editing)


@dataclass(frozen=True)
class BoxPass:
    """One box's per-box generation, where it was drawn (before it is moved to its box).

    Attributes:
        trajectory: ``(steps + 1, C, H, W)`` latents, its noise first.
        mask: ``(H, W)`` bool object mask on the latent grid.
        references: per guided step, layer name -> ``(heads, pixels)`` attention of its phrase's word.
        hold: ``(H, W)`` bool: where the final pass takes this pass's latents, and ``hold_steps`` its first
            steps it does (``None``: ``mask``, for the config's frozen steps). A rescaled drawing holds its
            mask's bounding box, object and the background around it, so the final pass does not grow the
            object back to the size the model would draw.
        hold_steps: see ``hold`` (``None``: the config's frozen steps).
    """

    trajectory: torch.Tensor
    mask: torch.Tensor
    references: list[dict[str, torch.Tensor]]
    hold: torch.Tensor | None = None
    hold_steps: int | None = None


class BoxCache:
    """LMD's per-box generations kept for later calls: an edited scene reuses its unchanged boxes'.

    A box is reused when everything its pass depends on is the same: the model (class, path or object,
    dtype, device, scheduler and its config), every knob of the config but ``seed`` / ``num_images`` /
    ``output_type`` / ``tiled_decode``, the canvas size, the image's seed, the box's own seed (from
    its region's id, see ``_region_identities``), its prompt (with the scene's background
    prompt), negative prompt, the box it is drawn in (with ``center_boxes``, LMD's default, that is the box's
    size: a moved box reuses its pass, moved), and the padded length of the per-box text. Entries are the
    tensors the first call computed (on the pipeline's device), so a reused box is bit for bit the same. A
    box whose region the cache holds drawn at another size (everything else the same) takes that drawing
    rescaled when ``LayoutConfig.rescale_resized`` is set (see :func:`_rescaled_pass`); it counts as reused,
    and is kept under its own size, so drawing the same scene again gives the same picture. The least
    recently used entries go first once ``max_entries`` (default 32) are kept: an entry holds a box's latents
    at every step, about 3 MB for SD 1.5 at 512 px and 50 steps, 13 MB for SDXL at 1024 px.

    Attributes:
        hits, misses: boxes found (or rescaled) / computed over the cache's life (:meth:`counts` to read both).
        rescaled: boxes of ``hits`` that were a drawing at another size, rescaled.
    """

    def __init__(self, max_entries: int = 32) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a whole number >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple, BoxPass] = OrderedDict()
        self.drawn: dict[tuple, tuple] = {}  # a key without its box -> the key of the last pass drawn (not rescaled)
        self.hits = self.misses = self.rescaled = 0

    def __len__(self) -> int:
        return len(self.entries)

    def counts(self) -> tuple[int, int]:
        """``(hits, misses)`` so far."""
        return self.hits, self.misses

    def get(self, key: tuple) -> BoxPass | None:
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return entry

    def drawn_elsewhere(self, key: tuple) -> tuple[tuple, BoxPass] | None:
        """The last pass drawn for ``key``'s region in another box: ``(its key, the pass)``, or ``None``."""
        other = self.drawn.get(key[:-1])
        if other is None or other == key or other not in self.entries:
            return None
        return other, self.entries[other]

    def put(self, key: tuple, entry: BoxPass, *, rescaled: bool = False) -> None:
        """Keep ``entry`` under ``key``; ``rescaled``: it was made from another entry (the miss becomes a hit)."""
        self.entries[key] = entry
        self.entries.move_to_end(key)
        if rescaled:
            self.misses, self.hits, self.rescaled = self.misses - 1, self.hits + 1, self.rescaled + 1
        else:
            self.drawn[key[:-1]] = key
        while len(self.entries) > self.max_entries:
            old, _ = self.entries.popitem(last=False)
            if self.drawn.get(old[:-1]) == old:
                del self.drawn[old[:-1]]


def _model_key(pipe) -> tuple:
    scheduler = pipe.scheduler
    return (type(pipe).__name__, getattr(pipe, "name_or_path", None) or f"object {id(pipe)}", str(pipe.unet.dtype),
            str(pipe.unet.device), type(scheduler).__name__,
            json.dumps(dict(scheduler.config), sort_keys=True, default=str))


def _config_key(config: LayoutConfig) -> str:
    knobs = {k: v for k, v in asdict(config).items() if k not in ("seed", "num_images", "output_type", "tiled_decode")}
    return json.dumps(knobs | {"class": type(config).__name__}, sort_keys=True, default=str)


def _box_keys(run: _Run, items: list[BoxItem], seed: int, text_length: int) -> list[tuple]:
    """Each box's cache key; the drawn box comes last (:meth:`BoxCache.drawn_elsewhere` drops it)."""
    shared = (_model_key(run.pipe), _config_key(run.config), run.scene.width, run.scene.height, seed, text_length)
    identities = _region_identities(run.scene)
    return [shared + (_box_seed(seed, identities[k]),
                      _box_prompt(run.pipe.tokenizer, run.scene.background_prompt, item.phrase)[0],
                      item.negative_prompt, tuple(drawn))
            for k, (item, drawn) in enumerate(zip(items, _drawn_boxes(run.config, items)))]


def _cached_box_passes(run: _Run, items: list[BoxItem], background: torch.Tensor, seed: int) -> _BoxPasses:
    """:func:`_box_passes` for the boxes ``run.box_cache`` lacks (or can rescale), the others' taken from it;
    every pass placed at its box."""
    cache = run.box_cache
    if cache is None:
        return _placed(run, items, _box_passes(run, items, background, seed))
    keys = _box_keys(run, items, seed, _box_text(run, items).cond.shape[1])
    found = [cache.get(key) for key in keys]
    if run.config.rescale_resized and run.schedule.box_steps == run.schedule.steps:
        _rescale_from_cache(run, keys, found, background, seed)
    missing = [k for k, entry in enumerate(found) if entry is None]
    if missing:
        fresh = _box_passes(run, items, background, seed, rows=missing)
        for j, k in enumerate(missing):
            found[k] = BoxPass(fresh.trajectories[j], fresh.masks[j], fresh.references[j])
            cache.put(keys[k], found[k])
    elif run.on_step is not None:  # the skipped passes still count on the progress bar
        for _ in range(run.schedule.box_steps):
            run.on_step(0, 0)
    unplaced = _BoxPasses([e.trajectory for e in found], [e.mask for e in found], [e.references for e in found],
                          [e.mask if e.hold is None else e.hold for e in found], [e.hold_steps for e in found])
    return _placed(run, items, unplaced)


def _rescale_from_cache(run: _Run, keys: list[tuple], found: list[BoxPass | None], background: torch.Tensor,
                        seed: int) -> None:
    """Fill ``found``'s gaps with passes the cache holds at another size, rescaled (``rescale_resized``)."""
    identities = _region_identities(run.scene)
    for k, key in enumerate(keys):
        if found[k] is not None:
            continue
        other = run.box_cache.drawn_elsewhere(key)
        if other is None:
            continue
        entry = _rescaled_pass(run, other[1], other[0][-1], key[-1], background, seed, identities[k])
        if entry is not None:
            found[k] = entry
            run.box_cache.put(key, entry, rescaled=True)


# ----------------------------------------------------------------------------------------------
# Entry points


def _check_inputs(pipe, scene: Scene, config: LayoutConfig, plus: bool) -> tuple[int, int]:
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a scenecraft Scene, got {type(scene).__name__}")
    check_pipeline(pipe)
    config.check()
    if plus and pipeline_family(pipe) != "sd-gligen":
        raise ValueError("layout+ needs a GLIGEN UNet (e.g. the LMD authors' longlian/lmd_plus or "
                         "masterful/gligen-1-4-generation-text-box); this pipeline has none: use method layout")
    return latent_size(scene.height, scene.width, pipe.vae_scale_factor)


def _generate(pipe, scene: Scene, config: LayoutConfig, on_step: ProgressCallback | None, method: str,
              box_cache: BoxCache | None = None) -> GenerationResult:
    plus = method == "layout+"
    latent = _check_inputs(pipe, scene, config, plus)
    if box_cache is not None and not isinstance(box_cache, BoxCache):
        raise TypeError(f"box_cache must be a BoxCache or None, got {type(box_cache).__name__}")
    seed = resolve_seed(config.seed, config.num_images)
    items = scene_boxes(scene)
    schedule = _schedule(config)
    unet = pipe.unet
    layers = resolve_layers(unet, config.guidance_layers) if config.guidance_layers else default_guidance_layers(unet)
    mask_layers = resolve_layers(unet, config.mask_layers) if config.mask_layers else default_mask_layers(unet)
    capture = AttentionCapture(list(dict.fromkeys(layers + mask_layers)), latent)
    per_image = (schedule.box_steps if items else 0) + schedule.steps
    progress = _Progress(on_step, per_image * config.num_images)
    images = []
    with capture.installed(unet), _fusers_on(unet, plus):
        for i in range(config.num_images):
            run = _Run(pipe, scene, config, schedule, PromptEncoder(pipe, pipe._execution_device), capture, layers,
                       mask_layers, latent, gligen=plus, on_step=progress.callback(i * per_image), box_cache=box_cache)
            images.append(_one_image(run, items, seed + i))
    settings = asdict(config) | {"seed": seed, "scheduler": type(pipe.scheduler).__name__}
    return GenerationResult(images=images, seed=seed, scene=scene, method=method, settings=settings,
                            seeds=[seed + i for i in range(config.num_images)])


def _one_image(run: _Run, items: list[BoxItem], seed: int):
    generators = image_generators(seed, 1)
    if not items:  # nothing to ground: the plain pipeline on the prompt
        return _plain(run, generators)
    background = prepare_latents(run.pipe, generators, *run.latent, run.pipe.unet.dtype)
    passes = _cached_box_passes(run, items, background, seed)
    latents = _final_pass(run, items, passes, background, generators)
    return decode_latents(run.pipe, latents, run.config.output_type, tiled=run.config.tiled_decode,
                          generators=generators)[0]


def _plain(run: _Run, generators):
    scene = run.scene
    slots = run.encoder.encode_slots([scene.base_prompt if scene.base_prompt is not None else scene.prompt],
                                     [scene.negative_prompt])
    text = conditioning(run.pipe, slots.cond, slots.uncond, slots.pooled, slots.negative_pooled, scene.height, scene.width)
    latents = generate_latents(run.pipe, text, run.config, generators, run.latent, on_step=run.on_step)
    return decode_latents(run.pipe, latents, run.config.output_type, tiled=run.config.tiled_decode,
                          generators=generators)[0]


def _fusers_on(unet, plus: bool):
    """GLIGEN's fusers on for the call and restored after (diffusers' own GLIGEN pipeline leaves them off)."""
    if not plus:
        return nullcontext()
    from .gligen import gligen_fuser

    return gligen_fuser(unet, True)


class _Progress:
    """Maps each pass's ``(done, total)`` onto one count over the whole call."""

    def __init__(self, on_step: ProgressCallback | None, total: int) -> None:
        self.on_step, self.total, self.done = on_step, total, 0

    def callback(self, offset: int) -> ProgressCallback | None:
        if self.on_step is None:
            return None

        def report(done: int, total: int) -> None:
            self.done += 1
            self.on_step(min(self.done, self.total), self.total)

        return report


def generate_layout(pipe, scene: Scene, config: LayoutConfig | None = None, *,
                    on_step: ProgressCallback | None = None, box_cache: BoxCache | None = None) -> GenerationResult:
    """Generate ``scene`` with LMD on a diffusers SD 1.x/2.x or SDXL pipeline.

    Args:
        pipe: a ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline``.
        scene: the scene; each region is one object instance (a box; cells and masks use their
            bounding boxes). A scene without regions is the plain pipeline on its prompt.
        config: the knobs (see :class:`LayoutConfig`); defaults when ``None``.
        on_step: called as ``on_step(done, total)`` after every denoising step of every pass.
        box_cache: a :class:`BoxCache` (default ``None``: none): boxes it holds are taken from it instead
            of running their per-box pass again, and the boxes computed are added to it.
    """
    return _generate(pipe, scene, config or LayoutConfig(), on_step, "layout", box_cache)


def generate_layout_plus(pipe, scene: Scene, config: LayoutPlusConfig | None = None, *,
                         on_step: ProgressCallback | None = None,
                         box_cache: BoxCache | None = None) -> GenerationResult:
    """Generate ``scene`` with LMD+: LMD on a GLIGEN UNet, whose gated attention sees every box.

    Same arguments as :func:`generate_layout`; ``pipe``'s UNet must be a GLIGEN one (see ``load_pipeline``).
    """
    config = config or LayoutPlusConfig()
    if not isinstance(config, LayoutPlusConfig):
        config = LayoutPlusConfig(**asdict(config))
    return _generate(pipe, scene, config, on_step, "layout+", box_cache)
