"""Edits as data: typed, JSON-serialisable operations on a Scene, applied purely, with a diff and a history.

An edit names regions by their ``id`` (:meth:`Scene.with_ids` gives ids to a scene that has none:
``"r1"``, ``"r2"``, ... in region order). :func:`apply_edits` applies a list of edits in order (a
later edit sees what the earlier ones made) and returns the new Scene with a :class:`SceneDiff`
naming the regions added, removed, changed (moved, resized, prompt) and unchanged, and where pixels
may change (:meth:`SceneDiff.edit_boxes`, :func:`edit_mask`). :class:`EditHistory` keeps rounds of
edits (instruction, edits, scene, seed) and undoes them exactly.

Geometry rules (every box an edit makes):

* a box an edit *writes* (``AddRegion.box``, ``MoveRegion.to``, ``ResizeRegion.to``) must lie on
  the canvas, ``0 <= x0 < x1 <= 1`` (else a :class:`SceneError`): it is never clipped;
* a box an edit *computes* (a move by ``dx``/``dy``, to a place, next to another region; a resize
  by a factor; a swap; new regions of :class:`SetCount`) keeps its size and is shifted the least
  distance that puts it on the canvas; grown past the canvas, it stops at the canvas's side
  (keeping its aspect); placed next to another region where there is too little room, it shrinks
  (keeping its aspect) down to half its size, and with less room the move is refused;
* no side is ever smaller than :data:`MIN_SIDE` (1/32 of the canvas): an edit that would make one
  is refused.

Split scenes (RPG cells) keep their grid: their regions' prompts can be replaced or changed and two
cells can swap places, but a cell cannot be moved, resized, added or removed (convert the scene with
:func:`cells_to_boxes` first). Mask regions can be swapped with masks and their prompts changed; they
cannot be moved or resized. Everything here is pure Python + numpy: no torch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, ClassVar, Union

import numpy as np

from .errors import SceneError, shown
from .limits import DEFAULT_LIMITS, SceneLimits, limit_error
from .model import Box, Cell, Mask, Region, Scene, check_region_id
from .safejson import load_json
from .words import ATTRIBUTE_WORDS, COLOURS, SIZES, a_or_an, number_word, pluralize

__all__ = [
    "GAP", "MAX_EDITS", "MAX_HISTORY_ROUNDS", "MIN_SHRINK", "MIN_SIDE", "PLACES", "RELATIONS", "AddRegion",
    "ChangeAttribute", "Edit", "EditHistory", "EditResult", "EditRound", "MoveRegion", "RemoveRegion", "ReplacePrompt",
    "ResizeRegion", "SceneDiff", "SetCount", "SwapRegions", "Undo", "apply_edits", "cells_to_boxes",
    "describe_regions", "diff_scenes", "edit_from_dict", "edit_mask", "edits_between", "edits_from_json",
    "edits_from_list", "edits_to_json", "free_box", "matching_regions", "region_rect", "rewrite_attribute",
    "typical_size",
]

#: Smallest side of any box an edit makes, as a fraction of the canvas.
MIN_SIDE = 1 / 32
#: Most edits in one round (one :func:`apply_edits` call).
MAX_EDITS = 64
#: Most rounds an :class:`EditHistory` may keep (its ``max_rounds`` is at most this; default 32).
MAX_HISTORY_ROUNDS = 256
_DEFAULT_ROUNDS = 32
_DEFAULT_CHARS = 1_000_000
_MAX_SEED = 2**32 - 1  # the generators' seed range (scenecraft.generation.result.MAX_SEED)
_MAX_SCALE = 10.0
_MAX_COUNT = 1 << 16
_GRID = 32  # free_box tries centres every 1/32 of the canvas
GAP = 0.02  # between a region moved next to another and that region (a fraction of the canvas)
MIN_SHRINK = 0.5  # a region moved next to another shrinks to fit, down to half its size
_WORD_VALUE = re.compile(r"[a-z][a-z -]{0,39}")

#: Places a region can be moved to or added at, and the centre each sets (``None``: that axis is kept).
PLACES: dict[str, tuple[float | None, float | None]] = {
    "left": (0.25, None), "right": (0.75, None), "top": (None, 0.25), "bottom": (None, 0.75), "center": (0.5, 0.5),
    "top-left": (0.25, 0.25), "top-right": (0.75, 0.25), "bottom-left": (0.25, 0.75), "bottom-right": (0.75, 0.75),
}
#: Where :class:`MoveRegion` can put a region relative to another.
RELATIONS = ("left_of", "right_of", "above", "below")

Rect = tuple[float, float, float, float]


# ----------------------------------------------------------------- field checks
def _text(name: str, value: Any, *, optional: bool = False, limits: SceneLimits = DEFAULT_LIMITS) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SceneError(f"{name} must be a non-empty string{' or null' if optional else ''}, got {shown(value)}")
    if len(value) > limits.max_prompt_chars:
        raise limit_error(f"{name} has {len(value):,} characters", "max_prompt_chars", limits)
    return value


def _number(name: str, value: Any, low: float, high: float, *, open_low: bool = False) -> float:
    # Integers are compared exactly: a 400-digit one must not reach float() (OverflowError).
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise SceneError(f"{name} must be a finite number, got {shown(value)}")
    if not (low < value if open_low else low <= value) or value > high:
        raise SceneError(f"{name} must lie in {'(' if open_low else '['}{low:g}, {high:g}], got {shown(value)}")
    return float(value)


def _as_box(name: str, value: Any) -> Box:
    if isinstance(value, Box):
        box = value
    elif isinstance(value, (list, tuple)) and len(value) == 4:
        try:
            box = Box(*value)
        except SceneError as error:
            raise SceneError(f"{name}: {error} (a box an edit writes must lie on the canvas; it is not clipped)") \
                from error
    else:
        raise SceneError(f"{name} must be a box [x0, y0, x1, y1] in fractions of the canvas, got {shown(value)}")
    if box.x1 - box.x0 < MIN_SIDE - 1e-12 or box.y1 - box.y0 < MIN_SIDE - 1e-12:
        raise SceneError(f"{name} {box.as_list()} has a side under {MIN_SIDE:g} of the canvas (edits.MIN_SIDE)")
    return box


def _word(name: str, value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not _WORD_VALUE.fullmatch(value.strip().lower()):
        raise SceneError(f"{name} must be a word or two (letters, spaces or '-', at most 40), got {shown(value)}")
    return value.strip().lower()


def _set(instance: object, name: str, value: Any) -> None:
    object.__setattr__(instance, name, value)


# ----------------------------------------------------------------- the operations
class _Op:
    """Shared JSON form of the operations: ``{"op": NAME, field: value, ...}`` with ``None`` fields left out."""

    op: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op}
        for item in fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if value is not None:
                data[item.name] = value.as_list() if isinstance(value, Box) else value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        names = [item.name for item in fields(cls)]  # type: ignore[arg-type]
        unknown = [key for key in data if key != "op" and key not in names]
        if unknown:
            listed = ", ".join(sorted(shown(key) for key in unknown[:10]))
            raise SceneError(f"unknown field(s) [{listed}] for op {cls.op!r}; it takes {names}")
        required = [item.name for item in fields(cls)  # type: ignore[arg-type]
                    if item.default is MISSING and item.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise SceneError(f"op {cls.op!r} needs {missing}")
        return cls(**{name: data[name] for name in names if name in data})


@dataclass(frozen=True)
class AddRegion(_Op):
    """Add a region with ``prompt`` at ``box`` (on the canvas, never clipped); ``id`` is given
    (``"r<N>"``, the next free number) when ``None``. JSON: ``{"op": "add", "prompt": ..., "box": [...]}``."""

    prompt: str
    box: Box
    id: str | None = None
    negative_prompt: str | None = None
    op: ClassVar[str] = "add"

    def __post_init__(self) -> None:
        _text("add: prompt", self.prompt)
        _set(self, "box", _as_box("add: box", self.box))
        if self.id is not None:
            check_region_id(self.id, "add: id")
        _text("add: negative_prompt", self.negative_prompt, optional=True)


@dataclass(frozen=True)
class RemoveRegion(_Op):
    """Remove the region ``id``. JSON: ``{"op": "remove", "id": "r2"}``."""

    id: str
    op: ClassVar[str] = "remove"

    def __post_init__(self) -> None:
        check_region_id(self.id, "remove: id")


@dataclass(frozen=True)
class MoveRegion(_Op):
    """Move the box region ``id`` in exactly one way:

    * ``to``: a new box (on the canvas; it may also change the size);
    * ``dx`` and/or ``dy``: by fractions of the canvas, each in [-1, 1] (right and down are positive);
    * ``place``: to one of :data:`PLACES` ("left", "top-right", "center"...): the centre goes to a
      quarter or the middle of the canvas on the axes the place names, the other axis is kept;
    * ``relation`` ("left_of", "right_of", "above", "below") ``of`` another region: beside it with a
      small gap, centred on it on the other axis (shrunk, keeping its aspect, down to half its size
      where there is too little room; with less room still, a SceneError).

    JSON: ``{"op": "move", "id": "r1", "relation": "left_of", "of": "r2"}``.
    """

    id: str
    to: Box | None = None
    dx: float | None = None
    dy: float | None = None
    place: str | None = None
    relation: str | None = None
    of: str | None = None
    op: ClassVar[str] = "move"

    def __post_init__(self) -> None:
        check_region_id(self.id, "move: id")
        ways = [name for name, given in (("to", self.to is not None),
                                         ("dx/dy", self.dx is not None or self.dy is not None),
                                         ("place", self.place is not None),
                                         ("relation", self.relation is not None or self.of is not None)) if given]
        if len(ways) != 1:
            raise SceneError(f"move needs exactly one of 'to', 'dx'/'dy', 'place' or 'relation' + 'of', "
                             f"got {ways or 'none'}")
        if self.to is not None:
            _set(self, "to", _as_box("move: to", self.to))
        for name in ("dx", "dy"):
            if getattr(self, name) is not None:
                _set(self, name, _number(f"move: {name}", getattr(self, name), -1.0, 1.0))
        if self.place is not None and (not isinstance(self.place, str) or self.place not in PLACES):
            raise SceneError(f"move: place must be one of {list(PLACES)}, got {shown(self.place)}")
        if ways == ["relation"]:
            if self.relation not in RELATIONS:
                raise SceneError(f"move: relation must be one of {list(RELATIONS)}, got {shown(self.relation)}")
            if self.of is None:
                raise SceneError("move: a relation needs 'of', the id of the region to move next to")
            check_region_id(self.of, "move: of")
            if self.of == self.id:
                raise SceneError(f"move: a region cannot move {self.relation.replace('_', ' ')} itself ({self.id!r})")


@dataclass(frozen=True)
class ResizeRegion(_Op):
    """Resize the box region ``id`` by ``scale`` about its centre (in (0, 10]; 2 doubles each side) or
    to the box ``to``. JSON: ``{"op": "resize", "id": "r1", "scale": 1.25}``."""

    id: str
    scale: float | None = None
    to: Box | None = None
    op: ClassVar[str] = "resize"

    def __post_init__(self) -> None:
        check_region_id(self.id, "resize: id")
        if (self.scale is None) == (self.to is None):
            raise SceneError("resize needs exactly one of 'scale' (a factor) or 'to' (a box)")
        if self.scale is not None:
            _set(self, "scale", _number("resize: scale", self.scale, 0.0, _MAX_SCALE, open_low=True))
        else:
            _set(self, "to", _as_box("resize: to", self.to))


@dataclass(frozen=True)
class ReplacePrompt(_Op):
    """Give the region ``id`` a new ``prompt`` (and a new negative prompt where one is given): "replace
    the dog with a cat". JSON: ``{"op": "replace", "id": "r1", "prompt": "a cat"}``."""

    id: str
    prompt: str
    negative_prompt: str | None = None
    op: ClassVar[str] = "replace"

    def __post_init__(self) -> None:
        check_region_id(self.id, "replace: id")
        _text("replace: prompt", self.prompt)
        _text("replace: negative_prompt", self.negative_prompt, optional=True)


