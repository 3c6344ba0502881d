"""Edits on the toy world: does the edit apply, and does the rest of the picture stay put?

Each case is a scene, its edited scene, the edit mask and the objects the edited picture must hold.
The original is rendered (:func:`~scenecraft.generation.editing.render_scene`), the edited scene
re-rendered over it (:func:`~scenecraft.generation.editing.render_edit`), and the toy scorer reads both:

- **applied**: inside the mask the edited picture holds exactly the edited objects (those the case gives
  a box: the objects centred inside the mask are that (colour, shape) multiset, each centred in its box),
  so a removal leaves no object there; an object the case also gives a scale (a resize) must have grown
  or shrunk past the midpoint between no change and that scale (its side, from its area, against the
  original's object of that colour and shape nearest the box); an undo (``EditCase.undoes``) is applied
  when the picture is the one before the undone edit, bit for bit;
- **kept**: of the original's objects that lie wholly outside the mask and do not touch it, the share found
  again in the edited picture (same colour and shape, centre within ``KEPT_TOLERANCE_PX``);
- **exact**: the whole edited picture holds exactly the expected multiset (which also needs the
  original to have been right outside the mask);
- **outside change**: the mean and max absolute change of the colour values where the mask is 0, in
  0-255 units, of the picture returned (pasted, by default) and of the blending alone (its latents decoded).

Two suites: :func:`toy_edit_cases` builds five operations' edited scenes by hand;
:func:`instruction_edit_cases` plans instructions of every kind with the offline
:func:`~scenecraft.planning.plan_edit` ("make the red circle blue", "swap the circle and the square",
"make it three squares", "undo", ...), and derives each case's mask and expected objects from the plan's
diff (:func:`case_from_plan`).

With ``grow_mask`` (default) a case's mask also takes in the bounding boxes of the original's detected
objects centred in it, and of those the edit changes (the colour and shape of a region of the scene that
the edited scene no longer has): the toy model does not always draw an object inside its box, and an edit
of it must cover all of it (the scorer standing in for the detector a user's mask would come from).
"""

from __future__ import annotations

import math
import textwrap
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

__all__ = ["INSTRUCTION_FORMS", "INSTRUCTION_OPERATIONS", "KEPT_TOLERANCE_PX", "TARGETS", "EditBenchRow", "EditCase",
           "case_from_plan", "edit_contact_sheet", "edit_report", "expected_objects", "format_edit_table",
           "instruction_edit_cases", "run_edit_benchmark", "toy_edit_cases"]

KEPT_TOLERANCE_PX = 3.0
#: ``(colour, shape)``, ``(colour, shape, (x0, y0, x1, y1) in fractions)`` or ``(colour, shape, box, scale)``.
Expected = tuple
#: What the issue asks of every operation: the share applied, the share of untouched objects kept, and the
#: mean change outside the mask (0-255 units) of the returned picture and of the blending alone.
TARGETS = {"applied": 0.9, "kept": 1.0, "outside_mean": 2.0}


@dataclass(frozen=True)
class EditCase:
    """One edit: ``scene`` rendered with ``seed``, then ``edited`` re-rendered over it inside ``edit_mask``.

    Attributes:
        operation: what the edit does ("recolour", "remove", ...); the report groups by it.
        scene, edited: the scene before and after the edit.
        edit_mask: ``(height, width)`` floats in [0, 1], 1 where pixels may change.
        expected: the objects the edited picture must hold: ``(colour, shape)`` for one the edit leaves
            alone, ``(colour, shape, box)`` for one it draws, whose centre must lie in ``box`` (fractions),
            ``(colour, shape, box, scale)`` for one it resizes by ``scale`` (its side).
        seed: the original's seed (default 0).
        instruction: the instruction the case was planned from (``None``: built as data).
        undoes: for an undo, the edit it undoes: the picture edited is that edit's (drawn over its own
            original), and the case is applied when the result is that edit's original, bit for bit
            (default ``None``).
    """

    operation: str
    scene: Scene
    edited: Scene
    edit_mask: np.ndarray
    expected: tuple[Expected, ...]
    seed: int = 0
    instruction: str | None = None
    undoes: EditCase | None = None


