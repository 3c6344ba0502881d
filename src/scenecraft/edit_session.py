"""Editing a picture round by round, its history kept in the PNG: what ``scenecraft edit`` and the web UI run.

A picture's **edit record** (:class:`EditRecord`, the PNG text chunk ``scenecraft.history``) holds round 0
(the scene, method, model, settings and seed of the first picture, or a picture scenecraft did not make)
and every round after it: the instruction, the edits, the scene they made, the seed, how it was blended
(:class:`RoundRender`: over an exact replay or over the pixels; ``dilate``, ``feather``, ``paste``) and a
hash of the round's pixels. Rounds are the scene layer's :class:`~scenecraft.scene.edits.EditHistory`.

To continue or undo exactly, the rounds are **replayed** in this process from round 0
(``render_scene``, then ``render_edit`` per round, carrying the trajectory and LMD's box cache); the replay
is used when every round's pixels hash as recorded. When they do not (another machine, model or library
version; a picture changed after it was written; a picture scenecraft did not make), the edit is drawn over
the current pixels instead (VAE-encoded, the pixels outside the edit mask pasted back), and a note says so.

Steps: :func:`open_picture` (read a PNG, or start from a scene for a foreign picture), :func:`plan_round`
(an instruction or edits to an :class:`~scenecraft.planning.EditPlan`; no model needed), :func:`render_round`
(the new picture, or the previous one for an undo) and :func:`save_picture` (the PNG with every chunk).
Reading and planning import no torch; rendering imports the generation layer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .imagefile import (HISTORY_KEY, MAX_TEXT_BYTES, PngReadError, a1111_parameters, generation_record,
                        history_text, png_bytes, read_history, read_metadata, save_png)
from .scene import Scene, SceneError, SceneLimits, diff_scenes
from .scene.edits import EditHistory, EditRound, Undo, apply_edits, edits_from_json, region_rect
from .scene.errors import shown

__all__ = ["EditSessionError", "RoundRender", "EditRecord", "EditSession", "EditOutcome", "open_picture",
           "start_record", "read_record", "plan_round", "render_round", "undo_round", "replay_rounds", "save_picture",
           "picture_png", "pixel_hash", "read_picture", "describe_changes", "history_lines", "HISTORY_VERSION",
           "ORIGINS", "FOREIGN_METHOD"]

HISTORY_VERSION = 1
#: ``"generated"``: round 0 was drawn by scenecraft (the rounds can be replayed); ``"picture"``: a picture it did
#: not make.
ORIGINS = ("generated", "picture")
#: What a round was blended with: an exact replay of the round before (``"replay"``) or its pixels, VAE-encoded.
OVER = ("replay", "pixels")
#: The method a foreign picture is edited with unless another is asked for (LMD: the method that applies edits
#: on the toy model, see the README's re-rendering table).
FOREIGN_METHOD = "layout"
_MAX_GROWTH = 16  # generation.editing.MAX_MASK_GROWTH (not imported: reading a history needs no torch)
_HISTORY_CHARS = 600_000  # EditHistory's share of the PNG chunk (MAX_TEXT_BYTES), before the record's own fields
_MAX_CONFIG_KEYS = 128
_MAX_NAME_CHARS = 4096
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_RECORD_FIELDS = ("version", "origin", "method", "model", "scheduler", "config", "dropped", "renders", "history")

StepCallback = Callable[[int, int], None]
StageCallback = Callable[[str], None]


class EditSessionError(ValueError):
    """An edit the session refuses: a picture without a scene, nothing to undo, a bad record, a bad option."""


# ----------------------------------------------------------------------------------------------- pixels
def pixel_hash(image: Any) -> str:
    """``"sha256:<hex>"`` of a picture's size and RGB bytes: what a round records of its pixels."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return f"sha256:{digest.hexdigest()}"