@dataclass(frozen=True)
class ChangeAttribute(_Op):
    """Rewrite one attribute word of the region ``id``'s prompt: ``attribute`` is "colour" ("color"
    is read as it), "size" or "material" (:data:`~scenecraft.scene.words.ATTRIBUTE_WORDS`), ``value``
    the new word ("a red circle" -> "a blue circle"). The word replaced is ``old`` where given, else
    the prompt's first word of that attribute (with a shade before a colour: "light blue"); a prompt
    with none gets ``value`` after its article ("a circle" -> "a blue circle").
    JSON: ``{"op": "change_attribute", "id": "r1", "attribute": "colour", "value": "blue"}``."""

    id: str
    attribute: str
    value: str
    old: str | None = None
    op: ClassVar[str] = "change_attribute"

    def __post_init__(self) -> None:
        check_region_id(self.id, "change_attribute: id")
        attribute = self.attribute.lower() if isinstance(self.attribute, str) else self.attribute
        attribute = "colour" if attribute == "color" else attribute
        if not isinstance(attribute, str) or attribute not in ATTRIBUTE_WORDS:
            raise SceneError(f"change_attribute: attribute must be one of {list(ATTRIBUTE_WORDS)}, "
                             f"got {shown(self.attribute)}")
        _set(self, "attribute", attribute)
        _set(self, "value", _word("change_attribute: value", self.value))
        _set(self, "old", _word("change_attribute: old", self.old, optional=True))


@dataclass(frozen=True)
class SwapRegions(_Op):
    """Exchange the places of regions ``a`` and ``b``: two boxes exchange centres (each keeps its
    size), two cells their cells, two masks their masks. JSON: ``{"op": "swap", "a": "r1", "b": "r2"}``."""

    a: str
    b: str
    op: ClassVar[str] = "swap"

    def __post_init__(self) -> None:
        check_region_id(self.a, "swap: a")
        check_region_id(self.b, "swap: b")
        if self.a == self.b:
            raise SceneError(f"swap needs two different regions, got {self.a!r} twice")