@dataclass
class EditBenchRow:
    """One operation's figures over its cases (with one method)."""

    operation: str
    method: str = ""
    cases: int = 0
    applied: int = 0
    exact: int = 0
    kept: int = 0
    kept_total: int = 0
    outside_means: list[float] = field(default_factory=list)
    blend_only_means: list[float] = field(default_factory=list)
    outside_max: float = 0.0
    blend_only_max: float = 0.0
    seconds: float = 0.0
    box_hits: int = 0
    box_misses: int = 0

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

    @property
    def seconds_per_edit(self) -> float:
        return self.seconds / max(self.cases, 1)

    def passes(self) -> dict[str, bool]:
        """Each target of :data:`TARGETS` met or not (``blend_only_mean`` against the outside target too)."""
        return {"applied": self.applied_share >= TARGETS["applied"], "kept": self.kept >= self.kept_total,
                "outside_mean": self.outside_mean <= TARGETS["outside_mean"],
                "blend_only_mean": self.blend_only_mean <= TARGETS["outside_mean"]}

    def as_dict(self) -> dict:
        return {"operation": self.operation, "method": self.method, "cases": self.cases,
                "applied": self.applied_share, "kept": self.kept_share, "exact": self.exact_share,
                "outside_mean": self.outside_mean, "outside_max": self.outside_max,
                "blend_only_outside_mean": self.blend_only_mean, "blend_only_outside_max": self.blend_only_max,
                "seconds_per_edit": self.seconds_per_edit, "boxes_reused": self.box_hits,
                "boxes_regenerated": self.box_misses, "pass": self.passes()}


