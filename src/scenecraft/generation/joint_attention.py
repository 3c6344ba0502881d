"""Regional attention for MMDiT backbones (SD3, Flux): regions as a mask on the joint attention.

An MMDiT has no cross-attention: text and image tokens go through one attention over the joint
sequence (SD3 orders it ``[image | text]``, Flux ``[text | image]``). The text sequence holds one
*slot* per prompt, ``[base | background? | region 1 | ... | region K]``, and one additive mask on that
attention says who sees whom:

- an image token ``p`` sees every image token, and the text of each slot ``s`` that owns it, with the
  logit offset ``log c_s(p)``: ``c_s`` are RPG's mixing weights (``base_ratio`` for the base slot, the
  region's weight times ``1 - base_ratio`` for a region; they sum to one per token), so the text
  slots share the attention mass that a single prompt would get, in proportion to ``c``;
- a slot's text tokens see themselves and the image tokens the slot owns (``c_s(p) > 0``);
- nothing else: text never sees another slot's text.

With ``base_ratio = 1`` no image token sees a region and the base slot behaves exactly as the plain
prompt; a region covering the canvas with ``base_ratio = 0`` is the plain pipeline on that region's
text. The mask is built once per call and shared by every layer (an MMDiT keeps one token grid), and
the attention stays one ``scaled_dot_product_attention`` over the joint sequence: the extra cost is
the region slots' tokens, which is why their prompts are encoded at their own length (see
:mod:`~scenecraft.generation.mmdit`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["JointSlotLayout", "RegionalJointAttnProcessor", "RegionalFluxAttnProcessor",
           "installed_joint_attention_processors"]

# A slot owns a token when its weight there is above this (weights below cannot move an activation).
_NEGLIGIBLE = 1e-6


@dataclass
class JointSlotLayout:
    """Where each prompt slot sits in the text sequence, and the image tokens it owns.

    Args:
        spans: ``(start, end)`` token range of every slot in the text sequence (contiguous, from 0).
        coefficients: ``(num_slots, grid_height * grid_width)`` mixing weights on the image-token grid,
            summing to one per token.
        text_first: ``True`` for Flux's ``[text | image]`` order, ``False`` for SD3's ``[image | text]``.
    """

    spans: list[tuple[int, int]]
    coefficients: np.ndarray
    text_first: bool
    _masks: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.coefficients.shape[0] != len(self.spans):
            raise ValueError(f"{len(self.spans)} slots but {self.coefficients.shape[0]} rows of coefficients")

    @property
    def num_text_tokens(self) -> int:
        return self.spans[-1][1]

    @property
    def num_image_tokens(self) -> int:
        return self.coefficients.shape[1]

    @property
    def sequence_length(self) -> int:
        return self.num_text_tokens + self.num_image_tokens

    def text_slice(self) -> slice:
        start = 0 if self.text_first else self.num_image_tokens
        return slice(start, start + self.num_text_tokens)

    def image_slice(self) -> slice:
        start = self.num_text_tokens if self.text_first else 0
        return slice(start, start + self.num_image_tokens)

    def mask(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The ``(S, S)`` additive mask over the joint sequence (``-inf``: not seen), cached per device and dtype."""
        key = (device, dtype)
        if key not in self._masks:
            self._masks[key] = torch.as_tensor(self._build(), device=device).to(dtype)
        return self._masks[key]

    def _build(self) -> np.ndarray:
        size, text, image = self.sequence_length, self.text_slice(), self.image_slice()
        mask = np.full((size, size), -np.inf, dtype=np.float32)
        mask[image, image] = 0.0
        owned = self.coefficients > _NEGLIGIBLE
        with np.errstate(divide="ignore"):
            offsets = np.where(owned, np.log(np.maximum(self.coefficients, _NEGLIGIBLE)), -np.inf).astype(np.float32)
        for slot, (start, end) in enumerate(self.spans):
            rows = slice(text.start + start, text.start + end)
            mask[rows, rows] = 0.0
            mask[rows, image] = np.where(owned[slot], 0.0, -np.inf)[None, :]
            mask[image, rows] = offsets[slot][:, None]
        return mask

    def seen_slots(self, image_token: int) -> list[int]:
        """The slots whose text image token ``image_token`` sees (for tests and inspection)."""
        return [slot for slot in range(len(self.spans)) if self.coefficients[slot, image_token] > _NEGLIGIBLE]


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``scaled_dot_product_attention`` of ``(B, H, S, D)`` tensors under an additive ``(S, S)`` mask (a seam
    that tests replace to capture the attention weights)."""
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)


def _check_length(layout: JointSlotLayout, length: int) -> None:
    if length != layout.sequence_length:
        raise ValueError(f"regional joint attention expected {layout.sequence_length} tokens ({layout.num_text_tokens} "
                         f"text + {layout.num_image_tokens} image), got {length}: the call's size or prompts do not "
                         f"match the layout")


class RegionalJointAttnProcessor:
    """SD3's joint attention (``JointAttnProcessor2_0``, step for step) under a :class:`JointSlotLayout` mask."""

    def __init__(self, layout: JointSlotLayout) -> None:
        if layout.text_first:
            raise ValueError("SD3 orders the joint sequence [image | text]; the layout says text first")
        self.layout = layout

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, *args, **kwargs):
        if encoder_hidden_states is None or attention_mask is not None:
            raise NotImplementedError("regional joint attention takes the joint (image, text) attention of SD3's "
                                      "blocks, without an attention mask of its own")
        batch_size, image_length = hidden_states.shape[0], hidden_states.shape[1]
        query, key, value = (attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states))
        head_dim = key.shape[-1] // attn.heads

        def heads(x):
            return x.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)

        query, key, value = heads(query), heads(key), heads(value)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        context_query = heads(attn.add_q_proj(encoder_hidden_states))
        context_key = heads(attn.add_k_proj(encoder_hidden_states))
        context_value = heads(attn.add_v_proj(encoder_hidden_states))
        if attn.norm_added_q is not None:
            context_query = attn.norm_added_q(context_query)
        if attn.norm_added_k is not None:
            context_key = attn.norm_added_k(context_key)
        query = torch.cat([query, context_query], dim=2)
        key = torch.cat([key, context_key], dim=2)
        value = torch.cat([value, context_value], dim=2)
        _check_length(self.layout, query.shape[2])

        out = attend(query, key, value, self.layout.mask(query.device, query.dtype))
        out = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        out, context = out[:, :image_length], out[:, image_length:]
        if not attn.context_pre_only:
            context = attn.to_add_out(context)
        out = attn.to_out[1](attn.to_out[0](out))
        return out, context


