"""The scene data model: Scene, Region, LoraRef, geometries, the split-ratio grammar, masks and limits. No torch."""

from .errors import SceneError
from .limits import DEFAULT_LIMITS, SceneLimits
from .masks import region_weights, resample_mask
from .model import LORA_MAX_PATH_CHARS, LORA_MAX_SCALE, SCENE_FORMAT_VERSION, Box, Cell, LoraRef, Mask, Region, Scene
from .safejson import load_json
from .schema import scene_json_schema
from .split import SplitRatio, SplitRatioError, format_split, parse_split

__all__ = [
    "DEFAULT_LIMITS", "LORA_MAX_PATH_CHARS", "LORA_MAX_SCALE", "SCENE_FORMAT_VERSION", "Box", "Cell", "LoraRef", "Mask",
    "Region", "Scene", "SceneError", "SceneLimits", "SplitRatio", "SplitRatioError", "format_split", "load_json",
    "parse_split", "region_weights", "resample_mask", "scene_json_schema",
]
