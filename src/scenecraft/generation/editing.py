"""Consistent re-rendering of an edited scene: what the edit did not touch stays put.

Two mechanisms, both on the sampling core:

- **Masked latent blending** (every method whose picture's loop runs on ``sample``: regional, layout,
  layout+, multidiffusion; see ``Method.blending``): after each step the latents outside the edit mask
  are replaced by the original's at that step's noise level, as diffusers' inpainting pipelines do for
  4-channel UNets. The original is an image (VAE-encoded: any picture, not only scenecraft's), its
  clean latents, or an :class:`EditableResult`, whose recorded trajectory is used where it fits (same seed,
  steps and scheduler): then a re-render of the same scene is the original bit for bit.
- **LMD's per-box generations reused**: with ``layout`` / ``layout+`` a :class:`~.layout.BoxCache`
  hands unchanged boxes (same prompt, box and per-box seed) their earlier per-box latents; only
  changed boxes run again. :func:`render_scene` starts one; edits of its result take it along.

The edit mask is a ``(height, width)`` array in [0, 1] at the picture's size, 1 where pixels may
change (for a removal: the old box; for a move: the old and the new box).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..scene import Scene
from .latents import latent_size
from .layout import BoxCache
from .methods import METHODS, Method, get_method
from .result import GenerationResult
from .sampling import ProgressCallback, SamplingConfig, encode_latents, pipeline_family, step_hooks

__all__ = ["EditableResult", "render_scene", "render_edit", "check_edit_mask", "latent_edit_mask", "boxes_mask",
           "encode_image", "pixel_change", "BLEND_FAMILIES", "MAX_MASK_GROWTH"]

#: Pipeline families whose latents are a grid of the picture (the mask is downsampled onto it).
BLEND_FAMILIES = ("sd", "sdxl", "sd-gligen")
#: The most latent cells ``dilate`` and ``feather`` may each take.
MAX_MASK_GROWTH = 16


@dataclass
class EditableResult(GenerationResult):
    """A :class:`GenerationResult` that later edits can build on.

    Attributes:
        latents: the picture's final ``(1, C, h, w)`` latents.
        trajectory: ``(steps + 1, 1, C, h, w)``: the picture's initial noise, then its latents after every
            step (after the method's hooks and the blending): what an edit blends with to stay exact.
        box_cache: LMD's per-box generations (``layout`` / ``layout+``), else ``None``.
        box_hits, box_misses: boxes this call took from ``box_cache`` / ran again.
        edit: the blending knobs used (``{}`` for :func:`render_scene`).
    """

    latents: torch.Tensor | None = None
    trajectory: torch.Tensor | None = None
    box_cache: BoxCache | None = None
    box_hits: int = 0
    box_misses: int = 0
    edit: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- masks
def check_edit_mask(mask: Any, height: int, width: int) -> np.ndarray:
    """``mask`` as a float32 ``(height, width)`` array, or a ValueError naming what is wrong."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"edit_mask must be a numpy array of shape ({height}, {width}), got {type(mask).__name__}")
    if mask.shape != (height, width):
        raise ValueError(f"edit_mask must have the picture's shape (height, width) = ({height}, {width}), "
                         f"got {mask.shape}")
    if mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating):
        values = mask.astype(np.float32)
    else:
        raise ValueError(f"edit_mask must hold numbers in [0, 1] (bool, int or float), got dtype {mask.dtype}")
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise ValueError(f"edit_mask must be finite; it holds {bad} NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        raise ValueError(f"edit_mask values must lie in [0, 1] (1 where pixels may change), "
                         f"got min {low:g}, max {high:g}")
    return values


def boxes_mask(boxes, height: int, width: int) -> np.ndarray:
    """A ``(height, width)`` mask, 1 on every pixel any of ``boxes`` (``[x0, y0, x1, y1]`` in fractions) touches."""
    mask = np.zeros((height, width), dtype=np.float32)
    for x0, y0, x1, y1 in boxes:
        rows = slice(max(math.floor(y0 * height), 0), min(math.ceil(y1 * height), height))
        cols = slice(max(math.floor(x0 * width), 0), min(math.ceil(x1 * width), width))
        mask[rows, cols] = 1
    return mask


