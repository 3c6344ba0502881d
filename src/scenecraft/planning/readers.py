"""Readers for planner replies: LMD's layout text, RPG's split-ratio text, and JSON scenes.

All hand-written, bounded, and safe: model text is never evaluated. Every input gives a Scene or
a :class:`PlanParseError` (a ``ValueError``) that names what was wrong and where.

LMD (512 x 512 pixel ``[x, y, w, h]`` boxes; the ``Objects:`` prefix may be absent)::

    Objects: [('a cat', [50, 150, 200, 200]), ('a cup', [350, 250, 100, 100])]
    Background prompt: A realistic scene
    Negative prompt: dogs

RPG::

    ...reasoning...
    Final split ratio: 1,1;2,1,1
    Regional Prompt: a sky BREAK a red house BREAK a green tree
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..scene import Box, Region, Scene, SceneError, load_json
from ..scene.split import SplitRatioError
from .errors import PlanParseError

__all__ = ["MAX_REPLY_CHARS", "read_lmd", "read_rpg", "read_json_scene", "extract_json_object"]

#: Longest reply any reader accepts (characters).
MAX_REPLY_CHARS = 50_000
_MAX_DEPTH = 4
_MAX_OBJECTS = 100
#: Boxes covering at least this share of the canvas on both axes are read as the background.
FULL_CANVAS = 0.95

_OBJECTS = re.compile(r"objects\s*:", re.IGNORECASE)
_BACKGROUND = re.compile(r"background\s+prompt\s*:", re.IGNORECASE)
_NEGATIVE = re.compile(r"negative\s+prompt\s*:", re.IGNORECASE)
_SPLIT = re.compile(r"final\s+split\s+ratio\s*:", re.IGNORECASE)
_REGIONAL = re.compile(r"regional\s+prompts?\s*:", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _check_text(text: Any, fmt: str) -> str:
    if not isinstance(text, str):
        raise PlanParseError(f"expected text, got {type(text).__name__}", fmt=fmt)
    if len(text) > MAX_REPLY_CHARS:
        raise PlanParseError(f"reply has {len(text)} characters, more than the {MAX_REPLY_CHARS} allowed", fmt=fmt)
    return text


class _LiteralReader:
    """Reads a Python-literal subset: lists, tuples, quoted strings and numbers. Nothing else."""

    def __init__(self, text: str, pos: int) -> None:
        self.text, self.pos = text, pos

    def error(self, reason: str) -> PlanParseError:
        return PlanParseError(reason, self.pos, fmt="LMD layout")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def value(self, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise self.error(f"nesting deeper than {_MAX_DEPTH} levels")
        self.skip_space()
        if self.pos >= len(self.text):
            raise self.error("the object list ends early (truncated reply?)")
        char = self.text[self.pos]
        if char in "[(":
            return self.sequence("]" if char == "[" else ")", depth)
        if char in "'\"":
            return self.string(char)
        match = _NUMBER.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            number = float(match.group())
            if not math.isfinite(number):
                raise self.error(f"number {match.group()!r} is not finite")
            return number
        raise self.error(f"expected a list, a quoted string or a number, found {char!r}")

    def sequence(self, close: str, depth: int) -> list[Any]:
        self.pos += 1
        items: list[Any] = []
        while True:
            self.skip_space()
            if self.pos >= len(self.text):
                raise self.error(f"missing {close!r}: the object list ends early (truncated reply?)")
            if self.text[self.pos] == close:
                self.pos += 1
                return items
            if len(items) >= _MAX_OBJECTS:
                raise self.error(f"more than {_MAX_OBJECTS} items in one list")
            items.append(self.value(depth + 1))
            self.skip_space()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
            elif self.pos < len(self.text) and self.text[self.pos] != close:
                raise self.error(f"expected ',' or {close!r}, found {self.text[self.pos]!r}")

    def string(self, quote: str) -> str:
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        escapes = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                chars.append(escapes.get(self.text[self.pos + 1], self.text[self.pos + 1]))
                self.pos += 2
                continue
            if char == quote:
                self.pos += 1
                return "".join(chars)
            if char == "\n":
                break
            chars.append(char)
            self.pos += 1
        self.pos = start
        raise self.error("a quoted string is not closed")


def _lmd_object(item: Any, index: int, canvas: tuple[int, int]) -> tuple[str, tuple[float, float, float, float]]:
    where = f"object {index}"
    if not isinstance(item, list) or len(item) != 2:
        raise PlanParseError(f"{where} must be ('name', [x, y, w, h]), got {item!r}"[:300], fmt="LMD layout")
    name, box = item
    if not isinstance(name, str) or not name.strip():
        raise PlanParseError(f"{where} needs a non-empty name, got {name!r}"[:300], fmt="LMD layout")
    if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, float) for v in box):
        raise PlanParseError(f"{where} ({name!r}) needs a box [x, y, w, h] of 4 numbers, got {box!r}"[:300],
                             fmt="LMD layout")
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise PlanParseError(f"{where} ({name!r}) has an empty box [x, y, w, h] = {box}: width and height must be > 0",
                             fmt="LMD layout")
    width, height = canvas
    return name.strip().rstrip("."), (x / width, y / height, (x + w) / width, (y + h) / height)


def clip_rect(rect: tuple[float, float, float, float], min_side: float) -> tuple[float, float, float, float] | None:
    """``rect`` clipped into [0, 1]^2 and grown (about its centre) to at least ``min_side`` per side.

    Returns None when nothing of the rectangle lies on the canvas.
    """
    x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in rect)
    if x1 <= x0 or y1 <= y0:
        return None
    out = []
    for lo, hi in ((x0, x1), (y0, y1)):
        if hi - lo < min_side:
            centre = (lo + hi) / 2
            lo, hi = centre - min_side / 2, centre + min_side / 2
            lo, hi = (0.0, min_side) if lo < 0 else (lo, hi)
            lo, hi = (1.0 - min_side, 1.0) if hi > 1 else (lo, hi)
        out.append((lo, hi))
    return (out[0][0], out[1][0], out[0][1], out[1][1])


def read_lmd(text: str, *, prompt: str = "", width: int = 512, height: int = 512,
             canvas: tuple[int, int] = (512, 512), min_side: float = 1 / 16) -> Scene:
    """Read an LMD layout reply into a box Scene.

    Args:
        text: the reply (at most MAX_REPLY_CHARS characters); the ``Objects:`` prefix is optional,
            reasoning before it is skipped; "Background prompt:" and "Negative prompt:" are optional.
        prompt: the user prompt, stored as the Scene's prompt.
        width, height: the Scene's image size (default 512 x 512).
        canvas: the pixel canvas the boxes are written on (default LMD's 512 x 512).
        min_side: boxes are clipped into the canvas and grown to at least this fraction per side
            (default 1/16: 4 latent pixels at 64 x 64 latents). A box covering >= 95% of the
            canvas on both axes is the background: it is dropped and its name becomes the
            background prompt when none was given.
    """
    text = _check_text(text, "LMD layout")
    objects_at = _OBJECTS.search(text)
    start = objects_at.end() if objects_at else 0
    background_at = _BACKGROUND.search(text, start)
    negative_at = _NEGATIVE.search(text, background_at.end() if background_at else start)
    end = min(m.start() for m in (background_at, negative_at) if m) if (background_at or negative_at) else len(text)
    body = text[start:end].strip()
    items: list[Any] = []
    if body and not body.lower().startswith(("no objects", "none")):
        reader = _LiteralReader(text, start)
        reader.skip_space()
        items = reader.value()
        reader.skip_space()
        if not isinstance(items, list):
            raise PlanParseError(f"the objects must be a list [('name', [x, y, w, h]), ...], got {items!r}"[:300],
                                 start, fmt="LMD layout")
        if reader.pos < end:
            raise PlanParseError(f"unexpected text after the object list: {text[reader.pos:end].strip()[:40]!r}",
                                 reader.pos, fmt="LMD layout")
    background = None
    if background_at:
        background = text[background_at.end():negative_at.start() if negative_at else len(text)].strip() or None
    negative = text[negative_at.end():].strip() if negative_at else ""
    negative = "" if negative.lower() in ("none", "none.", "n/a") else negative
    regions = []
    for index, item in enumerate(items):
        name, rect = _lmd_object(item, index, canvas)
        if rect[2] - rect[0] >= FULL_CANVAS and rect[3] - rect[1] >= FULL_CANVAS:
            background = background or name
            continue
        clipped = clip_rect(rect, min_side)
        if clipped is None:
            raise PlanParseError(f"object {index} ({name!r}) lies outside the {canvas[0]}x{canvas[1]} canvas",
                                 fmt="LMD layout")
        regions.append(Region(name, Box(*clipped)))
    try:
        return Scene(prompt=prompt, regions=tuple(regions), width=width, height=height,
                     background_prompt=background, negative_prompt=negative)
    except SceneError as error:
        raise PlanParseError(str(error), fmt="LMD layout") from error


def read_rpg(text: str, *, prompt: str = "", width: int = 512, height: int = 512) -> Scene:
    """Read RPG's ``Final split ratio: ...`` / ``Regional Prompt: ... BREAK ...`` reply into a split Scene.

    The last "Final split ratio:" line wins (reasoning may precede it). If the prompt has one
    more ``BREAK`` chunk than the split has regions, the first chunk is the base prompt (RPG's
    ``use_base``).
    """
    text = _check_text(text, "RPG reply")
    ratios = list(_SPLIT.finditer(text))
    if not ratios:
        raise PlanParseError("no 'Final split ratio:' line", fmt="RPG reply")
    ratio_at = ratios[-1]
    line_end = text.find("\n", ratio_at.end())
    split = text[ratio_at.end():line_end if line_end >= 0 else len(text)].strip().rstrip(".").strip()
    regional = _REGIONAL.search(text, ratio_at.end())
    if regional is None:
        raise PlanParseError("no 'Regional Prompt:' after the split ratio", ratio_at.end(), fmt="RPG reply")
    chunks = [c.strip() for c in text[regional.end():].split("BREAK")]
    if any(not c for c in chunks):
        raise PlanParseError("an empty regional prompt between BREAKs", regional.end(), fmt="RPG reply")
    try:
        from ..scene import parse_split

        needed = parse_split(split).num_regions
        base = chunks.pop(0) if len(chunks) == needed + 1 else None
        return Scene.from_split(prompt or base or ", ".join(chunks), split, chunks, width=width, height=height,
                                base_prompt=base)
    except (SceneError, SplitRatioError) as error:
        raise PlanParseError(str(error).splitlines()[0], ratio_at.end(), fmt="RPG reply") from error


def extract_json_object(text: str) -> str:
    """The last balanced top-level ``{...}`` of ``text`` (after any reasoning or code fences)."""
    text = _check_text(text, "JSON reply")
    last: tuple[int, int] | None = None
    depth, start, in_string, escaped = 0, -1, False, False
    for pos, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"' and depth > 0:
            in_string = True
        elif char == "{":
            if depth == 0:
                start = pos
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                last = (start, pos + 1)
    if last is None:
        if depth > 0:
            raise PlanParseError("the JSON object is not closed (truncated reply?)", start, fmt="JSON reply")
        raise PlanParseError("no JSON object in the reply", fmt="JSON reply")
    return text[last[0]:last[1]]


def read_json_scene(text: str, *, prompt: str | None = None, width: int | None = None,
                    height: int | None = None) -> Scene:
    """Read a Scene written as JSON (the structured-output form); ``prompt``/size override the reply's."""
    blob = extract_json_object(text)
    try:
        data = load_json(blob, what="JSON reply")  # bounded: depth, digits, no NaN (SceneLimits)
    except SceneError as error:
        raise PlanParseError(str(error)[:300], fmt="JSON reply") from error
    if not isinstance(data, dict):
        raise PlanParseError("the JSON reply is not an object", fmt="JSON reply")
    data = dict(data)
    data.setdefault("prompt", prompt or "")
    for key, value in (("prompt", prompt), ("width", width), ("height", height)):
        if value is not None:
            data[key] = value
    try:
        return Scene.from_dict(data)
    except (SceneError, SplitRatioError, TypeError) as error:
        raise PlanParseError(str(error).splitlines()[0][:300], fmt="JSON reply") from error
