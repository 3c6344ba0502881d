"""The scene data model: Scene, Region, LoraRef, geometries, the split-ratio grammar, masks, limits and edits.

No torch. Edits as data (add, remove, move, ... with a diff and an undoable history) are in
:mod:`scenecraft.scene.edits`; the most used names are re-exported here.
"""

from .edits import (
    AddRegion,
    ChangeAttribute,
    EditHistory,
    EditResult,
    MoveRegion,
    RemoveRegion,
    ReplacePrompt,
    ResizeRegion,
    SceneDiff,
    SetCount,
    SwapRegions,
    Undo,
    apply_edits,
    diff_scenes,
    edit_mask,
)
from .errors import SceneError
from .limits import DEFAULT_LIMITS, SceneLimits
from .masks import region_weights, resample_mask
from .model import (
    LORA_MAX_PATH_CHARS,
    LORA_MAX_SCALE,
    REGION_ID_MAX_CHARS,
    SCENE_FORMAT_VERSION,
    Box,
    Cell,
    LoraRef,
    Mask,
    Region,
    Scene,
)
from .safejson import load_json
from .schema import scene_json_schema
from .split import SplitRatio, SplitRatioError, format_split, parse_split

__all__ = [
    "DEFAULT_LIMITS", "LORA_MAX_PATH_CHARS", "LORA_MAX_SCALE", "REGION_ID_MAX_CHARS", "SCENE_FORMAT_VERSION",
    "AddRegion", "Box", "Cell", "ChangeAttribute", "EditHistory", "EditResult", "LoraRef", "Mask", "MoveRegion",
    "Region", "RemoveRegion", "ReplacePrompt", "ResizeRegion", "Scene", "SceneDiff", "SceneError", "SceneLimits",
    "SetCount", "SplitRatio", "SplitRatioError", "SwapRegions", "Undo", "apply_edits", "diff_scenes", "edit_mask",
    "format_split", "load_json", "parse_split", "region_weights", "resample_mask", "scene_json_schema",
]
