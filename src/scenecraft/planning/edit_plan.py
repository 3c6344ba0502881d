"""An edit plan: what a follow-up instruction asks of the current Scene (edits, the new scene, the diff).

:func:`scenecraft.planning.plan_edit` makes one, offline (:mod:`.instructions`) or with an LLM
(:meth:`.llm.LLMPlanner.plan_edit`); :meth:`EditPlan.commit` keeps it in an
:class:`~scenecraft.scene.edits.EditHistory`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..scene import Scene, SceneError
from ..scene.edits import Edit, EditHistory, SceneDiff, Undo, apply_edits, cells_to_boxes, diff_scenes
from .errors import PlanError
from .instructions import InstructionError, NeedsBoxes, parse_instruction

__all__ = ["EditPlan", "plan_edit_offline", "plan_undo"]


@dataclass(frozen=True)
class EditPlan:
    """What an instruction asks of the current scene.

    Attributes:
        instruction: the instruction as given.
        edits: the edit operations (``(Undo(),)`` for an undo; for an LLM's whole new scene, edits that
            say the same where edits can, else ``()``).
        scene: the scene after the edits; for an undo, the previous round's scene exactly.
        diff: from the current scene to ``scene`` (what changed, and :meth:`SceneDiff.edit_boxes`).
        base: the scene the edits apply to: the current one with ids (a split scene whose regions
            must move is converted to boxes first; ``notes`` say so).
        source: ``"offline"``, ``"llm"`` (edits from an LLM) or ``"llm-scene"`` (a whole new scene from one).
        notes: sentences on choices made (a split converted to boxes, a reply read as a whole scene).
    """

    instruction: str
    edits: tuple[Edit, ...]
    scene: Scene
    diff: SceneDiff
    base: Scene
    source: str = "offline"
    notes: tuple[str, ...] = ()

    @property
    def is_undo(self) -> bool:
        return self.edits == (Undo(),)

    def commit(self, history: EditHistory, *, seed: int | None = None) -> None:
        """Keep this plan as ``history``'s next round (an undo drops its last round instead)."""
        if self.is_undo:
            history.undo()
        else:
            history.record(self.instruction, self.edits, self.scene, seed)


def plan_undo(instruction: str, scene: Scene, history: EditHistory | None) -> EditPlan:
    """The plan of "undo": the history's previous scene, exactly."""
    if history is None or not history.can_undo:
        raise PlanError("nothing to undo: " + ("pass the edit history (history=...) to step back through it"
                                               if history is None else "the history holds only the first scene"))
    previous = history.rounds[-2].scene
    return EditPlan(instruction, (Undo(),), previous, diff_scenes(history.scene, previous), history.scene.with_ids())


def plan_edit_offline(instruction: str, scene: Scene, history: EditHistory | None = None) -> EditPlan:
    """The offline planner's plan of ``instruction`` (see :mod:`.instructions`); a split scene whose regions
    the instruction adds, removes, moves or resizes is planned on boxes (:func:`cells_to_boxes`)."""
    taken = history.ids_seen() if history is not None else set()
    base, notes = scene.with_ids(), ()
    try:
        edits = parse_instruction(instruction, base, history=history)
    except NeedsBoxes:
        base = cells_to_boxes(base)
        notes = (f"the split scene ({scene.split}) was converted to boxes of the same cells to add, remove, move "
                 "or resize regions",)
        edits = parse_instruction(instruction, base, history=history)
    if edits == (Undo(),):
        return plan_undo(instruction, scene, history)
    try:
        result = apply_edits(base, edits, taken=taken)
    except SceneError as error:  # parse_instruction applied them already: kept as a backstop
        raise InstructionError(f"cannot {instruction.strip()!r} here: {error}") from error
    return EditPlan(instruction, edits, result.scene, diff_scenes(scene, result.scene), base,
                    "offline", notes)
