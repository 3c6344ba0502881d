"""What a generation method returns, and the shared argument checks and seeding of every method."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Any

from ..scene import Scene

__all__ = ["GenerationResult", "resolve_seed", "check_common_settings", "MAX_SEED", "MAX_STEPS", "MAX_IMAGES"]

MAX_SEED = 2**32 - 1
#: Every SD/SDXL scheduler is trained on 1000 timesteps: more steps only repeat them.
MAX_STEPS = 1000
#: Images one call denoises as one batch (memory grows with it); more: call again with another seed.
MAX_IMAGES = 64


@dataclass
class GenerationResult:
    """Images of one call, with everything needed to reproduce them.

    Attributes:
        images: PIL images (or arrays/tensors for other ``output_type``s), one per requested image.
        seed: the seed actually used; drawn at random when the caller passed ``None``.
        scene: the scene that was generated.
        method: the method's name, e.g. ``"regional"``.
        settings: the method's knobs as used (steps, guidance, ...), JSON-serialisable.
        seeds: the seed of each image (``seed + i``): a 1-image call with ``seeds[i]`` gives image ``i``.
    """

    images: list[Any]
    seed: int
    scene: Scene
    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)

    def image_settings(self, index: int) -> dict[str, Any]:
        """The settings that regenerate image ``index`` alone: its own seed, one image."""
        return self.settings | {"seed": self.seeds[index] if self.seeds else self.seed, "num_images": 1}


def resolve_seed(seed: int | None, num_images: int = 1) -> int:
    """``seed``, or one drawn at random that leaves room for ``seed + num_images - 1``."""
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 2 - num_images)
    return seed


def check_common_settings(num_inference_steps: int, guidance_scale: float, num_images: int, seed: int | None) -> None:
    """Reject knobs every method shares with a sentence naming the argument and the value seen."""
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
    if num_inference_steps > MAX_STEPS:
        raise ValueError(f"num_inference_steps is {num_inference_steps:,}, more than the {MAX_STEPS} the scheduler has "
                         "(its 1000 training timesteps; more steps only repeat them, and 20-50 are usual)")
    if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be an integer >= 1, got {num_images!r}")
    if num_images > MAX_IMAGES:
        raise ValueError(f"num_images is {num_images:,}, more than the {MAX_IMAGES} one call denoises as one batch "
                         "(MAX_IMAGES); for more, call again with another seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise ValueError(f"seed must be None or an integer in [0, {MAX_SEED}], got {seed!r}")
