"""Pixel-exact scorer for toy-world images (rendered or generated).

Pipeline: estimate the background as the median of the image's low-saturation pixels; label every
pixel with the palette colour whose background-to-colour line fits it best (so a blurred edge that
mixes red into grey reads as "half red", not as orange), with coverage ``alpha >= 0.5`` to count
as that colour; connected components per colour (4-connectivity); drop components smaller than
``min_area`` pixels; classify each component's shape by the intersection-over-union of its mask
with ideal circle / square / triangle masks fitted to its bounding box.

``score_image(img) -> list[Detected]``; predicates for benchmarks: :func:`matches_exactly`,
:func:`count`, :func:`relation`, :func:`absent`.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from .render import COLORS, SHAPES

_NAMES = list(COLORS)
TRIANGLE_RATIO = 0.65
_PALETTE = np.array([COLORS[c] for c in _NAMES], dtype=np.float32)


@dataclass(frozen=True)
class Detected:
    """A detected object. ``bbox`` is ``(x0, y0, x1, y1)`` end-exclusive; ``center`` is the mask centroid."""

    color: str
    shape: str
    bbox: tuple[int, int, int, int]
    center: tuple[float, float]
    area: int
    shape_iou: float


def _template(shape: str, h: int, w: int) -> np.ndarray:
    yy, xx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    if shape == "square":
        return np.ones((h, w), dtype=bool)
    if shape == "circle":
        return (xx - 0.5) ** 2 + (yy - 0.5) ** 2 <= 0.25
    return np.abs(xx - 0.5) <= 0.5 * yy


def estimate_background(img: np.ndarray) -> np.ndarray:
    """Median RGB of low-saturation pixels (falls back to the whole image's median)."""
    px = img.reshape(-1, 3).astype(np.float32)
    sat = px.max(1) - px.min(1)
    grey = px[sat < 40]
    if len(grey) < 0.1 * len(px):
        grey = px
    return np.median(grey, axis=0)


def label_pixels(img: np.ndarray, alpha_min: float = 0.5, max_residual: float = 90.0) -> np.ndarray:
    """Per-pixel colour index into ``COLORS`` order, or -1 for background. ``img`` is uint8 (H, W, 3)."""
    h, w, _ = img.shape
    px = img.reshape(-1, 3).astype(np.float32)
    bg = estimate_background(img)
    d = _PALETTE - bg  # (K, 3)
    v = px - bg  # (N, 3)
    alpha = np.clip(v @ d.T / (d * d).sum(1), 0.0, 1.0)  # (N, K)
    resid = np.linalg.norm(v[:, None, :] - alpha[:, :, None] * d[None], axis=2)  # (N, K)
    k = resid.argmin(1)
    a = alpha[np.arange(len(px)), k]
    r = resid[np.arange(len(px)), k]
    lab = np.where((a >= alpha_min) & (r <= max_residual), k, -1)
    return lab.reshape(h, w)


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as arrays of flat indices."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    comps = []
    ys, xs = np.nonzero(mask)
    for y, x in zip(ys.tolist(), xs.tolist()):
        if seen[y, x]:
            continue
        seen[y, x] = True
        q = deque([(y, x)])
        pts = []
        while q:
            cy, cx = q.popleft()
            pts.append(cy * w + cx)
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    q.append((ny, nx))
        comps.append(np.array(pts))
    return comps


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """Shape of a component mask cropped to its bounding box, and its IoU with that shape's template.

    Triangles (apex up) hold about a third as many pixels in their top half as in their bottom half,
    circles and squares about as many, even after blur; so a top/bottom ratio below
    ``TRIANGLE_RATIO`` means triangle, otherwise the better IoU of circle and square decides.
    """
    h, w = mask.shape
    top, bottom = mask[: h // 2].sum(), mask[h - h // 2:].sum()
    ious = {}
    for s in SHAPES:
        t = _template(s, h, w)
        ious[s] = float((t & mask).sum() / max((t | mask).sum(), 1))
    if top < TRIANGLE_RATIO * max(bottom, 1):
        return "triangle", ious["triangle"]
    best = max(("circle", "square"), key=ious.__getitem__)
    return best, ious[best]


def score_image(img: np.ndarray, min_area: int = 16) -> list[Detected]:
    """Detect objects in an RGB ``uint8 (H, W, 3)`` image (PIL images are accepted too)."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {img.shape}")
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    lab = label_pixels(img)
    h, w = lab.shape
    out = []
    for k, name in enumerate(_NAMES):
        m = lab == k
        if m.sum() < min_area:
            continue
        for comp in _components(m):
            if len(comp) < min_area:
                continue
            ys, xs = comp // w, comp % w
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            crop = np.zeros((y1 - y0, x1 - x0), dtype=bool)
            crop[ys - y0, xs - x0] = True
            shape, iou = classify_shape(crop)
            out.append(Detected(name, shape, (x0, y0, x1, y1), (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5),
                                int(len(comp)), iou))
    return out


# --------------------------------------------------------------------------- predicates

def _spec(o) -> tuple[str, str]:
    return (o.color, o.shape) if hasattr(o, "color") else (o[0], o[1])


def matches_exactly(detected, expected) -> bool:
    """True when the multiset of ``(colour, shape)`` detected equals the expected one."""
    return Counter(_spec(o) for o in detected) == Counter(_spec(o) for o in expected)


def count(detected, color: str | None = None, shape: str | None = None) -> int:
    """Number of detected objects with this colour and/or shape (``None`` = any)."""
    return sum(1 for o in detected if (color is None or o.color == color) and (shape is None or o.shape == shape))


def absent(detected, color: str | None = None, shape: str | None = None) -> bool:
    """Negation: no object of this colour and/or shape."""
    return count(detected, color, shape) == 0


_REL = {
    "left": lambda a, b: a.center[0] < b.center[0],
    "right": lambda a, b: a.center[0] > b.center[0],
    "above": lambda a, b: a.center[1] < b.center[1],
    "below": lambda a, b: a.center[1] > b.center[1],
}


def relation(detected, a: tuple[str, str], rel: str, b: tuple[str, str]) -> bool:
    """True when some detected ``a`` (colour, shape) is ``rel`` (left/right/above/below) of some ``b``.

    Centres are compared (image y grows downwards, so "above" means a smaller y).
    """
    if rel not in _REL:
        raise ValueError(f"unknown relation {rel!r}; allowed: {', '.join(_REL)}")
    As = [o for o in detected if _spec(o) == tuple(a)]
    Bs = [o for o in detected if _spec(o) == tuple(b)]
    return any(_REL[rel](x, y) for x in As for y in Bs if x is not y)
