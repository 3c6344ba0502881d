"""The offline planner: a prompt to a Scene with no model, deterministic, well under 10 ms a prompt."""

from __future__ import annotations

from ..scene import Box, Region, Scene
from .errors import PlanError
from .grammar import Entity, ParsedPrompt, parse_prompt
from .layout import LayoutKnobs, boxes_to_split, place_boxes

__all__ = ["LAYOUTS", "plan_offline", "scene_from_parsed"]

LAYOUTS = ("boxes", "split")


def check_layout(layout: str) -> str:
    """Return ``layout`` if it is one of LAYOUTS, else raise PlanError naming the choices."""
    if layout not in LAYOUTS:
        raise PlanError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    return layout


def _join(labels: list[str]) -> str:
    if len(labels) <= 1:
        return "".join(labels)
    return ", ".join(labels[:-1]) + " and " + labels[-1]


def _base_prompt(parsed: ParsedPrompt) -> str:
    """The positive prompt every pixel sees: the objects (negations left out) and the settings."""
    body = _join([e.label for e in parsed.entities]) or "a scene"
    if parsed.settings:
        body = f"{body} {' '.join(parsed.settings)}"
    return f"{parsed.style} of {body}" if parsed.style else body


def _background(parsed: ParsedPrompt) -> str | None:
    if parsed.settings:
        setting = " ".join(parsed.settings)
        for prep in ("in ", "on ", "at ", "near ", "under "):
            if setting.startswith(prep):
                setting = setting[len(prep):]
                break
        return f"{parsed.style} of {setting}" if parsed.style else setting
    if parsed.style:
        return f"{parsed.style} of a scene" if "scene" not in parsed.style else parsed.style
    return None


def _negative(negatives: tuple[Entity, ...]) -> str:
    return ", ".join(dict.fromkeys(n.plural_text or n.phrase for n in negatives))


def scene_from_parsed(parsed: ParsedPrompt, *, layout: str = "boxes", width: int = 512, height: int = 512,
                      knobs: LayoutKnobs | None = None) -> Scene:
    """Lay out what :func:`parse_prompt` found as boxes (one per instance) or as an RPG split."""
    check_layout(layout)
    entities = list(parsed.entities)
    per_entity = place_boxes(entities, list(parsed.relations), list(parsed.sequences), knobs or LayoutKnobs())
    captions = [entities[i].caption for i, boxes in enumerate(per_entity) for _ in boxes]
    rects = [rect for boxes in per_entity for rect in boxes]
    common = dict(prompt=parsed.prompt, width=width, height=height, base_prompt=_base_prompt(parsed),
                  background_prompt=_background(parsed), negative_prompt=_negative(parsed.negatives))
    if layout == "boxes":
        regions = tuple(Region(c, Box(*(min(1.0, max(0.0, v)) for v in r))) for c, r in zip(captions, rects))
        return Scene(regions=regions, **common)
    split, cells = boxes_to_split(rects)
    filler = common["background_prompt"] or "empty background"
    prompts = [filler if k is None else captions[k] for k in cells]
    return Scene.from_split(parsed.prompt, split, prompts, **{k: v for k, v in common.items() if k != "prompt"})


def plan_offline(prompt: str, *, layout: str = "boxes", width: int = 512, height: int = 512,
                 knobs: LayoutKnobs | None = None) -> Scene:
    """Plan ``prompt`` with the rule-based reader (see :mod:`scenecraft.planning.grammar`).

    Args:
        prompt: the user's prompt (English; other languages give one region with the whole prompt).
        layout: ``"boxes"`` (default; one box per object instance, LMD-style) or ``"split"`` (RPG
            split-ratio cells in reading order).
        width, height: image size in pixels (default 512 x 512).
        knobs: box sizes, see :class:`LayoutKnobs` (default ``LayoutKnobs()``).
    """
    return scene_from_parsed(parse_prompt(prompt), layout=layout, width=width, height=height, knobs=knobs)
