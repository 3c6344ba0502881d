"""Reading a batch file: ``prompts.txt`` (one prompt a line) or ``prompts.jsonl`` (one JSON object a line).

Every line becomes a :class:`BatchItem` with a stable key, a seed and an output name; a line that
cannot be read becomes an item whose ``error`` says why, so one bad line is a recorded failure of
the batch, not the end of it. No torch.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..scene import DEFAULT_LIMITS, Scene, SceneError, SceneLimits, load_json

__all__ = ["BatchItem", "BatchError", "read_items", "item_key", "seed_of", "SUFFIXES", "MAX_SEED", "LINE_FIELDS"]

SUFFIXES = (".txt", ".jsonl")
#: The largest seed (as the generation methods take: 32 bits).
MAX_SEED = 2**32 - 1
#: What a jsonl line may hold.
LINE_FIELDS = ("prompt", "scene", "seed", "method", "config", "id")
#: Config keys a line may not set: the batch fixes them (one PIL image per item, the line's own seed).
FIXED_SETTINGS = {"seed": "give the line's own \"seed\" instead", "num_images": "a batch renders one image per line",
                  "output_type": "a batch writes PNGs"}
MAX_ID_CHARS = 200
SHORT_KEY = 10


class BatchError(ValueError):
    """A batch that cannot run at all: an unreadable file, a folder in use, options that differ from the manifest's."""


@dataclass(frozen=True)
class BatchItem:
    """One line of a batch file.

    Attributes:
        index: its place among the file's items, from 0 (blank and comment lines are not items).
        line: its line number in the file, from 1.
        key: sha256 of its canonical content and its occurrence number among identical lines (64 hex digits).
        prompt: the prompt to plan (``None`` for a line that gives a scene only, or could not be read).
        scene: a ready scene (its dict form), rendered as it is instead of planning ``prompt``.
        seed: the line's seed, else one derived from the key, so reruns and Ray workers draw the same noise.
        method: the line's method (``None``: the batch's).
        config: the line's method settings (over the batch's).
        id: the line's own name for itself, recorded in the manifest.
        error: why the line cannot be rendered (``None`` when it can); the manifest records it after
            ``line N:``.
    """

    index: int
    line: int
    key: str
    prompt: str | None = None
    scene: dict[str, Any] | None = None
    seed: int = 0
    method: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    id: str | int | None = None
    error: str | None = None

    @property
    def output(self) -> str:
        """The PNG's file name in the batch folder: ``<index>-<short key>.png``."""
        return f"{self.index:05d}-{self.key[:SHORT_KEY]}.png"


def item_key(canonical: str, occurrence: int) -> str:
    """The key of the ``occurrence``-th line (from 0) whose canonical content is ``canonical``."""
    return hashlib.sha256(f"{canonical}\n{occurrence}".encode()).hexdigest()


def seed_of(key: str) -> int:
    """The seed a line without one gets: the key's first 32 bits."""
    return int(key[:8], 16)


