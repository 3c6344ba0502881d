"""The published JSON schema of a Scene (draft 2020-12). ``schema/scene.schema.json`` is this dict."""

from __future__ import annotations

from typing import Any

from .model import LORA_MAX_PATH_CHARS, LORA_MAX_SCALE, REGION_ID_MAX_CHARS

__all__ = ["scene_json_schema"]

_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
_OPTIONAL_TEXT = {"type": ["string", "null"]}
# "(?![\s\S])" is the end of the text in ECMA and Python regexes alike ("$" lets "r1\n" through in Python's).
_ID_PATTERN = f"^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{REGION_ID_MAX_CHARS - 1}}}(?![\\s\\S])"


def scene_json_schema() -> dict[str, Any]:
    """The JSON schema every serialised :class:`~scenecraft.scene.Scene` satisfies.

    It also serves planners as the structured-output schema for LLM backends (their layout schema
    leaves out ``lora`` and ``id``: a planner does not choose adapters, ids come with editing).
    Cross-field rules (a split's region count, boxes with ``x0 < x1``, region ids unique in a scene,
    each LoRA path once per region, no control or format characters in a LoRA path) and the size
    limits of :class:`~scenecraft.scene.SceneLimits` (pixels, regions, prompt length, LoRAs per
    region, JSON depth and digits) are checked by ``Scene.from_dict``/
    ``Scene.from_json``; they are left out of the schema, which stays the same whatever limits a
    caller chooses.
    """
    region = {
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt"],
        "properties": {
            "id": {"type": "string", "pattern": _ID_PATTERN,
                   "description": "the region's name, unique in the scene; edits refer to it and it survives them"},
            "prompt": {"type": "string", "minLength": 1, "description": "what this region shows"},
            "negative_prompt": _OPTIONAL_TEXT,
            "box": {
                "type": "array", "items": _FRACTION, "minItems": 4, "maxItems": 4,
                "description": "[x0, y0, x1, y1] as fractions of the canvas, origin top-left",
            },
            "cell": {"type": "integer", "minimum": 0, "description": "index (row-major) into the split grid"},
            "mask": {
                "type": "object", "additionalProperties": False, "required": ["width", "height", "rle"],
                "properties": {
                    "width": {"type": "integer", "minimum": 1},
                    "height": {"type": "integer", "minimum": 1},
                    "rle": {"type": "array", "items": {"type": "integer", "minimum": 0},
                            "description": "run lengths of 0s and 1s, row-major, starting with 0s"},
                },
            },
            "lora": {
                "type": "array",
                "items": {
                    "type": "object", "additionalProperties": False, "required": ["path"],
                    "properties": {
                        "path": {"type": "string", "minLength": 1, "maxLength": LORA_MAX_PATH_CHARS,
                                 "description": "a LoRA file path or hub id; no control or format characters"},
                        "scale": {"type": "number", "minimum": -LORA_MAX_SCALE, "maximum": LORA_MAX_SCALE,
                                  "default": 1.0},
                    },
                },
                "description": "LoRA adapters applied on this region's path only, each path once",
            },
        },
        "oneOf": [{"required": ["box"]}, {"required": ["cell"]}, {"required": ["mask"]}],
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://scenecraft.dev/schema/scene-1.json",
        "title": "scenecraft Scene",
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt"],
        "properties": {
            "version": {"const": 1},
            "prompt": {"type": "string", "description": "the whole prompt"},
            "base_prompt": _OPTIONAL_TEXT,
            "base_ratio": _FRACTION,
            "background_prompt": _OPTIONAL_TEXT,
            "negative_prompt": {"type": ["string", "null"]},
            "width": {"type": "integer", "minimum": 1},
            "height": {"type": "integer", "minimum": 1},
            "split": {"type": ["string", "null"], "description": "RPG split ratio, e.g. '1,1;2,1,1'"},
            "regions": {"type": "array", "items": region},
            "notes": {"type": "array", "items": {"type": "string"},
                      "description": "the planner's remarks on how it read the prompt; ignored by generators"},
        },
    }