def read_picture(path: str | Path):
    """The picture at ``path`` as an RGB PIL image; past Pillow's ``MAX_IMAGE_PIXELS``, not a picture or
    unreadable: an :class:`EditSessionError` (a missing file: ``OSError``)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as picture:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and picture.width * picture.height > limit:
                raise EditSessionError(f"{path} is {picture.width}x{picture.height} pixels, more than the {limit:,} "
                                       "allowed (PIL.Image.MAX_IMAGE_PIXELS); refused as a possible decompression bomb")
            picture.load()
            return picture.convert("RGB")
    except UnidentifiedImageError:
        raise EditSessionError(f"{path} is not a picture Pillow can read (PNG, JPEG, WebP...)") from None
    except Image.DecompressionBombError as error:
        raise EditSessionError(f"{path} is refused as a possible decompression bomb: {error}") from None
    except (SyntaxError, ValueError) as error:  # Pillow's word for a broken file, and its text-chunk limits
        if isinstance(error, EditSessionError):
            raise
        raise EditSessionError(f"{path} cannot be read as a picture: {error}") from None


# ----------------------------------------------------------------------------------------------- the record
def _whole(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise EditSessionError(f"{name} must be a whole number in [{low}, {high}], got {shown(value)}")
    return value


def _name(name: str, value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_NAME_CHARS:
        raise EditSessionError(f"{name} must be a non-empty string of at most {_MAX_NAME_CHARS:,} characters, "
                               f"got {shown(value)}")
    return value


@dataclass(frozen=True)
class RoundRender:
    """How one round's picture was made.

    Attributes:
        pixels: ``"sha256:<hex>"`` of the picture (:func:`pixel_hash`): a replay is exact when it gives these.
        over: ``None`` for round 0; ``"replay"``: blended with the round before as rendered (its trajectory);
            ``"pixels"``: with the round before's pixels, VAE-encoded.
        dilate, feather: the edit mask's growth and soft border in latent cells (default 1 and 0).
        paste: whether the pixels outside the mask were laid back after decoding (default ``True``).
    """

    pixels: str
    over: str | None = None
    dilate: int = 1
    feather: int = 0
    paste: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.pixels, str) or not _HASH.fullmatch(self.pixels):
            raise EditSessionError(f"a round's pixels must be \"sha256:\" and 64 hex digits, got {shown(self.pixels)}")
        if self.over is not None and self.over not in OVER:
            raise EditSessionError(f"a round's 'over' must be null or one of {list(OVER)}, got {shown(self.over)}")
        _whole("a round's dilate", self.dilate, 0, _MAX_GROWTH)
        _whole("a round's feather", self.feather, 0, _MAX_GROWTH)
        if not isinstance(self.paste, bool):
            raise EditSessionError(f"a round's paste must be true or false, got {shown(self.paste)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> RoundRender:
        if not isinstance(data, dict):
            raise EditSessionError(f"a round's render must be an object, got {type(data).__name__}")
        names = [item.name for item in dataclasses.fields(cls)]
        unknown = sorted(shown(key) for key in data if key not in names)
        if unknown:
            raise EditSessionError(f"unknown render field(s) [{', '.join(unknown[:10])}]; allowed: {names}")
        if "pixels" not in data:
            raise EditSessionError("a round's render needs its 'pixels' hash")
        return cls(**data)


@dataclass
class EditRecord:
    """What a picture's PNG says of how it was made, round by round (the ``scenecraft.history`` chunk).

    Attributes:
        history: the rounds (scene, instruction, edits, seed); ``rounds[0]`` is where editing started.
        renders: one :class:`RoundRender` per round.
        method, model: the method every round was drawn with, and the model (as ``--model`` names it).
        config: the method's settings as recorded (a dict of its config's fields; each round's seed is its own).
        scheduler: the scheduler's class name the pictures were drawn with (``None``: not known yet).
        origin: one of :data:`ORIGINS`.
        dropped: rounds dropped from the front (``max_rounds``, the chunk's size): then no replay.
    """

    history: EditHistory
    renders: list[RoundRender]
    method: str
    model: str
    config: dict[str, Any]
    scheduler: str | None = None
    origin: str = "generated"
    dropped: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.history, EditHistory):
            raise EditSessionError(f"history must be an EditHistory, got {type(self.history).__name__}")
        _whole("dropped", self.dropped, 0, 1 << 30)
        self.renders = list(self.renders)
        if len(self.renders) != len(self.history.rounds):
            raise EditSessionError(f"the record has {len(self.renders)} render(s) for {len(self.history.rounds)} "
                                   "round(s); it needs one per round")
        for index, item in enumerate(self.renders):
            if not isinstance(item, RoundRender):
                raise EditSessionError(f"renders[{index}] must be a RoundRender, got {type(item).__name__}")
            if (item.over is None) != (index == 0 and self.dropped == 0):
                raise EditSessionError(f"renders[{index}]: 'over' (how the round was blended) is null only for the "
                                       "first round of a history that dropped none")
        _name("method", self.method)
        _name("model", self.model)
        _name("scheduler", self.scheduler, optional=True)
        self._check_config()
        if self.origin not in ORIGINS:
            raise EditSessionError(f"origin must be one of {list(ORIGINS)}, got {shown(self.origin)}")
        self._check_rounds()

    def _check_config(self) -> None:
        if not isinstance(self.config, dict) or len(self.config) > _MAX_CONFIG_KEYS:
            raise EditSessionError(f"config must be an object of at most {_MAX_CONFIG_KEYS} settings, "
                                   f"got {shown(self.config)}")
        bad = [shown(key) for key in self.config if not isinstance(key, str) or key == "seed"]
        if bad:
            raise EditSessionError(f"config cannot hold {', '.join(bad[:5])} (setting names; the seed is each round's)")

    def _check_rounds(self) -> None:
        size = (self.history.rounds[0].scene.width, self.history.rounds[0].scene.height)
        for index, item in enumerate(self.history.rounds):
            if item.seed is None:
                raise EditSessionError(f"round {index} has no seed; every round records the seed it was drawn with")
            if (item.scene.width, item.scene.height) != size:
                raise EditSessionError(f"round {index}'s scene is {item.scene.width}x{item.scene.height}, round 0's "
                                       f"{size[0]}x{size[1]}: edits keep the canvas")

    # -------------------------------------------------------------------- reading
    @property
    def round(self) -> int:
        """The current round's number in this record (0: the first picture)."""
        return len(self.history.rounds) - 1

    @property
    def scene(self) -> Scene:
        return self.history.scene

    @property
    def replayable(self) -> bool:
        """Whether the rounds can be drawn again from round 0: scenecraft drew it and no round was dropped."""
        return self.origin == "generated" and self.dropped == 0

    def config_for(self, seed: int):
        """The method's config for one picture drawn with ``seed`` (``num_images`` 1, PIL output)."""
        from .generation.methods import make_config

        values = {key: tuple(value) if isinstance(value, list) else value for key, value in self.config.items()}
        try:
            config = make_config(self.method, values | {"seed": seed, "num_images": 1, "output_type": "pil"})
            config.check()
        except TypeError as error:
            raise EditSessionError(f"the recorded settings do not fit method {self.method}: {error}") from None
        return config

    # -------------------------------------------------------------------- new records
    def _copy(self, **changes: Any) -> EditRecord:
        history = EditHistory(list(self.history.rounds), max_rounds=self.history.max_rounds,
                              max_chars=self.history.max_chars)
        return dataclasses.replace(self, history=history, renders=list(self.renders), **changes)

    def with_round(self, instruction: str | None, edits: Sequence[Any], scene: Scene, seed: int,
                   render: RoundRender, scheduler: str | None = None) -> EditRecord:
        """This record with a new round; the oldest rounds are dropped past the history's ``max_rounds`` or
        where the chunk would be longer than :data:`~scenecraft.imagefile.MAX_TEXT_BYTES`."""
        new = self._copy(scheduler=self.scheduler or scheduler)
        new.history.record(instruction, tuple(edits), scene, seed)
        new.renders.append(render)
        new._drop(len(new.renders) - len(new.history.rounds))
        while len(new.history.rounds) > 2 and new.size() > MAX_TEXT_BYTES:
            del new.history.rounds[0]
            new._drop(1)
        if new.size() > MAX_TEXT_BYTES:
            raise EditSessionError(f"the edit history would be {new.size():,} bytes, more than the {MAX_TEXT_BYTES:,} "
                                   "a PNG text chunk may hold here, even with only the last two rounds (scenes this "
                                   "large do not fit in the picture's history)")
        return new

    def _drop(self, count: int) -> None:
        if count > 0:
            del self.renders[:count]
            self.dropped += count
            self.renders[0] = dataclasses.replace(self.renders[0], over=self.renders[0].over or "pixels")

    def undone(self) -> EditRecord:
        """This record without its last round."""
        if not self.history.can_undo:
            raise EditSessionError(self._nothing_to_undo())
        new = self._copy()
        new.history.undo()
        new.renders.pop()
        return new

    def _nothing_to_undo(self) -> str:
        if self.dropped:
            return (f"nothing to undo: the history holds one round; the {self.dropped} before it were dropped "
                    "(at most max_rounds rounds, and what fits in the PNG, are kept)")
        return "nothing to undo: this picture is round 0, the one editing started from"

    # -------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {"version": HISTORY_VERSION, "origin": self.origin, "method": self.method, "model": self.model,
                "scheduler": self.scheduler, "config": self.config, "dropped": self.dropped,
                "renders": [item.to_dict() for item in self.renders], "history": self.history.to_dict()}

    def size(self) -> int:
        """Bytes of the JSON the PNG stores."""
        return len(json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8"))

    @classmethod
    def from_dict(cls, data: Any, *, limits: SceneLimits | None = None) -> EditRecord:
        """A record from its JSON form; every scene is checked against ``limits`` (default the scene layer's)."""
        if not isinstance(data, dict):
            raise EditSessionError(f"an edit record must be a JSON object, got {type(data).__name__}")
        unknown = sorted(shown(key) for key in data if key not in _RECORD_FIELDS)
        if unknown:
            raise EditSessionError(f"unknown field(s) [{', '.join(unknown[:10])}]; allowed: {sorted(_RECORD_FIELDS)}")
        if data.get("version") != HISTORY_VERSION or isinstance(data.get("version"), bool):
            raise EditSessionError(f"edit record version {shown(data.get('version'))} is not supported "
                                   f"(this reads {HISTORY_VERSION})")
        missing = [name for name in ("method", "model", "config", "renders", "history") if name not in data]
        if missing:
            raise EditSessionError(f"the edit record lacks {missing}")
        renders = data["renders"]
        if not isinstance(renders, list) or len(renders) > 1024:
            raise EditSessionError(f"'renders' must be a list (one per round), got {shown(renders)}")
        parsed = []
        for index, item in enumerate(renders):
            try:
                parsed.append(RoundRender.from_dict(item))
            except EditSessionError as error:
                raise EditSessionError(f"renders[{index}]: {error}") from None
        try:
            history = EditHistory.from_dict(data["history"], limits=limits)
        except SceneError as error:
            raise EditSessionError(f"history: {error}") from None
        return cls(history, parsed, data["method"], data["model"], data["config"], data.get("scheduler"),
                   data.get("origin", "generated"), data.get("dropped", 0))


def start_record(scene: Scene, picture: Any, *, generation: dict[str, Any] | None = None, method: str | None = None,
                 model: str | None = None, config: Any = None, seed: int | None = None) -> EditRecord:
    """Round 0 of a new record: a picture scenecraft drew (``generation``: the PNG's generation record, with
    method, model, seed and config), or a foreign ``picture`` of ``scene`` to be edited with ``method``
    (default :data:`FOREIGN_METHOD`), ``model``, ``config`` (the method's config or a dict of its settings)
    and ``seed`` (all three needed then)."""
    if not isinstance(scene, Scene):
        raise EditSessionError(f"scene must be a Scene, got {type(scene).__name__}")
    render = RoundRender(pixel_hash(picture))
    if generation is not None:
        return _generated_record(scene, render, generation)
    if config is None or seed is None or model is None:
        raise EditSessionError("a picture scenecraft did not make needs the model, the method's config and a seed "
                               "to edit it with")
    settings = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    settings = {key: value for key, value in settings.items() if key != "seed"}
    try:
        history = EditHistory.start(scene, seed=seed, max_chars=_HISTORY_CHARS)
    except SceneError as error:
        raise EditSessionError(str(error)) from None
    return EditRecord(history, [render], method or FOREIGN_METHOD, model, settings, origin="picture")


def _generated_record(scene: Scene, render: RoundRender, generation: dict[str, Any]) -> EditRecord:
    config = generation.get("config")
    if not isinstance(config, dict):
        raise EditSessionError(f"the generation record has no config object (got {shown(config)})")
    seed = generation.get("seed", config.get("seed"))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise EditSessionError(f"the generation record's seed must be a whole number, got {shown(seed)}")
    try:
        history = EditHistory.start(scene, seed=seed, max_chars=_HISTORY_CHARS)
    except SceneError as error:
        raise EditSessionError(f"the generation record's seed: {error}") from None
    settings = {key: value for key, value in config.items() if key != "seed"}
    return EditRecord(history, [render], generation.get("method"), generation.get("model"), settings,
                      generation.get("scheduler"), "generated")


# ----------------------------------------------------------------------------------------------- the session
@dataclass
class EditSession:
    """A picture being edited: its record, its pixels and what this process rendered of its rounds.

    Attributes:
        record: the :class:`EditRecord`.
        picture: the current round's pixels (an RGB PIL image).
        results: per round, its ``EditableResult`` when this process rendered it (a replay or an edit), else
            ``None``; a kept result lets the next edit or undo skip the replay.
        notes: sentences on what reading the picture found (a ControlNet not used, a scene resized).
        path: the file it was read from, if any.
    """

    record: EditRecord
    picture: Any
    results: list[Any] = field(default_factory=list)
    notes: tuple[str, ...] = ()
    path: Path | None = None

    def __post_init__(self) -> None:
        if not self.results:
            self.results = [None] * len(self.record.renders)
        if len(self.results) != len(self.record.renders):
            raise EditSessionError("a session keeps one result (or None) per round")
        scene = self.record.scene
        if (self.picture.width, self.picture.height) != (scene.width, scene.height):
            where = f"{self.path} is" if self.path else "the picture is"
            raise EditSessionError(f"{where} {self.picture.width}x{self.picture.height} pixels but its scene is "
                                   f"{scene.width}x{scene.height} (was the picture resized?)")

    @property
    def scene(self) -> Scene:
        return self.record.scene

    @property
    def round(self) -> int:
        return self.record.round + self.record.dropped

    @property
    def can_undo(self) -> bool:
        return self.record.history.can_undo


@dataclass(frozen=True)
class EditOutcome:
    """What :func:`render_round` / :func:`undo_round` did.

    Attributes:
        session: the new session (its record has the new round, or one round fewer; its picture is the new one).
        plan: the ``EditPlan`` rendered (``None`` for an undo).
        result: the ``EditableResult`` of the picture (for an exact undo, the previous round's as replayed or
            kept; ``None`` when it came from memory without a render).
        exact: an edit continued from the previous round exactly as drawn (a replay or a kept result); an
            undo gave back the previous round's pixels bit for bit.
        renders: pictures this call drew (replayed rounds and the edit).
        notes: sentences on choices made (replayed, or drawn over the pixels and why).
    """

    session: EditSession
    plan: Any
    result: Any
    exact: bool
    renders: int
    notes: tuple[str, ...] = ()

    @property
    def undone(self) -> bool:
        return self.plan is None


def open_picture(path: str | Path, *, scene: Scene | None = None, method: str | None = None,
                 model: str | None = None, config: Any = None, seed: int | None = None,
                 limits: SceneLimits | None = None) -> EditSession:
    """The picture at ``path`` ready to edit.

    Without ``scene`` it must be a PNG scenecraft wrote: its history (``scenecraft edit``), else its scene and
    generation record (``scenecraft generate``, the UI, ``batch``) start one. With ``scene`` it is a picture
    scenecraft did not make (any format Pillow reads; its metadata is not read): round 0 is ``scene`` (resized
    to the picture) with this picture, to be edited with ``method`` (default :data:`FOREIGN_METHOD`), ``model``,
    ``config`` and ``seed``. ``limits`` bound every scene read (default the scene layer's).
    """
    path = Path(path)
    if scene is not None:
        picture = read_picture(path)
        notes = ()
        if (scene.width, scene.height) != picture.size:
            notes = (f"the scene's canvas {scene.width}x{scene.height} was set to the picture's {picture.width}x"
                     f"{picture.height}",)
            scene = scene.with_size(*picture.size)
        record = start_record(scene, picture, method=method, model=model, config=config, seed=seed)
        return EditSession(record, picture, notes=notes, path=path)
    return read_record(path, limits=limits)


def read_record(path: str | Path, *, limits: SceneLimits | None = None) -> EditSession:
    """The session of a PNG scenecraft wrote (see :func:`open_picture`): its metadata is read first (bounded),
    then its pixels. A history that is garbled, hostile or past its bounds is a :class:`PngReadError`."""
    path = Path(path)
    try:
        metadata = read_metadata(path)
    except PngReadError as error:
        if "is not a PNG file" in str(error):
            raise EditSessionError(f"{path} is not a PNG, so it carries no scene: give the scene it shows "
                                   "(--scene scene.json) to edit it as a picture scenecraft did not make") from None
        raise
    stored = read_history(path)
    if stored is not None:
        try:
            record = EditRecord.from_dict(stored, limits=limits)
        except EditSessionError as error:
            raise PngReadError(f"the edit history stored in {path} ({HISTORY_KEY}) is not valid: {error}") from None
        return EditSession(record, read_picture(path), path=path)
    record, notes, picture = _start_from_metadata(path, metadata, limits)
    return EditSession(record, picture, notes=notes, path=path)


def _start_from_metadata(path: Path, metadata, limits: SceneLimits | None) -> tuple[EditRecord, tuple[str, ...], Any]:
    if metadata.scene is None:
        raise EditSessionError(f"{path} carries no scenecraft scene: give the scene it shows (--scene scene.json) "
                               "to edit it as a picture scenecraft did not make")
    if metadata.generation is None:
        raise EditSessionError(f"{path} carries a scene but no generation record (method, model, seed): give the "
                               "scene with --scene to edit it as a picture scenecraft did not make")
    scene = metadata.scene if limits is None else Scene.from_dict(metadata.scene.to_dict(), limits=limits)
    picture = read_picture(path)
    try:
        record = start_record(scene, picture, generation=metadata.generation)
    except EditSessionError as error:
        raise PngReadError(f"the generation record of {path} cannot start an edit: {error}") from None
    notes = ()
    if "control" in metadata.generation:
        notes = ("the picture was drawn with a ControlNet; edits and replays run without it, so they are drawn "
                 "over its pixels",)
    return record, notes, picture


# ----------------------------------------------------------------------------------------------- planning
def plan_round(session: EditSession, instruction: str | None = None, *, edits: Any = None, llm: str | None = None,
               limits: SceneLimits | None = None):
    """The :class:`~scenecraft.planning.EditPlan` of the next round: an ``instruction`` planned by
    ``plan_edit`` (offline, or the ``llm`` backend spec), or ``edits`` (edit operations, or their JSON text:
    a list or ``{"edits": [...]}``, read within ``limits``) applied as they are. "undo" (or a lone undo edit)
    gives the undo plan. The new scene is checked against ``limits``. Needs no model."""
    from .planning import plan_edit
    from .planning.edit_plan import EditPlan, plan_undo

    history = session.record.history
    if (instruction is None) == (edits is None):
        raise EditSessionError("give an instruction or edits (edit operations as JSON), not both and not neither")
    if instruction is not None:
        plan = plan_edit(instruction, history=history, llm=llm)
    else:
        ops = edits_from_json(edits, limits=limits) if isinstance(edits, (str, bytes)) else tuple(edits)
        if ops == (Undo(),):
            return plan_undo("undo", history.scene, history)
        result = apply_edits(history.scene, ops, taken=history.ids_seen())
        plan = EditPlan("", ops, result.scene, result.diff, history.scene.with_ids(), "edits")
    if limits is not None and not plan.is_undo:
        Scene.from_dict(plan.scene.to_dict(), limits=limits)
    return plan


# ----------------------------------------------------------------------------------------------- rendering
def _check_knobs(dilate: Any, feather: Any, paste: Any) -> None:
    _whole("dilate", dilate, 0, _MAX_GROWTH)
    _whole("feather", feather, 0, _MAX_GROWTH)
    if not isinstance(paste, bool):
        raise EditSessionError(f"paste must be true or false, got {shown(paste)}")


def _draw_round(pipe, record: EditRecord, before: Scene, after: Scene, previous: Any, over: str, seed: int,
                knobs: dict[str, Any], on_step: StepCallback | None):
    """``after`` drawn over ``previous`` (an ``EditableResult``, or pixels) inside the edit mask of the change."""
    import numpy as np

    from .generation.editing import EditableResult, render_edit

    mask = diff_scenes(before, after).edit_mask(after.height, after.width).astype(np.float32)
    is_result = isinstance(previous, EditableResult)
    original = previous if over == "replay" else (previous.images[0] if is_result else previous)
    return render_edit(pipe, after, record.config_for(seed), method=record.method, original=original,
                       edit_mask=mask, seed=seed, box_cache=previous.box_cache if is_result else None,
                       on_step=on_step, **knobs)


def replay_rounds(pipe, record: EditRecord, upto: int | None = None, *, on_step: StepCallback | None = None,
                  on_stage: StageCallback | None = None) -> tuple[list[Any], int | None]:
    """Draw rounds 0..``upto`` (default: all) again as they were drawn, each checked against its pixel hash.

    Returns the results of the rounds that matched and the first round that did not (``None``: all did).
    """
    from .generation.editing import render_scene

    if not record.replayable:
        raise EditSessionError("this record cannot be replayed: " + _why_not(record))
    rounds = record.history.rounds
    upto = record.round if upto is None else upto
    results: list[Any] = []
    for index in range(upto + 1):
        if on_stage is not None:
            on_stage(f"replaying round {index}")
        seed, render = rounds[index].seed, record.renders[index]
        if index == 0:
            result = render_scene(pipe, rounds[0].scene, record.config_for(seed), method=record.method, seed=seed,
                                  on_step=on_step)
        else:
            knobs = {"dilate": render.dilate, "feather": render.feather, "paste": render.paste}
            result = _draw_round(pipe, record, rounds[index - 1].scene, rounds[index].scene, results[-1], render.over,
                                 seed, knobs, on_step)
        if pixel_hash(result.images[0]) != render.pixels:
            return results, index
        results.append(result)
    return results, None


def _why_not(record: EditRecord) -> str:
    if record.origin == "picture":
        return "round 0 is a picture scenecraft did not draw"
    return f"its {record.dropped} oldest round(s) were dropped"


def _exact(pipe, session: EditSession, index: int, replay: bool, on_step, on_stage):
    """``(results, renders, notes)``: results up to round ``index`` known to be exact (kept, or replayed), or
    ``(None, renders, notes)`` with the reason. For the current round, the picture must be the recorded one."""
    record, results = session.record, session.results
    kept = results[index]
    current = index == record.round
    if current and record.renders[-1].pixels != pixel_hash(session.picture):
        return None, 0, ("the picture's pixels are not the ones its history recorded (changed after it was "
                         "written?)",)
    if kept is not None and pixel_hash(kept.images[0]) == record.renders[index].pixels:
        return results[:index + 1], 0, ()
    if not replay:
        return None, 0, ("replay is off",)
    if not record.replayable:
        return None, 0, (_why_not(record),)
    replayed, failed = replay_rounds(pipe, record, index, on_step=on_step, on_stage=on_stage)
    if failed is not None:
        return None, len(replayed) + 1, (f"replaying round {failed} did not give its recorded pixels (another "
                                         "machine, model or library version?)",)
    rounds = f"rounds 0-{index} ({index + 1} renders)" if index else "round 0 (1 render)"
    why = "to continue exactly" if current else f"to give round {index + record.dropped} back exactly"
    return replayed, index + 1, (f"replayed {rounds} {why}",)


def render_round(pipe, session: EditSession, plan: Any, *, seed: int | None = None, dilate: int = 1,
                 feather: int = 0, paste: bool = True, replay: bool = True, on_step: StepCallback | None = None,
                 on_stage: StageCallback | None = None) -> EditOutcome:
    """Draw ``plan`` (from :func:`plan_round`) as the next round of ``session``; an undo plan runs :func:`undo_round`.

    Args:
        pipe: the pipeline (an SD 1.x/2.x or SDXL one; the record's model, or another: then the replay will
            not match and the edit is drawn over the pixels).
        session: the picture being edited.
        plan: the round's plan.
        seed: the new round's seed (default: the latest round's).
        dilate: latent cells the edit mask grows by (default 1).
        feather: latent cells of soft border (default 0: hard, which keeps undo exact).
        paste: lay the pixels outside the edit mask back after decoding (default ``True``).
        replay: replay the rounds from round 0 when this process has not drawn the current one (default
            ``True``); ``False`` draws over the pixels at once (faster; not exact).
        on_step: ``on_step(done, total)`` after every denoising step of every picture drawn.
        on_stage: ``on_stage(text)`` when a picture starts ("replaying round 1", "editing").
    """
    if plan.is_undo:
        return undo_round(pipe, session, replay=replay, on_step=on_step, on_stage=on_stage)
    _check_knobs(dilate, feather, paste)
    record = session.record
    seed = record.history.seed if seed is None else _whole("seed", seed, 0, 2**32 - 1)
    exact, renders, notes = _exact(pipe, session, record.round, replay, on_step, on_stage)
    if exact is None:
        notes = (f"{notes[0]}: the edit is drawn over the picture's pixels (VAE-encoded; outside the edit mask "
                 "they are pasted back)",)
    if on_stage is not None:
        on_stage("editing")
    previous = exact[-1] if exact is not None else session.picture
    over = "replay" if exact is not None else "pixels"
    knobs = {"dilate": dilate, "feather": feather, "paste": paste}
    result = _draw_round(pipe, record, record.scene, plan.scene, previous, over, seed, knobs, on_step)
    image = result.images[0]
    render = RoundRender(pixel_hash(image), over, dilate, feather, paste)
    instruction = plan.instruction if plan.instruction and plan.instruction.strip() else None
    new = record.with_round(instruction, plan.edits, plan.scene, seed, render, result.settings.get("scheduler"))
    kept = (list(exact) if exact is not None else [None] * len(record.renders)) + [result]
    session = EditSession(new, image, kept[len(kept) - len(new.renders):], path=None)
    return EditOutcome(session, plan, result, exact is not None, renders + 1, (*plan.notes, *notes))


def undo_round(pipe, session: EditSession, *, replay: bool = True, on_step: StepCallback | None = None,
               on_stage: StageCallback | None = None) -> EditOutcome:
    """Step back one round: the previous round's picture bit for bit when it is kept or its replay matches;
    else the previous scene drawn over the current pixels inside the last edit's mask (a note says so).
    ``replay``, ``on_step``, ``on_stage`` as for :func:`render_round`."""
    record = session.record
    new = record.undone()  # refuses round 0 first, before any drawing
    index = record.round - 1
    exact, renders, notes = _exact(pipe, session, index, replay, on_step, on_stage)
    if exact is not None:
        result = exact[-1]
        return EditOutcome(EditSession(new, result.images[0], list(exact)), None, result, True, renders, notes)
    why = notes[0]
    if record.origin == "picture" and index == 0:
        why = "the first picture was not drawn by scenecraft"
    if on_stage is not None:
        on_stage("undoing")
    last, seed = record.renders[-1], record.history.rounds[index].seed
    knobs = {"dilate": last.dilate, "feather": last.feather, "paste": last.paste}
    result = _draw_round(pipe, record, record.scene, new.scene, session.picture, "pixels", seed, knobs, on_step)
    note = (f"{why}: the previous scene is drawn again inside the last edit's mask over the current pixels, so "
            "the picture is close to the previous one, not the same (keep the earlier file for its exact pixels)")
    kept = [None] * (len(new.renders) - 1) + [result]
    return EditOutcome(EditSession(new, result.images[0], kept), None, result, False, renders + 1, (note,))


# ----------------------------------------------------------------------------------------------- writing
def png_metadata(record: EditRecord) -> tuple[Scene, str, dict[str, Any], dict[str, Any]]:
    """``(scene, parameters, generation record, history)`` of the current round, as the PNG stores them: the
    parameters and record as ``scenecraft generate`` writes them (round 0 of a drawn picture: the same), with
    ``"edit"`` (the round, the history's key, the origin) in the record of an edited one."""
    current = record.history.rounds[-1]
    settings = record.config | {"seed": current.seed, "num_images": 1}
    generation = generation_record(record.method, record.model, settings) | {"scheduler": record.scheduler}
    number = record.round + record.dropped
    if number or record.origin != "generated":
        generation["edit"] = {"round": number, "history": HISTORY_KEY, "origin": record.origin}
    parameters = a1111_parameters(current.scene, settings | {"scheduler": record.scheduler}, record.model,
                                  record.method)
    return current.scene, parameters, generation, record.to_dict()


def save_picture(session: EditSession, path: str | Path) -> Path:
    """Write the session's picture to ``path`` (atomically) with the scene, parameters, generation record and
    the whole history."""
    scene, parameters, generation, history = png_metadata(session.record)
    history_text(history)  # a sentence, not a half-written file, for a history past the chunk's size
    return save_png(session.picture, path, scene, parameters, generation, history)


def picture_png(session: EditSession) -> bytes:
    """The PNG :func:`save_picture` writes, as bytes."""
    scene, parameters, generation, history = png_metadata(session.record)
    return png_bytes(session.picture, scene, parameters, generation, history)


# ----------------------------------------------------------------------------------------------- words
def _rect(scene: Scene, region) -> str:
    return "[" + ", ".join(f"{value:.3g}" for value in region_rect(scene, region)) + "]"


def describe_changes(before: Scene, after: Scene) -> list[str]:
    """What changed from ``before`` to ``after``, one line per region: removed, changed (its prompt, moved or
    resized to its new rectangle), added; ``["nothing changed"]`` for none."""
    diff = diff_scenes(before, after)
    old = {region.id: region for region in diff.before.regions}
    new = {region.id: region for region in diff.after.regions}
    lines = [f"removed {rid} {old[rid].prompt!r}" for rid in diff.removed]
    for rid, what in diff.changed.items():
        parts = [f"{old[rid].prompt!r} -> {new[rid].prompt!r}" if "prompt" in what else repr(new[rid].prompt)]
        if "moved" in what or "resized" in what:
            verb = " and ".join(word for word in ("moved", "resized") if word in what)
            parts.append(f"{verb} to {_rect(diff.after, new[rid])}")
        parts += [f"new {name.replace('_', ' ')}" for name in ("negative_prompt", "lora") if name in what]
        lines.append(f"{rid} " + ", ".join(parts))
    lines += [f"added {rid} {new[rid].prompt!r} at {_rect(diff.after, new[rid])}" for rid in diff.added]
    lines += [f"the scene's {name.replace('_', ' ')} changed" for name in diff.scene_fields
              if name not in ("prompt", "base_prompt")]
    return lines or ["nothing changed"]


def history_lines(record: EditRecord) -> list[str]:
    """The rounds in words: round 0 (how it was made), then each round's instruction, seed and changes."""
    rounds = record.history.rounds
    first = rounds[0]
    made = ("drawn by scenecraft" if record.origin == "generated" and not record.dropped
            else "a picture scenecraft did not make" if record.origin == "picture" else "after dropped rounds")
    lines = [f"round {record.dropped}: {first.scene.prompt!r} ({made}; {record.method}, {record.model}, seed "
             f"{first.seed}, {first.scene.width}x{first.scene.height})"]
    for index in range(1, len(rounds)):
        item: EditRound = rounds[index]
        said = repr(item.instruction) if item.instruction else "edits given as data"
        render = record.renders[index]
        lines.append(f"round {index + record.dropped}: {said} (seed {item.seed}, over the "
                     f"{'replay' if render.over == 'replay' else 'pixels'})")
        lines += [f"  {line}" for line in describe_changes(rounds[index - 1].scene, item.scene)]
    return lines
