"""Errors raised by the planning layer. Every one is a ``ValueError`` whose message says what was wrong."""

from __future__ import annotations

__all__ = ["PlanError", "PlanReadError", "PlanParseError", "PlanValidationError", "BackendError", "BackendSpecError"]


class PlanError(ValueError):
    """Base class of every planning error."""


class PlanReadError(PlanError):
    """A prompt the offline reader cannot make sense of; the message quotes the words (``words``).

    An LLM planner still plans such a prompt: only its rule-based cross-check is skipped.
    """

    def __init__(self, message: str, words: str) -> None:
        self.words = words
        super().__init__(message)


class PlanParseError(PlanError):
    """A planner reply (RPG or LMD legacy text, or JSON) that cannot be read.

    ``reason`` says what was wrong, ``position`` is the 0-based character offset where reading
    stopped (``None`` when it does not apply).
    """

    def __init__(self, reason: str, position: int | None = None, fmt: str = "reply") -> None:
        self.reason = reason
        self.position = position
        self.fmt = fmt
        where = f" at character {position}" if position is not None else ""
        super().__init__(f"cannot read {fmt}: {reason}{where}")


class PlanValidationError(PlanError):
    """A plan that was read but breaks a rule (wrong object count, boxes that cannot be repaired)."""


class BackendSpecError(PlanError):
    """An ``--llm`` spec that does not follow ``KIND:MODEL[@BASE_URL]``."""


class BackendError(PlanError):
    """An LLM backend that failed (transport error, timeout, HTTP status, missing package).

    Messages never contain API keys: they are built from the status and a redacted body.
    """
