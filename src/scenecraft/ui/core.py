"""What the web UI does, without gradio: limits, planning, the editable box table, the plan picture, and
generation on one shared pipeline (one request at a time, each on its own scheduler copy).

Every function here raises ``ValueError`` (a :class:`UIError`, a ``SceneError``, a ``PlanError``) for
what a user can fix; :func:`message` turns any of them into the sentence the page shows.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..scene import Box, Scene, SceneLimits
from ..scene.limits import raise_hint

__all__ = ["UIError", "UILimits", "SharedPipeline", "Rendered", "message", "read_scene", "plan", "region_rows",
           "apply_rows", "editor_value", "apply_editor", "plan_picture", "render", "history_entry", "TABLE_HEADERS",
           "ROUND_HEADERS", "EditState", "Edited", "start_editing", "edit_image", "undo_image", "edit_rows",
           "edit_entry"]

TABLE_HEADERS = ["prompt", "x0", "y0", "x1", "y1"]
# The UI flag that raises each scene limit it sets (see UILimits.scene_limits).
_FLAGS = {"max_side": "--max-side", "max_pixels": "--max-side", "max_mask_pixels": "--max-side",
          "max_regions": "--max-regions", "max_prompt_chars": "--max-prompt-chars"}


class UIError(ValueError):
    """A request the UI refuses (past a limit, a bad table cell, a missing prompt); the message says why."""


@dataclass(frozen=True)
class UILimits:
    """What one request may ask for, checked on the server (the page's own bounds are only hints).

    Attributes:
        max_side: largest width or height, in pixels (default 1024; ``scenecraft ui`` uses twice the model's
            native size); ``width * height`` is bounded by its square.
        max_steps: most denoising steps (default 100).
        max_regions: most regions in a scene (default 16).
        max_prompt_chars: longest prompt, and each region, background or negative prompt (default 1,000).
        max_json_chars: longest scene JSON the editor may send (default 200,000).
        max_history: most images a session's history lists (default 50; older ones drop off the list, their
            files stay).
    """

    max_side: int = 1024
    max_steps: int = 100
    max_regions: int = 16
    max_prompt_chars: int = 1000
    max_json_chars: int = 200_000
    max_history: int = 50

    def __post_init__(self) -> None:
        from ..generation.result import MAX_STEPS

        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UIError(f"UILimits.{item.name} must be a positive integer, got {value!r}")
        if self.max_side < 8:
            raise UIError(f"UILimits.max_side must be at least 8 pixels, got {self.max_side}")
        if self.max_steps > MAX_STEPS:
            raise UIError(f"UILimits.max_steps is {self.max_steps}, more than the {MAX_STEPS} any scheduler has")

    @classmethod
    def for_native_size(cls, native_size: int, **overrides: Any) -> UILimits:
        """The defaults for a model trained at ``native_size`` pixels: ``max_side`` twice that."""
        return cls(**({"max_side": 2 * native_size} | {k: v for k, v in overrides.items() if v is not None}))

    def scene_limits(self) -> SceneLimits:
        """The scene layer's limits that enforce these (size, pixels, masks, regions, prompts, JSON size)."""
        pixels = self.max_side * self.max_side
        return SceneLimits(max_json_chars=self.max_json_chars, max_side=self.max_side, max_pixels=pixels,
                           max_mask_pixels=pixels, max_regions=self.max_regions,
                           max_prompt_chars=self.max_prompt_chars)

    def summary(self) -> str:
        return (f"sides up to {self.max_side:,} px, up to {self.max_steps} steps, {self.max_regions} regions and "
                f"{self.max_prompt_chars:,} characters a prompt")


def message(error: BaseException) -> str:
    """The sentence the page shows for ``error``: escaped, and with the scene layer's "pass
    limits=SceneLimits(...)" hint replaced by the ``scenecraft ui`` flag that raises the limit."""
    from ..cli.errors import describe, printable

    text = describe(error)
    for item in dataclasses.fields(SceneLimits):
        flag = _FLAGS.get(item.name)
        hint = f"(this server's limit; start `scenecraft ui {flag} ...` to raise it)" if flag else "(a fixed limit)"
        text = text.replace(raise_hint(item.name), hint)
    return printable(text)