@dataclass(frozen=True)
class SetCount(_Op):
    """Make the scene hold ``count`` regions of ``kind`` ("circle", "red circle": the words a region's
    prompt must hold, the last one also in its plural; see :func:`matching_regions`). Extra ones are
    removed, the last first; missing ones are added as copies of the first match (prompt, negative
    prompt, LoRAs, box size), or with ``prompt`` where given (else "a <kind>", a quarter of the canvas
    per side where no region matches), in the free space nearest the others (:func:`free_box`).
    JSON: ``{"op": "set_count", "kind": "circle", "count": 3}``."""

    kind: str
    count: int
    prompt: str | None = None
    op: ClassVar[str] = "set_count"

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not re.fullmatch(r"[^\W_]+(?:[ '\-][^\W_]+){0,9}", self.kind.strip()):
            raise SceneError(f"set_count: kind must be the words naming the regions (at most ten, e.g. \"red "
                             f"circle\"), got {shown(self.kind)}")
        _set(self, "kind", self.kind.strip().lower())
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise SceneError(f"set_count: count must be a whole number >= 0, got {shown(self.count)}")
        if self.count > _MAX_COUNT:  # the scene's own limit (SceneLimits.max_regions) is checked when applied
            raise SceneError(f"set_count: count is {shown(self.count)}, more than any scene holds ({_MAX_COUNT:,})")
        _text("set_count: prompt", self.prompt, optional=True)


@dataclass(frozen=True)
class Undo(_Op):
    """Step back one round: handled by :class:`EditHistory` (``apply([Undo()])`` or ``undo()``), the only
    edit of its round; :func:`apply_edits` refuses it. JSON: ``{"op": "undo"}``."""

    op: ClassVar[str] = "undo"


Edit = Union[AddRegion, RemoveRegion, MoveRegion, ResizeRegion, ReplacePrompt, ChangeAttribute, SwapRegions, SetCount,
             Undo]
_OPS: dict[str, type] = {cls.op: cls for cls in (AddRegion, RemoveRegion, MoveRegion, ResizeRegion, ReplacePrompt,
                                                  ChangeAttribute, SwapRegions, SetCount, Undo)}


def edit_from_dict(data: Any) -> Edit:
    """One edit from its JSON form (``{"op": ..., ...}``); anything else is a SceneError naming the problem."""
    if not isinstance(data, dict):
        raise SceneError(f"an edit must be an object {{\"op\": ..., ...}}, got {type(data).__name__}")
    op = data.get("op")
    if not isinstance(op, str) or op not in _OPS:
        raise SceneError(f"unknown edit op {shown(op)}; the ops are {list(_OPS)}")
    return _OPS[op].from_dict(data)


def edits_from_list(value: Any) -> tuple[Edit, ...]:
    """Edits from their parsed JSON form: a list of ``{"op": ...}`` objects (at most :data:`MAX_EDITS`)."""
    if not isinstance(value, list):
        raise SceneError(f"edits must be a list of {{\"op\": ...}} objects, got {type(value).__name__}")
    if len(value) > MAX_EDITS:
        raise SceneError(f"{len(value):,} edits in one round, more than the {MAX_EDITS} allowed (edits.MAX_EDITS)")
    edits = []
    for index, item in enumerate(value):
        try:
            edits.append(edit_from_dict(item))
        except SceneError as error:
            raise SceneError(f"edits[{index}]: {error}") from error
    return tuple(edits)


def edits_from_json(text: str | bytes, *, limits: SceneLimits | None = None) -> tuple[Edit, ...]:
    """Edits from JSON text: a list of edits or ``{"edits": [...]}``, read within ``limits`` (size, depth, digits)."""
    data = load_json(text, limits=limits, what="edits")
    if isinstance(data, dict) and set(data) == {"edits"}:
        data = data["edits"]
    return edits_from_list(data)


def edits_to_json(edits: Iterable[Edit], indent: int | None = None) -> str:
    """The JSON list of ``edits``."""
    return json.dumps([edit.to_dict() for edit in edits], indent=indent, ensure_ascii=False)


def _check_edits(edits: Any) -> tuple[Edit, ...]:
    if isinstance(edits, (str, bytes, dict)) or not isinstance(edits, Iterable):
        raise SceneError(f"edits must be a list of edit operations, got {type(edits).__name__}")
    edits = tuple(edits)
    if len(edits) > MAX_EDITS:
        raise SceneError(f"{len(edits):,} edits in one round, more than the {MAX_EDITS} allowed (edits.MAX_EDITS)")
    for index, edit in enumerate(edits):
        if type(edit) not in _OPS.values():
            raise SceneError(f"edits[{index}] must be an edit operation (AddRegion, MoveRegion, ...), "
                             f"got {type(edit).__name__}")
    return edits


# ----------------------------------------------------------------- geometry helpers
def region_rect(scene: Scene, region: Region) -> Rect:
    """Where ``region`` lies in ``scene``: its box, its split cell, or its mask's bounding rectangle."""
    rect = scene.region_rect(region)
    if rect is not None:
        return rect
    mask = region.geometry.to_array() > 0.5
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    height, width = mask.shape
    return (float(cols[0] / width), float(rows[0] / height), float((cols[-1] + 1) / width),
            float((rows[-1] + 1) / height))


def _fit(x0: float, y0: float, x1: float, y1: float) -> Box:
    """The box of this size shifted the least distance onto the canvas (a side past the canvas is cut to it)."""
    w, h = min(x1 - x0, 1.0), min(y1 - y0, 1.0)
    x0 = min(max(x0, 0.0), 1.0 - w)
    y0 = min(max(y0, 0.0), 1.0 - h)
    values = [round(v, 6) for v in (x0, y0, x0 + w, y0 + h)]
    values = [min(max(v, 0.0), 1.0) for v in values]
    return Box(*values)


def _check_side(what: str, w: float, h: float) -> None:
    if min(w, h) < MIN_SIDE - 1e-9:
        raise SceneError(f"{what} would be {w:.3f} x {h:.3f} of the canvas, under the smallest side "
                         f"{MIN_SIDE:g} (edits.MIN_SIDE)")


