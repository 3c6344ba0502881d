"""The Scene: the JSON contract between planners and generators. Pure Python + numpy, no torch."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

import numpy as np

from .errors import SceneError, shown
from .limits import DEFAULT_LIMITS, SceneLimits, limit_error
from .masks import rect_coverage, region_weights, resample_mask
from .safejson import load_json
from .split import SplitRatio, format_split, parse_split

__all__ = [
    "LORA_MAX_PATH_CHARS", "LORA_MAX_SCALE", "REGION_ID_MAX_CHARS", "SCENE_FORMAT_VERSION", "Box", "Cell", "LoraRef",
    "Mask", "Region", "Scene", "SceneError", "SceneLimits", "check_region_id",
]

SCENE_FORMAT_VERSION = 1
LORA_MAX_PATH_CHARS = 4096  # Linux's PATH_MAX; a hub id or a file path is far shorter
LORA_MAX_SCALE = 10  # |scale| at most this; LoRA scales in use lie in about [-2, 2]
REGION_ID_MAX_CHARS = 64  # an id names a region in an edit ("r1", "cat"); it is no prompt
_REGION_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{REGION_ID_MAX_CHARS - 1}}}")


def _check_fraction(name: str, value: Any) -> float:
    # Integers are compared exactly: a 400-digit one must not reach float() (OverflowError).
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        raise SceneError(f"{name} must be a finite number, got {shown(value)}")
    if not 0 <= value <= 1:
        raise SceneError(f"{name} must lie in [0, 1] (a fraction of the canvas), got {shown(value)}")
    return float(value)


def _finite(value: int | float) -> bool:
    return isinstance(value, int) or math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_mask_size(width: Any, height: Any, limits: SceneLimits) -> None:
    """Refuse a mask of more than ``limits.max_mask_pixels`` (before its runs are looked at)."""
    if _is_int(width) and _is_int(height) and width > 0 and height > 0 and width * height > limits.max_mask_pixels:
        size = f"{shown(width)}x{shown(height)}"
        raise limit_error(f"mask is {size} pixels", "max_mask_pixels", limits, " pixels")


@dataclass(frozen=True)
class Box:
    """A rectangle ``[x0, y0, x1, y1]`` in fractions of the canvas, origin top-left (GLIGEN's convention)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        for name in ("x0", "y0", "x1", "y1"):
            object.__setattr__(self, name, _check_fraction(f"box {name}", getattr(self, name)))
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise SceneError(f"box {self.as_list()} is empty: need x0 < x1 and y0 < y1")

    def as_list(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]

    @property
    def area(self) -> float:
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    @classmethod
    def from_pixels(cls, x: float, y: float, w: float, h: float, width: int, height: int) -> Box:
        """From LMD's ``[x, y, w, h]`` pixel box on a ``width x height`` canvas."""
        try:
            return cls(x / width, y / height, (x + w) / width, (y + h) / height)
        except (ArithmeticError, TypeError) as error:  # a zero canvas, a 400-digit integer, a string
            raise SceneError(f"pixel box {shown([x, y, w, h])} on a {shown(width)}x{shown(height)} canvas "
                             f"cannot be read: {error}") from error


@dataclass(frozen=True)
class Cell:
    """The ``index``-th cell (row-major) of the scene's split grid."""

    index: int

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise SceneError(f"cell index must be a non-negative integer, got {shown(self.index)}")


@dataclass(frozen=True)
class Mask:
    """A binary mask of ``width x height`` pixels, run-length encoded row-major.

    ``rle`` alternates run lengths of 0s and 1s, starting with 0s (a leading run may be 0).
    """

    width: int
    height: int
    rle: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise SceneError(f"mask {name} must be a positive integer, got {shown(value)}")
        if not isinstance(self.rle, (list, tuple)):
            raise SceneError(f"mask rle must be a list of non-negative integers, got {shown(self.rle)}")
        rle = tuple(self.rle)
        if not all(_is_int(r) and r >= 0 for r in rle):
            raise SceneError(f"mask rle must be a list of non-negative integers, got {shown(rle)}")
        covered, pixels = sum(rle), self.width * self.height
        if covered != pixels:
            raise SceneError(f"mask rle covers {shown(covered)} pixels but the mask has "
                             f"{shown(self.width)}x{shown(self.height)}={shown(pixels)}")
        object.__setattr__(self, "rle", rle)

    @classmethod
    def from_array(cls, array: Any) -> Mask:
        """From a 2-D array; values > 0.5 are inside."""
        flat = (np.asarray(array, dtype=np.float64) > 0.5).astype(np.int8)
        if flat.ndim != 2:
            raise SceneError(f"a mask must be 2-D, got shape {flat.shape}")
        height, width = flat.shape
        values = flat.ravel()
        changes = np.flatnonzero(np.diff(values)) + 1
        bounds = np.concatenate([[0], changes, [values.size]])
        runs = np.diff(bounds).tolist()
        if values[0] == 1:
            runs = [0, *runs]
        return cls(width=width, height=height, rle=tuple(int(r) for r in runs))

    def to_array(self) -> np.ndarray:
        values = np.repeat(np.arange(len(self.rle)) % 2, self.rle).astype(np.float64)
        return values.reshape(self.height, self.width)


Geometry = Union[Box, Cell, Mask]

# Control characters (NUL, newline, DEL, C1), format characters (bidi overrides, zero widths), lone
# surrogates and line/paragraph separators: no sane file name or hub id holds one, and a path with
# one is a mistake, or text made to read differently in a log than on disk.
_BAD_PATH_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


@dataclass(frozen=True)
class LoraRef:
    """A LoRA adapter a region applies on its own path only: a file path or hub id, and its scale.

    ``path`` is a non-empty string of at most :data:`LORA_MAX_PATH_CHARS` (4096) characters with no
    control or format characters (NUL, newlines, bidi overrides, ...); ``scale`` a finite number in
    [-10, 10] (:data:`LORA_MAX_SCALE`; default 1.0). The scene layer never opens the path: the
    generator that applies the adapter does. How many a region may name is
    ``SceneLimits.max_loras_per_region`` (default 8), checked by the Scene.
    """

    path: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        path = self.path
        if not isinstance(path, str) or not path.strip():
            raise SceneError(f"a LoRA path must be a non-empty string, got {shown(path)}")
        if len(path) > LORA_MAX_PATH_CHARS:
            raise SceneError(f"a LoRA path has {len(path):,} characters, more than the {LORA_MAX_PATH_CHARS:,} allowed")
        bad = next((c for c in path if unicodedata.category(c) in _BAD_PATH_CATEGORIES), None)
        if bad is not None:
            raise SceneError(f"a LoRA path must not hold control or format characters, got {shown(path)} "
                             f"(U+{ord(bad):04X} at {path.index(bad)})")
        scale = self.scale
        # Integers are compared exactly: a 400-digit one must not reach float() (OverflowError).
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not _finite(scale):
            raise SceneError(f"a LoRA scale must be a finite number, got {shown(scale)}")
        if not -LORA_MAX_SCALE <= scale <= LORA_MAX_SCALE:
            raise SceneError(f"a LoRA scale must lie in [-{LORA_MAX_SCALE}, {LORA_MAX_SCALE}], got {shown(scale)}")
        object.__setattr__(self, "scale", float(scale))

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "scale": self.scale}


