"""MultiDiffusion (Bar-Tal et al., ICML 2023): many diffusion paths fused into one latent every step.

Work in progress (issue 9): this module holds the window layout and the closed-form fusion the
method is built on; the method itself (panoramas, mask regions, high-resolution scenes) and its
registry line come next.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["View", "window_views", "fuse_views"]


@dataclass(frozen=True)
class View:
    """A window of the latent: rows ``top:top + height``, columns ``left:left + width``."""

    top: int
    left: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis: every ``stride``, plus one flush with the far edge if the stride
    does not land there (the reference code drops it and leaves the right edge of some panoramas black)."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def window_views(latent_height: int, latent_width: int, *, window: int, stride: int) -> list[View]:
    """The windows that cover a ``latent_height x latent_width`` latent, row by row.

    Args:
        latent_height, latent_width: the latent's size (pixels divided by the VAE factor).
        window: a window's side in latent pixels (the backbone's native latent size, e.g. 64 for SD 1.x);
            a side shorter than ``window`` gets one window of its own length.
        stride: latent pixels between window starts (MultiDiffusion's default is 8); at most ``window``,
            so windows overlap or touch and every latent pixel is covered.
    """
    for name, value in (("latent_height", latent_height), ("latent_width", latent_width), ("window", window),
                        ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if stride > window:
        raise ValueError(f"stride ({stride}) must be at most the window ({window}), or pixels between windows "
                         "would never be denoised")
    rows, columns = _starts(latent_height, window, stride), _starts(latent_width, window, stride)
    height, width = min(window, latent_height), min(window, latent_width)
    return [View(top, left, height, width) for top in rows for left in columns]


def fuse_views(shape: torch.Size | tuple[int, ...], views: list[View], values: list[torch.Tensor],
               weights: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The closed-form MultiDiffusion step: each latent pixel the weighted mean of the views covering it.

    Args:
        shape: the full latent's shape ``(B, C, H, W)``.
        views: the windows.
        values: each window's denoised latent, ``(B, C, view.height, view.width)``.
        weights: each window's per-pixel weight, broadcastable to its value (default 1 everywhere);
            pixels no weight covers are 0.
    """
    if len(values) != len(views) or (weights is not None and len(weights) != len(views)):
        raise ValueError(f"{len(views)} views need as many values (got {len(values)}) and weights")
    total = values[0].new_zeros(shape)
    count = values[0].new_zeros(shape)
    for index, (view, value) in enumerate(zip(views, values)):
        rows, cols = view.slices()
        weight = torch.ones_like(value) if weights is None else weights[index].expand_as(value)
        total[..., rows, cols] += value * weight
        count[..., rows, cols] += weight
    return torch.where(count > 0, total / count.clamp_min(torch.finfo(count.dtype).tiny), total)
