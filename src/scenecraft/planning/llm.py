"""The LLM planner: templates in, a validated Scene out, with exactly one corrective retry."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dataclasses import replace
from typing import Any

from ..scene import Scene, SceneError, load_json
from ..scene.edits import (
    Edit,
    EditHistory,
    Undo,
    apply_edits,
    cells_to_boxes,
    describe_regions,
    diff_scenes,
    edits_between,
    edits_from_list,
)
from ..scene.split import SplitRatioError
from .backends import Backend
from .edit_plan import EditPlan, plan_undo
from .errors import PlanError, PlanParseError, PlanReadError, PlanValidationError
from .grammar import ParsedPrompt, parse_prompt
from .readers import MAX_REPLY_CHARS, extract_json_object, read_lmd, read_rpg
from .templates import build_edit_messages, build_messages, edit_schema, layout_schema, retry_message
from .validate import DEFAULT_MIN_SIDE, check_scene, repair_scene_dict

__all__ = ["LLMPlanner", "read_edit_reply", "read_reply"]

logger = logging.getLogger(__name__)


def read_reply(text: str, *, prompt: str, width: int, height: int, min_side: float = DEFAULT_MIN_SIDE) -> Scene:
    """A reply in any supported form (Scene JSON, else LMD text, else RPG text) to a repaired Scene."""
    if "{" in text:
        try:
            data = load_json(extract_json_object(text), what="JSON reply")
        except SceneError as error:
            raise PlanParseError(str(error)[:300], fmt="JSON reply") from error
        if not isinstance(data, dict):
            raise PlanParseError("the JSON reply is not an object", fmt="JSON reply")
        data = {**data, "prompt": prompt, "width": width, "height": height}
        if isinstance(data.get("regions"), list):  # adapters are the user's choice: an LLM's are dropped
            data["regions"] = [{k: v for k, v in entry.items() if k != "lora"} if isinstance(entry, dict) else entry
                               for entry in data["regions"]]
        if data.get("split") is None:
            data.pop("split", None)
        data = repair_scene_dict(data, width=width, height=height, min_side=min_side)
        try:
            return Scene.from_dict(data)
        except (SceneError, SplitRatioError, TypeError) as error:
            raise PlanParseError(str(error).splitlines()[0][:300], fmt="JSON reply") from error
    if "Final split ratio" in text or "final split ratio" in text.lower():
        return read_rpg(text, prompt=prompt, width=width, height=height)
    if "background prompt" in text.lower() or text.lstrip().startswith(("[", "Objects")):
        return read_lmd(text, prompt=prompt, width=width, height=height, min_side=min_side)
    raise PlanParseError("the reply holds no JSON object, no LMD layout and no RPG split", fmt="reply")


def _expected(prompt: str) -> ParsedPrompt | None:
    """What the offline reader finds in ``prompt``, or None where it cannot read it (the LLM may)."""
    try:
        return parse_prompt(prompt)
    except PlanReadError:
        return None


@dataclass
class LLMPlanner:
    """Plans with an LLM backend.

    Attributes:
        backend: the backend (see :func:`scenecraft.planning.backends.make_backend`).
        retries: corrective retries after a reply that cannot be read or fails validation
            (default 1, at most 2): the error is sent back once, then PlanValidationError.
        max_tokens: reply length limit (default 1024).
        min_side: smallest box side after repair, canvas fraction (default 1/16).
        validate: check counts and negations against the prompt (default True).
    """

    backend: Backend
    retries: int = 1
    max_tokens: int = 1024
    min_side: float = DEFAULT_MIN_SIDE
    validate: bool = True

    def plan(self, prompt: str, *, layout: str = "boxes", width: int = 512, height: int = 512) -> Scene:
        if not (isinstance(self.retries, int) and 0 <= self.retries <= 2):
            raise PlanError(f"retries must be 0, 1 or 2, got {self.retries!r}")
        from .offline import check_layout

        check_layout(layout)
        expected = _expected(prompt) if self.validate else None
        messages = build_messages(prompt, layout)
        schema = layout_schema(layout)
        errors: list[str] = []
        for attempt in range(1 + self.retries):
            text = self.backend.complete(messages, schema=schema, max_tokens=self.max_tokens)
            try:
                scene = read_reply(text, prompt=prompt, width=width, height=height, min_side=self.min_side)
                if layout == "split" and scene.split is None or layout == "boxes" and scene.split is not None:
                    raise PlanValidationError(f"the layout must be {layout!r} ("
                                              + ("a split ratio with cells" if layout == "split" else "boxes, split null")
                                              + ")")
                return check_scene(scene, expected)
            except PlanError as error:
                errors.append(str(error))
                logger.info("plan attempt %d of %d rejected: %s", attempt + 1, 1 + self.retries, error)
                messages = [*messages, {"role": "assistant", "content": text[:4000]}, retry_message(str(error))]
        raise PlanValidationError(f"{self.backend.spec} gave no valid plan in {1 + self.retries} attempt(s): "
                                  + " | then: ".join(errors))

    def plan_edit(self, instruction: str, scene: Scene, *, history: EditHistory | None = None) -> EditPlan:
        """Plan a follow-up ``instruction`` on ``scene``: the request shows the last rounds of ``history``
        (each round's scene, instruction and edits: LMD's multi-round form) and the current scene with
        ids; the reply (edits, or a whole new scene) is read and checked as :func:`read_edit_reply` says,
        and sent back with the error when it fails, ``retries`` times at most."""
        return _plan_edit(self, instruction, scene, history)


# ----------------------------------------------------------------- edits (issue 14)
def read_edit_reply(text: str, scene: Scene, *, taken: Any = (),
                    min_side: float = DEFAULT_MIN_SIDE) -> tuple[tuple[Edit, ...], Scene | None, str, tuple[str, ...]]:
    """An edit reply (``{"edits": [...]}`` or ``{"scene": {...}}``, after any reasoning) applied to ``scene``.

    Returns (edits, the new scene, ``"llm"`` / ``"llm-scene"`` / ``"undo"``, notes); for ``"undo"`` the scene
    is None (the history has it). A reply that cannot be read is a :class:`PlanParseError`; edits that
    do not apply (an unknown id, a box off the canvas) or change nothing a :class:`PlanValidationError`.
    Model text is read with the bounded JSON reader, never evaluated.
    """
    if isinstance(text, str) and len(text) > MAX_REPLY_CHARS:
        raise PlanParseError(f"reply has {len(text)} characters, more than the {MAX_REPLY_CHARS} allowed",
                             fmt="edit reply")
    if not isinstance(text, str) or "{" not in text:
        raise PlanParseError("the reply holds no JSON object ({\"edits\": [...]} or {\"scene\": {...}})",
                             fmt="edit reply")
    try:
        data = load_json(extract_json_object(text), what="edit reply")
    except SceneError as error:
        raise PlanParseError(str(error)[:300], fmt="edit reply") from error
    if not isinstance(data, dict):
        raise PlanParseError("the JSON reply is not an object", fmt="edit reply")
    if "edits" in data and "scene" not in data:
        return _read_edits(data["edits"], scene, taken)
    if "scene" in data or "regions" in data:
        new = _scene_from_reply(data.get("scene", data), scene, taken, min_side)
        derived = edits_between(scene, new)
        notes = () if derived is not None else ("the LLM gave a whole new scene that edits cannot describe; the round "
                                                "keeps the scene only",)
        _check_changes(scene, new)
        return derived or (), new, "llm-scene", notes
    raise PlanParseError(f"the JSON reply has neither 'edits' nor 'scene' (keys: {sorted(map(str, data))[:8]})",
                         fmt="edit reply")


def _read_edits(value: Any, scene: Scene, taken: Any) -> tuple[tuple[Edit, ...], Scene | None, str, tuple[str, ...]]:
    try:
        edits = edits_from_list(value)
    except SceneError as error:
        raise PlanParseError(str(error)[:300], fmt="edit reply") from error
    if not edits:
        raise PlanValidationError("the reply holds no edits; answer with at least one operation")
    if any(isinstance(edit, Undo) for edit in edits):
        if len(edits) != 1:
            raise PlanValidationError("undo must be the only edit of its reply")
        return edits, None, "undo", ()
    notes: tuple[str, ...] = ()
    try:
        result = apply_edits(scene, edits, taken=taken)
    except SceneError as error:
        if scene.split is None or "split" not in str(error):
            raise PlanValidationError(str(error)[:500]) from error
        try:
            result = apply_edits(cells_to_boxes(scene), edits, taken=taken)
        except SceneError as again:
            raise PlanValidationError(str(again)[:500]) from again
        notes = (f"the split scene ({scene.split}) was converted to boxes of the same cells for these edits",)
    _check_changes(scene, result.scene)
    return edits, result.scene, "llm", notes


def _check_changes(scene: Scene, new: Scene) -> None:
    diff = diff_scenes(scene, new)
    if diff.empty and not diff.scene_fields:
        raise PlanValidationError("the reply changes nothing in the scene; answer with the edits the instruction asks")


def _scene_from_reply(data: Any, scene: Scene, taken: Any, min_side: float) -> Scene:
    """A whole new scene from an edit reply: the canvas and base ratio stay; regions keeping an id of the
    current scene keep its LoRAs; other ids are dropped and new regions get ids no round has used."""
    if not isinstance(data, dict):
        raise PlanParseError(f"'scene' must be an object, got {type(data).__name__}", fmt="edit reply")
    regions = data.get("regions")
    if not isinstance(regions, list):
        raise PlanParseError("the new scene needs a list of 'regions'", fmt="edit reply")
    current = {r.id: r for r in scene.regions}
    kept = []
    for entry in regions:
        if isinstance(entry, dict):
            entry = {k: v for k, v in entry.items() if k != "lora" and not (k == "id" and v not in current)}
        kept.append(entry)
    fields = {k: v for k, v in data.items() if k in ("prompt", "base_prompt", "background_prompt", "negative_prompt",
                                                     "split")}
    fields.setdefault("negative_prompt", scene.negative_prompt)
    fields.setdefault("background_prompt", scene.background_prompt)
    if "split" not in fields:
        fields["split"] = scene.split if any(isinstance(e, dict) and "cell" in e for e in kept) else None
    new = {**fields, "regions": kept, "width": scene.width, "height": scene.height, "base_ratio": scene.base_ratio}
    new = repair_scene_dict(new, width=scene.width, height=scene.height, min_side=min_side)
    if not isinstance(new.get("prompt"), str) or not new["prompt"].strip():
        new["prompt"] = "a scene"  # replaced below by the regions described
        described = True
    else:
        described = False
    try:
        result = Scene.from_dict(new, limits=scene.limits)
    except (SceneError, SplitRatioError, TypeError) as error:
        raise PlanParseError(str(error).splitlines()[0][:300], fmt="edit reply") from error
    taken = {r.id for r in scene.regions} | {t for t in taken if isinstance(t, str)}
    result = result.with_ids(taken)
    regions_out = tuple(replace(r, lora=current[r.id].lora) if r.id in current else r for r in result.regions)
    prompt = (describe_regions(regions_out) or "an empty scene") if described else result.prompt
    try:
        return replace(result, regions=regions_out, prompt=prompt)
    except SceneError as error:
        raise PlanParseError(str(error).splitlines()[0][:300], fmt="edit reply") from error


def _plan_edit(planner: LLMPlanner, instruction: str, scene: Scene, history: EditHistory | None) -> EditPlan:
    if not (isinstance(planner.retries, int) and 0 <= planner.retries <= 2):
        raise PlanError(f"retries must be 0, 1 or 2, got {planner.retries!r}")
    taken = history.ids_seen() if history is not None else set()
    base = scene.with_ids()
    messages = build_edit_messages(instruction, base, history.rounds if history is not None else ())
    schema = edit_schema()
    errors: list[str] = []
    for attempt in range(1 + planner.retries):
        text = planner.backend.complete(messages, schema=schema, max_tokens=planner.max_tokens)
        try:
            edits, new, source, notes = read_edit_reply(text, base, taken=taken, min_side=planner.min_side)
        except PlanError as error:
            errors.append(str(error))
            logger.info("edit attempt %d of %d rejected: %s", attempt + 1, 1 + planner.retries, error)
            messages = [*messages, {"role": "assistant", "content": text[:4000]}, retry_message(str(error))]
            continue
        if source == "undo":
            return plan_undo(instruction, scene, history)
        assert new is not None
        if notes and "converted to boxes" in notes[0]:
            base = cells_to_boxes(base)
        return EditPlan(instruction, edits, new, diff_scenes(scene, new), base, source, notes)
    raise PlanValidationError(f"{planner.backend.spec} gave no valid edit in {1 + planner.retries} attempt(s): "
                              + " | then: ".join(errors))
