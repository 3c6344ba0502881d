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

from ..scene import Box, Region, Scene, scene_json_schema

__all__ = ["EDIT_HISTORY_ROUNDS", "EDIT_TEMPLATE_VERSION", "TEMPLATE_VERSION", "build_edit_messages", "build_messages",
           "edit_schema", "examples", "layout_schema", "retry_message"]

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


# ----------------------------------------------------------------- editing (issue 14)
#: Version of the edit template (the conversation it builds changes with it).
EDIT_TEMPLATE_VERSION = "scenecraft-edit-1"
#: Earlier rounds an edit request shows the LLM (LMD's multi-round form: each round's layout and instruction).
EDIT_HISTORY_ROUNDS = 4

_EDIT_SYSTEM = """You edit the layout of a picture for a text-to-image system, over several rounds. You get
the current scene as JSON: "regions", each with an "id", a "prompt" and a "box" [x0, y0, x1, y1] in
fractions of the canvas (origin top-left; x grows to the right, y downwards) or a "cell" of an RPG
split; the "background_prompt"; the "negative_prompt". Then an instruction. Change only what the
instruction asks: every other region keeps its id, prompt and box. Answer with ONE JSON object, either
{"edits": [...]}, a list of operations:
  {"op": "add", "prompt": "a yellow star", "box": [x0, y0, x1, y1]}   (a new region, in free space)
  {"op": "remove", "id": "r2"}
  {"op": "move", "id": "r1", "to": [x0, y0, x1, y1]}   or with "dx"/"dy" (fractions of the canvas, right and
      down positive), or "place": "left" | "right" | "top" | "bottom" | "center" | "top-left" | "top-right" |
      "bottom-left" | "bottom-right", or "relation": "left_of" | "right_of" | "above" | "below" with "of": an id
  {"op": "resize", "id": "r1", "scale": 1.25}   (or "to": a box)
  {"op": "replace", "id": "r1", "prompt": "a cat"}   (a new prompt, same place)
  {"op": "change_attribute", "id": "r1", "attribute": "colour" | "size" | "material", "value": "blue"}
  {"op": "swap", "a": "r1", "b": "r2"}   (the two exchange places)
  {"op": "set_count", "kind": "circle", "count": 3}   (adds copies or removes the last ones)
  {"op": "undo"}   (alone: go back one round)
or {"scene": {...}}, the whole new scene in the same form: keep the "id" of every region that stays and
give new regions none. Prefer edits. Boxes stay inside [0, 1]. You may reason briefly first; your
answer must END with the JSON object."""

# (scene regions as (id, prompt, box), instruction, answer)
_EDIT_EXAMPLES: tuple[tuple[Any, ...], ...] = (
    ([("r1", "a red circle", [0.1, 0.3, 0.4, 0.6]), ("r2", "a blue square", [0.6, 0.3, 0.9, 0.6])],
     "make the circle green and move the square to the top",
     {"edits": [{"op": "change_attribute", "id": "r1", "attribute": "colour", "value": "green"},
                {"op": "move", "id": "r2", "place": "top"}]}),
    ([("r1", "a dog, golden retriever, standing", [0.05, 0.55, 0.35, 0.9]),
      ("r2", "a bench, wooden park bench", [0.45, 0.55, 0.95, 0.88])],
     "add two birds above the bench",
     {"edits": [{"op": "add", "prompt": "a bird, flying", "box": [0.5, 0.2, 0.68, 0.4]},
                {"op": "add", "prompt": "a bird, flying", "box": [0.74, 0.2, 0.92, 0.4]}]}),
    ([("r1", "a cat, black, sitting", [0.35, 0.3, 0.65, 0.8])],
     "make the cat a dog lying on the left, with a red ball on the right",
     {"scene": {"prompt": "a dog lying on the left and a red ball on the right", "regions": [
         {"id": "r1", "prompt": "a dog, lying down", "box": [0.05, 0.45, 0.45, 0.85]},
         {"prompt": "a red ball", "box": [0.65, 0.6, 0.85, 0.8]}]}}),
)


