"""The scene layer's error: every bad scene, split ratio or scene JSON raises a :class:`SceneError`."""

from __future__ import annotations

import reprlib

__all__ = ["SceneError", "shown"]


class SceneError(ValueError):
    """A scene that is not valid; the message names the field, the value seen and what is allowed."""


class _ShortRepr(reprlib.Repr):
    """``reprlib`` that never converts a huge integer to text (Python refuses past 4300 digits)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 200:  # about 60 digits
            return f"<an integer of about {int(x.bit_length() * 0.30103):,} digits>"
        return repr(x)

    def repr_instance(self, x: object, level: int) -> str:
        try:
            return super().repr_instance(x, level)
        except Exception:  # an object whose repr fails: name its type only
            return f"<{type(x).__name__}>"


_SHORT = _ShortRepr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 8
_SHORT.maxlevel = 3


def shown(value: object) -> str:
    """A short ``repr`` of ``value`` for an error message: long texts, lists and integers are elided."""
    return _SHORT.repr(value)
