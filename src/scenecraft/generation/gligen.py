"""GLIGEN building blocks for layout-grounded sampling (LMD+ / "layout+").

GLIGEN adds a gated self-attention layer (the *fuser*) to each transformer block of an SD 1.x UNet;
it attends from the image tokens to one token per grounded object, made by the UNet's
``position_net`` from the object's box and the pooled CLIP embedding of its phrase. diffusers builds
that UNet (``UNet2DConditionModel(attention_type="gated")``) and runs the fuser when a call passes
``cross_attention_kwargs={"gligen": {"boxes", "positive_embeddings", "masks"}}``. This module makes
those tensors exactly as diffusers' (deprecated) GLIGEN pipeline does, switches the fuser on and off
for a block of steps, and gives GLIGEN's scheduled-sampling step count. It never forks or calls that
pipeline: the UNet is driven directly by the caller's sampling loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

__all__ = ["GLIGEN_ATTENTION_TYPES", "MAX_OBJECTS", "FUSER_BETA", "is_gligen_unet", "gligen_conditioning",
           "gligen_fuser", "scheduled_fuser_steps"]

Box = tuple[float, float, float, float]

# The UNet attention types that carry GLIGEN's position net and gated self-attention.
GLIGEN_ATTENTION_TYPES = ("gated", "gated-text-image")
# GLIGEN was trained with at most 30 grounding tokens (diffusers' pipeline: max_objs = 30).
MAX_OBJECTS = 30
# GLIGEN's scheduled sampling: the fuser runs for the first 30% of the steps (the paper's and diffusers' default).
FUSER_BETA = 0.3


def is_gligen_unet(unet: torch.nn.Module) -> bool:
    """True when ``unet`` has GLIGEN gated self-attention (a ``position_net``; config ``attention_type``
    ``"gated"`` or ``"gated-text-image"``)."""
    return getattr(unet, "position_net", None) is not None


def _check_conditioning_inputs(unet, phrases: Sequence[str], boxes: Sequence[Box], batch_size: int,
                               max_objects: int) -> None:
    if not is_gligen_unet(unet):
        raise ValueError("pipe.unet has no GLIGEN position net (attention_type 'gated'); load a GLIGEN checkpoint "
                         "such as 'masterful/gligen-1-4-generation-text-box' or 'longlian/lmd_plus'")
    if unet.config.attention_type != "gated":
        raise ValueError(f"only text-box GLIGEN (attention_type 'gated') is supported, this UNet has "
                         f"attention_type {unet.config.attention_type!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(phrases, str):
        raise ValueError(f"phrases must be a list with one phrase per box, got the string {phrases!r}")
    if len(phrases) != len(boxes):
        raise ValueError(f"phrases and boxes must have the same length (one phrase per box), got "
                         f"{len(phrases)} phrases and {len(boxes)} boxes")
    if len(boxes) > max_objects:
        raise ValueError(f"GLIGEN grounds at most max_objects={max_objects} objects, got {len(boxes)} boxes; "
                         f"merge or drop some boxes")
    for index, box in enumerate(boxes):
        _check_box(index, box)


def _check_box(index: int, box: Box) -> None:
    valid = len(box) == 4 and 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
    if not valid:
        raise ValueError(f"boxes[{index}] must be (x0, y0, x1, y1) fractions of the canvas with "
                         f"0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {tuple(box)!r}")


def _phrase_embeddings(pipe, phrases: Sequence[str], device: torch.device) -> torch.Tensor:
    """Pooled CLIP output of each phrase, as diffusers' GLIGEN pipeline computes it (one padded batch)."""
    # diffusers pads to the longest phrase and does not truncate; truncating at the tokenizer's limit
    # changes nothing for phrases that fit and avoids a crash on those that do not.
    inputs = pipe.tokenizer(list(phrases), padding=True, truncation=True, max_length=pipe.tokenizer.model_max_length,
                            return_tensors="pt").to(device)
    return pipe.text_encoder(**inputs).pooler_output