class RegionalFluxAttnProcessor:
    """Flux's attention (``FluxAttnProcessor``, step for step) under a :class:`JointSlotLayout` mask: the
    double-stream blocks' joint attention and the single-stream blocks' attention over ``[text | image]``."""

    def __init__(self, layout: JointSlotLayout) -> None:
        if not layout.text_first:
            raise ValueError("Flux orders the joint sequence [text | image]; the layout says image first")
        self.layout = layout

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb=None) -> torch.Tensor:
        from diffusers.models.embeddings import apply_rotary_emb

        if attention_mask is not None:
            raise NotImplementedError("regional Flux attention does not take an attention mask of its own")
        if getattr(attn, "fused_projections", False):
            raise NotImplementedError("regional Flux attention needs unfused projections (call unfuse_qkv_projections)")
        joint = encoder_hidden_states is not None and attn.added_kv_proj_dim is not None

        def heads(x):
            return x.unflatten(-1, (-1, attn.head_dim))

        query = attn.norm_q(heads(attn.to_q(hidden_states)))
        key = attn.norm_k(heads(attn.to_k(hidden_states)))
        value = heads(attn.to_v(hidden_states))
        if joint:
            query = torch.cat([attn.norm_added_q(heads(attn.add_q_proj(encoder_hidden_states))), query], dim=1)
            key = torch.cat([attn.norm_added_k(heads(attn.add_k_proj(encoder_hidden_states))), key], dim=1)
            value = torch.cat([heads(attn.add_v_proj(encoder_hidden_states)), value], dim=1)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        _check_length(self.layout, query.shape[1])

        mask = self.layout.mask(query.device, query.dtype)
        out = attend(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), mask).transpose(1, 2)
        out = out.flatten(2, 3).to(query.dtype)
        if not joint:
            return out
        text_length = encoder_hidden_states.shape[1]
        context, out = out.split_with_sizes([text_length, out.shape[1] - text_length], dim=1)
        out = attn.to_out[1](attn.to_out[0](out.contiguous()))
        return out, attn.to_add_out(context.contiguous())


def joint_attention_names(transformer) -> list[str]:
    """Processor names of the attention layers that mix text and image: SD3's ``transformer_blocks.*.attn``
    (not SD3.5's image-only ``attn2``), every Flux block's ``attn``."""
    names = []
    for name, module in transformer.named_modules():
        if not name.endswith(".attn") or not hasattr(module, "processor"):
            continue
        if name.startswith("single_transformer_blocks.") or getattr(module, "added_kv_proj_dim", None) is not None:
            names.append(f"{name}.processor")
    return names


@contextmanager
def installed_joint_attention_processors(transformer, processor: Callable) -> Iterator[None]:
    """Install ``processor`` on the joint attention layers of an SD3/Flux ``transformer`` for the ``with``
    block; every other layer keeps its processor, and all are restored on exit, even when the block raises."""
    original = dict(transformer.attn_processors)
    joint = set(joint_attention_names(transformer))
    if not joint:
        raise ValueError(f"this {type(transformer).__name__} has no joint text-image attention layers")
    transformer.set_attn_processor({key: (processor if key in joint else proc) for key, proc in original.items()})
    try:
        yield
    finally:
        transformer.set_attn_processor(dict(original))

