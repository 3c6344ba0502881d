"""Prompt templates for LLM planners: recaption + layout in one step, answered as a Scene JSON object.

Two templates share one set of in-context examples (counting, attribute binding, spatial relations,
negation, a non-English prompt): ``boxes`` (LMD-style boxes + background + negative prompt) and
``split`` (RPG-style split ratio + one detailed prompt per cell). ``TEMPLATE_VERSION`` is part of
the plan-cache key: change it whenever a template or an example changes.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ..scene import Scene, scene_json_schema

__all__ = ["TEMPLATE_VERSION", "build_messages", "examples", "layout_schema", "retry_message"]

TEMPLATE_VERSION = "scenecraft-plan-1"

_COMMON = """You plan images for a text-to-image system. Given a user prompt, you
1. split it into entities (every object instance separately: "three cats" is three cats),
2. recaption: write a short, detailed prompt for each region. It must start with the object as the
   user named it, singular, with its own attributes (colour, material, size), e.g. "a black cat, fluffy,
   sitting"; never put another object's colour or attribute in it,
3. lay the regions out so the prompt's spatial relations hold (left/right by box centres, above =
   higher on the canvas, origin top-left),
4. put what the prompt excludes ("without", "no", "not") ONLY in "negative_prompt", never in a region.
Translate non-English prompts: region prompts are English.
You may reason briefly first; your answer must END with one JSON object following the Scene schema
(keys: prompt, base_prompt, background_prompt, negative_prompt, split, regions)."""

_BOXES = """Layout: "boxes". Each region is {"prompt": ..., "box": [x0, y0, x1, y1]} in fractions of the
canvas (0..1, origin top-left); one box per object instance; boxes are realistic in size (not the whole
canvas) and do not overlap much; "split" is null; "background_prompt" describes the setting only,
without the objects; "base_prompt" is the prompt restated without the excluded things."""

_SPLIT = """Layout: "split". "split" is an RPG split ratio: without ';' one row of columns ("1,1,1" = three
columns); with ';' every group is a row whose FIRST number is the row height and the rest its column
widths ("1,1;1,2,1" = a top row with one cell, a bottom row with two cells of widths 2:1). Each
region is {"prompt": ..., "cell": i}, cells numbered row by row, left to right, one cell per object
instance (a cell may hold the background when an object must stay on one side). Region prompts are
detailed (RPG recaptioning); "base_prompt" restates the whole prompt without the excluded things."""

# (prompt, background, negative, base, [(caption, detail, box)], split, [cell captions])
_EXAMPLES: tuple[tuple[Any, ...], ...] = (
    ("three cats on a sofa", "a cozy living room", "", "three cats on a sofa",
     [("a cat", "ginger, curled up", [0.08, 0.30, 0.32, 0.55]), ("a cat", "grey tabby, sitting", [0.38, 0.28, 0.62, 0.55]),
      ("a cat", "black, lying down", [0.68, 0.30, 0.92, 0.55]), ("a sofa", "green velvet", [0.03, 0.40, 0.97, 0.90])],
     "1,1,1,1;1,1", ["a cat, ginger, curled up", "a cat, grey tabby, sitting", "a cat, black, lying down",
                   "a sofa, green velvet, under the cats"]),
    ("a red car and a blue bottle", "a street in daylight", "", "a red car and a blue bottle",
     [("a red car", "glossy paint, side view", [0.05, 0.40, 0.60, 0.80]),
      ("a blue bottle", "glass, standing upright", [0.72, 0.45, 0.84, 0.80])],
     "3,1", ["a red car, glossy paint, side view", "a blue bottle, glass, standing upright"]),
    ("a dog to the left of a bench, a kite above them", "a park on a sunny day", "",
     "a dog to the left of a bench, a kite above them",
     [("a dog", "golden retriever, standing", [0.05, 0.55, 0.35, 0.90]),
      ("a bench", "wooden park bench", [0.45, 0.55, 0.95, 0.88]),
      ("a kite", "diamond shaped, flying", [0.35, 0.05, 0.60, 0.30])],
     "1,1;1,1,1", ["a kite, diamond shaped, flying high in the sky", "a dog, golden retriever, standing",
                   "a bench, wooden park bench"]),
    ("a living room without a television", "a living room, soft evening light", "television, tv screen",
     "a living room",
     [("an armchair", "leather", [0.10, 0.45, 0.45, 0.90]), ("a lamp", "tall floor lamp", [0.60, 0.15, 0.75, 0.85])],
     "1,1", ["an armchair, brown leather, in a living room", "a lamp, tall floor lamp, warm light"]),
    ("un chat noir sur une chaise rouge", "a simple room", "", "a black cat on a red chair",
     [("a black cat", "sitting", [0.35, 0.15, 0.65, 0.50]), ("a red chair", "wooden", [0.25, 0.40, 0.75, 0.92])],
     "1,1;1,1", ["a black cat, sitting, glossy fur", "a red chair, wooden, under the cat"]),
)


def examples(layout: str) -> list[tuple[str, Scene]]:
    """The in-context examples for ``layout`` as (prompt, Scene) pairs."""
    pairs = []
    for prompt, background, negative, base, objects, split, cells in _EXAMPLES:
        common = dict(base_prompt=base, background_prompt=background, negative_prompt=negative)
        if layout == "boxes":
            data = {"prompt": prompt, **common, "split": None,
                    "regions": [{"prompt": f"{c}, {d}", "box": b} for c, d, b in objects]}
            pairs.append((prompt, Scene.from_dict(data)))
        else:
            pairs.append((prompt, Scene.from_split(prompt, split, cells, **common)))
    return pairs


def _answer(scene: Scene) -> str:
    data = scene.to_dict()
    for key in ("version", "width", "height", "base_ratio"):
        data.pop(key, None)
    return json.dumps(data, ensure_ascii=False)


def build_messages(prompt: str, layout: str) -> list[dict[str, str]]:
    """Chat messages (system, few-shot pairs, the user prompt) for ``layout`` ("boxes" or "split")."""
    system = _COMMON + "\n\n" + (_BOXES if layout == "boxes" else _SPLIT)
    messages = [{"role": "system", "content": system}]
    for example_prompt, scene in examples(layout):
        messages.append({"role": "user", "content": f"Prompt: {example_prompt}"})
        messages.append({"role": "assistant", "content": _answer(scene)})
    messages.append({"role": "user", "content": f"Prompt: {prompt}"})
    return messages


def retry_message(error: str) -> dict[str, str]:
    """The one follow-up message that feeds a validation error back to the LLM."""
    return {"role": "user", "content": f"Your answer was rejected: {error}. Answer again with the corrected JSON "
                                       "object only."}


def layout_schema(layout: str) -> dict[str, Any]:
    """The structured-output schema for ``layout``: the Scene schema with every region required to be
    a box (``"boxes"``) or a cell (``"split"``), masks, LoRA references, region ids and the
    version/size/notes fields left out (the planner sets those; adapters are the user's choice, never
    the LLM's; ids are given when a scene is first edited). Every object it accepts is also a valid Scene."""
    schema = copy.deepcopy(scene_json_schema())
    for key in ("$schema", "$id"):
        schema.pop(key, None)
    properties = schema["properties"]
    for key in ("version", "width", "height", "base_ratio", "notes"):
        properties.pop(key, None)
    region = properties["regions"]["items"]
    region.pop("oneOf", None)
    for key in ("mask", "lora", "id"):
        region["properties"].pop(key, None)
    kind = "box" if layout == "boxes" else "cell"
    region["properties"].pop("cell" if kind == "box" else "box", None)
    region["required"] = ["prompt", kind]
    if layout == "split":
        properties["split"] = {"type": "string", "description": properties["split"]["description"]}
        schema["required"] = ["split", "regions"]
    else:
        properties["split"] = {"type": "null"}
        schema["required"] = ["regions"]
    return schema
