"""``plan_scene``: the library's one entry point for planning."""

from __future__ import annotations

from pathlib import Path

from ..scene import Scene
from .backends import make_backend, parse_spec
from .cache import PlanCache, plan_key
from .errors import PlanError
from .llm import LLMPlanner
from .offline import check_layout, plan_offline
from .templates import TEMPLATE_VERSION

__all__ = ["DEFAULT_LAYOUT", "plan_scene"]

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
