"""Cross-attention capture and LMD's attention energies (Lian et al. 2023, ``utils/guidance.py``).

:class:`AttentionCapture` installs a processor on chosen cross-attention layers that, while
capturing, computes the attention probabilities explicitly and hands them to a ``keep`` function;
otherwise it is the plain ``AttnProcessor2_0``. The energies are functions of captured maps.

Per-head sums are normalised: LMD sums its energy over SD 1.x's 8 heads, so its thresholds
(``loss_threshold`` 5) assume 8 heads. Here the energy is the mean over heads times
:data:`REFERENCE_HEADS`, which keeps LMD's numbers on UNets with other head counts (SD 2.x, SDXL,
the toy model's 4) instead of silently switching guidance off or on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from .attention import attention_input
from .latents import token_grid

__all__ = ["AttentionCapture", "EnoughAttention", "box_mask", "phrase_energy", "transfer_energy", "REFERENCE_HEADS",
           "cross_attention_layers", "default_guidance_layers", "default_mask_layers", "resolve_layers"]

REFERENCE_HEADS = 8


class EnoughAttention(Exception):
    """Raised inside a UNet call once every captured layer has run (the rest of the call is not needed)."""


def cross_attention_layers(unet) -> list[str]:
    """Names (without ``.processor``) of the UNet's cross-attention layers, in module order."""
    return [name for name, module in unet.named_modules() if isinstance(module, Attention) and module.is_cross_attention]


def _layers_under(layers: Sequence[str], prefix: str) -> list[str]:
    return [name for name in layers if name.startswith(prefix + ".")]


def resolve_layers(unet, names: Sequence[str]) -> list[str]:
    """Cross-attention layers named by ``names``: full names or prefixes (``"up_blocks.1"``), in module order."""
    layers = cross_attention_layers(unet)
    chosen = {name for wanted in names for name in layers if name == wanted or name.startswith(wanted + ".")}
    unknown = [wanted for wanted in names if not any(n == wanted or n.startswith(wanted + ".") for n in layers)]
    if unknown:
        raise ValueError(f"no cross-attention layer is called or lies under {', '.join(map(repr, unknown))}; "
                         f"this UNet's: {', '.join(layers)}")
    return [name for name in layers if name in chosen]


def default_guidance_layers(unet) -> list[str]:
    """LMD's guidance layers: the mid block and ``up_blocks.1`` (SD 1.5's 8x8 and 16x16 maps at 512 px).

    A UNet without cross-attention there falls back to its first up block that has some.
    """
    layers = cross_attention_layers(unet)
    chosen = _layers_under(layers, "mid_block") + _layers_under(layers, "up_blocks.1")
    if not _layers_under(layers, "up_blocks.1"):
        first_up = next((n for n in layers if n.startswith("up_blocks.")), None)
        chosen += _layers_under(layers, ".".join(first_up.split(".")[:2])) if first_up else []
    if not chosen:
        raise ValueError("this UNet has no cross-attention in its mid or up blocks to guide")
    return chosen


def default_mask_layers(unet) -> list[str]:
    """LMD's mask layer: ``down_blocks.2.attentions.1`` (16x16 in SD 1.5), else the last down-block cross-attention."""
    layers = cross_attention_layers(unet)
    wanted = _layers_under(layers, "down_blocks.2.attentions.1")
    if wanted:
        return wanted[:1]
    down = [n for n in layers if n.startswith("down_blocks.")]
    if not down:
        raise ValueError("this UNet has no down-block cross-attention to take object masks from")
    return down[-1:]


Keep = Callable[[str, torch.Tensor], torch.Tensor | None]


