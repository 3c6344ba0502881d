"""The offline planner: a prompt to a Scene with no model, deterministic, well under 10 ms a prompt."""

from __future__ import annotations

from ..scene import Box, Region, Scene
from .errors import PlanError
from .grammar import Entity, ParsedPrompt, parse_prompt
from .layout import LayoutKnobs, Rect, boxes_to_split, place_boxes

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
    """Lay out what :func:`parse_prompt` found as boxes (one per instance) or as an RPG split.

    A split whose cells would lose a relation the boxes keep ("a cat in a box": cells cannot nest)
    is not used: the prompt is planned as boxes and the scene's notes say why.
    """
    check_layout(layout)
    entities = list(parsed.entities)
    per_entity = place_boxes(entities, list(parsed.relations), list(parsed.sequences), knobs or LayoutKnobs())
    owners = [i for i, boxes in enumerate(per_entity) for _ in boxes]
    captions = [entities[i].caption for i in owners]
    rects = [rect for boxes in per_entity for rect in boxes]
    common = dict(prompt=parsed.prompt, width=width, height=height, base_prompt=_base_prompt(parsed),
                  background_prompt=_background(parsed), negative_prompt=_negative(parsed.negatives),
                  notes=parsed.notes)
    boxes = Scene(regions=tuple(Region(c, Box(*(min(1.0, max(0.0, v)) for v in r))) for c, r in zip(captions, rects)),
                  **common)
    if layout == "boxes":
        return boxes
    checks = _checks(parsed, owners)
    split, cells = boxes_to_split(rects, above=_above_pairs(checks, rects))
    filler = common["background_prompt"] or "empty background"
    prompts = [filler if k is None else captions[k] for k in cells]
    scene = Scene.from_split(parsed.prompt, split, prompts, **{k: v for k, v in common.items() if k != "prompt"})
    cell_of = {k: index for index, k in enumerate(cells) if k is not None}
    cell_rects = [scene.split_ratio.cells()[cell_of[k]] for k in range(len(rects))]
    lost = [check for check in checks if _holds(check, rects) and not _holds(check, cell_rects)]
    if not lost:
        return scene
    note = f"layout 'split' cannot keep {_describe(lost[0], captions)}; planned as boxes instead"
    return Scene(regions=boxes.regions, **{**common, "notes": (*parsed.notes, note)})


Check = tuple[str, int, int]  # (kind, box a, box b): "left"/"above"/"inside"; ("abs-h"/"abs-v", box, 0/1/2)


def _checks(parsed: ParsedPrompt, owners: list[int]) -> list[Check]:
    """Every stated relation, ordering and absolute position, as checks between instance boxes."""
    instances: dict[int, list[int]] = {}
    for k, owner in enumerate(owners):
        instances.setdefault(owner, []).append(k)
    pairs = [(rel.kind, rel.subject, rel.obj) for rel in parsed.relations if rel.kind in ("left", "above", "inside")]
    for kind, members in parsed.sequences:
        order = list(members) if kind in ("h", "v") else list(reversed(members))
        pairs += [("left" if kind in ("h", "hr") else "above", a, b) for a, b in zip(order, order[1:])]
    checks = [(kind, a, b) for kind, i, j in pairs for a in instances.get(i, ()) for b in instances.get(j, ())]
    for i, entity in enumerate(parsed.entities):
        for axis, where in (("abs-h", entity.abs_h), ("abs-v", entity.abs_v)):
            if where is not None:
                checks += [(axis, a, _THIRDS[where]) for a in instances.get(i, ())]
    return checks


def _above_pairs(checks: list[Check], rects: list[Rect]) -> list[tuple[int, int]]:
    """Box pairs (upper, lower) that need rows of their own: stated "above" relations, and a box
    placed at the top (bottom) over (under) every box whose centre is lower (higher)."""
    pairs = [(a, b) for kind, a, b in checks if kind == "above"]
    centre = [(y0 + y1) / 2 for _, y0, _, y1 in rects]
    for kind, a, where in checks:
        if kind == "abs-v" and where != 1:
            others = [j for j in range(len(rects)) if (centre[j] - centre[a]) * (where - 1) < 0]
            pairs += [(a, j) if where == 0 else (j, a) for j in others]
    return pairs


_THIRDS = {"left": 0, "top": 0, "center": 1, "right": 2, "bottom": 2}


def _holds(check: Check, rects: list[Rect]) -> bool:
    kind, a, b = check
    (ax0, ay0, ax1, ay1) = rects[a]
    if kind in ("abs-h", "abs-v"):
        centre = (ax0 + ax1) / 2 if kind == "abs-h" else (ay0 + ay1) / 2
        return [centre < 0.5, abs(centre - 0.5) < 0.1, centre > 0.5][b]
    (bx0, by0, bx1, by1) = rects[b]
    if kind == "left":
        return ax0 + ax1 < bx0 + bx1
    if kind == "above":
        return ay0 + ay1 < by0 + by1
    return bx0 <= ax0 and by0 <= ay0 and ax1 <= bx1 and ay1 <= by1 and (ax1 - ax0) * (ay1 - ay0) < (
        bx1 - bx0) * (by1 - by0)


def _describe(check: Check, captions: list[str]) -> str:
    kind, a, b = check
    if kind in ("abs-h", "abs-v"):
        where = (["left", "middle", "right"] if kind == "abs-h" else ["top", "middle", "bottom"])[b]
        return f"'{captions[a]}' on the {where}"
    words = {"left": "left of", "above": "above", "inside": "inside"}[kind]
    return f"'{captions[a]}' {words} '{captions[b]}'"


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