def read_scene(text: Any, limits: UILimits) -> Scene:
    """The scene in the editor's JSON ``text``, checked against ``limits`` (``Scene.from_json``). Scenes naming
    LoRA files are refused: they name files on the server, which a page's user should not choose."""
    if not isinstance(text, str) or not text.strip():
        raise UIError("the scene JSON is empty: plan a prompt first, or paste a scene")
    scene = Scene.from_json(text, limits=limits.scene_limits())
    if any(region.lora for region in scene.regions):
        raise UIError("the web UI does not load per-region LoRAs (they name files on the server); remove the "
                      "regions' \"lora\" entries, or use `scenecraft generate --scene`")
    return scene


def plan(prompt: Any, layout: str, width: Any, height: Any, limits: UILimits, llm: str | None = None) -> Scene:
    """``prompt`` planned into a Scene (``scenecraft.planning.plan_scene``; the offline planner unless ``llm``),
    ``width`` x ``height`` pixels, within ``limits``."""
    from ..planning import plan_scene

    if not isinstance(prompt, str) or not prompt.strip():
        raise UIError("write a prompt first, e.g. \"a red circle to the left of a blue square\"")
    if len(prompt) > limits.max_prompt_chars:
        raise UIError(f"the prompt has {len(prompt):,} characters, more than the {limits.max_prompt_chars:,} this "
                      f"server allows (start `scenecraft ui --max-prompt-chars ...` to raise it)")
    size = [_whole(name, value, 8, limits.max_side, "--max-side") for name, value in (("width", width),
                                                                                      ("height", height))]
    scene = plan_scene(prompt.strip(), layout=layout, llm=llm, width=size[0], height=size[1])
    return Scene.from_dict(scene.to_dict(), limits=limits.scene_limits())  # the planner's regions, within ours


def _whole(name: str, value: Any, low: int, high: int, flag: str) -> int:
    """``value`` as a whole number in ``[low, high]``, else a UIError naming ``name``."""
    whole = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not whole or value != int(value):
        raise UIError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        hint = f" (start `scenecraft ui {flag} ...` to raise it)" if flag else ""
        raise UIError(f"{name} is {int(value):,}; this server allows {low} to {high:,}{hint}")
    return int(value)


def region_rows(scene: Scene) -> list[list[Any]]:
    """One table row per region: its prompt and its rectangle ``x0, y0, x1, y1`` in fractions of the canvas
    (a cell's rectangle for split scenes; blanks for masks)."""
    rows = []
    for region in scene.regions:
        rect = scene.region_rect(region)
        rows.append([region.prompt, *(round(v, 4) for v in rect)] if rect else [region.prompt, None, None, None, None])
    return rows


def apply_rows(scene: Scene, rows: Any, limits: UILimits) -> Scene:
    """``scene`` with the table's ``rows`` (see :func:`region_rows`): row ``i`` sets region ``i``'s prompt and box;
    extra rows add box regions, missing rows drop regions, rows with a blank prompt are skipped. A split scene
    whose cell numbers change becomes a scene of boxes (each cell its rectangle). Checked as ``Scene.from_dict``."""
    rows = _table_rows(rows)
    data = scene.to_dict()
    regions = data["regions"]
    edited = []
    moved_cell = False
    for index, row in enumerate(rows):
        prompt, numbers = row[0], row[1:]
        if index < len(regions):
            entry = dict(regions[index], prompt=prompt)
            old = scene.region_rect(scene.regions[index])
            # A number shown rounded and left alone keeps its exact value.
            box = None if old is None else [was if now in (was, round(was, 4)) else now
                                            for was, now in zip(old, numbers)]
            if box is not None and box != list(old):
                moved_cell |= "cell" in entry
                entry.pop("cell", None)
                entry["box"] = _box(box, index)
        else:
            entry = {"prompt": prompt, "box": _box(numbers, index)}
        edited.append(entry)
    if moved_cell or (data["split"] is not None and len(edited) != len(regions)):
        edited = [_as_box(entry, scene, i) for i, entry in enumerate(edited)]
        data["split"] = None
    return Scene.from_dict(data | {"regions": edited}, limits=limits.scene_limits())


def _table_rows(rows: Any) -> list[list[Any]]:
    """The table's rows as ``[prompt, x0, y0, x1, y1]`` lists (pandas frames, lists of lists); blank rows dropped."""
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # a pandas DataFrame
        rows = rows.values.tolist()
    if not isinstance(rows, list):
        raise UIError(f"the region table must be rows of {', '.join(TABLE_HEADERS)}")
    cleaned = []
    for number, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or len(row) != len(TABLE_HEADERS):
            raise UIError(f"row {number} of the region table must have {len(TABLE_HEADERS)} cells: "
                          f"{', '.join(TABLE_HEADERS)}")
        prompt = "" if row[0] is None or (isinstance(row[0], float) and math.isnan(row[0])) else str(row[0])
        if prompt.strip():
            cleaned.append([prompt, *(_number(value, len(cleaned), name) for name, value in
                                      zip(TABLE_HEADERS[1:], row[1:]))])
    return cleaned