def free_box(rects: Sequence[Rect], size: tuple[float, float], *, zone: Rect = (0.0, 0.0, 1.0, 1.0),
             near: tuple[float, float] | None = None) -> Box:
    """A box of ``size`` (w, h) whose centre lies in ``zone``, placed where it overlaps ``rects`` least.

    Deterministic: centres on a 1/32 grid are ranked by overlap with ``rects``, then by a clear gap
    to them (up to 0.04 of the canvas), then by distance to ``near`` (default the zone's centre),
    then top to bottom, left to right. The box keeps its size (cut to the canvas) and lies on it.
    """
    w, h = min(max(size[0], MIN_SIDE), 1.0), min(max(size[1], MIN_SIDE), 1.0)
    near = near if near is not None else ((zone[0] + zone[2]) / 2, (zone[1] + zone[3]) / 2)
    axes = []
    for lo, hi, side, mid in ((zone[0], zone[2], w, near[0]), (zone[1], zone[3], h, near[1])):
        lo, hi = max(lo, side / 2), min(hi, 1 - side / 2)
        if lo > hi:  # the zone cannot hold the box's centre: the nearest place that can
            lo = hi = min(max((lo + hi) / 2, side / 2), 1 - side / 2)
        steps = int((hi - lo) * _GRID + 1e-9)
        axes.append(np.unique(np.append(lo + np.arange(steps + 1) / _GRID, hi)))
    cy, cx = (grid.ravel() for grid in np.meshgrid(axes[1], axes[0], indexing="ij"))
    cand = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    if len(rects):
        other = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        ix = np.clip(np.minimum(cand[:, None, 2], other[None, :, 2]) - np.maximum(cand[:, None, 0], other[None, :, 0]),
                     0, None)
        iy = np.clip(np.minimum(cand[:, None, 3], other[None, :, 3]) - np.maximum(cand[:, None, 1], other[None, :, 1]),
                     0, None)
        overlap = (ix * iy).sum(axis=1)
        gx = np.clip(np.maximum(other[None, :, 0] - cand[:, None, 2], cand[:, None, 0] - other[None, :, 2]), 0, None)
        gy = np.clip(np.maximum(other[None, :, 1] - cand[:, None, 3], cand[:, None, 1] - other[None, :, 3]), 0, None)
        gap = np.minimum(np.hypot(gx, gy).min(axis=1), 0.04)
    else:
        overlap, gap = np.zeros(len(cand)), np.full(len(cand), 0.04)
    distance = np.hypot(cx - near[0], cy - near[1])
    best = np.lexsort((cx, cy, np.round(distance, 9), -np.round(gap, 9), np.round(overlap, 9)))[0]
    return _fit(*cand[best])


def matching_regions(scene: Scene, kind: str) -> list[int]:
    """Indices of the regions whose prompt holds every word of ``kind`` (whole words, any case), the last
    word also in its plural: "circle" finds "a red circle" and "two circles", "red circle" only the first."""
    words = re.findall(r"[^\W_]+(?:['\-][^\W_]+)*", kind.lower())
    if not words:
        return []
    head = {words[-1], pluralize(words[-1])}
    found = []
    for index, region in enumerate(scene.regions):
        have = set(re.findall(r"[^\W_]+(?:['\-][^\W_]+)*", region.prompt.lower()))
        if have & head and all(word in have for word in words[:-1]):
            found.append(index)
    return found


def cells_to_boxes(scene: Scene) -> Scene:
    """A split scene as boxes: each cell becomes a box of the same rectangle (what RPG draws is the same),
    the split is dropped. Any other scene is returned as it is."""
    if scene.split is None:
        return scene
    regions = tuple(replace(region, geometry=Box(*scene.region_rect(region))) for region in scene.regions)
    return replace(scene, regions=regions, split=None)


# ----------------------------------------------------------------- applying edits
@dataclass
class _Work:
    """The regions being edited, what has been seen, and how the scene's prompt follows."""

    scene: Scene
    regions: list[Region]
    taken: set[str]
    substitutions: list[tuple[str, str]] = field(default_factory=list)
    structural: bool = False

    def index(self, region_id: str) -> int:
        for index, region in enumerate(self.regions):
            if region.id == region_id:
                return index
        have = [repr(region.id) for region in self.regions]
        raise SceneError(f"no region has the id {region_id!r}; the scene's ids are [{', '.join(have[:20])}"
                         + (", ...]" if len(have) > 20 else "]"))

    def rect(self, index: int) -> Rect:
        return region_rect(self.scene, self.regions[index])

    def new_id(self) -> str:
        numbers = [int(i[1:]) for i in self.taken if re.fullmatch(r"r[0-9]{1,9}", i)]
        number = max(numbers, default=0) + 1
        while f"r{number}" in self.taken:
            number += 1
        self.taken.add(f"r{number}")
        return f"r{number}"

    def box_index(self, region_id: str, action: str) -> int:
        index = self.index(region_id)
        geometry = self.regions[index].geometry
        if isinstance(geometry, Cell):
            raise SceneError(f"region {region_id!r} is cell {geometry.index} of the split {self.scene.split!r}: a "
                             f"split scene's cells cannot be {action} (replace its prompt, swap two cells, or convert "
                             "the scene with edits.cells_to_boxes first)")
        if isinstance(geometry, Mask):
            raise SceneError(f"region {region_id!r} is a mask: a mask cannot be {action} (replace it with a box "
                             "region: remove it and add one)")
        return index

    def set_box(self, index: int, box: Box) -> None:
        if self.regions[index].geometry != box:
            self.regions[index] = replace(self.regions[index], geometry=box)
            self.structural = True

    def refuse_on_split(self, action: str) -> None:
        if self.scene.split is not None:
            raise SceneError(f"the scene is a split {self.scene.split!r}: its regions are the split's cells, and a "
                             f"region cannot be {action} (convert the scene with edits.cells_to_boxes first)")


def _apply_add(work: _Work, edit: AddRegion) -> None:
    work.refuse_on_split("added")
    if edit.id is not None and (edit.id in {r.id for r in work.regions}):
        raise SceneError(f"a region with the id {edit.id!r} is already in the scene")
    region_id = edit.id or work.new_id()
    work.taken.add(region_id)
    work.regions.append(Region(edit.prompt, edit.box, negative_prompt=edit.negative_prompt, id=region_id))
    work.structural = True


def _apply_remove(work: _Work, edit: RemoveRegion) -> None:
    index = work.index(edit.id)
    work.refuse_on_split("removed")
    del work.regions[index]
    work.structural = True


