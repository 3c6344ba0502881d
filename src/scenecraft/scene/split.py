"""RPG's split-ratio grammar, both ways.

Semantics (exactly RPG's / Regional Prompter's):

* without ``;`` the string is one row of columns: ``"1,2,1"`` is three columns whose widths are
  in the ratio 1:2:1;
* with ``;`` every group is a row; its FIRST number is the row's height and the remaining
  numbers are its column widths: ``"1,1;2,1,1"`` is a top row of height 1 holding one column and
  a bottom row of height 2 holding two columns (3 regions), and ``"1,1,1;1,1,1"`` is 4 regions.
  A group with a single number is one full-width column.

Regions are numbered row by row, left to right, which is the order of RPG's ``BREAK`` prompts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SplitRatio", "SplitRatioError", "parse_split", "format_split"]

_NUMBER = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*")


class SplitRatioError(ValueError):
    """A split-ratio string that does not follow the grammar.

    ``position`` is the 0-based index of the offending character in ``text``.
    """

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.text = text
        self.position = position
        self.reason = reason
        caret = " " * position + "^"
        super().__init__(f"invalid split ratio {text!r}: {reason} at character {position}\n  {text}\n  {caret}")


@dataclass(frozen=True)
class SplitRatio:
    """A parsed split: one ``(row_height, column_widths)`` pair per row, ratios unnormalised."""

    rows: tuple[tuple[float, tuple[float, ...]], ...]

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


def _parse_numbers(text: str, start: int, end: int) -> list[tuple[float, int]]:
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
        value = float(match.group(1))
        if value <= 0:
            raise SplitRatioError(text, match.start(1), "ratios must be greater than zero")
        values.append((value, match.start(1)))
        pos = match.end()
        if pos == end:
            return values
        if text[pos] != ",":
            raise SplitRatioError(text, pos, f"expected ',' or ';', found {text[pos]!r}")
        pos += 1


def parse_split(text: str) -> SplitRatio:
    """Parse an RPG split ratio such as ``"1,1;2,1,1"``. Raises :class:`SplitRatioError`."""
    if not isinstance(text, str):
        raise TypeError(f"split ratio must be a string, got {type(text).__name__}")
    if not text.strip():
        raise SplitRatioError(text, 0, "the split ratio is empty")
    if ";" not in text:
        columns = tuple(value for value, _ in _parse_numbers(text, 0, len(text)))
        return SplitRatio(rows=((1.0, columns),))
    rows = []
    start = 0
    for end in [m.start() for m in re.finditer(";", text)] + [len(text)]:
        numbers = _parse_numbers(text, start, end)
        height = numbers[0][0]
        columns = tuple(value for value, _ in numbers[1:]) or (1.0,)
        rows.append((height, columns))
        start = end + 1
    return SplitRatio(rows=tuple(rows))


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_split(split: SplitRatio) -> str:
    """The canonical string of a split; ``parse_split(format_split(s)) == s`` for parsed splits."""
    if len(split.rows) == 1:  # a single row's height is irrelevant; RPG writes its columns only
        return ",".join(_format_number(w) for w in split.rows[0][1])
    groups = []
    for height, columns in split.rows:
        groups.append(",".join(_format_number(v) for v in (height, *columns)))
    return ";".join(groups)