@dataclass
class AttentionCapture:
    """Captures cross-attention probabilities of ``layers`` during UNet calls.

    Attributes:
        layers: layer names (see :func:`cross_attention_layers`).
        latent_size: the latent ``(height, width)``, from which each layer's grid is derived.
        keep: while capturing, ``keep(layer, probs)`` gets ``(batch, heads, pixels, tokens)``
            probabilities and returns what to store (``None`` stores nothing).
        until: while capturing, raise :class:`EnoughAttention` once these layers are stored (for
            gradient passes that need only the maps); ``None`` lets the UNet call finish.
    """

    layers: Sequence[str]
    latent_size: tuple[int, int]
    keep: Keep | None = None
    until: frozenset[str] | None = None
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    def grid(self, num_pixels: int) -> tuple[int, int]:
        return token_grid(*self.latent_size, num_pixels)

    def start(self, keep: Keep, until: Sequence[str] | None = None) -> None:
        """Capture into a fresh ``maps`` dict from now on."""
        self.keep, self.until, self.maps = keep, None if until is None else frozenset(until), {}

    def stop(self) -> dict[str, torch.Tensor]:
        """Stop capturing; return what was captured."""
        self.keep, self.until = None, None
        return self.maps

    @contextmanager
    def capturing(self, keep: Keep, until: Sequence[str] | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Capture into a fresh ``maps`` dict for the ``with`` block."""
        self.start(keep, until)
        try:
            yield self.maps
        finally:
            self.stop()

    def store(self, layer: str, probs: torch.Tensor) -> None:
        kept = self.keep(layer, probs)
        if kept is not None:
            self.maps[layer] = kept
        if self.until is not None and self.until <= self.maps.keys():
            raise EnoughAttention

    @contextmanager
    def installed(self, unet) -> Iterator[AttentionCapture]:
        """Install the capturing processor on ``layers`` for the ``with`` block; restore the originals after."""
        original = dict(unet.attn_processors)
        missing = sorted(set(self.layers) - {key.removesuffix(".processor") for key in original})
        if missing:
            raise ValueError(f"the UNet has no attention layer {', '.join(missing)}")
        wanted = set(self.layers)
        unet.set_attn_processor({key: (_CaptureProcessor(key.removesuffix(".processor"), self)
                                       if key.removesuffix(".processor") in wanted else proc)
                                 for key, proc in original.items()})
        try:
            yield self
        finally:
            unet.set_attn_processor(dict(original))


class _CaptureProcessor:
    """``AttnProcessor2_0`` when not capturing; explicit softmax attention (probabilities stored) when capturing."""

    def __init__(self, name: str, capture: AttentionCapture) -> None:
        self.name = name
        self.capture = capture
        self._plain = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        if self.capture.keep is None or encoder_hidden_states is None:
            return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        hidden_states, finish = attention_input(attn, hidden_states, temb)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, None)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = finish(attn.to_out[1](attn.to_out[0](out)))
        self.capture.store(self.name, probs.view(hidden_states.shape[0], attn.heads, *probs.shape[1:]))
        return out


def box_mask(box: Sequence[float], height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(height, width)`` 0/1 mask of a ``[x0, y0, x1, y1]`` fractional box, rounded as LMD rounds
    (corner and size rounded separately, so a box keeps its size wherever it sits); at least one cell."""
    x0, y0 = round(box[0] * width), round(box[1] * height)
    x1 = min(x0 + max(round((box[2] - box[0]) * width), 1), width)
    y1 = min(y0 + max(round((box[3] - box[1]) * height), 1), height)
    x0, y0 = min(max(x0, 0), width - 1), min(max(y0, 0), height - 1)
    mask = torch.zeros(height, width, device=device, dtype=dtype)
    mask[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1
    return mask


def phrase_energy(probs: torch.Tensor, tokens: Sequence[int], mask: torch.Tensor, *, fg_top_p: float = 0.2,
                  bg_top_p: float = 0.2, fg_weight: float = 1.0, bg_weight: float = 4.0) -> torch.Tensor:
    """LMD's max-based energy of one phrase on one layer: ``(heads, pixels, tokens)`` probabilities.

    For each of the phrase's tokens: ``fg_weight * (1 - mean of the top fg_top_p of its attention
    inside the mask) + bg_weight * (mean of the top bg_top_p outside)``, averaged over the tokens.
    """
    flat = mask.reshape(1, -1)
    k_fg = max(int(flat.sum() * fg_top_p), 1)
    k_bg = max(int((1 - flat).sum() * bg_top_p), 1)
    total = probs.new_zeros(())
    for token in tokens:
        ca = probs[:, :, token]
        inside = (ca * flat).topk(k_fg, dim=1).values.mean(dim=1)
        outside = (ca * (1 - flat)).topk(k_bg, dim=1).values.mean(dim=1)
        total = total + ((1 - inside) * fg_weight + outside * bg_weight).mean() * REFERENCE_HEADS
    return total / max(len(tokens), 1)


def transfer_energy(probs: torch.Tensor, token: int, reference: torch.Tensor, mask: torch.Tensor,
                    eps: float = 1e-5) -> torch.Tensor:
    """LMD's attention transfer: L1 between the token's and the reference's attention inside ``mask``,
    each normalised to sum one there; mean over heads. ``reference`` is ``(heads, pixels)``."""
    flat = mask.reshape(1, -1)
    ours = probs[:, :, token] * flat
    ours = ours / (ours.sum(dim=-1, keepdim=True) + eps)
    ref = reference.to(probs) * flat
    ref = ref / (ref.sum(dim=-1, keepdim=True) + eps)
    return (ours - ref).abs().sum(dim=-1).mean()
