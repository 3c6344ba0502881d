"""Procedural toy world: flat-coloured shapes on a plain background.

Training distribution (what the shipped toy-world model has seen)
-----------------------------------------------------------------
- Canvas: 64x64 RGB, plain light-grey background whose grey level varies per image
  (``BACKGROUND_LEVELS``), no texture.
- Objects: one or two per image (``MAX_OBJECTS_IN_TRAINING = 2``); 40% of training scenes hold one
  object, 60% two. Each object has one of six colours (``COLORS``), one of three shapes
  (``SHAPES``: circle, square, upright isosceles triangle) and a size drawn uniformly from
  ``SIZE_RANGE`` pixels (bounding-box side). Objects never overlap and keep a gap of at least
  ``MIN_GAP`` pixels, so each object is one connected component of one colour.
- Positions are uniform over the canvas (the whole object stays inside it) and are never named in
  captions; in two-object captions the order of mention is random (not left-to-right).
- Captions name colour and shape only (see :mod:`scenecraft.toyworld.captions`).

Prompts with three or more objects, counts ("two red circles"), positions ("left of", "above"),
sizes, or negation ("no blue square") lie outside this distribution: they are what the regional
methods are benchmarked on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IMAGE_SIZE = 64
#: Colour name -> RGB. Chosen far apart in RGB (every pair at least ~110 apart, and far from the
#: background) so that a palette-nearest scorer and a small model can separate them.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 0, 0),
    "orange": (255, 128, 0),
    "yellow": (255, 245, 0),
    "green": (0, 160, 0),
    "blue": (0, 64, 255),
    "purple": (150, 0, 210),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: Background grey levels (R = G = B) drawn uniformly per image.
BACKGROUND_LEVELS: tuple[int, int] = (215, 245)
#: Object bounding-box side in pixels, inclusive range.
SIZE_RANGE: tuple[int, int] = (10, 28)
MIN_GAP = 3
MAX_OBJECTS_IN_TRAINING = 2


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object. ``bbox`` is ``(x0, y0, x1, y1)`` in pixels, end-exclusive."""

    color: str
    shape: str
    bbox: tuple[int, int, int, int]

    @property
    def size(self) -> int:
        return self.bbox[2] - self.bbox[0]

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)


@dataclass
class Scene:
    """A rendered scene: ``image`` is ``uint8`` of shape ``(H, W, 3)``."""

    image: np.ndarray
    objects: list[ShapeObject] = field(default_factory=list)
    background: tuple[int, int, int] = (230, 230, 230)


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean ``(size, size)`` mask of ``shape`` filling its bounding box."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")
    c = (np.arange(size) + 0.5) / size  # pixel centres in [0, 1]
    yy, xx = np.meshgrid(c, c, indexing="ij")
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        return (xx - 0.5) ** 2 + (yy - 0.5) ** 2 <= 0.25
    # upright isosceles triangle: apex at top centre, base along the bottom edge
    return np.abs(xx - 0.5) <= 0.5 * yy


def draw(objects: list[ShapeObject], background: tuple[int, int, int] = (230, 230, 230),
         image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw ``objects`` (in order) on a plain ``background``; returns ``uint8 (H, W, 3)``."""
    img = np.empty((image_size, image_size, 3), dtype=np.uint8)
    img[:] = np.asarray(background, dtype=np.uint8)
    for obj in objects:
        if obj.color not in COLORS:
            raise ValueError(f"unknown colour {obj.color!r}; allowed: {', '.join(COLORS)}")
        x0, y0, x1, y1 = obj.bbox
        if x1 - x0 != y1 - y0:
            raise ValueError(f"bbox must be square, got {obj.bbox}")
        m = shape_mask(obj.shape, x1 - x0)
        # clip to canvas
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, image_size), min(y1, image_size)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        sub = m[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        region = img[cy0:cy1, cx0:cx1]
        region[sub] = COLORS[obj.color]
    return img


def _boxes_clear(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def place_objects(rng: np.random.Generator, specs: list[tuple[str, str]], image_size: int = IMAGE_SIZE,
                  size_range: tuple[int, int] = SIZE_RANGE, gap: int = MIN_GAP,
                  max_tries: int = 200) -> list[ShapeObject]:
    """Place ``(colour, shape)`` specs at random non-overlapping positions and sizes.

    Sizes shrink towards ``size_range[0]`` when a placement keeps failing (many objects).
    """
    placed: list[ShapeObject] = []
    lo, hi = size_range
    for color, shape in specs:
        for attempt in range(max_tries):
            cap = hi if attempt < max_tries // 2 else max(lo, (lo + hi) // 2 - attempt // 20)
            size = int(rng.integers(lo, max(lo, cap) + 1))
            x0 = int(rng.integers(0, image_size - size + 1))
            y0 = int(rng.integers(0, image_size - size + 1))
            box = (x0, y0, x0 + size, y0 + size)
            if all(_boxes_clear(box, o.bbox, gap) for o in placed):
                placed.append(ShapeObject(color, shape, box))
                break
        else:
            raise RuntimeError(f"could not place {len(specs)} objects without overlap on a {image_size}px canvas")
    return placed


def random_specs(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """``n`` random ``(colour, shape)`` pairs; repeats allowed."""
    colors = list(COLORS)
    return [(colors[int(rng.integers(len(colors)))], SHAPES[int(rng.integers(len(SHAPES)))]) for _ in range(n)]


def random_scene(rng: np.random.Generator, n_objects: int | None = None, p_single: float = 0.4,
                 image_size: int = IMAGE_SIZE) -> Scene:
    """A random training-distribution scene (1 or 2 objects unless ``n_objects`` is given)."""
    if n_objects is None:
        n_objects = 1 if rng.random() < p_single else 2
    level = int(rng.integers(BACKGROUND_LEVELS[0], BACKGROUND_LEVELS[1] + 1))
    bg = (level, level, level)
    objects = place_objects(rng, random_specs(rng, n_objects), image_size=image_size)
    return Scene(image=draw(objects, bg, image_size), objects=objects, background=bg)


def render_scene(specs: list[tuple[str, str]], seed: int = 0, image_size: int = IMAGE_SIZE) -> Scene:
    """Render the given ``(colour, shape)`` specs at seeded random positions (any count)."""
    rng = np.random.default_rng(seed)
    level = int(rng.integers(BACKGROUND_LEVELS[0], BACKGROUND_LEVELS[1] + 1))
    bg = (level, level, level)
    objects = place_objects(rng, specs, image_size=image_size)
    return Scene(image=draw(objects, bg, image_size), objects=objects, background=bg)
