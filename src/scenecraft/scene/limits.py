"""Limits on what a scene may ask for, checked at the door (``Scene``, ``Scene.from_json``, ``parse_split``).

Every limit is a field of :class:`SceneLimits`; pass your own to raise one, e.g.
``Scene.from_json(text, limits=SceneLimits(max_side=32768))``. ``None`` anywhere means the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .errors import SceneError

__all__ = ["DEFAULT_LIMITS", "SceneLimits", "limit_error", "raise_hint"]


@dataclass(frozen=True)
class SceneLimits:
    """Bounds on a scene's size and on the JSON it is read from.

    Attributes:
        max_json_chars: longest scene JSON text, in characters (default 5,000,000).
        max_json_depth: deepest nesting of JSON arrays/objects (default 64; a scene needs 4).
        max_number_digits: most digits in one number, in JSON or in a split ratio (default 100).
        max_side: largest ``width`` or ``height``, in pixels (default 16384).
        max_pixels: largest ``width * height`` (default 67,108,864 = 64 Mpx, e.g. 8192 x 8192).
        max_regions: most regions in a scene, and cells in a split ratio (default 256).
        max_prompt_chars: longest prompt, negative prompt, region prompt or note, in characters
            (default 10,000; CLIP reads 77 tokens per chunk, so this is far past what conditions).
        max_notes: most planner notes (default 64).
        max_mask_pixels: largest ``width * height`` of one region mask (default 67,108,864 = 64 Mpx;
            a mask is rasterised as float64, 8 bytes a pixel).
        max_loras_per_region: most LoRA adapters one region names (default 8).
    """

    max_json_chars: int = 5_000_000
    max_json_depth: int = 64
    max_number_digits: int = 100
    max_side: int = 16384
    max_pixels: int = 64 * 1024 * 1024
    max_regions: int = 256
    max_prompt_chars: int = 10_000
    max_notes: int = 64
    max_mask_pixels: int = 64 * 1024 * 1024
    max_loras_per_region: int = 8

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SceneError(f"SceneLimits.{item.name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = SceneLimits()


def limit_error(what: str, knob: str, limits: SceneLimits, unit: str = "") -> SceneError:
    """``what`` (e.g. ``"width is 100000"``) exceeds ``limits.<knob>``: a sentence that says how to raise it."""
    return SceneError(f"{what}, more than the {getattr(limits, knob):,}{unit} allowed {raise_hint(knob)}")


def raise_hint(knob: str) -> str:
    """``"(SceneLimits.<knob>; pass limits=SceneLimits(<knob>=...) to raise it)"``."""
    return f"(SceneLimits.{knob}; pass limits=SceneLimits({knob}=...) to raise it)"