def _total(rows: Sequence[EditBenchRow], method: str) -> EditBenchRow:
    """All of ``rows`` as one row named "all"."""
    total = EditBenchRow("all", method)
    for row in rows:
        for name in ("cases", "applied", "exact", "kept", "kept_total", "seconds", "box_hits", "box_misses"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
        total.outside_means += row.outside_means
        total.blend_only_means += row.blend_only_means
        total.outside_max = max(total.outside_max, row.outside_max)
        total.blend_only_max = max(total.blend_only_max, row.blend_only_max)
    return total


# ----------------------------------------------------------------------------------------------- scoring
def applied(detected: Sequence[Detected], expected: Sequence[Expected], mask: np.ndarray,
            before: Sequence[Detected] = ()) -> bool:
    """Inside ``mask``, exactly the boxed expected objects, each with a match centred in its box; one with a
    scale also resized past the midpoint against ``before`` (the original's detections)."""
    height, width = mask.shape
    drawn = [e for e in expected if len(e) > 2]
    inside = [d for d in detected if _at(mask, d.center) > 0]
    if not matches_exactly(inside, [e[:2] for e in drawn]):
        return False
    for color, shape, box, *scale in drawn:
        found = [d for d in inside if d.color == color and d.shape == shape and _inside(d.center, box, width, height)]
        if not found or (scale and not any(_resized(d, before, box, scale[0], width, height) for d in found)):
            return False
    return True


def _resized(after: Detected, before: Sequence[Detected], box: Sequence[float], scale: float, width: int,
             height: int) -> bool:
    """``after``'s side (from its area) against the original's same object nearest ``box``'s centre: past the
    geometric midpoint between 1 and ``scale``."""
    centre = ((box[0] + box[2]) / 2 * width, (box[1] + box[3]) / 2 * height)
    same = [d for d in before if d.color == after.color and d.shape == after.shape]
    if not same or scale == 1:
        return bool(same)
    old = min(same, key=lambda d: _distance(d.center, centre))
    ratio = math.sqrt(after.area / max(old.area, 1))
    return math.log(ratio) / math.log(scale) >= 0.5


def _at(mask: np.ndarray, center: tuple[float, float]) -> float:
    height, width = mask.shape
    return float(mask[min(max(int(center[1]), 0), height - 1), min(max(int(center[0]), 0), width - 1)])


def _inside(center: tuple[float, float], box: Sequence[float], width: int, height: int) -> bool:
    x, y = center
    return box[0] * width <= x <= box[2] * width and box[1] * height <= y <= box[3] * height


def _kept(before: Sequence[Detected], after: Sequence[Detected], mask: np.ndarray) -> tuple[int, int]:
    """``(found again, total)`` over the original's objects wholly outside the mask and not touching it (the
    scorer's connected components join an object to one drawn against it across the mask's border)."""
    outside = [d for d in before if not _touches(mask, d.bbox)]
    found = sum(any(o.color == d.color and o.shape == d.shape and _distance(o.center, d.center) <= KEPT_TOLERANCE_PX
                    for o in after) for d in outside)
    return found, len(outside)


def _touches(mask: np.ndarray, bbox: tuple[int, int, int, int]) -> bool:
    """Whether ``mask`` is nonzero on ``bbox`` (pixels, end-exclusive) or on a pixel beside it."""
    x0, y0, x1, y1 = bbox
    return bool(mask[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1].any())


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


# ----------------------------------------------------------------------------------------------- running
@dataclass
class _Original:
    """The picture a case edits; for an undo also the picture it must give back and the undone edit's mask."""

    result: EditableResult
    reference: object | None = None
    mask: np.ndarray | None = None


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
    seed) are rendered once, and with ``layout`` their per-box generations are reused by the edits. An
    undo first renders the edit it undoes over its original, then the undo over that, with a mask that
    holds the undone edit's. ``on_case(case, original, edited, mask, applied)`` is called after each case
    (``original``: the picture edited; ``mask`` as used).
    """
    rows: dict[str, EditBenchRow] = {}
    originals: dict[tuple[str, int], EditableResult] = {}
    for case in cases:
        source = _original(pipe, case, config, method, grow_mask, originals, edit_options)
        before = score_image(_uint8(source.result.images[0]))
        mask = _case_mask(case, before, grow_mask, source.mask)
        start = time.perf_counter()
        edited = render_edit(pipe, case.edited, config, method=method, original=source.result, edit_mask=mask,
                             seed=case.seed, **edit_options)
        seconds = time.perf_counter() - start
        _record(rows.setdefault(case.operation, EditBenchRow(case.operation, method)), pipe, case, source, edited,
                mask, before, seconds, on_case)
    return list(rows.values())


def _case_mask(case: EditCase, before: Sequence[Detected], grow: bool, undone: np.ndarray | None) -> np.ndarray:
    mask = case.edit_mask
    if grow:
        mask = grown_mask(mask, before, changed_objects(case.scene, case.edited))
    if undone is not None:  # an undo covers all the undone edit could change
        mask = np.maximum(mask, undone)
    return mask


def _original(pipe, case: EditCase, config: SamplingConfig, method: str, grow: bool,
              originals: dict[tuple[str, int], EditableResult], edit_options: dict) -> _Original:
    if case.undoes is None:
        key = (case.scene.to_json(indent=None), case.seed)
        if key not in originals:
            originals[key] = render_scene(pipe, case.scene, config, method=method, seed=case.seed)
        return _Original(originals[key])
    undone = case.undoes
    first = _original(pipe, undone, config, method, grow, originals, edit_options)
    mask = _case_mask(undone, score_image(_uint8(first.result.images[0])), grow, first.mask)
    result = render_edit(pipe, undone.edited, config, method=method, original=first.result, edit_mask=mask,
                         seed=undone.seed, **edit_options)
    return _Original(result, first.result.images[0], mask)


def _record(row: EditBenchRow, pipe, case: EditCase, source: _Original, edited: EditableResult, mask: np.ndarray,
            before: Sequence[Detected], seconds: float, on_case) -> None:
    original = source.result
    picture = _uint8(edited.images[0])
    after = score_image(picture)
    if case.undoes is not None:
        ok = bool(np.array_equal(np.asarray(edited.images[0]), np.asarray(source.reference)))
    else:
        ok = applied(after, case.expected, mask, before)
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
    row.blend_only_max = max(row.blend_only_max, blend_only["outside_max"])
    row.seconds += seconds
    row.box_hits += edited.box_hits
    row.box_misses += edited.box_misses
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


# ----------------------------------------------------------------------------------------------- instructions
INSTRUCTION_OPERATIONS = ("recolour", "reshape", "remove", "add", "move", "resize", "swap", "set_count", "undo")
#: The offline planner's forms per operation; a suite's k-th seed uses form k modulo their number. ``{a}``,
#: ``{b}``: the two objects ("red circle", top left and bottom right); ``{a_shape}``, ``{b_shape}``,
#: ``{b_shapes}``: their shapes; ``{colour}``: a colour neither has; ``{reshaped}``: ``b``'s colour on another
#: shape ("a red triangle"); ``{new}``: a third object ("a green square"). An undo undoes the edit of
#: :data:`UNDONE` (in turn) and is said as one of its forms.
INSTRUCTION_FORMS: dict[str, tuple[str, ...]] = {
    "recolour": ("make the {b} {colour}", "paint the {b} {colour}", "change the {b} to {colour}",
                 "the {b} should be {colour}"),
    "reshape": ("turn the {b} into {reshaped}", "replace the {b} with {reshaped}", "make the {b} {reshaped}"),
    "remove": ("remove the {b}", "delete the {b_shape}", "get rid of the {b}", "erase the {b}"),
    "add": ("add {new} on the right", "add {new} at the top", "add {new} below the {a}",
            "add {new} in the bottom left corner"),
    "move": ("move the {b} to the left", "move the {b} to the top", "move the {b} to the top right",
             "shift the {b} to the bottom left"),
    "resize": ("make the {b} bigger", "make the {b} smaller", "enlarge the {b}", "shrink the {b}"),
    "swap": ("swap the {a} and the {b}", "switch the {a} with the {b}",
             "swap the positions of the {b_shape} and the {a_shape}"),
    "set_count": ("make it three {b_shapes}", "there should be two {b_shapes}", "i want two {b_shapes}"),
    "undo": ("undo", "undo that", "go back"),
}
UNDONE = ("recolour", "move", "add", "remove", "reshape", "swap")
#: Where the suite's two objects are (fractions): top left and bottom right, leaving room to add and move.
FIRST, SECOND = (0.06, 0.06, 0.38, 0.38), (0.62, 0.62, 0.94, 0.94)


def _toy_object(prompt: str) -> tuple[str, str]:
    """The toy-world colour and shape a region's prompt names ("a red circle" -> ("red", "circle"))."""
    words = prompt.lower().replace(",", " ").split()
    colours = [w for w in words if w in COLORS]
    shapes = [w for w in words if w in SHAPES]
    if not colours or not shapes:
        raise ValueError(f"the region prompt {prompt!r} names no toy-world colour ({', '.join(COLORS)}) and shape "
                         f"({', '.join(SHAPES)}); the edit benchmark scores toy-world objects only")
    return colours[-1], shapes[-1]