@dataclass(frozen=True)
class Region:
    """One region: its own prompt, an optional negative prompt, where it lies, the LoRA adapters
    (:class:`LoraRef`, a list or tuple; kept as a tuple) applied on its path only (none by default),
    and an optional ``id``: a short name, unique in its scene, that edits refer to and that survives
    them (see :func:`check_region_id` for what an id may be; :meth:`Scene.with_ids` names the rest)."""

    prompt: str
    geometry: Geometry
    negative_prompt: str | None = None
    lora: tuple[LoraRef, ...] = ()
    id: str | None = None

    def __post_init__(self) -> None:
        if self.id is not None:
            check_region_id(self.id)
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise SceneError(f"a region's prompt must be a non-empty string, got {shown(self.prompt)}")
        if not isinstance(self.geometry, (Box, Cell, Mask)):
            raise SceneError(f"a region's geometry must be a Box, Cell or Mask, got {type(self.geometry).__name__}")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise SceneError(f"a region's negative_prompt must be a string or null, got {shown(self.negative_prompt)}")
        object.__setattr__(self, "lora", _check_loras(self.lora))


def check_region_id(value: Any, what: str = "a region's id") -> str:
    """``value`` if it is a region id: 1 to :data:`REGION_ID_MAX_CHARS` (64) ASCII letters, digits, ``_``,
    ``-``, ``.`` or ``:``, starting with a letter or digit ("r1", "cat", "dog-2"); else a SceneError."""
    if not isinstance(value, str) or not _REGION_ID.fullmatch(value):
        raise SceneError(f"{what} must be 1 to {REGION_ID_MAX_CHARS} ASCII letters, digits, '_', '-', '.' or ':' "
                         f"starting with a letter or digit (e.g. \"r1\"), got {shown(value)}")
    return value


