"""Edits on the toy world: does the edit apply, and does the rest of the picture stay put?

Each case is a scene, its edited scene, the edit mask and the objects the edited picture must hold.
The original is rendered (:func:`~scenecraft.generation.editing.render_scene`), the edited scene
re-rendered over it (:func:`~scenecraft.generation.editing.render_edit`), and the toy scorer reads both:

- **applied**: inside the mask the edited picture holds exactly the edited objects (those the case gives
  a box: the objects centred inside the mask are that (colour, shape) multiset, each centred in its box),
  so a removal leaves no object there;
- **kept**: of the original's objects that lie wholly outside the mask, the share found again in the
  edited picture (same colour and shape, centre within ``KEPT_TOLERANCE_PX``);
- **exact**: the whole edited picture holds exactly the expected multiset (which also needs the
  original to have been right outside the mask);
- **outside change**: the mean and max absolute change of the colour values where the mask is 0, in
  0-255 units, of the picture returned (pasted, by default) and of the blending alone (its latents decoded).

With ``grow_mask`` (default) a case's mask also takes in the bounding boxes of the original's detected
objects centred in it, and of those the edit changes (the colour and shape of a region of the scene that
the edited scene no longer has): the toy model does not always draw an object inside its box, and an edit
of it must cover all of it (the scorer standing in for the detector a user's mask would come from).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..generation.editing import EditableResult, pixel_change, render_edit, render_scene
from ..generation.sampling import SamplingConfig, decode_latents
from ..scene import Box, Region, Scene
from ..toyworld.captions import phrase
from ..toyworld.render import COLORS, SHAPES
from ..toyworld.score import Detected, matches_exactly, score_image

__all__ = ["EditCase", "EditBenchRow", "run_edit_benchmark", "toy_edit_cases", "format_edit_table", "KEPT_TOLERANCE_PX"]

KEPT_TOLERANCE_PX = 3.0
Expected = tuple  # (colour, shape) or (colour, shape, (x0, y0, x1, y1) in fractions)


@dataclass(frozen=True)
class EditCase:
    """One edit: ``scene`` rendered with ``seed``, then ``edited`` re-rendered over it inside ``edit_mask``.

    Attributes:
        operation: what the edit does ("recolour", "remove", ...); the report groups by it.
        scene, edited: the scene before and after the edit.
        edit_mask: ``(height, width)`` floats in [0, 1], 1 where pixels may change.
        expected: the objects the edited picture must hold: ``(colour, shape)`` for one the edit leaves
            alone, ``(colour, shape, box)`` for one it draws, whose centre must lie in ``box`` (fractions).
        seed: the original's seed (default 0).
    """

    operation: str
    scene: Scene
    edited: Scene
    edit_mask: np.ndarray
    expected: tuple[Expected, ...]
    seed: int = 0


@dataclass
class EditBenchRow:
    """One operation's figures over its cases."""

    operation: str
    cases: int = 0
    applied: int = 0
    exact: int = 0
    kept: int = 0
    kept_total: int = 0
    outside_means: list[float] = field(default_factory=list)
    blend_only_means: list[float] = field(default_factory=list)
    outside_max: float = 0.0
    seconds: float = 0.0

    @property
    def applied_share(self) -> float:
        return self.applied / self.cases if self.cases else 0.0

    @property
    def exact_share(self) -> float:
        return self.exact / self.cases if self.cases else 0.0

    @property
    def kept_share(self) -> float:
        return self.kept / self.kept_total if self.kept_total else 1.0

    @property
    def outside_mean(self) -> float:
        return float(np.mean(self.outside_means)) if self.outside_means else 0.0

    @property
    def blend_only_mean(self) -> float:
        return float(np.mean(self.blend_only_means)) if self.blend_only_means else 0.0

    def as_dict(self) -> dict:
        return {"operation": self.operation, "cases": self.cases, "applied": self.applied_share,
                "kept": self.kept_share, "exact": self.exact_share, "outside_mean": self.outside_mean,
                "outside_max": self.outside_max,
                "blend_only_outside_mean": self.blend_only_mean, "seconds_per_edit": self.seconds / max(self.cases, 1)}


def applied(detected: Sequence[Detected], expected: Sequence[Expected], mask: np.ndarray) -> bool:
    """Inside ``mask``, exactly the boxed expected objects, each with a match centred in its box."""
    height, width = mask.shape
    drawn = [e for e in expected if len(e) > 2]
    inside = [d for d in detected if _at(mask, d.center) > 0]
    if not matches_exactly(inside, [e[:2] for e in drawn]):
        return False
    return all(any(d.color == color and d.shape == shape and _inside(d.center, box, width, height) for d in inside)
               for color, shape, box in drawn)