def expected_objects(diff) -> tuple[Expected, ...]:
    """What a :class:`~scenecraft.scene.edits.SceneDiff`'s new scene must show: every region of
    ``diff.after`` as its toy object, with its box where it was added or changed, and with the scale of its
    side where it was resized (``(colour, shape)``, ``(colour, shape, box)``, ``(colour, shape, box, scale)``)."""
    from ..scene.edits import region_rect

    old = {r.id: r for r in diff.before.regions}
    expected: list[Expected] = []
    for region in diff.after.regions:
        colour, shape = _toy_object(region.prompt)
        what = diff.changed.get(region.id, ())
        if region.id not in diff.added and not what:
            expected.append((colour, shape))
            continue
        box = tuple(region_rect(diff.after, region))
        if "resized" not in what:
            expected.append((colour, shape, box))
            continue
        x0, y0, x1, y1 = region_rect(diff.before, old[region.id])
        scale = math.sqrt((box[2] - box[0]) * (box[3] - box[1]) / ((x1 - x0) * (y1 - y0)))
        expected.append((colour, shape, box, round(scale, 6)))
    return tuple(expected)


def case_from_plan(operation: str, plan, *, seed: int, undoes: EditCase | None = None) -> EditCase:
    """The case of an :class:`~scenecraft.planning.EditPlan`: its base scene (for an undo: the undone edit's
    scene) edited into ``plan.scene`` inside ``plan.diff.edit_mask``, the expected objects from the diff."""
    if plan.diff.empty:
        raise ValueError(f"the instruction {plan.instruction!r} changes nothing in the scene; "
                         "an edit case needs an edit")
    if plan.is_undo and undoes is None:
        raise ValueError(f"{plan.instruction!r} is an undo: give the case it undoes (undoes=...)")
    scene = undoes.edited if undoes is not None else plan.base
    mask = plan.diff.edit_mask(scene.height, scene.width).astype(np.float32)
    return EditCase(operation, scene, plan.scene, mask, expected_objects(plan.diff), seed,
                    instruction=plan.instruction, undoes=undoes)


