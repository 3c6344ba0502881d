"""``plan_scene`` and ``plan_edit``: the library's entry points for planning a scene and editing one."""

from __future__ import annotations

from pathlib import Path

from ..scene import Scene
from ..scene.edits import EditHistory
from .backends import make_backend, parse_spec
from .cache import PlanCache, plan_key
from .edit_plan import EditPlan, plan_edit_offline, plan_undo
from .errors import PlanError
from .instructions import check_instruction, is_undo
from .llm import LLMPlanner
from .offline import check_layout, plan_offline
from .templates import TEMPLATE_VERSION

__all__ = ["DEFAULT_LAYOUT", "plan_edit", "plan_scene"]

#: Boxes carry positions and counts exactly (one box per instance); splits are derived from them.
DEFAULT_LAYOUT = "boxes"


def plan_scene(prompt: str, *, layout: str = DEFAULT_LAYOUT, llm: str | None = None, width: int = 512,
               height: int = 512, cache_dir: str | Path | None = None, use_cache: bool = True,
               timeout: float = 60.0, transport_retries: int = 2, retries: int = 1,
               max_tokens: int = 1024) -> Scene:
    """Plan ``prompt`` into a Scene.

    Args:
        prompt: what the image shows (at most 2000 characters).
        layout: ``"boxes"`` (default: one box per object instance, LMD-style, with background and
            negative prompts) or ``"split"`` (RPG split ratio, one cell per instance).
        llm: None (default) for the offline rule-based planner, or an LLM spec
            ``openai:MODEL[@BASE_URL]``, ``gemini:MODEL``, ``anthropic:MODEL``, ``local:PATH``.
        width, height: image size in pixels (default 512 x 512).
        cache_dir: plan cache folder for LLM plans (default ``$SCENECRAFT_CACHE/plans`` or
            ``~/.cache/scenecraft/plans``); the offline planner is not cached (it is deterministic).
        use_cache: read and write the plan cache (default True).
        timeout: seconds per LLM request (default 60).
        transport_retries: transport retries per LLM request (default 2).
        retries: corrective retries after an invalid plan (default 1).
        max_tokens: LLM reply length limit (default 1024).

    Raises:
        PlanError (a ValueError) or one of its subclasses, with a message naming what was wrong.
    """
    check_layout(layout)
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or not 8 <= value <= 16384:
            raise PlanError(f"{name} must be an integer number of pixels in 8..16384, got {value!r}")
    if llm is None:
        return plan_offline(prompt, layout=layout, width=width, height=height)
    spec = parse_spec(llm)
    key = plan_key(prompt=prompt, backend=spec.kind, model=spec.model, base_url=spec.base_url,
                   template=TEMPLATE_VERSION, layout=layout, width=width, height=height)
    cache = PlanCache.at(cache_dir) if use_cache else None
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit
    backend = make_backend(spec, timeout=timeout, transport_retries=transport_retries)
    scene = LLMPlanner(backend, retries=retries, max_tokens=max_tokens).plan(prompt, layout=layout, width=width,
                                                                            height=height)
    if cache is not None:
        cache.put(key, scene)
    return scene


def plan_edit(instruction: str, scene: Scene | None = None, *, llm: str | None = None,
              history: EditHistory | None = None, timeout: float = 60.0, transport_retries: int = 2,
              retries: int = 1, max_tokens: int = 1024) -> EditPlan:
    """Plan a follow-up ``instruction`` ("make the circle blue", "add two birds", "undo") on a scene.

    Args:
        instruction: what to change (at most 2000 characters).
        scene: the current scene (default: ``history.scene``); its regions get ids (``Scene.with_ids``).
        llm: None (default) for the offline planner (the forms of
            :data:`scenecraft.planning.instructions.FORMS`), or an LLM spec as for :func:`plan_scene`:
            the LLM sees the last rounds of ``history`` and the scene, and answers with edits or a whole
            new scene, both checked. "undo" is never sent to an LLM.
        history: the rounds so far (:class:`~scenecraft.scene.edits.EditHistory`): for "undo", for "it"
            (what the last round touched), for the LLM's conversation, and so that a removed region's id
            is not given again. The plan is not kept in it: call ``plan.commit(history)``.
        timeout, transport_retries, retries, max_tokens: as for :func:`plan_scene`. Edit plans are not cached.

    Returns:
        an :class:`EditPlan`: ``edits``, the new ``scene``, its ``diff`` from the current one, ``notes``.

    Raises:
        PlanError or a subclass: ``InstructionError`` (an instruction the offline planner cannot read,
        or an ambiguous object: the message names the candidates), ``PlanValidationError`` (an LLM that
        gave no usable edit), ``BackendError``/``BackendSpecError`` as for :func:`plan_scene`.
    """
    if history is not None and not isinstance(history, EditHistory):
        raise PlanError(f"history must be an EditHistory or None, got {type(history).__name__}")
    if scene is None:
        if history is None:
            raise PlanError("plan_edit needs the current scene (scene=...) or an edit history (history=...)")
        scene = history.scene
    if not isinstance(scene, Scene):
        raise PlanError(f"scene must be a Scene, got {type(scene).__name__}")
    if is_undo(instruction):
        return plan_undo(instruction, scene, history)
    if llm is None:
        return plan_edit_offline(instruction, scene, history)
    check_instruction(instruction)
    backend = make_backend(parse_spec(llm), timeout=timeout, transport_retries=transport_retries)
    return LLMPlanner(backend, retries=retries, max_tokens=max_tokens).plan_edit(instruction, scene, history=history)
