"""Planning: a prompt to a Scene, and a follow-up instruction to edits, by an LLM or by the offline planner.

Import-light: no torch, no LLM client is imported here (backends import theirs on first use).
"""

from .api import DEFAULT_LAYOUT, plan_edit, plan_scene
from .edit_plan import EditPlan
from .errors import BackendError, BackendSpecError, PlanError, PlanParseError, PlanReadError, PlanValidationError
from .instructions import FORMS as EDIT_FORMS
from .instructions import InstructionError, parse_instruction
from .offline import LAYOUTS, plan_offline
from .readers import read_json_scene, read_lmd, read_rpg
from .templates import TEMPLATE_VERSION

__all__ = [
    "DEFAULT_LAYOUT", "EDIT_FORMS", "LAYOUTS", "TEMPLATE_VERSION", "BackendError", "BackendSpecError", "EditPlan",
    "InstructionError", "PlanError", "PlanParseError", "PlanReadError", "PlanValidationError", "parse_instruction",
    "plan_edit", "plan_offline", "plan_scene", "read_json_scene", "read_lmd", "read_rpg",
]
