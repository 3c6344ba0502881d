"""Caption grammar of the toy world.

    caption  := phrase | phrase " and " phrase
    phrase   := article " " colour " " shape
    article  := "an" before a vowel ("an orange circle"), else "a"

Two-object captions mention the objects in random order (never left-to-right), so the model
learns no positional meaning from word order. An empty caption is the unconditional prompt used
for classifier-free guidance (caption dropout during training).
"""

from __future__ import annotations

import numpy as np

from .render import COLORS, SHAPES, ShapeObject


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def phrase(color: str, shape: str) -> str:
    """``"a red circle"`` / ``"an orange square"``."""
    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}; allowed: {', '.join(COLORS)}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")
    return f"{article(color)} {color} {shape}"


def caption(objects: list[ShapeObject] | list[tuple[str, str]], rng: np.random.Generator | None = None) -> str:
    """Caption for objects (or ``(colour, shape)`` pairs); random order of mention if ``rng`` is given."""
    specs = [(o.color, o.shape) if isinstance(o, ShapeObject) else tuple(o) for o in objects]
    if rng is not None and len(specs) > 1:
        specs = [specs[i] for i in rng.permutation(len(specs))]
    return " and ".join(phrase(c, s) for c, s in specs)


def vocabulary() -> list[str]:
    """Every word the captions use."""
    return sorted({"a", "an", "and", *COLORS, *SHAPES})


def single_object_prompts() -> list[str]:
    """All 18 single-object prompts, colour-major order."""
    return [phrase(c, s) for c in COLORS for s in SHAPES]
