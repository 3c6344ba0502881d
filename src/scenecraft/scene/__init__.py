"""The scene data model: Scene, Region, geometries, the split-ratio grammar and masks. No torch."""

from .masks import region_weights, resample_mask
from .model import SCENE_FORMAT_VERSION, Box, Cell, Mask, Region, Scene, SceneError
from .schema import scene_json_schema
from .split import SplitRatio, SplitRatioError, format_split, parse_split

__all__ = [
    "SCENE_FORMAT_VERSION", "Box", "Cell", "Mask", "Region", "Scene", "SceneError", "SplitRatio",
    "SplitRatioError", "format_split", "parse_split", "region_weights", "resample_mask", "scene_json_schema",
]