def _edit_scene_text(scene: Scene) -> str:
    """The scene as an edit request shows it: ids, prompts, boxes or cells (no LoRA paths: those are the
    user's files), the split, the background and negative prompts."""
    data = scene.to_dict()
    regions = [{k: v for k, v in entry.items() if k != "lora"} for entry in data["regions"]]
    shown = {"regions": regions, "background_prompt": data["background_prompt"],
             "negative_prompt": data["negative_prompt"]}
    if data["split"] is not None:
        shown["split"] = data["split"]
    return json.dumps(shown, ensure_ascii=False)


def _edit_request(scene: Scene, instruction: str) -> dict[str, str]:
    return {"role": "user", "content": f"Scene: {_edit_scene_text(scene)}\nInstruction: {instruction}"}


def build_edit_messages(instruction: str, scene: Scene, rounds: Any = ()) -> list[dict[str, str]]:
    """Chat messages for an edit: the system text, the examples, the last :data:`EDIT_HISTORY_ROUNDS` rounds
    of ``rounds`` (:class:`~scenecraft.scene.edits.EditRound`\\ s, oldest first: each shown as the scene
    before it, its instruction and its edits), then ``scene`` (with ids) and ``instruction``."""
    messages = [{"role": "system", "content": _EDIT_SYSTEM}]
    for regions, example, answer in _EDIT_EXAMPLES:
        example_scene = Scene(prompt=example, regions=[Region(p, Box(*b), id=i) for i, p, b in regions])
        messages += [_edit_request(example_scene, example),
                     {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)}]
    rounds = list(rounds)
    pairs = [(rounds[k - 1].scene, rounds[k]) for k in range(1, len(rounds)) if rounds[k].instruction]
    for before, item in pairs[-EDIT_HISTORY_ROUNDS:]:
        messages += [_edit_request(before.with_ids(), item.instruction),
                     {"role": "assistant", "content": json.dumps({"edits": [e.to_dict() for e in item.edits]},
                                                                 ensure_ascii=False)}]
    messages.append(_edit_request(scene, instruction))
    return messages


def edit_schema() -> dict[str, Any]:
    """The structured-output schema of an edit reply: ``{"edits": [...]}`` or ``{"scene": {...}}`` (a boxes
    scene whose regions may carry ids). Every reply it accepts still goes through the edit checks."""
    scene = layout_schema("boxes")
    scene["properties"]["regions"]["items"]["properties"]["id"] = copy.deepcopy(
        scene_json_schema()["properties"]["regions"]["items"]["properties"]["id"])
    scene["properties"]["prompt"] = {"type": "string"}
    box = {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 4, "maxItems": 4}
    edit = {"type": "object", "required": ["op"], "properties": {
        "op": {"enum": ["add", "remove", "move", "resize", "replace", "change_attribute", "swap", "set_count", "undo"]},
        "id": {"type": "string"}, "a": {"type": "string"}, "b": {"type": "string"}, "of": {"type": "string"},
        "prompt": {"type": "string"}, "negative_prompt": {"type": "string"}, "box": box, "to": box,
        "dx": {"type": "number", "minimum": -1, "maximum": 1}, "dy": {"type": "number", "minimum": -1, "maximum": 1},
        "place": {"enum": ["left", "right", "top", "bottom", "center", "top-left", "top-right", "bottom-left",
                           "bottom-right"]},
        "relation": {"enum": ["left_of", "right_of", "above", "below"]},
        "scale": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
        "attribute": {"enum": ["colour", "size", "material"]}, "value": {"type": "string"},
        "old": {"type": "string"}, "kind": {"type": "string"}, "count": {"type": "integer", "minimum": 0}},
        "additionalProperties": False}
    return {"title": "scenecraft edit", "type": "object", "additionalProperties": False,
            "properties": {"edits": {"type": "array", "items": edit, "maxItems": 64}, "scene": scene},
            "oneOf": [{"required": ["edits"]}, {"required": ["scene"]}]}