def _words(seed: int, size: int) -> tuple[Scene, dict[str, str]]:
    """The seed's two-object scene and the words its instructions are filled with."""
    rng = np.random.default_rng(seed)
    colours = [str(c) for c in rng.choice(list(COLORS), size=4, replace=False)]
    shapes = [str(s) for s in rng.permutation(SHAPES)]
    new_shape = str(rng.choice(SHAPES))
    scene = _scene([(colours[0], shapes[0], FIRST), (colours[1], shapes[1], SECOND)], size).with_ids()
    words = {"a": f"{colours[0]} {shapes[0]}", "b": f"{colours[1]} {shapes[1]}", "a_shape": shapes[0],
             "b_shape": shapes[1], "b_shapes": shapes[1] + "s", "colour": colours[2],
             "reshaped": phrase(colours[1], shapes[2]), "new": phrase(colours[3], new_shape)}
    return scene, words


def _plan(operation: str, form: int, words: dict[str, str], history):
    from ..planning import plan_edit

    forms = INSTRUCTION_FORMS[operation]
    return plan_edit(forms[form % len(forms)].format(**words), history=history)


def _planned(operation: str, form: int, scene: Scene, words: dict[str, str], seed: int) -> EditCase:
    """The case of ``operation``'s ``form``-th instruction on ``scene`` (an undo: after an edit of :data:`UNDONE`)."""
    from ..scene.edits import EditHistory

    history = EditHistory.start(scene, seed=seed)
    if operation != "undo":
        return case_from_plan(operation, _plan(operation, form, words, history), seed=seed)
    undone_operation = UNDONE[form % len(UNDONE)]
    plan = _plan(undone_operation, form // len(UNDONE), words, history)
    undone = case_from_plan(undone_operation, plan, seed=seed)
    plan.commit(history, seed=seed)
    return case_from_plan("undo", _plan("undo", form, words, history), seed=seed, undoes=undone)


def instruction_edit_cases(seeds: Sequence[int] = (0, 1, 2), operations: Sequence[str] = INSTRUCTION_OPERATIONS,
                           size: int = 64) -> list[EditCase]:
    """The instruction suite: per seed, two objects of distinct colours and shapes (top left and bottom
    right, drawn from the seed) and, for each operation, one instruction of :data:`INSTRUCTION_FORMS` (the
    ``k``-th seed the ``k``-th form, in turn) planned by the offline :func:`~scenecraft.planning.plan_edit`;
    each case's mask and expected objects come from the plan's diff (:func:`case_from_plan`). An undo undoes
    an edit of :data:`UNDONE` (in turn) and must give that edit's original back bit for bit.

    Args:
        seeds: the originals' seeds (default 0, 1, 2); each also picks the colours and shapes.
        operations: of :data:`INSTRUCTION_OPERATIONS` (default all), in the order given.
        size: the canvas side in pixels (default 64, the toy model's).
    """
    unknown = sorted(set(operations) - set(INSTRUCTION_OPERATIONS))
    if unknown:
        raise ValueError(f"unknown operation(s) {unknown}; available: {', '.join(INSTRUCTION_OPERATIONS)}")
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 4096:
        raise ValueError(f"size must be a whole number of pixels in 8..4096, got {size!r}")
    cases = []
    for form, seed in enumerate(seeds):
        scene, words = _words(seed, size)
        cases += [_planned(operation, form, scene, words, seed) for operation in operations]
    return cases


# ----------------------------------------------------------------------------------------------- reports
def _mark(ok: bool) -> str:
    return "pass" if ok else "MISS"


def _by_method(rows: Sequence[EditBenchRow]) -> dict[str, list[EditBenchRow]]:
    groups: dict[str, list[EditBenchRow]] = {}
    for row in rows:
        groups.setdefault(row.method, []).append(row)
    return groups


def _line(row: EditBenchRow) -> str:
    marks = row.passes()
    boxes = f"{row.box_hits}/{row.box_misses}" if row.box_hits or row.box_misses else "-"
    return (f"{row.operation:<10} {row.method:<15} {row.cases:>5} {row.applied_share:>5.0%} {_mark(marks['applied'])} "
            f"{row.kept_share:>5.0%} {_mark(marks['kept'])} {row.exact_share:>6.0%} "
            f"{row.outside_mean:>6.2f} {_mark(marks['outside_mean'])} {row.outside_max:>5.0f} "
            f"{row.blend_only_mean:>6.2f} {_mark(marks['blend_only_mean'])} {row.blend_only_max:>5.0f} "
            f"{row.seconds_per_edit:>7.2f} {boxes:>9}")


def format_edit_table(rows: Sequence[EditBenchRow]) -> str:
    """The report as text: the targets, then per method one line per operation and one for all of them
    ("all", the last line), each targeted figure with its mark (pass / MISS)."""
    targets = (f"targets: applied >= {TARGETS['applied']:.0%}, kept {TARGETS['kept']:.0%}, mean change outside the "
               f"mask <= {TARGETS['outside_mean']:g}/255 (the picture returned; the blending alone shown against it "
               "too); changes in /255, boxes: LMD boxes reused/regenerated")
    header = (f"{'operation':<10} {'method':<15} {'edits':>5} {'applied':>10} {'kept':>10} {'exact':>6} "
              f"{'out mean':>11} {'max':>5} {'blend mean':>11} {'max':>5} {'s/edit':>7} {'boxes':>9}")
    lines = [targets, header]
    for method, group in _by_method(rows).items():
        lines += [_line(row) for row in group]
        lines.append(_line(_total(group, method)))
    return "\n".join(lines)


def edit_report(rows: Sequence[EditBenchRow]) -> dict:
    """The report as JSON-ready data: the targets, and per method each operation's figures and all of them."""
    return {"targets": dict(TARGETS),
            "methods": {method: {"operations": {row.operation: row.as_dict() for row in group},
                                 "all": _total(group, method).as_dict()}
                        for method, group in _by_method(rows).items()}}


def mask_outline(image, mask: np.ndarray, colour: tuple[int, int, int] = (255, 0, 255)) -> np.ndarray:
    """``image`` (uint8 or [0, 1] floats, ``(H, W, 3)``) with the border pixels of ``mask > 0`` in ``colour``."""
    picture = _uint8(image).copy()
    inside = mask > 0
    padded = np.pad(inside, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    picture[inside & ~interior] = colour
    return picture


def edit_contact_sheet(rows: Sequence[tuple[str, Sequence[tuple[str, object, object, np.ndarray, bool]]]],
                       cell: int = 128):
    """A PIL image with one row per case: its label (operation, instruction), then per method the picture
    before, after, and after with the mask's outline, headed by the method and ok / x.

    ``rows`` holds ``(label, [(method, before, after, mask, applied), ...])``.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    groups = max((len(tiles) for _, tiles in rows), default=1)
    text_width, header, gap = 220, 16, 8
    group_width = 3 * (cell + 4) + gap
    sheet = Image.new("RGB", (text_width + groups * group_width, max(len(rows), 1) * (cell + header + 8) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, tiles) in enumerate(rows):
        top = r * (cell + header + 8) + 4
        for k, line in enumerate(textwrap.wrap(label, 34)[:8]):
            draw.text((4, top + header + 12 * k), line, fill=(0, 0, 0), font=font)
        for g, (method, before, after, mask, ok) in enumerate(tiles):
            left = text_width + g * group_width
            draw.text((left, top + 2), f"{method} {'ok' if ok else 'x'}: before / after / mask",
                      fill=(0, 130, 0) if ok else (200, 0, 0), font=font)
            for c, picture in enumerate((_uint8(before), _uint8(after), mask_outline(after, mask))):
                tile = Image.fromarray(picture)
                scale = cell / max(tile.size)
                tile = tile.resize((round(tile.width * scale), round(tile.height * scale)), Image.NEAREST)
                sheet.paste(tile, (left + c * (cell + 4), top + header))
    return sheet