def read_items(path: str | Path, *, limits: SceneLimits | None = None) -> list[BatchItem]:
    """The items of ``path`` (``.txt``: one prompt a line; ``.jsonl``: one JSON object a line).

    Blank lines and lines starting with ``#`` are skipped. A line that cannot be read (not UTF-8, not
    JSON, not an object, an unknown field, a bad scene, a number past the JSON limits) is an item
    with ``error`` set. Raises :class:`BatchError` for a file that is not ``.txt``/``.jsonl`` or holds
    no item, and ``OSError`` for one that cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise BatchError(f"{path} must end in .txt (one prompt a line) or .jsonl (one JSON object a line)")
    limits = limits or DEFAULT_LIMITS
    parse = _txt_line if suffix == ".txt" else _jsonl_line
    seen: Counter[str] = Counter()
    items = []
    for number, raw in _lines(path, limits.max_json_chars):
        canonical, fields, error = parse(raw, limits)
        key = item_key(canonical, seen[canonical])
        seen[canonical] += 1
        seed = fields.pop("seed", None)
        items.append(BatchItem(len(items), number, key, seed=seed_of(key) if seed is None else seed, error=error,
                               **fields))
    if not items:
        raise BatchError(f"{path} holds no prompt (blank lines and lines starting with # are skipped)")
    return items


def _lines(path: Path, max_chars: int) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, bytes)`` of the lines worth reading; ``None`` for a line longer than ``max_chars``
    bytes, which is skipped unread rather than held in memory."""
    with open(path, "rb") as file:
        number = 0
        while line := file.readline(max_chars + 2):
            number += 1
            if not line.endswith(b"\n") and len(line) > max_chars:
                while (rest := file.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass
                yield number, None
                continue
            stripped = line.strip()
            if stripped and not stripped.startswith(b"#"):
                yield number, stripped


def _decode(raw: bytes | None, limits: SceneLimits) -> str:
    if raw is None:
        raise SceneError(f"the line is longer than the {limits.max_json_chars:,} characters allowed "
                         "(SceneLimits.max_json_chars)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SceneError(f"the line is not UTF-8 text ({error.reason} at byte {error.start})") from None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _txt_line(raw: bytes | None, limits: SceneLimits) -> tuple[str, dict[str, Any], str | None]:
    """``(canonical content, item fields, error)`` of a prompts.txt line: the line is the prompt."""
    try:
        text = _decode(raw, limits)
    except SceneError as error:
        return _unreadable(raw, error)
    return _canonical({"prompt": text}), {"prompt": text}, None


def _jsonl_line(raw: bytes | None, limits: SceneLimits) -> tuple[str, dict[str, Any], str | None]:
    """``(canonical content, item fields, error)`` of a prompts.jsonl line."""
    try:
        data = load_json(_decode(raw, limits), limits=limits, what="text")
        if not isinstance(data, dict):
            raise SceneError(f"the line must be a JSON object such as {{\"prompt\": \"a cat\"}}, not "
                             f"{_kind(data)}")
        fields = _fields(data, limits)
    except SceneError as error:
        return _unreadable(raw, error)
    return _canonical(data), fields, None


def _unreadable(raw: bytes | None, error: Exception) -> tuple[str, dict[str, Any], str]:
    content = "unread" if raw is None else raw.decode("utf-8", "replace")
    return _canonical({"unreadable line": content}), {}, str(error).replace("line 1 column", "column")


def _kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _fields(data: dict[str, Any], limits: SceneLimits) -> dict[str, Any]:
    """The item fields of a jsonl object, checked; every problem is a SceneError naming the field."""
    unknown = sorted(set(data) - set(LINE_FIELDS))
    if unknown:
        raise SceneError(f"unknown field(s) {', '.join(map(repr, unknown))}; a line may hold {', '.join(LINE_FIELDS)}")
    prompt, scene = data.get("prompt"), data.get("scene")
    if prompt is None and scene is None:
        raise SceneError('the line needs a "prompt" (to plan) or a "scene" (to render as it is)')
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise SceneError(f'"prompt" must be a non-empty string, not {_kind(prompt)}')
    if scene is not None:
        try:
            scene = Scene.from_dict(scene, limits=limits).to_dict()
        except SceneError as error:
            raise SceneError(f'"scene": {error}') from None
    fields = {"prompt": prompt if prompt is not None else scene["prompt"], "scene": scene,
              "seed": _seed(data.get("seed")), "method": _method(data.get("method")),
              "config": _config(data.get("config", {})), "id": _id(data.get("id"))}
    return fields


def _seed(seed: Any) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise SceneError(f'"seed" must be an integer in [0, {MAX_SEED}], got {_shown(seed)}')
    return seed


def _method(method: Any) -> str | None:
    if method is not None and (not isinstance(method, str) or not method):
        raise SceneError(f'"method" must be a method name such as "regional" or "layout", not {_kind(method)}')
    return method


def _config(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise SceneError(f'"config" must be an object of method settings such as {{"fast": true}}, not {_kind(config)}')
    for key, why in FIXED_SETTINGS.items():
        if key in config:
            raise SceneError(f'"config" may not set {key!r}: {why}')
    return {key: tuple(value) if isinstance(value, list) else value for key, value in config.items()}


def _id(value: Any) -> str | int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS:
        raise SceneError(f'"id" must be a string of at most {MAX_ID_CHARS} characters or an integer, got '
                         f"{_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:36]}..."
