"""Planning: a prompt to a Scene, by an LLM or by the offline rule-based planner.

Import-light: no torch, no LLM client is imported here (backends import theirs on first use).
"""

from .api import DEFAULT_LAYOUT, plan_scene
from .errors import BackendError, BackendSpecError, PlanError, PlanParseError, PlanReadError, PlanValidationError
from .offline import LAYOUTS, plan_offline
from .readers import read_json_scene, read_lmd, read_rpg
from .templates import TEMPLATE_VERSION

__all__ = [
    "DEFAULT_LAYOUT", "LAYOUTS", "TEMPLATE_VERSION", "BackendError", "BackendSpecError", "PlanError",
    "PlanParseError", "PlanReadError", "PlanValidationError", "plan_offline", "plan_scene", "read_json_scene",
    "read_lmd", "read_rpg",
]
