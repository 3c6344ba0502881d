"""Planning: a prompt to a Scene, by an LLM or by the offline rule-based planner. No torch imported here."""

from .errors import BackendError, BackendSpecError, PlanError, PlanParseError, PlanValidationError
from .offline import LAYOUTS, plan_offline

__all__ = [
    "LAYOUTS", "BackendError", "BackendSpecError", "PlanError", "PlanParseError", "PlanValidationError",
    "plan_offline",
]
