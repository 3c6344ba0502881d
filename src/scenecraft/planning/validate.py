"""Repair and check planned scenes (from an LLM or a legacy reply) against the prompt.

Repairs (silent, deterministic):
    * box values given in pixels (any value > 1.5) are divided by the image size;
    * swapped corners are put in order; boxes are clipped into the canvas;
    * boxes thinner than ``min_side`` (default 1/16 of the canvas) are grown about their centre;
    * a box covering >= 95% of the canvas on both axes is the background: it is removed and its
      prompt becomes ``background_prompt`` when that is empty.

Checks (raise :class:`PlanValidationError`, whose message goes back to the LLM once):
    * with boxes, each object the prompt counts ("three cats", "a dog") appears in exactly that many
      region prompts; an object the prompt names without a number ("cats") must appear at least once
      if it appears at all;
    * nothing the prompt negates ("no red square", "without cats") appears in a region prompt;
    * at least one region when the prompt names objects.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

from ..scene import Box, Scene
from .errors import PlanValidationError
from .grammar import Entity, ParsedPrompt
from .lexicon import pluralize
from .readers import FULL_CANVAS, clip_rect

__all__ = ["repair_scene_dict", "check_scene", "mentions", "DEFAULT_MIN_SIDE"]

DEFAULT_MIN_SIDE = 1 / 16


def mentions(text: str, entity: Entity) -> bool:
    """Whether ``text`` names ``entity``: its head (singular or plural) and, if any, its colours."""
    lowered = text.lower()
    heads = {entity.head, pluralize(entity.head)}
    if not any(re.search(rf"\b{re.escape(h)}\b", lowered) for h in heads):
        return False
    return all(re.search(rf"\b{re.escape(c)}\b", lowered) for c in entity.colours)


def _is_numeric_box(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )


def _repair_box(value: list | tuple, width: int, height: int, min_side: float) -> list[float] | None:
    x0, y0, x1, y1 = (float(v) for v in value)
    if max(x0, y0, x1, y1) > 1.5:
        x0, x1, y0, y1 = x0 / width, x1 / width, y0 / height, y1 / height
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    if x1 - x0 == 0 or y1 - y0 == 0:
        x1, y1 = x1 + 1e-6, y1 + 1e-6
    rect = clip_rect((x0, y0, x1, y1), min_side)
    return None if rect is None else [round(v, 4) for v in rect]


def repair_scene_dict(data: dict[str, Any], *, width: int, height: int,
                      min_side: float = DEFAULT_MIN_SIDE) -> dict[str, Any]:
    """A copy of a scene dict with its boxes repaired (see the module docstring)."""
    data = dict(data)
    regions = data.get("regions")
    if not isinstance(regions, list):
        return data
    kept = []
    for entry in regions:
        # A box that is no four finite numbers is left for Scene.from_dict to name.
        if isinstance(entry, dict) and _is_numeric_box(entry.get("box")):
            box = _repair_box(entry["box"], width, height, min_side)
            if box is None:
                raise PlanValidationError(f"region {entry.get('prompt')!r} has a box {entry['box']!r} outside the canvas")
            if box[2] - box[0] >= FULL_CANVAS and box[3] - box[1] >= FULL_CANVAS:
                if not data.get("background_prompt") and isinstance(entry.get("prompt"), str):
                    data["background_prompt"] = entry["prompt"]
                continue
            entry = {**entry, "box": box}
        kept.append(entry)
    data["regions"] = kept
    return data


def repair_scene(scene: Scene, *, min_side: float = DEFAULT_MIN_SIDE) -> Scene:
    """:func:`repair_scene_dict` applied to a Scene."""
    return Scene.from_dict(repair_scene_dict(scene.to_dict(), width=scene.width, height=scene.height,
                                             min_side=min_side))


def check_scene(scene: Scene, expected: ParsedPrompt | None) -> Scene:
    """Check ``scene`` against what the offline reader found in the prompt; return it or raise."""
    if expected is None:
        return scene
    prompts = [region.prompt for region in scene.regions]
    problems = []
    if expected.entities and not prompts:
        problems.append(f"the scene has no regions but the prompt names {', '.join(e.label for e in expected.entities)}")
    boxes = all(isinstance(r.geometry, Box) for r in scene.regions)
    for entity in expected.entities:
        found = sum(mentions(p, entity) for p in prompts)
        if not boxes or found == 0 and not entity.explicit_count:
            continue
        if found != entity.count and (entity.explicit_count or found < 1):
            problems.append(f"the prompt asks for {entity.label} (one box each) but {found} region(s) show "
                            f"'{entity.phrase}'")
    for entity in expected.negatives:
        bare = replace(entity, modifiers=tuple(m for m in entity.modifiers if m not in ("any", "no")))
        shown = [p for p in prompts if mentions(p, bare)]
        if shown:
            problems.append(f"the prompt excludes '{bare.phrase}' but region {shown[0]!r} shows it")
    if problems:
        raise PlanValidationError("; ".join(problems))
    return scene