@torch.no_grad()
def gligen_conditioning(
    pipe,
    phrases: Sequence[str],
    boxes: Sequence[Box],
    *,
    batch_size: int,
    max_objects: int = MAX_OBJECTS,
    cfg: bool = False,
) -> dict[str, torch.Tensor]:
    """The ``cross_attention_kwargs["gligen"]`` dict a GLIGEN UNet call needs.

    Args:
        pipe: an SD 1.x pipeline (tokenizer, text_encoder) whose UNet is a GLIGEN UNet
            (:func:`is_gligen_unet`); text-box GLIGEN only.
        phrases: one phrase per object, e.g. ``["a cat", "a red ball"]``.
        boxes: one ``(x0, y0, x1, y1)`` per phrase, fractions of the canvas (``0 <= x0 < x1 <= 1``,
            y downwards), as GLIGEN and LMD give them.
        batch_size: images sampled at once; each gets the same objects.
        max_objects: grounding slots (default 30, GLIGEN's trained maximum); more boxes is an error.
        cfg: default False. True returns the classifier-free-guidance batch of ``2 * batch_size``,
            ordered ``[uncond, cond]`` as diffusers orders its latents; the unconditional half has the
            same boxes and embeddings but masks 0, which the UNet's position net turns into its learned
            null object (so that half is "grounded on nothing", not "not grounded": the fuser still runs).

    Returns:
        ``{"boxes": (B, max_objects, 4), "positive_embeddings": (B, max_objects, positive_len),
        "masks": (B, max_objects)}`` on the pipeline's execution device in the UNet's dtype; entries
        past the given objects are zeros with mask 0. ``positive_embeddings`` is the text encoder's
        ``pooler_output`` of each phrase. Computed without gradients (plain tensors, usable in a
        guidance step that back-propagates through the UNet).
    """
    unet = pipe.unet
    _check_conditioning_inputs(unet, phrases, boxes, batch_size, max_objects)
    device, dtype, width = pipe._execution_device, unet.dtype, unet.position_net.positive_len
    count = len(boxes)
    box_tensor = torch.zeros(max_objects, 4, device=device, dtype=dtype)
    embeddings = torch.zeros(max_objects, width, device=device, dtype=dtype)
    masks = torch.zeros(max_objects, device=device, dtype=dtype)
    if count:
        box_tensor[:count] = torch.tensor([list(box) for box in boxes], dtype=dtype, device=device)
        embeddings[:count] = _phrase_embeddings(pipe, phrases, device).to(dtype)
        masks[:count] = 1
    return _batched(box_tensor, embeddings, masks, batch_size, cfg)


def _batched(boxes: torch.Tensor, embeddings: torch.Tensor, masks: torch.Tensor, batch_size: int,
             cfg: bool) -> dict[str, torch.Tensor]:
    repeat = 2 * batch_size if cfg else batch_size
    batch = {
        "boxes": boxes.unsqueeze(0).repeat(repeat, 1, 1),
        "positive_embeddings": embeddings.unsqueeze(0).repeat(repeat, 1, 1),
        "masks": masks.unsqueeze(0).repeat(repeat, 1),
    }
    if cfg:
        batch["masks"][:batch_size] = 0
    return batch


def _fusers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    from diffusers.models.attention import GatedSelfAttentionDense

    return [module for module in unet.modules() if isinstance(module, GatedSelfAttentionDense)]


@contextmanager
def gligen_fuser(unet: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Run the body with every GLIGEN fuser (``GatedSelfAttentionDense``) of ``unet`` on or off.

    Args:
        unet: a GLIGEN UNet (:func:`is_gligen_unet`); one without fusers is an error.
        enabled: True runs the fusers (the UNet call must then pass the ``gligen`` kwargs for them
            to act); False makes each fuser return its input, so the UNet is the plain SD UNet.

    Each module's previous ``enabled`` flag is restored on exit, also when the body raises.
    """
    fusers = _fusers(unet)
    if not fusers:
        raise ValueError("unet has no GLIGEN fusers (GatedSelfAttentionDense); it is not a GLIGEN UNet")
    previous = [fuser.enabled for fuser in fusers]
    for fuser in fusers:
        fuser.enabled = enabled
    try:
        yield
    finally:
        for fuser, flag in zip(fusers, previous):
            fuser.enabled = flag


def scheduled_fuser_steps(num_steps: int, beta: float = FUSER_BETA) -> int:
    """How many of the first sampling steps run the fuser under GLIGEN's scheduled sampling.

    Args:
        num_steps: sampling steps in the run.
        beta: fraction of the steps with the fuser on (default 0.3, GLIGEN's and diffusers' default;
            1 grounds every step, 0 none).

    Returns ``int(beta * num_steps)``, as diffusers' GLIGEN pipeline computes it: steps
    ``0 .. n-1`` run with the fuser, the rest without.
    """
    if not 0 <= beta <= 1:
        raise ValueError(f"beta must be within [0, 1] (the fraction of steps with the fuser on), got {beta!r}")
    if num_steps < 0:
        raise ValueError(f"num_steps must be non-negative, got {num_steps!r}")
    return int(beta * num_steps)