def _number(value: Any, row: int, name: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise UIError(f"region {row}, {name}: {value} is not a number (fractions of the canvas, 0 to 1)")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UIError(f"region {row}, {name}: {str(value)[:40]!r} is not a number (fractions of the canvas, 0 to 1)"
                      ) from None
    return None if math.isnan(number) else number


def _box(numbers: list[float | None], row: int) -> list[float]:
    if any(value is None for value in numbers):
        raise UIError(f"region {row} needs all four numbers x0, y0, x1, y1 (fractions of the canvas, 0 to 1)")
    Box(*numbers)  # a sentence for a fraction out of 0..1 or an empty box
    return list(numbers)


def _as_box(entry: dict[str, Any], scene: Scene, index: int) -> dict[str, Any]:
    if "cell" not in entry:
        return entry
    rect = scene.split_ratio.cells()[entry.pop("cell")]
    return entry | {"box": list(rect)}


def editor_value(scene: Scene) -> str:
    """The box editor's value: the canvas size and each region's prompt and rectangle (``null`` for masks), JSON."""
    regions = [{"prompt": region.prompt, "box": list(rect) if (rect := scene.region_rect(region)) else None}
               for region in scene.regions]
    return json.dumps({"width": scene.width, "height": scene.height, "regions": regions})


def apply_editor(scene: Scene, text: Any, limits: UILimits) -> Scene:
    """``scene`` with the rectangles the box editor sends back (see :func:`editor_value`): a moved or resized box
    is applied as an edited table row (:func:`apply_rows`). The text is read with the bounded JSON reader."""
    from ..scene import load_json

    data = load_json(text if isinstance(text, str) else "", limits=limits.scene_limits(), what="box editor value")
    regions = data.get("regions") if isinstance(data, dict) else None
    if not isinstance(regions, list) or len(regions) != len(scene.regions):
        raise UIError(f"the box editor sent {_count(regions)} for a scene of {len(scene.regions)}: plan again or "
                      "apply the JSON")
    rows = []
    for index, (region, sent) in enumerate(zip(scene.regions, regions)):
        box = sent.get("box") if isinstance(sent, dict) else None
        if box is not None and (not isinstance(box, list) or len(box) != 4):
            raise UIError(f"the box editor sent region {index}'s box as {str(box)[:60]}, not [x0, y0, x1, y1]")
        rows.append([region.prompt, *(box or [None] * 4)])
    return apply_rows(scene, rows, limits)


def _count(regions: Any) -> str:
    return f"{len(regions)} regions" if isinstance(regions, list) else "no list of regions"


def plan_picture(scene: Scene, size: int = 384):
    """The scene's layout drawn with its prompts (``scenecraft.planning.draw.draw_layout``), ``size`` px on its
    longer side."""
    from ..planning.draw import draw_layout

    return draw_layout(scene, size=size)


# ---------------------------------------------------------------------------------------------- generation
_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def pipeline_lock(pipe) -> threading.Lock:
    """The one lock of ``pipe``: every :class:`SharedPipeline` over the same pipeline takes the same lock."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(pipe, threading.Lock())


class SharedPipeline:
    """One pipeline shared by every request of a server.

    The attention processors a method installs and the scheduler's timesteps and step index are state on the
    shared model for the length of a call, so generations run one at a time under a lock (per pipeline, see
    :func:`pipeline_lock`), and each runs on a shallow copy of the pipeline with a fresh deep copy of the
    scheduler: a call that fails half-way leaves nothing behind for the next.

    ``source`` is a pipeline, or a callable that returns one: it is called once, at the first generation.
    """

    def __init__(self, source, model: str) -> None:
        self.model = model
        self._source = source
        self._pipe = None if callable(source) and not _is_pipeline(source) else source
        self._load_lock = threading.Lock()

    def pipeline(self):
        """The pipeline, loaded on first use."""
        with self._load_lock:
            if self._pipe is None:
                self._pipe = self._source()
            return self._pipe

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def run(self, scene: Scene, method: str, values: dict[str, Any], on_step=None):
        """Generate one image of ``scene`` with ``method``; ``values`` are CLI-style flags (steps, guidance, seed)
        over the method's defaults and the model's recommendations, as ``scenecraft generate`` builds them."""
        from ..generation.methods import generate

        pipe = self.pipeline()
        config = self.config(method, num_images=1, **values)
        with pipeline_lock(pipe):
            return generate(request_view(pipe), scene, config, method=method, on_step=on_step)

    def config(self, method: str, **values: Any):
        """``method``'s config on this model, as ``scenecraft generate`` builds it: the method's defaults, the
        family's (SD3, Flux) once the pipeline is loaded, the model's ``scenecraft.json``, then ``values``
        (``steps``, ``guidance``, ``seed``, ``num_images``)."""
        from ..cli.generate import method_config
        from ..generation.backbones import backbone

        family = None
        if self.loaded:
            adapter = backbone(self._pipe)
            family = adapter.flavour if adapter.is_mmdit else None
        return method_config(method, self.model, [], family=family, **values)


def _is_pipeline(source) -> bool:
    return hasattr(source, "scheduler")


def request_view(pipe):
    """A shallow copy of ``pipe`` that shares its models and has its own deep copy of the scheduler."""
    view = copy.copy(pipe)
    view.scheduler = copy.deepcopy(pipe.scheduler)
    return view


@dataclass(frozen=True)
class Rendered:
    """One image the UI generated: its PNG (scene and settings inside), seed, method, steps and time."""

    path: Path
    seed: int
    method: str
    steps: int
    seconds: float
    scene: Scene


def render(shared: SharedPipeline, scene: Scene, method: str, seed: Any, steps: Any, guidance: Any,
           out_dir: Path, limits: UILimits, on_step=None) -> Rendered:
    """Generate ``scene`` and write the PNG into ``out_dir`` with its Scene and settings exactly as
    ``scenecraft generate`` records them. ``seed`` None or negative draws one; ``steps``/``guidance`` None
    take the model's or method's defaults."""
    from ..generation.methods import METHODS
    from ..generation.result import MAX_SEED
    from ..imagefile import image_metadata, save_png

    if method not in METHODS:
        raise UIError(f"unknown method {str(method)[:40]!r}; available: {', '.join(METHODS)}")
    values: dict[str, Any] = {}
    if seed is not None and not (isinstance(seed, (int, float)) and seed < 0):
        values["seed"] = _whole("seed", seed, 0, MAX_SEED, "")
    if steps is not None:
        values["steps"] = _whole("steps", steps, 1, limits.max_steps, "--max-steps")
    if guidance is not None:
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance <= 100:
            raise UIError(f"guidance must be a number from 0 to 100, got {guidance!r}")
        values["guidance"] = float(guidance)
    started = time.perf_counter()
    result = shared.run(scene, method, values, on_step=on_step)
    path = Path(out_dir) / f"scenecraft-{result.seed}-{uuid.uuid4().hex[:8]}.png"
    save_png(result.images[0], path, result.scene, *image_metadata(result, 0, shared.model))  # as `generate` does
    return Rendered(path, result.seed, method, result.settings.get("num_inference_steps"),
                    time.perf_counter() - started, scene)


def history_entry(rendered: Rendered) -> tuple[str, str]:
    """The history gallery's ``(path, caption)`` of one image."""
    prompt = rendered.scene.prompt if len(rendered.scene.prompt) <= 60 else rendered.scene.prompt[:57] + "..."
    return str(rendered.path), f"seed {rendered.seed} · {rendered.method} · {rendered.steps} steps · {prompt}"



# ---------------------------------------------------------------------------------------------- editing
ROUND_HEADERS = ["round", "instruction", "changes", "seed"]


@dataclass
class EditState:
    """What a page edits: the PNG this server wrote last for it (a server-side path, never one the page sends)
    and, once edited, its :class:`~scenecraft.edit_session.EditSession`, kept in memory so that the next edit
    or undo needs no replay (its rounds' latents: a few MB a round at 512 px; at most 32 rounds are kept)."""

    path: Path
    scene: Scene
    seed: int
    session: Any = None


@dataclass(frozen=True)
class Edited:
    """One edit or undo the UI drew: its PNG (history inside), round, what changed, notes, exactness and time."""

    path: Path
    round: int
    instruction: str | None
    changes: tuple[str, ...]
    notes: tuple[str, ...]
    exact: bool
    seconds: float
    undone: bool = False


def start_editing(rendered: Rendered) -> EditState:
    """The edit state of a freshly generated image: round 0 is its PNG."""
    return EditState(rendered.path, rendered.scene, rendered.seed)


def _instruction(text: Any, limits: UILimits) -> str:
    if not isinstance(text, str) or not text.strip():
        raise UIError("describe the edit first, e.g. \"make the circle blue\" or \"move the square to the left\"")
    if len(text) > limits.max_prompt_chars:
        raise UIError(f"the instruction has {len(text):,} characters, more than the {limits.max_prompt_chars:,} this "
                      "server allows (start `scenecraft ui --max-prompt-chars ...` to raise it)")
    return text.strip()


def _session(state: Any, limits: UILimits):
    from ..edit_session import read_record

    if not isinstance(state, EditState):
        raise UIError("generate an image first; then describe an edit of it")
    return state.session if state.session is not None else read_record(state.path, limits=limits.scene_limits())


def _on_pipeline(shared: SharedPipeline, work):
    """``work(view)`` on a request view of the shared pipeline, under its lock (as :meth:`SharedPipeline.run`)."""
    pipe = shared.pipeline()
    with pipeline_lock(pipe):
        return work(request_view(pipe))


def _finish(outcome, before, out_dir: Path, started: float) -> tuple[EditState, Edited]:
    from ..edit_session import describe_changes, save_picture

    session = outcome.session
    path = Path(out_dir) / f"scenecraft-edit-{session.round}-{uuid.uuid4().hex[:8]}.png"
    save_picture(session, path)
    current = session.record.history.rounds[-1]
    instruction = (before.record.history.rounds[-1] if outcome.undone else current).instruction
    changes = () if outcome.undone else tuple(describe_changes(before.scene, session.scene))
    edited = Edited(path, session.round, instruction, changes, outcome.notes, outcome.exact,
                    time.perf_counter() - started, outcome.undone)
    return EditState(path, session.scene, current.seed, session), edited


def edit_image(shared: SharedPipeline, state: Any, instruction: Any, out_dir: Path, limits: UILimits,
               llm: str | None = None, on_step=None) -> tuple[EditState, Edited]:
    """Apply ``instruction`` to the image of ``state`` (``scenecraft.edit_session``: planned offline unless
    ``llm``, drawn over the image with its method, settings and seed), write the new PNG with its history into
    ``out_dir`` and return the new state. "undo" undoes. The new scene is held to ``limits``."""
    from ..edit_session import plan_round, render_round

    text = _instruction(instruction, limits)
    session = _session(state, limits)
    plan = plan_round(session, text, llm=llm, limits=limits.scene_limits())
    if plan.is_undo:
        return undo_image(shared, state, out_dir, limits, on_step=on_step)
    started = time.perf_counter()
    outcome = _on_pipeline(shared, lambda pipe: render_round(pipe, session, plan, on_step=on_step))
    return _finish(outcome, session, out_dir, started)


def undo_image(shared: SharedPipeline, state: Any, out_dir: Path, limits: UILimits,
               on_step=None) -> tuple[EditState, Edited]:
    """Step the image of ``state`` back one round (the previous picture bit for bit: it is kept in memory, or
    replayed) and write its PNG into ``out_dir``."""
    from ..edit_session import undo_round

    session = _session(state, limits)
    if not session.can_undo:
        raise UIError("nothing to undo: this is the image editing started from")
    started = time.perf_counter()
    outcome = _on_pipeline(shared, lambda pipe: undo_round(pipe, session, on_step=on_step))
    return _finish(outcome, session, out_dir, started)


def edit_rows(state: Any) -> list[list[Any]]:
    """The edit history table of ``state``: one row per round (number, instruction, changes, seed)."""
    from ..edit_session import describe_changes

    if not isinstance(state, EditState):
        return []
    if state.session is None:
        return [[0, "(generated)", _short(state.scene.prompt), state.seed]]
    record = state.session.record
    rounds, rows = record.history.rounds, []
    for index, item in enumerate(rounds):
        number = index + record.dropped
        if index == 0:
            rows.append([number, "(generated)" if number == 0 else "(older rounds dropped)",
                         _short(item.scene.prompt), item.seed])
            continue
        changes = "; ".join(describe_changes(rounds[index - 1].scene, item.scene))
        rows.append([number, item.instruction or "(edits)", _short(changes), item.seed])
    return rows


def edit_entry(edited: Edited) -> tuple[str, str]:
    """The history gallery's ``(path, caption)`` of an edit."""
    said = edited.instruction or "edits"
    verb = "undid" if edited.undone else "edit"
    return str(edited.path), f"round {edited.round} · {verb} {_short(said, 50)}"


def _short(text: str, length: int = 60) -> str:
    return text if len(text) <= length else text[:length - 3] + "..."