def _at(mask: np.ndarray, center: tuple[float, float]) -> float:
    height, width = mask.shape
    return float(mask[min(max(int(center[1]), 0), height - 1), min(max(int(center[0]), 0), width - 1)])


def _inside(center: tuple[float, float], box: Sequence[float], width: int, height: int) -> bool:
    x, y = center
    return box[0] * width <= x <= box[2] * width and box[1] * height <= y <= box[3] * height


def _kept(before: Sequence[Detected], after: Sequence[Detected], mask: np.ndarray) -> tuple[int, int]:
    """``(found again, total)`` over the original's objects wholly outside the mask."""
    outside = [d for d in before if not mask[d.bbox[1]:d.bbox[3], d.bbox[0]:d.bbox[2]].any()]
    found = sum(any(o.color == d.color and o.shape == d.shape and _distance(o.center, d.center) <= KEPT_TOLERANCE_PX
                    for o in after) for d in outside)
    return found, len(outside)


def _distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    return float(np.hypot(a[0] - b[0], a[1] - b[1]))


def grown_mask(mask: np.ndarray, detected: Sequence[Detected], changed: Sequence[tuple[str, str]] = ()) -> np.ndarray:
    """``mask`` plus the bounding box (one pixel wider) of every detected object centred in it or whose
    ``(colour, shape)`` is in ``changed``."""
    grown = mask.copy()
    height, width = mask.shape
    for d in detected:
        if _at(mask, d.center) > 0 or (d.color, d.shape) in changed:
            x0, y0, x1, y1 = d.bbox
            grown[max(y0 - 1, 0):min(y1 + 1, height), max(x0 - 1, 0):min(x1 + 1, width)] = 1
    return grown


def changed_objects(scene: Scene, edited: Scene) -> list[tuple[str, str]]:
    """``(colour, shape)`` of the toy phrases of ``scene``'s regions that ``edited`` lacks (same prompt and box)."""
    kept = {(r.prompt, r.geometry) for r in edited.regions}
    words = [r.prompt.split() for r in scene.regions if (r.prompt, r.geometry) not in kept]
    return [(w[-2], w[-1]) for w in words if len(w) >= 2 and w[-2] in COLORS and w[-1] in SHAPES]


def _uint8(image) -> np.ndarray:
    array = np.asarray(image)
    return array if array.dtype == np.uint8 else (np.clip(array, 0, 1) * 255).round().astype(np.uint8)


def run_edit_benchmark(
    pipe,
    cases: Sequence[EditCase],
    config: SamplingConfig,
    *,
    method: str = "layout",
    grow_mask: bool = True,
    on_case: Callable[[EditCase, EditableResult, EditableResult, np.ndarray, bool], None] | None = None,
    **edit_options,
) -> list[EditBenchRow]:
    """Render every case's original and edit; one row per operation, in the order they first appear.

    ``config`` is ``method``'s config (its seed is each case's); ``edit_options`` go to ``render_edit``
    (``dilate``, ``feather``, ``blend_until``, ``paste``...). Originals shared by cases (same scene and
    seed) are rendered once, and with ``layout`` their per-box generations are reused by the edits.
    ``on_case(case, original, edited, mask, applied)`` is called after each case (``mask`` as used).
    """
    rows: dict[str, EditBenchRow] = {}
    originals: dict[tuple[str, int], EditableResult] = {}
    for case in cases:
        key = (case.scene.to_json(indent=None), case.seed)
        if key not in originals:
            originals[key] = render_scene(pipe, case.scene, config, method=method, seed=case.seed)
        original = originals[key]
        before = score_image(_uint8(original.images[0]))
        mask = case.edit_mask
        if grow_mask:
            mask = grown_mask(mask, before, changed_objects(case.scene, case.edited))
        start = time.perf_counter()
        edited = render_edit(pipe, case.edited, config, method=method, original=original, edit_mask=mask,
                             seed=case.seed, **edit_options)
        seconds = time.perf_counter() - start
        _record(rows.setdefault(case.operation, EditBenchRow(case.operation)), pipe, case, original, edited, mask,
                before, seconds, on_case)
    return list(rows.values())


