"""The LLM planner: templates in, a validated Scene out, with exactly one corrective retry."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..scene import Scene, SceneError, load_json
from ..scene.split import SplitRatioError
from .backends import Backend
from .errors import PlanError, PlanParseError, PlanReadError, PlanValidationError
from .grammar import ParsedPrompt, parse_prompt
from .readers import extract_json_object, read_lmd, read_rpg
from .templates import build_messages, layout_schema, retry_message
from .validate import DEFAULT_MIN_SIDE, check_scene, repair_scene_dict

__all__ = ["LLMPlanner", "read_reply"]

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