def _moved_box(work: _Work, edit: MoveRegion, rect: Rect) -> Box:
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    if edit.to is not None:
        return edit.to
    if edit.place is not None:
        cx, cy = PLACES[edit.place]
        cx = (x0 + x1) / 2 if cx is None else cx
        cy = (y0 + y1) / 2 if cy is None else cy
        return _fit(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    if edit.relation is None:
        dx, dy = edit.dx or 0.0, edit.dy or 0.0
        return _fit(x0 + dx, y0 + dy, x1 + dx, y1 + dy)
    ox0, oy0, ox1, oy1 = work.rect(work.index(edit.of))
    horizontal = edit.relation in ("left_of", "right_of")
    room = (ox0 if edit.relation == "left_of" else 1 - ox1 if edit.relation == "right_of"
            else oy0 if edit.relation == "above" else 1 - oy1) - GAP
    need = w if horizontal else h
    shrink = min(1.0, room / need)
    if shrink < MIN_SHRINK or min(w, h) * shrink < MIN_SIDE - 1e-9:
        words = edit.relation.replace("_", " ")
        raise SceneError(f"there is no room {words} {edit.of!r} for {edit.id!r}: {max(room, 0):.3f} of the canvas is "
                         f"free there and {edit.id!r} needs {need * MIN_SHRINK:.3f} (at half its size); move "
                         f"{edit.of!r} first, or make {edit.id!r} smaller")
    w, h = w * shrink, h * shrink
    if horizontal:
        cy = (oy0 + oy1) / 2
        nx0 = ox0 - GAP - w if edit.relation == "left_of" else ox1 + GAP
        return _fit(nx0, cy - h / 2, nx0 + w, cy + h / 2)
    cx = (ox0 + ox1) / 2
    ny0 = oy0 - GAP - h if edit.relation == "above" else oy1 + GAP
    return _fit(cx - w / 2, ny0, cx + w / 2, ny0 + h)


def _apply_move(work: _Work, edit: MoveRegion) -> None:
    index = work.box_index(edit.id, "moved")
    work.set_box(index, _moved_box(work, edit, work.rect(index)))


def _apply_resize(work: _Work, edit: ResizeRegion) -> None:
    index = work.box_index(edit.id, "resized")
    if edit.to is not None:
        work.set_box(index, edit.to)
        return
    x0, y0, x1, y1 = work.rect(index)
    w, h = x1 - x0, y1 - y0
    scale = min(edit.scale, 1 / w, 1 / h)  # past the canvas: stop at its side, keeping the aspect
    _check_side(f"{edit.id!r} resized by {edit.scale:g}", w * scale, h * scale)
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, w * scale, h * scale
    work.set_box(index, _fit(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))


def _set_prompt(work: _Work, index: int, prompt: str, negative_prompt: str | None = None) -> None:
    region = work.regions[index]
    negative = region.negative_prompt if negative_prompt is None else negative_prompt
    if prompt == region.prompt and negative == region.negative_prompt:
        return
    _text(f"the new prompt of {region.id!r}", prompt, limits=work.scene.limits or DEFAULT_LIMITS)
    work.substitutions.append((region.prompt, prompt))
    work.regions[index] = replace(region, prompt=prompt, negative_prompt=negative)


def _apply_replace(work: _Work, edit: ReplacePrompt) -> None:
    _set_prompt(work, work.index(edit.id), edit.prompt, edit.negative_prompt)


_SHADES = ("light", "dark", "bright", "pale", "deep", "pastel", "neon")
_ARTICLES = ("a", "an", "the", "one", "some")


def rewrite_attribute(prompt: str, attribute: str, value: str, old: str | None = None) -> str:
    """``prompt`` with its ``attribute`` word (or ``old``) replaced by ``value`` (see :class:`ChangeAttribute`)."""
    words = ATTRIBUTE_WORDS[attribute]
    tokens = re.split(r"([^\W_]+(?:['\-][^\W_]+)*)", prompt)  # odd indices: the words
    spots = [k for k in range(1, len(tokens), 2) if (tokens[k].lower() == old if old and " " not in old
                                                      else tokens[k].lower() in words)]
    if old and " " in old:
        match = re.search(rf"\b{re.escape(old)}\b", prompt, re.IGNORECASE)
        if match:
            prompt = prompt[:match.start()] + value + prompt[match.end():]
            return _fix_article(prompt)
        spots = []
    if spots:
        k = spots[0]
        if attribute == "colour" and k >= 2 and tokens[k - 2].lower() in _SHADES and tokens[k - 1] == " ":
            tokens[k - 2] = tokens[k - 1] = ""  # "light blue" -> "red"
        tokens[k] = value
        return _fix_article("".join(tokens))
    k = 1
    if len(tokens) > 1 and tokens[1].lower() in _ARTICLES:
        k = 3
    skip = {"colour": SIZES, "size": frozenset(), "material": SIZES | COLOURS}[attribute]
    while k < len(tokens) and tokens[k].lower() in skip and tokens[k + 1] == " ":
        k += 2
    if k >= len(tokens):
        return f"{prompt} {value}".strip()
    tokens[k] = f"{value} {tokens[k]}"
    return _fix_article("".join(tokens))


def _fix_article(prompt: str) -> str:
    """"an blue circle" -> "a blue circle" (the first article only)."""
    match = re.match(r"(\s*)(a|an|A|An|AN)(\s+)([^\W_]+)", prompt)
    if not match:
        return prompt
    article = a_or_an(match.group(4))
    if match.group(2)[0].isupper():
        article = article.capitalize()
    return prompt[:match.start(2)] + article + prompt[match.end(2):]


def _apply_change_attribute(work: _Work, edit: ChangeAttribute) -> None:
    index = work.index(edit.id)
    prompt = work.regions[index].prompt
    if edit.old is not None and not re.search(rf"\b{re.escape(edit.old)}\b", prompt, re.IGNORECASE):
        raise SceneError(f"region {edit.id!r} ({shown(prompt)}) has no word {edit.old!r} to change")
    _set_prompt(work, index, rewrite_attribute(prompt, edit.attribute, edit.value, edit.old))


def _apply_swap(work: _Work, edit: SwapRegions) -> None:
    i, j = work.index(edit.a), work.index(edit.b)
    a, b = work.regions[i], work.regions[j]
    kinds = {type(a.geometry), type(b.geometry)}
    if len(kinds) != 1:
        raise SceneError(f"regions {edit.a!r} ({type(a.geometry).__name__.lower()}) and {edit.b!r} "
                         f"({type(b.geometry).__name__.lower()}) cannot swap places: only two boxes, two cells or "
                         "two masks can")
    if kinds == {Box}:
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = work.rect(i), work.rect(j)
        acx, acy, bcx, bcy = (ax0 + ax1) / 2, (ay0 + ay1) / 2, (bx0 + bx1) / 2, (by0 + by1) / 2
        work.set_box(i, _fit(ax0 + bcx - acx, ay0 + bcy - acy, ax1 + bcx - acx, ay1 + bcy - acy))
        work.set_box(j, _fit(bx0 + acx - bcx, by0 + acy - bcy, bx1 + acx - bcx, by1 + acy - bcy))
        return
    work.regions[i], work.regions[j] = replace(a, geometry=b.geometry), replace(b, geometry=a.geometry)
    work.structural = True


def _apply_set_count(work: _Work, edit: SetCount) -> None:
    scene = replace(work.scene, regions=tuple(work.regions))
    found = matching_regions(scene, edit.kind)
    if len(found) == edit.count:
        return
    work.refuse_on_split("added or removed")
    limits = work.scene.limits or DEFAULT_LIMITS
    if len(work.regions) - len(found) + edit.count > limits.max_regions:
        raise limit_error(f"{edit.count} regions of {edit.kind!r} would make "
                          f"{len(work.regions) - len(found) + edit.count:,}", "max_regions", limits)
    work.structural = True
    if edit.count < len(found):
        for index in sorted(found[edit.count:], reverse=True):
            del work.regions[index]
        return
    model = work.regions[found[0]] if found else None
    boxes = [work.rect(k) for k in found if isinstance(work.regions[k].geometry, Box)]
    size = typical_size(scene, found)
    near = (float(np.mean([(r[0] + r[2]) / 2 for r in boxes])), float(np.mean([(r[1] + r[3]) / 2 for r in boxes]))) \
        if boxes else None
    for _ in range(edit.count - len(found)):
        rects = [work.rect(k) for k in range(len(work.regions))]
        box = free_box(rects, size, near=near)
        if model is not None and edit.prompt is None:
            region = replace(model, geometry=box, id=work.new_id())
        else:
            prompt = edit.prompt or f"{a_or_an(edit.kind)} {edit.kind}"
            region = Region(prompt, box, id=work.new_id())
        work.regions.append(region)


def typical_size(scene: Scene, like: Sequence[int] = ()) -> tuple[float, float]:
    """The size (w, h) a new region of ``scene`` gets: that of the first box region among the indices
    ``like`` (regions of the same kind), else the median of the scene's boxes, else a quarter of the canvas."""
    for index in like:
        geometry = scene.regions[index].geometry
        if isinstance(geometry, Box):
            return (geometry.x1 - geometry.x0, geometry.y1 - geometry.y0)
    every = [r.geometry for r in scene.regions if isinstance(r.geometry, Box)]
    if every:
        return (float(np.median([b.x1 - b.x0 for b in every])), float(np.median([b.y1 - b.y0 for b in every])))
    return (0.25, 0.25)


def _refuse_undo(work: _Work, edit: Undo) -> None:
    raise SceneError("undo steps back through an EditHistory (history.apply([Undo()]) or history.undo()); "
                     "apply_edits has no earlier scene to go back to")


_APPLY = {AddRegion: _apply_add, RemoveRegion: _apply_remove, MoveRegion: _apply_move, ResizeRegion: _apply_resize,
          ReplacePrompt: _apply_replace, ChangeAttribute: _apply_change_attribute, SwapRegions: _apply_swap,
          SetCount: _apply_set_count, Undo: _refuse_undo}


# ----------------------------------------------------------------- the scene's own prompt
def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _counted(prompt: str, count: int) -> list[str]:
    """"a red circle" x 3 -> ["three red circles"]; a prompt that is more than a short noun phrase stays listed."""
    match = re.fullmatch(r"(?:a|an|one)\s+((?:[a-z\-]+\s+){0,4})([a-z]+)", prompt.strip(), re.IGNORECASE)
    if count == 1 or not match:
        return [prompt] * count
    return [f"{number_word(count)} {match.group(1)}{pluralize(match.group(2).lower())}"]


def describe_regions(regions: Sequence[Region]) -> str:
    """The regions in words, identical prompts counted: "two red circles and a blue square" ("" for none)."""
    groups: dict[str, list[Any]] = {}
    for region in regions:
        groups.setdefault(region.prompt.strip().lower(), [region.prompt.strip(), 0])[1] += 1
    return _join([part for prompt, count in groups.values() for part in _counted(prompt, count)]) if groups else ""


def _substitute(text: str, old: str, new: str) -> str | None:
    """``text`` with the one occurrence of the phrase ``old`` (its article optional) replaced by ``new``."""
    bare_old = re.sub(r"^(?:a|an)\s+", "", old.strip(), flags=re.IGNORECASE)
    bare_new = re.sub(r"^(?:a|an)\s+", "", new.strip(), flags=re.IGNORECASE)
    pattern = re.compile(rf"\b(?:(a|an)\s+)?{re.escape(bare_old)}(?![^\W_])", re.IGNORECASE)
    found = list(pattern.finditer(text))
    if len(found) != 1:
        return None
    match = found[0]
    article = a_or_an(bare_new)
    article = article.capitalize() if match.group(1) and match.group(1)[0].isupper() else article
    replacement = f"{article} {bare_new}" if match.group(1) else bare_new
    return text[:match.start()] + replacement + text[match.end():]


def _follow_prompt(before: Scene, work: _Work) -> dict[str, Any]:
    """The scene's ``prompt``/``base_prompt`` after the edits: phrases substituted where only prompts changed
    and each old phrase is found once, else the regions described anew (with the background prompt)."""
    if not work.structural and not work.substitutions:
        return {}
    texts: dict[str, str] = {"prompt": before.prompt}
    if before.base_prompt is not None:
        texts["base_prompt"] = before.base_prompt
    if not work.structural:
        for name, text in list(texts.items()):
            for old, new in work.substitutions:
                text = _substitute(text, old, new) if text is not None else None
            if text is None:
                break
            texts[name] = text
        else:
            return _within_limits(before, texts)
    described = describe_regions(work.regions) or "an empty scene"
    if before.background_prompt:
        described = f"{described}, {before.background_prompt}"
    return _within_limits(before, {name: described for name in texts})


def _within_limits(before: Scene, texts: dict[str, str]) -> dict[str, str]:
    limit = (before.limits or DEFAULT_LIMITS).max_prompt_chars
    return {name: text for name, text in texts.items() if len(text) <= limit}  # too long: the old text stays


# ----------------------------------------------------------------- the diff
@dataclass(frozen=True)
class SceneDiff:
    """What an edit changed, region by region (regions matched by id).

    Attributes:
        before, after: the two scenes, with ids (:meth:`Scene.with_ids`).
        added, removed: ids of the regions only ``after`` / only ``before`` has.
        changed: id -> what changed, a tuple of "moved" (the centre), "resized", "prompt",
            "negative_prompt", "lora".
        unchanged: ids of the regions that are the same in both.
        scene_fields: the scene's own fields that changed ("prompt", "base_prompt", ...).
    """

    before: Scene
    after: Scene
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: dict[str, tuple[str, ...]]
    unchanged: tuple[str, ...]
    scene_fields: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """No region changed (the scene's own fields may have)."""
        return not (self.added or self.removed or self.changed)

    def edit_boxes(self) -> tuple[Box, ...]:
        """Where pixels may change: the old and new rectangles of every region added, removed or changed (a
        mask's bounding rectangle), each once, in that order."""
        rects: list[Rect] = []
        before = {r.id: r for r in self.before.regions}
        after = {r.id: r for r in self.after.regions}
        for region_id in (*self.added, *self.removed, *self.changed):
            for scene, regions in ((self.before, before), (self.after, after)):
                if region_id in regions:
                    rects.append(region_rect(scene, regions[region_id]))
        unique = dict.fromkeys(tuple(round(v, 9) for v in rect) for rect in rects)
        return tuple(Box(*rect) for rect in unique if rect[2] > rect[0] and rect[3] > rect[1])

    def edit_mask(self, height: int, width: int, *, margin: float = 0.0) -> np.ndarray:
        """:func:`edit_mask` of this diff."""
        return edit_mask(self, height, width, margin=margin)

    def to_dict(self) -> dict[str, Any]:
        """The diff's ids as JSON (the scenes left out)."""
        return {"added": list(self.added), "removed": list(self.removed),
                "changed": {k: list(v) for k, v in self.changed.items()}, "unchanged": list(self.unchanged),
                "scene_fields": list(self.scene_fields)}


def edit_mask(diff: SceneDiff, height: int, width: int, *, margin: float = 0.0) -> np.ndarray:
    """A ``(height, width)`` boolean array, True on every pixel an edit box of ``diff`` touches (grown by
    ``margin``, a fraction of the canvas per side): where pixels may change."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 16:
            raise SceneError(f"edit_mask: {name} must be a whole number of pixels in 1..65536, got {shown(value)}")
    margin = _number("edit_mask: margin", margin, 0.0, 1.0)
    mask = np.zeros((height, width), dtype=bool)
    for box in diff.edit_boxes():
        x0, x1 = (max(box.x0 - margin, 0.0), min(box.x1 + margin, 1.0))
        y0, y1 = (max(box.y0 - margin, 0.0), min(box.y1 + margin, 1.0))
        c0, c1 = int(math.floor(x0 * width + 1e-9)), int(math.ceil(x1 * width - 1e-9))
        r0, r1 = int(math.floor(y0 * height + 1e-9)), int(math.ceil(y1 * height - 1e-9))
        mask[r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)] = True
    return mask


def _what_changed(before: Scene, a: Region, after: Scene, b: Region) -> tuple[str, ...]:
    what = []
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = region_rect(before, a), region_rect(after, b)
    if isinstance(a.geometry, Mask) and isinstance(b.geometry, Mask) and a.geometry != b.geometry and (
            (ax0, ay0, ax1, ay1) == (bx0, by0, bx1, by1)):
        what.append("moved")  # the same bounding rectangle, other pixels
    if abs((ax0 + ax1) - (bx0 + bx1)) > 1e-9 or abs((ay0 + ay1) - (by0 + by1)) > 1e-9:
        what.append("moved")
    if abs((ax1 - ax0) - (bx1 - bx0)) > 1e-9 or abs((ay1 - ay0) - (by1 - by0)) > 1e-9:
        what.append("resized")
    what += [name for name in ("prompt", "negative_prompt", "lora") if getattr(a, name) != getattr(b, name)]
    return tuple(what)


def diff_scenes(before: Scene, after: Scene) -> SceneDiff:
    """The :class:`SceneDiff` from ``before`` to ``after``, regions matched by id (both get
    :meth:`Scene.with_ids` first, so a scene and its first edit match as :func:`apply_edits` named them).
    A region whose rectangle, prompts and LoRAs are equal is unchanged, whether a cell or a box."""
    before, after = before.with_ids(), after.with_ids()
    old = {r.id: r for r in before.regions}
    new = {r.id: r for r in after.regions}
    changed, unchanged = {}, []
    for region_id, region in old.items():
        if region_id in new:
            what = _what_changed(before, region, after, new[region_id])
            if what:
                changed[region_id] = what
            else:
                unchanged.append(region_id)
    names = ("prompt", "base_prompt", "base_ratio", "background_prompt", "negative_prompt", "width", "height")
    return SceneDiff(before=before, after=after, added=tuple(i for i in new if i not in old),
                     removed=tuple(i for i in old if i not in new), changed=changed, unchanged=tuple(unchanged),
                     scene_fields=tuple(n for n in names if getattr(before, n) != getattr(after, n)))


def edits_between(before: Scene, after: Scene) -> tuple[Edit, ...] | None:
    """Edits that turn ``before``'s regions into ``after``'s (matched by id): removals, prompt replacements,
    moves to the new box, additions. ``None`` where edits cannot say it (a cell or mask changed, a split
    scene, LoRAs changed); the scene's own fields and the regions' order are not edits."""
    diff = diff_scenes(before, after)
    if before.split is not None or after.split is not None:
        return None if not diff.empty else ()
    old = {r.id: r for r in diff.before.regions}
    new = {r.id: r for r in diff.after.regions}
    edits: list[Edit] = [RemoveRegion(i) for i in diff.removed]
    for region_id, what in diff.changed.items():
        a, b = old[region_id], new[region_id]
        if "lora" in what or not isinstance(b.geometry, Box) or not isinstance(a.geometry, Box):
            return None
        if "prompt" in what or "negative_prompt" in what:
            negative = b.negative_prompt if "negative_prompt" in what else None
            if "negative_prompt" in what and b.negative_prompt is None:
                return None  # a negative prompt taken away: no edit says that
            edits.append(ReplacePrompt(region_id, b.prompt, negative_prompt=negative))
        if "moved" in what or "resized" in what:
            edits.append(MoveRegion(region_id, to=b.geometry))
    for region_id in diff.added:
        region = new[region_id]
        if not isinstance(region.geometry, Box) or region.lora:
            return None
        edits.append(AddRegion(region.prompt, region.geometry, id=region_id, negative_prompt=region.negative_prompt))
    return tuple(edits) if len(edits) <= MAX_EDITS else None


@dataclass(frozen=True)
class EditResult:
    """The edited scene and what changed."""

    scene: Scene
    diff: SceneDiff


def apply_edits(scene: Scene, edits: Iterable[Edit], *, taken: Iterable[str] = ()) -> EditResult:
    """Apply ``edits`` in order to ``scene`` (given ids first, :meth:`Scene.with_ids`); pure.

    Args:
        scene: the scene to edit.
        edits: at most :data:`MAX_EDITS` operations; each sees what the earlier ones made.
        taken: ids new regions must not get (an :class:`EditHistory` passes every id it has seen, so
            that a removed region's id is never given to another).

    Returns:
        the new Scene (its ``prompt``/``base_prompt`` follow the regions: a changed phrase is
        substituted where it is found once, else the regions are described anew) and its diff.

    Raises:
        SceneError: naming the edit (``edit 2 (move): ...``) and what was wrong: an unknown id, a box
        off the canvas, an op the region cannot take, a count past the limits, ``Undo``.
    """
    if not isinstance(scene, Scene):
        raise SceneError(f"apply_edits needs a Scene, got {type(scene).__name__}")
    edits = _check_edits(edits)
    before = scene.with_ids()
    work = _Work(scene=before, regions=list(before.regions),
                 taken={r.id for r in before.regions} | {t for t in taken if isinstance(t, str)})
    for number, edit in enumerate(edits, 1):
        try:
            _APPLY[type(edit)](work, edit)
        except SceneError as error:
            raise SceneError(f"edit {number} ({edit.op}): {error}") from error
    after = replace(before, regions=tuple(work.regions), **_follow_prompt(before, work))
    return EditResult(after, diff_scenes(before, after))


# ----------------------------------------------------------------- history
@dataclass(frozen=True)
class EditRound:
    """One round: the instruction (``None`` for the first scene or edits given as data), its edits, the
    scene they made, and the seed it was drawn with (``None``: not drawn yet, or the seed before)."""

    instruction: str | None
    edits: tuple[Edit, ...]
    scene: Scene
    seed: int | None = None

    def __post_init__(self) -> None:
        _text("a round's instruction", self.instruction, optional=True)
        _set(self, "edits", _check_edits(self.edits))
        if any(isinstance(edit, Undo) for edit in self.edits):
            raise SceneError("a round of the history cannot hold an undo: undoing removes the round undone")
        if not isinstance(self.scene, Scene):
            raise SceneError(f"a round's scene must be a Scene, got {type(self.scene).__name__}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed <= _MAX_SEED):
            raise SceneError(f"a round's seed must be null or a whole number in [0, {_MAX_SEED}], "
                             f"got {shown(self.seed)}")

    def to_dict(self) -> dict[str, Any]:
        return {"instruction": self.instruction, "edits": [edit.to_dict() for edit in self.edits],
                "scene": self.scene.to_dict(), "seed": self.seed}

    @classmethod
    def from_dict(cls, data: Any, *, limits: SceneLimits | None = None) -> EditRound:
        if not isinstance(data, dict):
            raise SceneError(f"a round must be an object, got {type(data).__name__}")
        unknown = [shown(key) for key in data if key not in ("instruction", "edits", "scene", "seed")]
        if unknown:
            raise SceneError(f"unknown round field(s) [{', '.join(sorted(unknown[:10]))}]; "
                             "allowed: ['edits', 'instruction', 'scene', 'seed']")
        if "scene" not in data:
            raise SceneError("a round needs its 'scene'")
        return cls(instruction=data.get("instruction"), edits=edits_from_list(data.get("edits", [])),
                   scene=Scene.from_dict(data["scene"], limits=limits), seed=data.get("seed"))


@dataclass
class EditHistory:
    """Rounds of editing, oldest first; ``rounds[0]`` is the scene the editing started from.

    At most ``max_rounds`` rounds are kept (default 32, at most :data:`MAX_HISTORY_ROUNDS`), and the
    JSON stays under ``max_chars`` characters (default 1,000,000: a PNG text chunk others read whole)
    where more than the last two rounds are kept; past either, the oldest rounds are dropped and
    cannot be undone. ``undo()`` gives back the previous round's scene exactly (edit then undo: the
    same Scene, the same JSON, the same history JSON).
    """

    rounds: list[EditRound]
    max_rounds: int = _DEFAULT_ROUNDS
    max_chars: int = _DEFAULT_CHARS

    def __post_init__(self) -> None:
        if isinstance(self.max_rounds, bool) or not isinstance(self.max_rounds, int) or not (
                2 <= self.max_rounds <= MAX_HISTORY_ROUNDS):
            raise SceneError(f"max_rounds must be a whole number in [2, {MAX_HISTORY_ROUNDS}], "
                             f"got {shown(self.max_rounds)}")
        if isinstance(self.rounds, (str, bytes, dict)) or not isinstance(self.rounds, Iterable):
            raise SceneError(f"rounds must be a list of EditRound, got {type(self.rounds).__name__}")
        if isinstance(self.max_chars, bool) or not isinstance(self.max_chars, int) or not (
                10_000 <= self.max_chars <= DEFAULT_LIMITS.max_json_chars):
            raise SceneError(f"max_chars must be a whole number in [10000, {DEFAULT_LIMITS.max_json_chars}], "
                             f"got {shown(self.max_chars)}")
        self.rounds = list(self.rounds)
        if not self.rounds:
            raise SceneError("a history needs at least one round: the scene editing starts from")
        if len(self.rounds) > self.max_rounds:
            raise SceneError(f"the history has {len(self.rounds):,} rounds, more than its max_rounds "
                             f"{self.max_rounds}")
        for index, item in enumerate(self.rounds):
            if not isinstance(item, EditRound):
                raise SceneError(f"rounds[{index}] must be an EditRound, got {type(item).__name__}")

    @classmethod
    def start(cls, scene: Scene, *, seed: int | None = None, instruction: str | None = None,
              max_rounds: int = _DEFAULT_ROUNDS, max_chars: int = _DEFAULT_CHARS) -> EditHistory:
        """A history whose first round is ``scene`` as it is (drawn with ``seed``, planned from ``instruction``)."""
        return cls([EditRound(instruction, (), scene, seed)], max_rounds=max_rounds, max_chars=max_chars)

    @property
    def scene(self) -> Scene:
        """The current scene (the last round's)."""
        return self.rounds[-1].scene

    @property
    def seed(self) -> int | None:
        """The latest seed any round was drawn with."""
        return next((r.seed for r in reversed(self.rounds) if r.seed is not None), None)

    @property
    def can_undo(self) -> bool:
        return len(self.rounds) > 1

    def ids_seen(self) -> set[str]:
        """Every region id of every round (new regions never get one of these)."""
        return {r.id for item in self.rounds for r in item.scene.with_ids().regions}

    def apply(self, edits: Iterable[Edit], *, instruction: str | None = None, seed: int | None = None) -> EditResult:
        """Apply ``edits`` to the current scene and keep the round (``seed`` default: the latest); a lone
        ``Undo()`` undoes the last round instead. Returns the new scene and its diff from the current one."""
        edits = _check_edits(edits)
        if any(isinstance(edit, Undo) for edit in edits):
            if len(edits) != 1:
                raise SceneError("undo must be the only edit of its round")
            current = self.scene
            previous = self.undo()
            return EditResult(previous, diff_scenes(current, previous))
        result = apply_edits(self.scene, edits, taken=self.ids_seen())
        self.record(instruction, edits, result.scene, seed)
        return result

    def record(self, instruction: str | None, edits: Iterable[Edit], scene: Scene, seed: int | None = None) -> None:
        """Keep a round made elsewhere (an LLM's whole new scene, say); ``seed`` default: the latest."""
        self.rounds.append(EditRound(instruction, tuple(edits), scene, self.seed if seed is None else seed))
        del self.rounds[:max(0, len(self.rounds) - self.max_rounds)]
        while len(self.rounds) > 2 and len(self.to_json()) > self.max_chars:
            del self.rounds[0]

    def undo(self) -> Scene:
        """Drop the last round and return the scene before it, exactly as it was."""
        if not self.can_undo:
            raise SceneError("nothing to undo: the history holds only the scene editing started from"
                             + ("" if self.max_rounds > 2 else " (older rounds were dropped: max_rounds)"))
        self.rounds.pop()
        return self.scene

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "max_rounds": self.max_rounds, "max_chars": self.max_chars,
                "rounds": [item.to_dict() for item in self.rounds]}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Any, *, limits: SceneLimits | None = None) -> EditHistory:
        """A history from its dict form; every round's scene is checked against ``limits``."""
        if not isinstance(data, dict):
            raise SceneError(f"an edit history must be a JSON object, got {type(data).__name__}")
        unknown = [shown(key) for key in data if key not in ("version", "max_rounds", "max_chars", "rounds")]
        if unknown:
            raise SceneError(f"unknown history field(s) [{', '.join(sorted(unknown[:10]))}]; "
                             "allowed: ['max_chars', 'max_rounds', 'rounds', 'version']")
        if data.get("version", 1) != 1 or isinstance(data.get("version"), bool):
            raise SceneError(f"edit history version {shown(data.get('version'))} is not supported (this reads 1)")
        rounds = data.get("rounds")
        if not isinstance(rounds, list):
            raise SceneError(f"'rounds' must be a list, got {type(rounds).__name__}")
        if len(rounds) > MAX_HISTORY_ROUNDS:
            raise SceneError(f"the history has {len(rounds):,} rounds, more than the {MAX_HISTORY_ROUNDS} allowed "
                             "(edits.MAX_HISTORY_ROUNDS)")
        parsed = []
        for index, item in enumerate(rounds):
            try:
                parsed.append(EditRound.from_dict(item, limits=limits))
            except SceneError as error:
                raise SceneError(f"rounds[{index}]: {error}") from error
        return cls(parsed, max_rounds=data.get("max_rounds", _DEFAULT_ROUNDS),
                   max_chars=data.get("max_chars", _DEFAULT_CHARS))

    @classmethod
    def from_json(cls, text: str | bytes, *, limits: SceneLimits | None = None) -> EditHistory:
        """A history from JSON text, read within ``limits`` (size, depth, digits; see :func:`load_json`)."""
        return cls.from_dict(load_json(text, limits=limits, what="edit history"), limits=limits)