def _record(row: EditBenchRow, pipe, case: EditCase, original: EditableResult, edited: EditableResult, mask: np.ndarray,
            before: Sequence[Detected], seconds: float, on_case) -> None:
    picture = _uint8(edited.images[0])
    after = score_image(picture)
    ok = applied(after, case.expected, mask)
    found, total = _kept(before, after, mask)
    change = pixel_change(_uint8(original.images[0]), picture, mask)
    blend_only = pixel_change(_uint8(original.images[0]), _uint8(decode_latents(pipe, edited.latents, "np")[0]), mask)
    row.cases += 1
    row.applied += ok
    row.exact += matches_exactly(after, [e[:2] for e in case.expected])
    row.kept += found
    row.kept_total += total
    row.outside_means.append(change["outside_mean"])
    row.blend_only_means.append(blend_only["outside_mean"])
    row.outside_max = max(row.outside_max, change["outside_max"])
    row.seconds += seconds
    if on_case is not None:
        on_case(case, original, edited, mask, ok)


# ----------------------------------------------------------------------------------------------- the toy suite
LEFT, RIGHT, BOTTOM = (0.05, 0.1, 0.42, 0.47), (0.58, 0.1, 0.95, 0.47), (0.31, 0.55, 0.69, 0.92)
OPERATIONS = ("recolour", "reshape", "remove", "add", "move")


def _scene(objects: Sequence[tuple[str, str, tuple]], size: int) -> Scene:
    phrases = [phrase(color, shape) for color, shape, _ in objects]
    prompt = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return Scene(prompt=prompt, width=size, height=size,
                 regions=[Region(p, Box(*box)) for p, (_, _, box) in zip(phrases, objects)])


def _mask(boxes: Sequence[tuple], size: int) -> np.ndarray:
    from ..generation.editing import boxes_mask

    return boxes_mask(boxes, size, size)


def toy_edit_cases(seeds: Sequence[int] = (0, 1, 2), operations: Sequence[str] = OPERATIONS,
                   size: int = 64) -> list[EditCase]:
    """The toy suite: per seed, two objects (left and right, top half) and one edit of each operation:
    recolour the right one, give it another shape, remove it, add a third object below, move the right one
    below. Colours and shapes are drawn from the seed (distinct colours)."""
    unknown = sorted(set(operations) - set(OPERATIONS))
    if unknown:
        raise ValueError(f"unknown operation(s) {unknown}; available: {', '.join(OPERATIONS)}")
    cases = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        colors = [str(c) for c in rng.choice(list(COLORS), size=4, replace=False)]
        shapes = [str(s) for s in rng.choice(SHAPES, size=4)]
        left, right = (colors[0], shapes[0], LEFT), (colors[1], shapes[1], RIGHT)
        scene = _scene([left, right], size)
        other_shape = next(s for s in SHAPES if s != shapes[1])
        edits = {
            "recolour": ([left, (colors[2], shapes[1], RIGHT)], [RIGHT]),
            "reshape": ([left, (colors[1], other_shape, RIGHT)], [RIGHT]),
            "remove": ([left], [RIGHT]),
            "add": ([left, right, (colors[3], shapes[3], BOTTOM)], [BOTTOM]),
            "move": ([left, (colors[1], shapes[1], BOTTOM)], [RIGHT, BOTTOM]),
        }
        for operation in operations:
            objects, changed = edits[operation]
            expected = tuple((c, s, box) if box in changed else (c, s) for c, s, box in objects)
            cases.append(EditCase(operation, scene, _scene(objects, size), _mask(changed, size), expected, seed))
    return cases


def format_edit_table(rows: Sequence[EditBenchRow]) -> str:
    """The report as text: one line per operation, then all operations together."""
    lines = [f"{'operation':<10} {'edits':>5} {'applied':>8} {'kept':>7} {'exact':>7} {'outside mean':>13} "
             f"{'outside max':>12} {'blend only':>11} {'s/edit':>7}"]
    for row in rows:
        lines.append(f"{row.operation:<10} {row.cases:>5} {row.applied_share:>8.0%} {row.kept_share:>7.0%} "
                     f"{row.exact_share:>7.0%} "
                     f"{row.outside_mean:>9.2f}/255 {row.outside_max:>8.0f}/255 {row.blend_only_mean:>7.2f}/255 "
                     f"{row.seconds / max(row.cases, 1):>7.2f}")
    total = sum(row.cases for row in rows)
    if total:
        applied_all = sum(row.applied for row in rows) / total
        kept_all = sum(row.kept for row in rows) / max(sum(row.kept_total for row in rows), 1)
        exact_all = sum(row.exact for row in rows) / total
        lines.append(f"{'all':<10} {total:>5} {applied_all:>8.0%} {kept_all:>7.0%} {exact_all:>7.0%}")
    return "\n".join(lines)