def latent_edit_mask(mask: np.ndarray, factor: int, *, dilate: int = 1, feather: int = 0) -> torch.Tensor:
    """The pixel mask on the latent grid, ``(1, 1, height / factor, width / factor)``, 1 where latents may change.

    A latent cell may change where any of its ``factor x factor`` pixels may (so the mask never shrinks);
    it then grows by ``dilate`` cells (room for the decoder's reach and for an object a little larger
    than its box) and, with ``feather`` f > 0, its outer f cells ramp from ``1 / (f + 1)`` up to 1 (a
    softer seam; cells outside stay exactly 0).
    """
    cells = (F.max_pool2d(torch.from_numpy(mask)[None, None], factor) > 0).float()
    if dilate:
        cells = F.max_pool2d(cells, 2 * dilate + 1, stride=1, padding=dilate)
    if not feather:
        return cells
    eroded = [1 - F.max_pool2d(1 - cells, 2 * k + 1, stride=1, padding=k) for k in range(1, feather + 1)]
    return torch.stack([cells, *eroded]).mean(dim=0)


def _check_growth(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MASK_GROWTH:
        raise ValueError(f"{name} must be a whole number of latent cells in [0, {MAX_MASK_GROWTH}], got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------- the original
def encode_image(pipe, image, height: int, width: int) -> torch.Tensor:
    """A PIL image (or ``(H, W, 3)`` uint8 array) of the picture's size to its clean latents (deterministic)."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"an original given as an array must be (height, width, 3) uint8, "
                             f"got {image.shape} {image.dtype}")
        image = Image.fromarray(image)
    if image.size != (width, height):
        raise ValueError(f"the original image is {image.size[0]}x{image.size[1]}, the scene {width}x{height}; "
                         "give an image of the scene's size (or set the scene's width and height to the image's)")
    pixels = pipe.image_processor.preprocess(image.convert("RGB"), height=height, width=width)
    return encode_latents(pipe, pixels).to(pipe.unet.dtype)


@dataclass
class _Source:
    """What the outside of the mask is blended with: clean latents, or a recorded trajectory."""

    clean: torch.Tensor  # (1, C, h, w)
    trajectory: torch.Tensor | None = None  # (steps + 1, 1, C, h, w)
    pixels: np.ndarray | None = None  # (H, W, 3) float in [0, 1]: the original's pixels, for pasting

    def at(self, scheduler, index: int, noise: torch.Tensor) -> torch.Tensor:
        """The original at the noise level the latents have after step ``index``."""
        if self.trajectory is not None:
            return self.trajectory[index + 1]
        timesteps = scheduler.timesteps
        if index + 1 >= len(timesteps):
            return self.clean
        return scheduler.add_noise(self.clean, noise, timesteps[index + 1:index + 2])


def _source(pipe, original: Any, scene: Scene, config: SamplingConfig) -> _Source:
    from PIL import Image

    shape = (1, pipe.unet.config.in_channels, *latent_size(scene.height, scene.width, pipe.vae_scale_factor))
    if isinstance(original, EditableResult):
        return _result_source(pipe, original, scene, config, shape)
    if isinstance(original, (Image.Image, np.ndarray)):
        clean = encode_image(pipe, original, scene.height, scene.width)
        return _Source(clean, pixels=_pixels(original))
    if isinstance(original, torch.Tensor):
        latents = original[None] if original.dim() == 3 else original
        if tuple(latents.shape) != shape:
            raise ValueError(f"original latents must have shape {shape} (this pipeline's latents of a "
                             f"{scene.width}x{scene.height} picture), got {tuple(original.shape)}")
        if not torch.isfinite(latents).all():
            raise ValueError("original latents must be finite; they hold NaN or infinite values")
        return _Source(latents.to(device=pipe._execution_device, dtype=pipe.unet.dtype))
    raise TypeError(f"original must be a PIL image, a uint8 array, latents (a torch tensor) or an EditableResult, "
                    f"got {type(original).__name__}")


def _result_source(pipe, original: EditableResult, scene: Scene, config: SamplingConfig, shape: tuple) -> _Source:
    """An earlier result: its trajectory where it was drawn with this seed, step count and scheduler."""
    if original.latents is None or tuple(original.latents.shape) != shape:
        got = None if original.latents is None else tuple(original.latents.shape)
        raise ValueError(f"the original result's latents must have shape {shape} (a {scene.width}x{scene.height} "
                         f"picture of this pipeline), got {got}")
    trajectory = original.trajectory
    fits = (trajectory is not None and original.seed == config.seed
            and len(trajectory) == config.num_inference_steps + 1
            and original.settings.get("scheduler") == type(pipe.scheduler).__name__)
    image = original.images[0] if original.images else None
    return _Source(original.latents, trajectory if fits else None, _pixels(image))


def _pixels(image: Any) -> np.ndarray | None:
    """An image as ``(H, W, 3)`` float in [0, 1]; ``None`` for what is not one (latents, tensors)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3:
        return image.astype(np.float64) / 255 if image.dtype == np.uint8 else image.astype(np.float64)
    return None


# ----------------------------------------------------------------------------------------------- hooks
class _LatentBlend:
    """``after_step``: outside the mask, the original at this step's noise level (for the first ``steps`` steps)."""

    def __init__(self, scheduler, source: _Source, mask: torch.Tensor, steps: int) -> None:
        self.scheduler, self.source, self.mask, self.steps = scheduler, source, mask, steps
        self.noise: torch.Tensor | None = None

    def before_step(self, index: int, t: torch.Tensor, latents: torch.Tensor) -> None:
        if index == 0:  # the run's own noise: what the original is noised with
            self.noise = latents / self.scheduler.init_noise_sigma

    def after_step(self, index: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor | None:
        if index >= self.steps:
            return None
        target = self.source.at(self.scheduler, index, self.noise).to(latents.dtype)
        # lerp is exact at 0 and 1: where the mask is 0 the latents are the original's, bit for bit
        return torch.lerp(target, latents, self.mask.to(device=latents.device, dtype=latents.dtype))


class _Trajectory:
    """Records the picture's initial noise and its latents after every step (the last image pass's)."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def before_step(self, index: int, t: torch.Tensor, latents: torch.Tensor) -> None:
        if index == 0:
            self.steps = [latents.detach().clone()]

    def after_step(self, index: int, t: torch.Tensor, latents: torch.Tensor) -> None:
        self.steps.append(latents.detach().clone())


# ----------------------------------------------------------------------------------------------- rendering
def _blending_method(pipe, method: str) -> Method:
    """The registered ``method``, if masked latent blending reaches it on ``pipe``; else a clear error."""
    chosen = get_method(method)
    if not chosen.blending:
        takers = ", ".join(name for name, other in METHODS.items() if other.blending)
        raise ValueError(f"method {method} cannot keep the pixels outside an edit mask (its denoising loop takes no "
                         f"step hooks); methods that can: {takers}")
    family = pipeline_family(pipe)
    if family not in chosen.families:
        raise ValueError(f"method {method} runs on {', '.join(chosen.families)} pipelines; this one is {family}")
    if family not in BLEND_FAMILIES:
        raise ValueError(f"editing (masked latent blending) runs on SD 1.x/2.x and SDXL pipelines "
                         f"({', '.join(BLEND_FAMILIES)}), whose latents are a grid of the picture; "
                         f"this one is {family}")
    return chosen


def _one_image_config(chosen: Method, config: SamplingConfig | None, seed: int) -> SamplingConfig:
    config = config if config is not None else chosen.config()
    if not isinstance(config, chosen.config):
        raise TypeError(f"method {chosen.name!r} takes a {chosen.config.__name__}, got {type(config).__name__}")
    if config.num_images != 1:
        raise ValueError(f"an edit renders one picture (the original is one); num_images must be 1, "
                         f"got {config.num_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be a whole number (the original's seed, so the picture re-renders), got {seed!r}")
    config = dataclasses.replace(config, seed=seed)
    config.check()
    return config


def _takes_box_cache(chosen: Method) -> bool:
    return "box_cache" in inspect.signature(chosen.run).parameters


def _render(pipe, scene: Scene, config: SamplingConfig, chosen: Method, box_cache: BoxCache | None,
            blend: _LatentBlend | None, on_step: ProgressCallback | None) -> EditableResult:
    trajectory = _Trajectory()
    before = box_cache.counts() if box_cache is not None else (0, 0)
    kwargs = {"box_cache": box_cache} if box_cache is not None else {}
    with ExitStack() as stack:
        if blend is not None:
            stack.enter_context(step_hooks(before_step=blend.before_step, after_step=blend.after_step))
        stack.enter_context(step_hooks(before_step=trajectory.before_step, after_step=trajectory.after_step))
        result = chosen.run(pipe, scene, config, on_step=on_step, **kwargs)
    after = box_cache.counts() if box_cache is not None else (0, 0)
    stacked = torch.stack(trajectory.steps)
    return EditableResult(images=result.images, seed=result.seed, scene=result.scene, method=result.method,
                          settings=result.settings, seeds=result.seeds, latents=stacked[-1], trajectory=stacked,
                          box_cache=box_cache, box_hits=after[0] - before[0], box_misses=after[1] - before[1])


def render_scene(pipe, scene: Scene, config: SamplingConfig | None = None, *, method: str = "regional", seed: int,
                 box_cache: BoxCache | None = None, on_step: ProgressCallback | None = None) -> EditableResult:
    """Render ``scene`` as :func:`~scenecraft.generation.methods.generate` does (the same pixels, bit for bit),
    recording what later edits need: the final latents, the trajectory and, for ``layout`` / ``layout+``,
    the per-box generations (in ``box_cache``, a new :class:`BoxCache` when ``None``).

    ``config``: ``method``'s config class (default: its defaults), ``num_images`` 1; ``seed`` overrides its seed.
    """
    chosen = _blending_method(pipe, method)
    config = _one_image_config(chosen, config, seed)
    if box_cache is None and _takes_box_cache(chosen):
        box_cache = BoxCache()
    return _render(pipe, scene, config, chosen, box_cache, None, on_step)


def render_edit(
    pipe,
    new_scene: Scene,
    config: SamplingConfig | None = None,
    *,
    method: str = "regional",
    original: Any,
    edit_mask: np.ndarray,
    seed: int,
    keep_outside: bool = True,
    blend_until: float = 1.0,
    dilate: int = 1,
    feather: int = 0,
    paste: bool | None = None,
    box_cache: BoxCache | None = None,
    on_step: ProgressCallback | None = None,
) -> EditableResult:
    """Re-render ``new_scene`` with the original's seed, keeping what lies outside ``edit_mask``.

    Args:
        pipe: an SD 1.x/2.x or SDXL pipeline (GLIGEN ones for ``layout+``).
        new_scene: the edited scene. A removed object is simply absent (its box gets the background).
        config: ``method``'s config class (default: its defaults), ``num_images`` 1; ``seed`` overrides its seed.
        method: a registered method whose ``blending`` is set: regional, layout, layout+, multidiffusion.
        original: the picture before the edit: a PIL image or ``(H, W, 3)`` uint8 array (VAE-encoded, so any
            picture of the scene's size), its clean ``(1, C, h, w)`` latents, or an :class:`EditableResult`
            (from :func:`render_scene` or an earlier edit), whose trajectory is blended with when it was drawn
            with ``seed``, the same step count and scheduler (then re-rendering an unchanged scene, or undoing
            an edit by re-rendering the old scene over the edit's result with a hard mask, gives the
            original bit for bit), and whose ``box_cache`` is taken along.
        edit_mask: ``(height, width)`` floats in [0, 1] at the picture's size, 1 where pixels may change.
        seed: the original's seed.
        keep_outside: blend the latents outside the mask with the original's (default ``True``); ``False``
            only re-renders with the same seed (and, for LMD, the reused boxes).
        blend_until: share of the steps, from the first, that blend (default 1.0: all, so the outside ends
            as the original's clean latents); less lets the last steps smooth the seam, and the outside drift.
        dilate: latent cells the mask grows by on the latent grid (default 1; see :func:`latent_edit_mask`).
        feather: latent cells of a soft ramp at the mask's border (default 0: a hard mask, which keeps
            edit-then-undo exact).
        paste: after decoding, lay the original's pixels over the outside of ``edit_mask`` (``1 - mask`` as
            the weight: exact where the mask is 0). ``None`` (default): when ``keep_outside`` and the original's
            pixels are known (an image, or a result whose images are pictures). The blending alone keeps the
            latents outside bit for bit, but a VAE decoder's mid-block attention spreads a change inside over
            the whole picture (and a foreign image's VAE round trip blurs it); pasting removes both.
        box_cache: LMD's per-box generations to reuse (default: ``original``'s, if it is a result).
        on_step: called as ``on_step(done, total)`` after every denoising step.
    """
    chosen = _blending_method(pipe, method)
    config = _one_image_config(chosen, config, seed)
    mask = check_edit_mask(edit_mask, new_scene.height, new_scene.width)
    knobs = _blend_knobs(keep_outside, blend_until, dilate, feather)
    source = _source(pipe, original, new_scene, config)
    paste = _resolve_paste(paste, keep_outside, source, config)
    blend = None
    if keep_outside:
        cells = latent_edit_mask(mask, pipe.vae_scale_factor, dilate=dilate, feather=feather)
        blend = _LatentBlend(pipe.scheduler, source, cells, round(blend_until * config.num_inference_steps))
    if box_cache is None and isinstance(original, EditableResult):
        box_cache = original.box_cache
    if box_cache is None and _takes_box_cache(chosen):
        box_cache = BoxCache()
    result = _render(pipe, new_scene, config, chosen, box_cache, blend, on_step)
    if paste:
        result.images = [_paste(result.images[0], source.pixels, mask)]
    result.edit = knobs | {"paste": paste, "trajectory": source.trajectory is not None}
    return result


def _blend_knobs(keep_outside: Any, blend_until: Any, dilate: Any, feather: Any) -> dict[str, Any]:
    if not isinstance(keep_outside, bool):
        raise ValueError(f"keep_outside must be true or false, got {keep_outside!r}")
    if isinstance(blend_until, bool) or not isinstance(blend_until, (int, float)) or not 0 <= blend_until <= 1:
        raise ValueError(f"blend_until must be a share of the steps in [0, 1], got {blend_until!r}")
    return {"keep_outside": keep_outside, "blend_until": float(blend_until), "dilate": _check_growth("dilate", dilate),
            "feather": _check_growth("feather", feather)}


def _resolve_paste(paste: bool | None, keep_outside: bool, source: _Source, config: SamplingConfig) -> bool:
    if paste is None:
        paste = bool(keep_outside) and source.pixels is not None
    if not isinstance(paste, bool):
        raise ValueError(f"paste must be true, false or None, got {paste!r}")
    if paste and source.pixels is None:
        raise ValueError("paste needs the original's pixels: give the original as an image (or a result with images)")
    if paste and config.output_type not in ("pil", "np"):
        raise ValueError(f"paste works on pictures (output_type pil or np), got output_type {config.output_type!r}")
    return paste


def _paste(image: Any, pixels: np.ndarray, mask: np.ndarray):
    """``image`` with the original ``pixels`` laid over it, weighted ``1 - mask`` (exact where the mask is 0)."""
    from PIL import Image

    weight = mask[..., None].astype(np.float64)
    if isinstance(image, Image.Image):
        new = np.asarray(image.convert("RGB"), dtype=np.float64) / 255
        mixed = pixels * (1 - weight) + new * weight
        return Image.fromarray((mixed * 255).round().astype(np.uint8))
    return (pixels * (1 - weight) + np.asarray(image, dtype=np.float64) * weight).astype(image.dtype)


def pixel_change(before: Any, after: Any, mask: np.ndarray) -> dict[str, float]:
    """Mean and max absolute change of the colour values (0-255 units) where ``mask`` is 0 (``outside_*``), and
    the mean where it is > 0 (``inside_mean``)."""
    a, b = (_pixels(image) for image in (before, after))
    if a is None or b is None or a.shape != b.shape or a.shape[:2] != mask.shape:
        raise ValueError("pixel_change takes two pictures of the mask's size (PIL images or (H, W, 3) arrays)")
    change = np.abs(a - b) * 255
    outside, inside = change[mask == 0], change[mask > 0]
    return {"outside_mean": float(outside.mean()) if outside.size else 0.0,
            "outside_max": float(outside.max()) if outside.size else 0.0,
            "inside_mean": float(inside.mean()) if inside.size else 0.0}
