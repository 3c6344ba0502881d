"""JSON from untrusted text in bounded time and memory.

:func:`load_json` checks the size before parsing, the nesting depth by one linear scan (no
recursion), and every number's digit count while parsing; NaN and Infinity are refused. Every
failure is a :class:`~scenecraft.scene.SceneError` naming the limit (a :class:`SceneLimits` field).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable

from .errors import SceneError
from .limits import DEFAULT_LIMITS, SceneLimits, limit_error

__all__ = ["load_json"]

_STRUCTURE = re.compile(r'["\[\]{}]')
_STRING_REST = re.compile(r'[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)


def load_json(text: str | bytes, *, limits: SceneLimits | None = None, what: str = "scene") -> Any:
    """Parse ``text`` as JSON within ``limits`` (default :data:`DEFAULT_LIMITS`).

    Args:
        text: the JSON text (bytes are read as UTF-8).
        limits: ``max_json_chars``, ``max_json_depth`` and ``max_number_digits`` apply.
        what: what the text is, for messages (default ``"scene"``).
    """
    limits = limits or DEFAULT_LIMITS
    text = _as_text(text, what)
    if len(text) > limits.max_json_chars:
        raise limit_error(f"{what} has {len(text):,} characters", "max_json_chars", limits)
    _check_depth(text, limits, what)
    try:
        return json.loads(text, parse_int=_int_hook(text, limits, what), parse_float=_float_hook(text, limits, what),
                          parse_constant=_constant_hook(text, what))
    except json.JSONDecodeError as error:
        raise SceneError(f"{what} is not valid JSON: {error}") from error
    except RecursionError as error:  # the depth scan makes this unreachable; kept as a backstop
        raise limit_error(f"{what} nests too deeply to read", "max_json_depth", limits) from error


def _as_text(text: Any, what: str) -> str:
    if isinstance(text, (bytes, bytearray)):
        try:
            return bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise SceneError(f"{what} is not UTF-8 text: {error}") from error
    if not isinstance(text, str):
        raise SceneError(f"{what} must be JSON text (str or bytes), got {type(text).__name__}")
    return text


def _where(text: str, index: int) -> str:
    """``"line L column C"`` of ``text[index]`` (both 1-based)."""
    line = text.count("\n", 0, index) + 1
    return f"line {line} column {index - text.rfind(chr(10), 0, index)}"


def _check_depth(text: str, limits: SceneLimits, what: str) -> None:
    """Refuse nesting deeper than ``limits.max_json_depth``; strings are skipped, not looked into."""
    depth, pos = 0, 0
    while (match := _STRUCTURE.search(text, pos)) is not None:
        char, pos = match.group(), match.end()
        if char == '"':
            rest = _STRING_REST.match(text, pos)
            if rest is None:  # an unterminated string: json.loads says where
                return
            pos = rest.end()
        elif char in "[{":
            depth += 1
            if depth > limits.max_json_depth:
                raise limit_error(f"{what} nests {depth} levels deep at {_where(text, match.start())}",
                                  "max_json_depth", limits)
        else:
            depth = max(0, depth - 1)


def _check_digits(literal: str, text: str, limits: SceneLimits, what: str) -> None:
    if len(literal) <= limits.max_number_digits:
        return
    digits = sum(map(str.isdigit, literal))
    if digits > limits.max_number_digits:
        raise limit_error(f"the number {_shown(literal)} near {_where(text, max(0, text.find(literal)))} of the {what} "
                          f"has {digits:,} digits", "max_number_digits", limits)


def _shown(literal: str) -> str:
    return literal if len(literal) <= 16 else f"{literal[:12]}..."


def _int_hook(text: str, limits: SceneLimits, what: str) -> Callable[[str], int]:
    def parse_int(literal: str) -> int:
        _check_digits(literal, text, limits, what)
        try:
            return int(literal)
        except ValueError as error:  # past Python's own digit limit (sys.set_int_max_str_digits)
            raise SceneError(f"the number {_shown(literal)} near {_where(text, max(0, text.find(literal)))} of the "
                             f"{what} has more digits than Python converts: {error}") from error
    return parse_int


def _float_hook(text: str, limits: SceneLimits, what: str) -> Callable[[str], float]:
    def parse_float(literal: str) -> float:
        _check_digits(literal, text, limits, what)
        value = float(literal)
        if not math.isfinite(value):
            at = _where(text, max(0, text.find(literal)))
            raise SceneError(f"the number {_shown(literal)} near {at} of the {what} is too large for a float "
                             "(numbers must be finite)")
        return value
    return parse_float


def _constant_hook(text: str, what: str) -> Callable[[str], Any]:
    def parse_constant(name: str) -> Any:
        raise SceneError(f"{name} near {_where(text, max(0, text.find(name)))} of the {what} is not allowed "
                         "(numbers must be finite; JSON has no NaN or Infinity)")
    return parse_constant
