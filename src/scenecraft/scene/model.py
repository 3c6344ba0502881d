"""The Scene: the JSON contract between planners and generators. Pure Python + numpy, no torch."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

import numpy as np

from .masks import rect_coverage, region_weights, resample_mask
from .split import SplitRatio, format_split, parse_split

__all__ = ["Box", "Cell", "Mask", "Region", "Scene", "SceneError", "SCENE_FORMAT_VERSION"]

SCENE_FORMAT_VERSION = 1


class SceneError(ValueError):
    """A scene that is not valid; the message names the field, the value seen and what is allowed."""


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SceneError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise SceneError(f"{name} must lie in [0, 1] (a fraction of the canvas), got {value!r}")
    return float(value)


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
        return cls(x / width, y / height, (x + w) / width, (y + h) / height)


@dataclass(frozen=True)
class Cell:
    """The ``index``-th cell (row-major) of the scene's split grid."""

    index: int

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise SceneError(f"cell index must be a non-negative integer, got {self.index!r}")


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
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SceneError(f"mask {name} must be a positive integer, got {value!r}")
        rle = tuple(self.rle)
        if any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in rle):
            raise SceneError("mask rle must be a list of non-negative integers")
        if sum(rle) != self.width * self.height:
            raise SceneError(f"mask rle covers {sum(rle)} pixels but the mask has {self.width}x{self.height}={self.width * self.height}")
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


@dataclass(frozen=True)
class Region:
    """One region: its own prompt, an optional negative prompt, and where it lies."""

    prompt: str
    geometry: Geometry
    negative_prompt: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise SceneError(f"a region's prompt must be a non-empty string, got {self.prompt!r}")
        if not isinstance(self.geometry, (Box, Cell, Mask)):
            raise SceneError(f"a region's geometry must be a Box, Cell or Mask, got {type(self.geometry).__name__}")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise SceneError(f"a region's negative_prompt must be a string or null, got {self.negative_prompt!r}")


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
    _split: SplitRatio | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise SceneError(f"prompt must be a string, got {self.prompt!r}")
        object.__setattr__(self, "regions", tuple(self.regions))
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SceneError(f"{name} must be a positive integer number of pixels, got {value!r}")
        object.__setattr__(self, "base_ratio", _check_fraction("base_ratio", self.base_ratio))
        for name in ("base_prompt", "background_prompt"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise SceneError(f"{name} must be a string or null, got {value!r}")
        if not isinstance(self.negative_prompt, str):
            raise SceneError(f"negative_prompt must be a string, got {self.negative_prompt!r}")
        object.__setattr__(self, "notes", _check_notes(self.notes))
        self._check_cells()

    def _check_cells(self) -> None:
        cells = [r.geometry.index for r in self.regions if isinstance(r.geometry, Cell)]
        if self.split is None:
            if cells:
                raise SceneError("regions use split cells but the scene has no split ratio (set 'split', e.g. \"1,1\")")
            return
        split = parse_split(self.split)
        object.__setattr__(self, "_split", split)
        if len(cells) != len(self.regions):
            raise SceneError("a scene with a split ratio must give every region as a cell of that split")
        if sorted(cells) != list(range(split.num_regions)):
            raise SceneError(
                f"split {self.split!r} has {split.num_regions} regions but {len(cells)} region prompts were given "
                f"(cells {sorted(cells)}); give exactly one prompt per region"
            )

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_split(cls, prompt: str, split: str, region_prompts: Sequence[str], **kwargs: Any) -> Scene:
        """RPG's form: a split ratio and one prompt per region, in row-major order."""
        parsed = parse_split(split)
        if len(region_prompts) != parsed.num_regions:
            raise SceneError(
                f"split {split!r} has {parsed.num_regions} regions but {len(region_prompts)} region prompts were given"
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
            entry: dict[str, Any] = {"prompt": region.prompt}
            geometry = region.geometry
            if isinstance(geometry, Box):
                entry["box"] = geometry.as_list()
            elif isinstance(geometry, Cell):
                entry["cell"] = geometry.index
            else:
                entry["mask"] = {"width": geometry.width, "height": geometry.height, "rle": list(geometry.rle)}
            if region.negative_prompt is not None:
                entry["negative_prompt"] = region.negative_prompt
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
    def from_dict(cls, data: Any) -> Scene:
        if not isinstance(data, dict):
            raise SceneError(f"a scene must be a JSON object, got {type(data).__name__}")
        known = {"version", "prompt", "base_prompt", "base_ratio", "background_prompt", "negative_prompt",
                 "width", "height", "split", "regions", "notes"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SceneError(f"unknown scene field(s) {unknown}; allowed: {sorted(known)}")
        version = data.get("version", SCENE_FORMAT_VERSION)
        if version != SCENE_FORMAT_VERSION:
            raise SceneError(f"scene format version {version!r} is not supported (this scenecraft reads {SCENE_FORMAT_VERSION})")
        if "prompt" not in data:
            raise SceneError("a scene needs a 'prompt'")
        regions_data = data.get("regions", [])
        if not isinstance(regions_data, list):
            raise SceneError(f"'regions' must be a list, got {type(regions_data).__name__}")
        regions = tuple(_region_from_dict(entry, i) for i, entry in enumerate(regions_data))
        kwargs = {k: data[k] for k in known - {"version", "prompt", "regions"} if k in data}
        if kwargs.get("negative_prompt", "") is None:
            kwargs["negative_prompt"] = ""
        return cls(prompt=data["prompt"], regions=regions, **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Scene:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise SceneError(f"scene is not valid JSON: {error}") from error
        return cls.from_dict(data)


def _check_notes(notes: Any) -> tuple[str, ...]:
    """``notes`` as a tuple of strings (any sequence of strings is accepted; ``None`` is none)."""
    if notes is None:
        return ()
    if isinstance(notes, str) or not isinstance(notes, Sequence) or not all(isinstance(n, str) for n in notes):
        raise SceneError(f"notes must be a list of strings, got {notes!r}")
    return tuple(notes)


def _region_from_dict(entry: Any, index: int) -> Region:
    where = f"regions[{index}]"
    if not isinstance(entry, dict):
        raise SceneError(f"{where} must be an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - {"prompt", "negative_prompt", "box", "cell", "mask"})
    if unknown:
        raise SceneError(f"{where}: unknown field(s) {unknown}")
    kinds = [k for k in ("box", "cell", "mask") if k in entry]
    if len(kinds) != 1:
        raise SceneError(f"{where} needs exactly one of 'box', 'cell' or 'mask', got {kinds or 'none'}")
    kind = kinds[0]
    value = entry[kind]
    try:
        if kind == "box":
            if not isinstance(value, (list, tuple)) or len(value) != 4:
                raise SceneError(f"box must be [x0, y0, x1, y1], got {value!r}")
            geometry: Geometry = Box(*value)
        elif kind == "cell":
            geometry = Cell(value)
        else:
            if not isinstance(value, dict) or set(value) != {"width", "height", "rle"}:
                raise SceneError("mask must be {'width': W, 'height': H, 'rle': [...]}")
            geometry = Mask(value["width"], value["height"], tuple(value["rle"]) if isinstance(value["rle"], list) else value["rle"])
        return Region(prompt=entry.get("prompt"), geometry=geometry, negative_prompt=entry.get("negative_prompt"))
    except SceneError as error:
        raise SceneError(f"{where}: {error}") from error
