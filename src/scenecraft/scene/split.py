"""RPG's split-ratio grammar, both ways.

Semantics (exactly RPG's / Regional Prompter's):

* without ``;`` the string is one row of columns: ``"1,2,1"`` is three columns whose widths are
  in the ratio 1:2:1;
* with ``;`` every group is a row; its FIRST number is the row's height and the remaining
  numbers are its column widths: ``"1,1;2,1,1"`` is a top row of height 1 holding one column and
  a bottom row of height 2 holding two columns (3 regions), and ``"1,1,1;1,1,1"`` is 4 regions.
  A group with a single number is one full-width column.

Regions are numbered row by row, left to right, which is the order of RPG's ``BREAK`` prompts.

Every ratio is a plain decimal number (ASCII digits with an optional point; no sign, no exponent)
greater than zero, with at most ``SceneLimits.max_number_digits`` digits (default 100), and a
split has at most ``SceneLimits.max_regions`` cells (default 256). :func:`format_split` writes
plain decimals only (``0.00001``, never ``1e-05``), so ``parse_split(format_split(s)) == s`` for
every split that :func:`parse_split` returns.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .errors import SceneError
from .limits import DEFAULT_LIMITS, SceneLimits, raise_hint

__all__ = ["SplitRatio", "SplitRatioError", "parse_split", "format_split"]

_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*")
_SHOWN = 80  # characters of a long split shown around the error's position


class SplitRatioError(SceneError):
    """A split-ratio string that does not follow the grammar (a :class:`SceneError`).

    ``position`` is the 0-based index of the offending character in ``text``.
    """

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.text = text
        self.position = position
        self.reason = reason
        shown, caret_at = _window(text, position)
        super().__init__(f"invalid split ratio {_short_repr(text)}: {reason} at character {position}\n"
                         f"  {shown}\n  {' ' * caret_at}^")


def _window(text: str, position: int) -> tuple[str, int]:
    """At most ``_SHOWN`` characters of ``text`` around ``position``, and the caret's place in them."""
    if len(text) <= _SHOWN:
        return text, position
    start = min(max(0, position - _SHOWN // 2), len(text) - _SHOWN)
    return text[start:start + _SHOWN], position - start


def _short_repr(text: str) -> str:
    return repr(text) if len(text) <= _SHOWN else f"{text[:_SHOWN // 2]!r}... ({len(text):,} characters)"


def _positive_finite(value: Any) -> bool:
    """Whether ``value`` is a real number (not a bool), finite and greater than zero."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and number > 0


def _finite_sum(values: tuple[float, ...]) -> bool:
    try:
        return math.isfinite(float(sum(values)))
    except OverflowError:
        return False


@dataclass(frozen=True)
class SplitRatio:
    """A parsed split: one ``(row_height, column_widths)`` pair per row, ratios unnormalised.

    Every height and width must be a finite number greater than zero, and their sums finite
    (else :class:`SceneError`).
    """

    rows: tuple[tuple[float, tuple[float, ...]], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.rows, tuple) or not self.rows:
            raise SceneError(f"a split needs a non-empty tuple of rows, got {self.rows!r}"[:300])
        for row in self.rows:
            if not isinstance(row, tuple) or len(row) != 2 or not isinstance(row[1], tuple) or not row[1]:
                raise SceneError(f"a split row must be (height, (width, ...)), got {row!r}"[:300])
            if not all(_positive_finite(v) for v in (row[0], *row[1])) or not _finite_sum(row[1]):
                raise SceneError(f"split ratios must be finite numbers greater than zero, got {row!r}"[:300])
        if not _finite_sum(tuple(height for height, _ in self.rows)):
            raise SceneError("the split's row heights add up to more than a float holds")

    @property
    def num_regions(self) -> int:
        return sum(len(columns) for _, columns in self.rows)

    def cells(self) -> list[tuple[float, float, float, float]]:
        """Each region's rectangle ``(x0, y0, x1, y1)`` as fractions of the canvas, row-major."""
        total_height = sum(height for height, _ in self.rows)
        rects = []
        y = 0.0
        for height, columns in self.rows:
            y_next = y + height / total_height
            total_width = sum(columns)
            x = 0.0
            for width in columns:
                x_next = x + width / total_width
                rects.append((x, y, x_next, y_next))
                x = x_next
            y = y_next
        # Remove accumulated rounding so that the grid tiles [0, 1] exactly.
        return [(x0, y0, 1.0 if abs(x1 - 1) < 1e-9 else x1, 1.0 if abs(y1 - 1) < 1e-9 else y1) for x0, y0, x1, y1 in rects]


def _shown(literal: str) -> str:
    return literal if len(literal) <= 20 else f"{literal[:16]}..."


def _digits(literal: str) -> int:
    return sum(map(str.isdigit, literal))


def _read_ratio(text: str, literal: str, position: int, limits: SceneLimits) -> float:
    """One ratio: at most ``limits.max_number_digits`` digits, finite, greater than zero, and
    written back by :func:`format_split` within the same number of digits."""
    most = limits.max_number_digits
    digits = _digits(literal)
    if digits > most:
        raise SplitRatioError(text, position, f"a ratio of {digits:,} digits is more than the {most} allowed "
                              f"{raise_hint('max_number_digits')}")
    value = float(literal)
    if value <= 0:
        reason = "ratios must be greater than zero"
        raise SplitRatioError(text, position, reason if not literal.strip("0.") else f"{reason} ({literal} reads as 0)")
    if not math.isfinite(value):
        raise SplitRatioError(text, position, f"ratio {_shown(literal)} is too large for a float")
    written = _digits(_format_number(value))
    if written > most:
        raise SplitRatioError(text, position, f"ratio {_shown(literal)} rounds to a float that takes {written} digits "
                              f"to write, more than the {most} allowed {raise_hint('max_number_digits')}")
    return value


def _parse_numbers(text: str, start: int, end: int, limits: SceneLimits) -> list[tuple[float, int]]:
    """Parse ``text[start:end]`` as comma-separated positive numbers; return (value, position)."""
    values = []
    pos = start
    while True:
        match = _NUMBER.match(text, pos, end)
        if match is None:
            bad = pos
            while bad < end and text[bad].isspace():
                bad += 1
            what = repr(text[bad]) if bad < end else "end of group"
            raise SplitRatioError(text, bad, f"expected a number, found {what}")
        values.append((_read_ratio(text, match.group(1), match.start(1), limits), match.start(1)))
        pos = match.end()
        if pos == end:
            return values
        if text[pos] != ",":
            raise SplitRatioError(text, pos, f"expected ',' or ';', found {text[pos]!r}")
        pos += 1


def parse_split(text: str, *, limits: SceneLimits | None = None) -> SplitRatio:
    """Parse an RPG split ratio such as ``"1,1;2,1,1"``. Raises :class:`SplitRatioError`.

    Args:
        text: the split ratio.
        limits: ``max_number_digits`` (digits per ratio) and ``max_regions`` (cells) apply;
            ``None`` means :data:`~scenecraft.scene.limits.DEFAULT_LIMITS`.
    """
    limits = limits or DEFAULT_LIMITS
    if not isinstance(text, str):
        raise TypeError(f"split ratio must be a string, got {type(text).__name__}")
    if not text.strip():
        raise SplitRatioError(text, 0, "the split ratio is empty")
    if ";" not in text:
        numbers = _parse_numbers(text, 0, len(text), limits)
        _check_cells(text, [numbers], limits)
        return _split_ratio(text, ((1.0, tuple(value for value, _ in numbers)),))
    groups = []
    start = 0
    for end in [m.start() for m in re.finditer(";", text)] + [len(text)]:
        groups.append(_parse_numbers(text, start, end, limits))
        start = end + 1
    _check_cells(text, [group[1:] or group[:1] for group in groups], limits)
    rows = tuple((group[0][0], tuple(value for value, _ in group[1:]) or (1.0,)) for group in groups)
    return _split_ratio(text, rows)


def _check_cells(text: str, cells_by_row: list[list[tuple[float, int]]], limits: SceneLimits) -> None:
    """Refuse more than ``limits.max_regions`` cells, pointing at the first cell too many."""
    cells = [position for row in cells_by_row for _, position in row]
    if len(cells) > limits.max_regions:
        raise SplitRatioError(text, cells[limits.max_regions], f"{len(cells):,} regions are more than the "
                              f"{limits.max_regions} allowed {raise_hint('max_regions')}")


def _split_ratio(text: str, rows: tuple[tuple[float, tuple[float, ...]], ...]) -> SplitRatio:
    try:
        return SplitRatio(rows=rows)
    except SceneError as error:  # ratios whose sum overflows (only with raised digit limits)
        raise SplitRatioError(text, 0, str(error)) from error


def _format_number(value: float) -> str:
    """``value`` as a plain decimal (never an exponent) that reads back as the same float."""
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_split(split: SplitRatio) -> str:
    """The canonical string of a split, in plain decimals; ``parse_split(format_split(s)) == s`` for parsed splits."""
    if len(split.rows) == 1:  # a single row's height is irrelevant; RPG writes its columns only
        return ",".join(_format_number(w) for w in split.rows[0][1])
    groups = []
    for height, columns in split.rows:
        groups.append(",".join(_format_number(v) for v in (height, *columns)))
    return ";".join(groups)
