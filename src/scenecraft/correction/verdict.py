"""What a verifier says about a picture: the objects it found, matched to the scene's regions, and the problems.

Every verifier (the toy scorer, an open-vocabulary detector, an LLM that reads images) only *finds* objects:
labelled boxes with scores. :func:`match_regions` then compares them with the scene the same way for all
of them:

1. each region is paired with a found object whose label is the region's (nearest first, objects centred
   inside the region's rectangle before any other);
2. a paired object whose centre lies outside the region's rectangle (grown by ``place_tolerance``) is a
   **place** problem (the object is there, in the wrong place);
3. a region left without a pair takes the unpaired object centred in its rectangle, if there is one: an
   **attribute** problem (something is where the region is, but with another label: a wrong colour or
   shape);
4. the regions still without an object are **missing**, and the objects no region took are **extra**.

Labels are compared after :func:`normalise_label` (lower case, articles and punctuation dropped). A region
whose expected label is ``None`` (a verifier that cannot say what the region should look like) takes any
object, after every labelled region has taken its own. Pure Python: no torch, no numpy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..scene import Scene
from ..scene.edits import region_rect

__all__ = ["MAX_ROUNDS", "PROBLEM_KINDS", "Found", "Problem", "Verdict", "match_regions", "normalise_label",
           "check_rect"]

#: The most rounds of self-correction one call may run.
MAX_ROUNDS = 10
#: The kinds of problem a verdict names.
PROBLEM_KINDS = ("missing", "extra", "attribute", "place")
Rect = tuple[float, float, float, float]
_ARTICLES = {"a", "an", "the", "one", "some"}
_NOT_WORD = re.compile(r"[^a-z0-9 ]+")


def normalise_label(label: str) -> str:
    """``label`` as verdicts compare it: lower case, punctuation and leading articles gone ("A red circle." ->
    "red circle")."""
    words = _NOT_WORD.sub(" ", label.lower()).split()
    while words and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words)


def check_rect(name: str, rect: Any) -> Rect:
    """``rect`` as four floats ``(x0, y0, x1, y1)`` in fractions of the canvas, ``0 <= x0 < x1 <= 1`` (likewise
    y), or a ValueError naming ``name`` and the value."""
    if not isinstance(rect, (list, tuple)) or len(rect) != 4:
        raise ValueError(f"{name} must be [x0, y0, x1, y1] in fractions of the canvas, got {str(rect)[:80]}")
    values = []
    for value in rect:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"{name} must hold four finite numbers, got {str(rect)[:80]}")
        if isinstance(value, int) and not -2 <= value <= 2:  # a 400-digit integer must not reach float()
            raise ValueError(f"{name} must lie on the canvas, 0 <= x0 < x1 <= 1, got {str(rect)[:80]}")
        values.append(float(value))
    x0, y0, x1, y1 = values
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(f"{name} must lie on the canvas, 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, "
                         f"got {[round(v, 4) for v in values]}")
    return x0, y0, x1, y1


@dataclass(frozen=True)
class Found:
    """An object a verifier found.

    Attributes:
        label: what it is, as the verifier names it ("red circle", "a cat").
        box: ``(x0, y0, x1, y1)`` in fractions of the canvas.
        score: the verifier's confidence in [0, 1] (1 for the exact toy scorer).
        region: the id of the region it was matched to, ``None`` before matching or for a stray object.
        mask: the object's pixels, a bool ``(height, width)`` array at the picture's size, where the verifier
            segments (a detector with SAM); ``None`` otherwise. Not compared, not serialised.
    """

    label: str
    box: Rect
    score: float = 1.0
    region: str | None = None
    mask: Any = field(default=None, compare=False, repr=False)

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "box": [round(v, 4) for v in self.box], "score": round(self.score, 4),
                "region": self.region}


@dataclass(frozen=True)
class Problem:
    """One difference between the picture and its scene.

    Attributes:
        kind: one of :data:`PROBLEM_KINDS`: ``missing`` (no object for the region), ``extra`` (an object no
            region asks for), ``attribute`` (an object with another label where the region is: a wrong colour,
            shape...), ``place`` (the region's object, outside the region's rectangle).
        region: the region's id (``None`` for ``extra``).
        box: where the object found lies (``None`` for ``missing``), fractions of the canvas.
        label: what was found there (``None`` for ``missing``).
        expected: what the region asks for (its prompt), ``None`` for ``extra``.
        mask: the found object's pixels when the verifier segments (see :attr:`Found.mask`), else ``None``.
    """

    kind: str
    region: str | None = None
    box: Rect | None = None
    label: str | None = None
    expected: str | None = None
    mask: Any = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        where = "" if self.box is None else " at [" + ", ".join(f"{v:.2f}" for v in self.box) + "]"
        if self.kind == "missing":
            return f"missing {self.region} {self.expected!r}"
        if self.kind == "extra":
            return f"extra {self.label!r}{where}"
        if self.kind == "attribute":
            return f"{self.region} {self.expected!r} drawn as {self.label!r}{where}"
        return f"{self.region} {self.expected!r} out of its place{where}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "region": self.region, "label": self.label, "expected": self.expected,
                "box": None if self.box is None else [round(v, 4) for v in self.box]}


@dataclass(frozen=True)
class Verdict:
    """A verifier's reading of one picture against its scene: ``found`` (matched: each ``Found.region`` set
    or ``None``), ``problems``, and the verifier's name. ``passed`` when there is no problem."""

    found: tuple[Found, ...]
    problems: tuple[Problem, ...]
    verifier: str = ""

    @property
    def passed(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        return "passed" if self.passed else "; ".join(problem.describe() for problem in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {"verifier": self.verifier, "passed": self.passed, "problems": [p.to_dict() for p in self.problems],
                "found": [f.to_dict() for f in self.found]}


def _inside(point: tuple[float, float], rect: Rect, grow: float = 0.0) -> bool:
    x, y = point
    return rect[0] - grow <= x <= rect[2] + grow and rect[1] - grow <= y <= rect[3] + grow


def _distance(point: tuple[float, float], rect: Rect) -> float:
    return math.hypot(point[0] - (rect[0] + rect[2]) / 2, point[1] - (rect[1] + rect[3]) / 2)


def _pairs(rects: list[Rect], expected: list[str | None], found: Sequence[Found]) -> list[tuple[int, int]]:
    """Greedy pairs (region, object) of equal labels: labelled regions first, objects inside first, nearest first."""
    labels = [normalise_label(f.label) for f in found]
    candidates = []
    for r, (rect, want) in enumerate(zip(rects, expected)):
        for k, item in enumerate(found):
            if want is None or labels[k] == want:
                candidates.append(((want is None, not _inside(item.center, rect), _distance(item.center, rect)), r, k))
    pairs, taken_regions, taken_objects = [], set(), set()
    for _, r, k in sorted(candidates):
        if r not in taken_regions and k not in taken_objects:
            pairs.append((r, k))
            taken_regions.add(r)
            taken_objects.add(k)
    return pairs


def match_regions(scene: Scene, found: Sequence[Found], expected: Sequence[str | None], *, verifier: str = "",
                  place_tolerance: float = 0.0) -> Verdict:
    """The verdict on ``found`` against ``scene``'s regions (see the module docstring).

    Args:
        scene: the scene the picture was drawn from (given ids first, :meth:`Scene.with_ids`).
        found: the objects the verifier found.
        expected: per region, in order, the label its object must have (``None``: any).
        verifier: the verifier's name, kept in the verdict.
        place_tolerance: how far (a fraction of the canvas) an object's centre may lie outside its region's
            rectangle before it is out of its place (default 0: the centre must be inside).
    """
    scene = scene.with_ids()
    if len(expected) != len(scene.regions):
        raise ValueError(f"expected needs one label per region ({len(scene.regions)}), got {len(expected)}")
    if isinstance(place_tolerance, bool) or not isinstance(place_tolerance, (int, float)) or not (
            0 <= place_tolerance <= 1):
        raise ValueError(f"place_tolerance must be a fraction of the canvas in [0, 1], got {place_tolerance!r}")
    rects = [region_rect(scene, region) for region in scene.regions]
    wants = [None if label is None else normalise_label(label) for label in expected]
    owner: dict[int, int] = {}  # object -> region
    problems: list[Problem] = []
    for r, k in _pairs(rects, wants, found):
        owner[k] = r
        if not _inside(found[k].center, rects[r], place_tolerance):
            region = scene.regions[r]
            problems.append(Problem("place", region.id, found[k].box, found[k].label, region.prompt, found[k].mask))
    paired = set(owner.values())
    for r, region in enumerate(scene.regions):
        if r in paired:
            continue
        inside = [k for k, item in enumerate(found) if k not in owner and _inside(item.center, rects[r])]
        if inside:
            k = min(inside, key=lambda k: _distance(found[k].center, rects[r]))
            owner[k] = r
            problems.append(Problem("attribute", region.id, found[k].box, found[k].label, region.prompt,
                                    found[k].mask))
        else:
            problems.append(Problem("missing", region.id, expected=region.prompt))
    problems += [Problem("extra", None, item.box, item.label, mask=item.mask)
                 for k, item in enumerate(found) if k not in owner]
    matched = tuple(Found(item.label, item.box, item.score, scene.regions[owner[k]].id if k in owner else None,
                          item.mask) for k, item in enumerate(found))
    order = {kind: index for index, kind in enumerate(PROBLEM_KINDS)}
    return Verdict(matched, tuple(sorted(problems, key=lambda p: order[p.kind])), verifier)
