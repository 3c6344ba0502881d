"""Regional cross-attention (RPG's complementary regional diffusion) as a diffusers attention processor.

The UNet receives one text sequence per image in which every prompt of the scene has its own
*slot*: ``[base | background? | region 1 | ... | region K]``. In each cross-attention layer a pixel
attends to the slots that own it and mixes their outputs by its coefficients (which sum to one):

    out(p) = sum_s  c_s(p) * Attention(q(p), K_s, V_s)

``c_s`` comes from :class:`SlotLayout`: a region's weight on the layer's grid times
``1 - base_ratio``, and ``base_ratio`` (plus the area no region covers) for the base slot. Only the
pixels a slot owns are sent through its attention, so the cost is about one full cross-attention
per covered area rather than one per region. Self-attention is left to the original processor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from .latents import token_grid

__all__ = ["SlotLayout", "RegionalAttnProcessor", "installed_cross_attention_processors"]

# Contributions below this coefficient are skipped: they cannot move a float16/32 activation.
_NEGLIGIBLE = 1e-6


@dataclass
class _SlotPlan:
    start: int
    end: int
    pixels: torch.Tensor | None  # indices of the pixels this slot owns; None means all pixels
    coefficients: torch.Tensor | None  # (n, 1) weights of those pixels; None means exactly one


@dataclass
class SlotLayout:
    """Where each prompt slot sits in the text sequence, and which pixels attend to it.

    Args:
        spans: ``(start, end)`` token range of every slot in the encoder sequence.
        coefficients: ``(height, width) -> (num_slots, height * width)`` array of mixing weights
            that sum to one per pixel.
        latent_height, latent_width: the latent grid of the call, from which each layer's grid
            is derived.
    """

    spans: list[tuple[int, int]]
    coefficients: Callable[[int, int], np.ndarray]
    latent_height: int
    latent_width: int
    _plans: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def num_tokens(self) -> int:
        return self.spans[-1][1]

    def plan(self, num_pixels: int, device: torch.device, dtype: torch.dtype) -> list[_SlotPlan]:
        key = (num_pixels, device, dtype)
        if key not in self._plans:
            height, width = token_grid(self.latent_height, self.latent_width, num_pixels)
            self._plans[key] = self._make_plan(self.coefficients(height, width), device, dtype)
        return self._plans[key]

    def _make_plan(self, coefficients: np.ndarray, device: torch.device, dtype: torch.dtype) -> list[_SlotPlan]:
        plans = []
        for (start, end), weights in zip(self.spans, coefficients):
            owned = np.flatnonzero(weights > _NEGLIGIBLE)
            if owned.size == 0:
                continue
            pixels = None if owned.size == weights.size else torch.as_tensor(owned, device=device)
            values = torch.as_tensor(weights[owned], dtype=dtype, device=device)
            exactly_one = bool((values == 1).all())
            plans.append(_SlotPlan(start, end, pixels, None if exactly_one else values[:, None]))
        return plans


def attention_input(attn: Attention, hidden_states: torch.Tensor, temb: torch.Tensor | None):
    """The preamble diffusers' processors share: spatial norm, ``(B, C, H, W) -> (B, HW, C)``, group norm.

    Returns the prepared states and ``finish(out)``, which undoes the reshape of the projected output,
    adds the residual and applies the output rescale, as ``AttnProcessor2_0`` does.
    """
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim, shape = hidden_states.ndim, hidden_states.shape
    if input_ndim == 4:
        hidden_states = hidden_states.view(shape[0], shape[1], shape[2] * shape[3]).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

    def finish(out: torch.Tensor) -> torch.Tensor:
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    return hidden_states, finish


class RegionalAttnProcessor:
    """Cross-attention processor that attends each pixel to its own region's prompt slot.

    Mirrors ``AttnProcessor2_0`` step by step, so that a layout with a single full-canvas slot
    gives bit-identical results to the plain processor.
    """

    def __init__(self, layout: SlotLayout) -> None:
        self.layout = layout
        self._plain = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        if encoder_hidden_states is None:
            return self._plain(attn, hidden_states, None, attention_mask, temb, *args, **kwargs)
        if attention_mask is not None:
            raise NotImplementedError("regional attention does not support an encoder attention mask")
        if encoder_hidden_states.shape[1] != self.layout.num_tokens:
            raise ValueError(
                f"regional attention expected {self.layout.num_tokens} text tokens (the scene's prompt slots), "
                f"got {encoder_hidden_states.shape[1]}"
            )

        hidden_states, finish = attention_input(attn, hidden_states, temb)
        batch_size = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        head_dim = query.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)

        hidden_states = self._mix_slots(attn, query, encoder_hidden_states, head_dim)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return finish(hidden_states)

    def _mix_slots(self, attn: Attention, query: torch.Tensor, context: torch.Tensor, head_dim: int) -> torch.Tensor:
        batch_size, _, num_pixels, _ = query.shape
        plans = self.layout.plan(num_pixels, query.device, query.dtype)
        if len(plans) == 1 and plans[0].pixels is None and plans[0].coefficients is None:
            return self._attend(attn, query, context[:, plans[0].start : plans[0].end], head_dim)
        query = query.contiguous()  # the CPU attention kernels run markedly faster on a contiguous query
        mixed = None
        for plan in plans:
            slot_query = query if plan.pixels is None else query.index_select(2, plan.pixels)
            out = self._attend(attn, slot_query, context[:, plan.start : plan.end], head_dim)
            if plan.coefficients is not None:
                out = out.mul_(plan.coefficients)
            if plan.pixels is None:
                mixed = out if mixed is None else mixed.add_(out)
            else:
                mixed = torch.zeros_like(query) if mixed is None else mixed
                mixed.index_add_(2, plan.pixels, out)
        return mixed

    @staticmethod
    def _attend(attn: Attention, query: torch.Tensor, context: torch.Tensor, head_dim: int) -> torch.Tensor:
        batch_size = context.shape[0]
        key = attn.to_k(context).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = attn.to_v(context).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)


def _is_cross_attention(name: str, module: torch.nn.Module) -> bool:
    return isinstance(module, Attention) and module.is_cross_attention


@contextmanager
def installed_cross_attention_processors(unet: torch.nn.Module, processor: object) -> Iterator[None]:
    """Install ``processor`` on every cross-attention layer of ``unet`` for the ``with`` block.

    Self-attention keeps its processor. The original processors are restored on exit, even when
    the block raises.
    """
    original = dict(unet.attn_processors)
    cross = {name for name, module in unet.named_modules() if _is_cross_attention(name, module)}
    if not cross:
        raise ValueError("this UNet has no cross-attention layers to make regional")
    replaced = {key: (processor if key.removesuffix(".processor") in cross else proc) for key, proc in original.items()}
    unet.set_attn_processor(replaced)
    try:
        yield
    finally:
        unet.set_attn_processor(dict(original))
