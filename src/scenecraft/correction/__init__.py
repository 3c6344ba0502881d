"""Self-correction (SLD): verify a picture against its Scene and re-render only what is wrong.

``verdict`` (found objects, problems, the matching shared by every verifier; pure Python), ``verifiers`` (the
toy scorer, open-vocabulary detectors through transformers, multimodal LLMs), ``counting`` (denoiser forward
passes, the cost measure), ``loop`` (``self_correct``: verdict -> edits -> masked re-render, for R rounds).
Nothing is imported or loaded until it is used.
"""

from __future__ import annotations

from .verdict import PROBLEM_KINDS, Found, Problem, Verdict, match_regions, normalise_label
from .verifiers import (
    DetectorVerifier, LLMVerifier, ToyVerifier, Verifier, VerifierError, make_verifier, toy_label,
)

__all__ = ["PROBLEM_KINDS", "Found", "Problem", "Verdict", "match_regions", "normalise_label", "Verifier",
           "VerifierError", "ToyVerifier", "DetectorVerifier", "LLMVerifier", "make_verifier", "toy_label",
           "self_correct", "CorrectionResult", "CorrectionRound", "plan_correction", "count_denoiser_calls"]


def __getattr__(name: str):
    """The torch-side names (the loop, the counter), imported on first use."""
    if name in ("self_correct", "CorrectionResult", "CorrectionRound", "plan_correction"):
        from . import loop

        return getattr(loop, name)
    if name == "count_denoiser_calls":
        from .counting import count_denoiser_calls

        return count_denoiser_calls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