def _check_loras(lora: Any) -> tuple[LoraRef, ...]:
    """``lora`` as a tuple of LoraRefs with distinct paths (a list or tuple is accepted)."""
    if not isinstance(lora, (list, tuple)):
        raise SceneError(f"a region's lora must be a list of LoraRef, got {type(lora).__name__}")
    lora = tuple(lora)
    seen: set[str] = set()
    for index, ref in enumerate(lora):
        if not isinstance(ref, LoraRef):
            raise SceneError(f"a region's lora[{index}] must be a LoraRef, got {type(ref).__name__}")
        if ref.path in seen:
            raise SceneError(f"a region's lora[{index}] repeats the path {shown(ref.path)}; give each adapter once "
                             "(with the sum of the scales)")
        seen.add(ref.path)
    return lora


@dataclass(frozen=True)
class Scene:
    """A planned scene.

    Attributes:
        prompt: the whole prompt, as the user wrote it (or as recaptioned).
        regions: the regions, each with a prompt and a geometry.
        width, height: image size in pixels (default 512 x 512).
        base_prompt: the prompt every pixel also sees, mixed in by ``base_ratio``; ``None`` means
            ``prompt``. SDXL's pooled embedding is taken from it.
        base_ratio: weight of the base prompt in every region, 0..1 (default 0.3; RPG's examples
            use 0.3-0.5). 0 means regions only; 1 means the base prompt alone.
        background_prompt: what the area no region covers shows; ``None`` means the base prompt.
        negative_prompt: negative prompt for the base and for regions without their own.
        split: an RPG split ratio when regions are ``Cell``s, e.g. ``"1,1;2,1,1"``.
        notes: the planner's remarks on how it read the prompt (a reading chosen where the prompt
            was ambiguous, a layout it could not use); empty by default, left out of the JSON when
            empty. Generators ignore them.
        limits: the :class:`SceneLimits` this scene is checked against (size, region count,
            prompt length, mask pixels, split digits); ``None`` (default) means the defaults. Not
            part of the scene's value: ignored by ``==`` and left out of the JSON.
    """

    prompt: str
    regions: tuple[Region, ...] = ()
    width: int = 512
    height: int = 512
    base_prompt: str | None = None
    base_ratio: float = 0.3
    background_prompt: str | None = None
    negative_prompt: str = ""
    split: str | None = None
    notes: tuple[str, ...] = ()
    limits: SceneLimits | None = field(default=None, repr=False, compare=False)
    _split: SplitRatio | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.limits is not None and not isinstance(self.limits, SceneLimits):
            raise SceneError(f"limits must be a SceneLimits or None, got {type(self.limits).__name__}")
        limits = self.limits or DEFAULT_LIMITS
        _check_text("prompt", self.prompt, limits)
        object.__setattr__(self, "regions", _check_regions(self.regions, limits))
        self._check_size(limits)
        object.__setattr__(self, "base_ratio", _check_fraction("base_ratio", self.base_ratio))
        for name in ("base_prompt", "background_prompt"):
            _check_text(name, getattr(self, name), limits, optional=True)
        _check_text("negative_prompt", self.negative_prompt, limits)
        object.__setattr__(self, "notes", _check_notes(self.notes, limits))
        self._check_cells(limits)

    def _check_size(self, limits: SceneLimits) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise SceneError(f"{name} must be a positive integer number of pixels, got {shown(value)}")
            if value > limits.max_side:
                raise limit_error(f"{name} is {shown(value)}", "max_side", limits, " pixels per side")
        if self.width * self.height > limits.max_pixels:
            pixels = self.width * self.height
            raise limit_error(f"{self.width}x{self.height} is {pixels:,} pixels", "max_pixels", limits, " pixels")

    def _check_cells(self, limits: SceneLimits) -> None:
        cells = [r.geometry.index for r in self.regions if isinstance(r.geometry, Cell)]
        if self.split is None:
            if cells:
                raise SceneError("regions use split cells but the scene has no split ratio (set 'split', e.g. \"1,1\")")
            return
        if not isinstance(self.split, str):
            raise SceneError(f"split must be a split-ratio string such as \"1,1;2,1,1\" or null, "
                             f"got {shown(self.split)}")
        split = parse_split(self.split, limits=limits)
        object.__setattr__(self, "_split", split)
        if len(cells) != len(self.regions):
            raise SceneError("a scene with a split ratio must give every region as a cell of that split")
        if sorted(cells) != list(range(split.num_regions)):
            raise SceneError(
                f"split {shown(self.split)} has {split.num_regions} regions but {len(cells)} region prompts were given "
                f"(cells {sorted(cells)}); give exactly one prompt per region"
            )

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_split(cls, prompt: str, split: str, region_prompts: Sequence[str], **kwargs: Any) -> Scene:
        """RPG's form: a split ratio and one prompt per region, in row-major order."""
        parsed = parse_split(split, limits=kwargs.get("limits"))
        if len(region_prompts) != parsed.num_regions:
            raise SceneError(
                f"split {shown(split)} has {parsed.num_regions} regions but {len(region_prompts)} region prompts "
                "were given"
            )
        regions = tuple(Region(p, Cell(i)) for i, p in enumerate(region_prompts))
        return cls(prompt=prompt, regions=regions, split=format_split(parsed), **kwargs)

    @classmethod
    def from_rpg_prompt(cls, text: str, split: str, *, use_base: bool = False, **kwargs: Any) -> Scene:
        """RPG's ``BREAK``-separated prompt. With ``use_base`` the first chunk is the base prompt."""
        chunks = [c.strip() for c in text.split("BREAK")]
        base = chunks.pop(0) if use_base else None
        if base is not None:
            kwargs.setdefault("base_prompt", base)
        else:
            kwargs.setdefault("base_ratio", 0.0)
        prompt = base if base is not None else ", ".join(chunks)
        return cls.from_split(prompt, split, chunks, **kwargs)

    def with_size(self, width: int, height: int) -> Scene:
        return replace(self, width=width, height=height)

    def with_ids(self, taken: Iterable[str] = ()) -> Scene:
        """This scene with an id for every region that has none: ``"r1"``, ``"r2"``, ... in region order,
        each the lowest ``"rN"`` no region of the scene holds and not in ``taken`` (ids to leave alone,
        e.g. those of regions an edit history removed). Regions that have an id keep it; a scene whose
        regions all have one is returned as it is. Deterministic: the same scene always gets the same ids."""
        if all(region.id is not None for region in self.regions):
            return self
        taken = {r.id for r in self.regions if r.id is not None} | {t for t in taken if isinstance(t, str)}
        numbers = iter(n for n in range(1, len(self.regions) + len(taken) + 2) if f"r{n}" not in taken)
        regions = tuple(region if region.id is not None else replace(region, id=f"r{next(numbers)}")
                        for region in self.regions)
        return replace(self, regions=regions)

    def region_index(self, region_id: str) -> int:
        """The index of the region whose id is ``region_id``; a SceneError naming the ids there are if none."""
        for index, region in enumerate(self.regions):
            if region.id == region_id:
                return index
        have = [region.id for region in self.regions if region.id is not None]
        listed = ", ".join(repr(i) for i in have[:20]) + (", ..." if len(have) > 20 else "")
        raise SceneError(f"no region has the id {shown(region_id)}; the scene's ids are [{listed}]"
                         + ("" if have else " (it has none: Scene.with_ids() names its regions r1, r2, ...)"))

    # ----------------------------------------------------------------- geometry
    @property
    def split_ratio(self) -> SplitRatio | None:
        return self._split

    def region_rect(self, region: Region) -> tuple[float, float, float, float] | None:
        """The rectangle of a box or cell region (``None`` for masks)."""
        geometry = region.geometry
        if isinstance(geometry, Box):
            return (geometry.x0, geometry.y0, geometry.x1, geometry.y1)
        if isinstance(geometry, Cell):
            assert self._split is not None
            return self._split.cells()[geometry.index]
        return None

    def raw_coverage(self, height: int, width: int) -> list[np.ndarray]:
        """Each region's covered fraction of every cell of an ``height x width`` grid."""
        maps = []
        for region in self.regions:
            rect = self.region_rect(region)
            if rect is not None:
                maps.append(rect_coverage(rect, height, width))
            else:
                maps.append(resample_mask(region.geometry.to_array(), height, width))
        return maps

    def weights(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-region weights ``(K, h, w)`` and the base/background share ``(h, w)``; they sum to one."""
        if not self.regions:
            return np.zeros((0, height, width)), np.ones((height, width))
        return region_weights(self.raw_coverage(height, width))

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        regions = []
        for region in self.regions:
            entry: dict[str, Any] = {} if region.id is None else {"id": region.id}  # no id: the JSON as before
            entry["prompt"] = region.prompt
            geometry = region.geometry
            if isinstance(geometry, Box):
                entry["box"] = geometry.as_list()
            elif isinstance(geometry, Cell):
                entry["cell"] = geometry.index
            else:
                entry["mask"] = {"width": geometry.width, "height": geometry.height, "rle": list(geometry.rle)}
            if region.negative_prompt is not None:
                entry["negative_prompt"] = region.negative_prompt
            if region.lora:  # left out when empty: scenes without LoRAs keep their JSON byte for byte
                entry["lora"] = [ref.as_dict() for ref in region.lora]
            regions.append(entry)
        return {
            "version": SCENE_FORMAT_VERSION,
            "prompt": self.prompt,
            "base_prompt": self.base_prompt,
            "base_ratio": self.base_ratio,
            "background_prompt": self.background_prompt,
            "negative_prompt": self.negative_prompt,
            "width": self.width,
            "height": self.height,
            "split": self.split,
            "regions": regions,
        } | ({"notes": list(self.notes)} if self.notes else {})

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Any, *, limits: SceneLimits | None = None) -> Scene:
        """A scene from its dict form (see :meth:`to_dict`), checked against ``limits`` (``None``: the defaults)."""
        if not isinstance(data, dict):
            raise SceneError(f"a scene must be a JSON object, got {type(data).__name__}")
        known = {"version", "prompt", "base_prompt", "base_ratio", "background_prompt", "negative_prompt",
                 "width", "height", "split", "regions", "notes"}
        _check_known("scene", data, known)
        version = data.get("version", SCENE_FORMAT_VERSION)
        if isinstance(version, bool) or version != SCENE_FORMAT_VERSION:
            raise SceneError(f"scene format version {shown(version)} is not supported "
                             f"(this scenecraft reads {SCENE_FORMAT_VERSION})")
        if "prompt" not in data:
            raise SceneError("a scene needs a 'prompt'")
        regions_data = data.get("regions", [])
        if not isinstance(regions_data, list):
            raise SceneError(f"'regions' must be a list, got {type(regions_data).__name__}")
        bounds = limits or DEFAULT_LIMITS
        if len(regions_data) > bounds.max_regions:
            raise limit_error(f"regions has {len(regions_data):,} entries", "max_regions", bounds)
        regions = tuple(_region_from_dict(entry, i, bounds) for i, entry in enumerate(regions_data))
        kwargs = {k: data[k] for k in known - {"version", "prompt", "regions"} if k in data}
        if kwargs.get("negative_prompt", "") is None:
            kwargs["negative_prompt"] = ""
        return cls(prompt=data["prompt"], regions=regions, limits=limits, **kwargs)

    @classmethod
    def from_json(cls, text: str | bytes, *, limits: SceneLimits | None = None) -> Scene:
        """A scene from JSON text, read within ``limits`` (``None``: the defaults; see :class:`SceneLimits`).

        The text's size, nesting depth and digits per number are checked before or while it is
        parsed (NaN and Infinity refused); every failure is a :class:`SceneError`.
        """
        return cls.from_dict(load_json(text, limits=limits, what="scene"), limits=limits)


def _check_text(name: str, value: Any, limits: SceneLimits, optional: bool = False) -> None:
    """``value`` must be a string (or ``None`` when ``optional``) of at most ``limits.max_prompt_chars``."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise SceneError(f"{name} must be a string{' or null' if optional else ''}, got {shown(value)}")
    if len(value) > limits.max_prompt_chars:
        raise limit_error(f"{name} has {len(value):,} characters", "max_prompt_chars", limits)


def _check_regions(regions: Any, limits: SceneLimits) -> tuple[Region, ...]:
    """``regions`` as a tuple of at most ``limits.max_regions`` Regions, with prompts and masks in limits."""
    if isinstance(regions, (str, bytes, dict)) or not isinstance(regions, Iterable):
        raise SceneError(f"regions must be a list of Region, got {type(regions).__name__}")
    regions = tuple(regions)
    if len(regions) > limits.max_regions:
        raise limit_error(f"regions has {len(regions):,} entries", "max_regions", limits)
    ids: dict[str, int] = {}
    for index, region in enumerate(regions):
        if not isinstance(region, Region):
            raise SceneError(f"regions[{index}] must be a Region, got {type(region).__name__}")
        if region.id is not None:
            if region.id in ids:
                raise SceneError(f"regions[{index}] has the id {region.id!r} of regions[{ids[region.id]}]; "
                                 "each region's id must be unique in its scene")
            ids[region.id] = index
        _check_text(f"regions[{index}] prompt", region.prompt, limits)
        _check_text(f"regions[{index}] negative_prompt", region.negative_prompt, limits, optional=True)
        if len(region.lora) > limits.max_loras_per_region:
            raise limit_error(f"regions[{index}] lora has {len(region.lora):,} entries", "max_loras_per_region", limits)
        if isinstance(region.geometry, Mask):
            try:
                _check_mask_size(region.geometry.width, region.geometry.height, limits)
            except SceneError as error:
                raise SceneError(f"regions[{index}]: {error}") from error
    return regions


def _check_known(what: str, data: dict[Any, Any], known: set[str]) -> None:
    """Refuse keys of ``data`` outside ``known``, naming them (keys of any type)."""
    unknown = [key for key in data if key not in known]
    if unknown:
        names = ", ".join(sorted(shown(key) for key in unknown[:10])) + (", ..." if len(unknown) > 10 else "")
        raise SceneError(f"unknown {what} field(s) [{names}]; allowed: {sorted(known)}")


def _check_notes(notes: Any, limits: SceneLimits) -> tuple[str, ...]:
    """``notes`` as a tuple of strings (any sequence of strings is accepted; ``None`` is none)."""
    if notes is None:
        return ()
    if isinstance(notes, str) or not isinstance(notes, Sequence) or not all(isinstance(n, str) for n in notes):
        raise SceneError(f"notes must be a list of strings, got {shown(notes)}")
    if len(notes) > limits.max_notes:
        raise limit_error(f"notes has {len(notes):,} entries", "max_notes", limits)
    for index, note in enumerate(notes):
        _check_text(f"notes[{index}]", note, limits)
    return tuple(notes)


def _region_from_dict(entry: Any, index: int, limits: SceneLimits) -> Region:
    where = f"regions[{index}]"
    if not isinstance(entry, dict):
        raise SceneError(f"{where} must be an object, got {type(entry).__name__}")
    try:
        _check_known("region", entry, {"id", "prompt", "negative_prompt", "box", "cell", "mask", "lora"})
    except SceneError as error:
        raise SceneError(f"{where}: {error}") from error
    kinds = [k for k in ("box", "cell", "mask") if k in entry]
    if len(kinds) != 1:
        raise SceneError(f"{where} needs exactly one of 'box', 'cell' or 'mask', got {kinds or 'none'}")
    kind = kinds[0]
    value = entry[kind]
    try:
        if kind == "box":
            if not isinstance(value, (list, tuple)) or len(value) != 4:
                raise SceneError(f"box must be [x0, y0, x1, y1], got {shown(value)}")
            geometry: Geometry = Box(*value)
        elif kind == "cell":
            geometry = Cell(value)
        else:
            if not isinstance(value, dict) or set(value) != {"width", "height", "rle"}:
                raise SceneError("mask must be {'width': W, 'height': H, 'rle': [...]}")
            _check_mask_size(value["width"], value["height"], limits)
            geometry = Mask(value["width"], value["height"], value["rle"])
        lora = _loras_from_list(entry["lora"], limits) if "lora" in entry else ()
        return Region(prompt=entry.get("prompt"), geometry=geometry, negative_prompt=entry.get("negative_prompt"),
                      lora=lora, id=entry.get("id"))
    except SceneError as error:
        raise SceneError(f"{where}: {error}") from error


def _loras_from_list(value: Any, limits: SceneLimits) -> tuple[LoraRef, ...]:
    """A region's ``"lora"`` entry: a list of at most ``limits.max_loras_per_region`` ``{path, scale?}`` objects."""
    if not isinstance(value, (list, tuple)):
        raise SceneError(f"lora must be a list of {{'path': ..., 'scale': ...}} objects, got {type(value).__name__}")
    if len(value) > limits.max_loras_per_region:
        raise limit_error(f"lora has {len(value):,} entries", "max_loras_per_region", limits)
    refs = []
    for index, item in enumerate(value):
        try:
            if not isinstance(item, dict):
                raise SceneError(f"must be an object {{'path': ..., 'scale': ...}}, got {type(item).__name__}")
            _check_known("lora", item, {"path", "scale"})
            if "path" not in item:
                raise SceneError("needs a 'path'")
            refs.append(LoraRef(item["path"], item.get("scale", 1.0)))
        except SceneError as error:
            raise SceneError(f"lora[{index}]: {error}") from error
    return tuple(refs)
