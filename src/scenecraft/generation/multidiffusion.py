"""MultiDiffusion (Bar-Tal et al., "MultiDiffusion: Fusing Diffusion Paths for Controlled Image
Generation", ICML 2023): many diffusion paths fused into one latent every step.

A *path* is a window of the canvas latent seen through one prompt with a per-pixel weight. Every
step each path predicts the noise of its window, the predictions are fused into one canvas
prediction by the per-pixel weighted mean (the paper's closed-form solution), and the scheduler
takes one step on the whole canvas. For the schedulers SD uses, whose step is linear in the latent
and the prediction (DDIM, PNDM, Euler, DPM-Solver, UniPC), this is exactly the paper's fusion of
each path's stepped latent; unlike it, multistep schedulers keep one history and ancestral
samplers add their noise once, at unit variance.

- **Panorama**: a scene without regions; one path per window, weight 1. ``circular`` wraps the
  columns for 360-degree panoramas; ``fast`` replaces the overlapping windows by non-overlapping
  ones shifted at random every step (SpotDiffusion, Frolov et al., arXiv 2407.15507).
- **Mask regions** (``regions="paths"``): one path per window and region (box, cell or mask),
  weighted by the region's mask, plus a background path weighted by ``1 - union``. For the first
  ``bootstrap`` share of the steps each region's outside is replaced by a noised random solid
  colour, so that its object forms inside its mask. A region's LoRA adapters apply on its paths only.
- **High-resolution scenes** (``regions="regional"``): RPG's regional attention inside every window,
  each window seeing its own share of the regions.

A ControlNet image is cropped with the windows. SDXL windows get their own crop time ids.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..scene import Scene
from ..scene.masks import resample_mask
from .attention import RegionalAttnProcessor, SlotLayout
from .control import ControlInput
from .latents import latent_size
from .loading import _LOAD_ERRORS, _reason
from .prompts import PromptEncoder
from .regional import _regional_attention, check_control, slot_coefficients, slot_prompts
from .result import GenerationResult, resolve_seed
from .sampling import (
    ProgressCallback, SamplingConfig, TextConditioning, CFGDenoiser, check_pipeline, decode_latents,
    guidance_embedding, image_generators, latent_mean_std, prepare_latents, prepare_timesteps, sample,
)

__all__ = ["MultiDiffusionConfig", "generate_multidiffusion", "View", "window_views", "circular_views",
           "shifted_views", "fuse_views", "crop_view", "Path", "FusedDenoiser", "fused_denoiser",
           "REGION_MODES"]

REGION_MODES = ("paths", "regional")
#: Most views one UNet call may batch (memory grows with it).
MAX_VIEW_BATCH = 64
#: Weights below this are no path: they cannot move a float16/32 prediction.
_NEGLIGIBLE = 1e-6
#: Solid colours encoded once for bootstrapping; each region draws one per step.
_BOOTSTRAP_COLOURS = 16
#: Latent columns decoded on each side of a circular panorama, so its seam decodes like its middle.
_WRAP_DECODE_COLUMNS = 8


@dataclass
class MultiDiffusionConfig(SamplingConfig):
    """Knobs of MultiDiffusion: :class:`SamplingConfig`'s (steps 30, guidance 7, seed, images, output
    type, tiled decode) and

    Attributes:
        window: a window's side in pixels; ``None`` (default) is the backbone's native size (512 for
            SD 1.x, 768 for SD 2.x, 1024 for SDXL). A multiple of the VAE factor.
        stride: pixels between window starts; ``None`` (default) is 8 latent pixels (64 px on SD), the
            paper's. A multiple of the VAE factor, at most ``window``. Larger is faster, with more seams.
        view_batch_size: windows denoised in one UNet call (default 1): more is faster on a GPU and
            takes more memory.
        circular: wrap the columns for a 360-degree panorama whose left and right edges meet (default
            ``False``).
        fast: SpotDiffusion's non-overlapping windows, shifted at random every step, instead of
            overlapping ones (default ``False``): about ``window / stride`` times fewer UNet calls.
        bootstrap: share of the first steps, 0..1, in which each region's outside is a random solid
            colour noised to the step's level (default 0.4: the reference code's 20 of 50 steps); mask
            regions only.
        regions: how a scene's regions are honoured: ``"paths"`` (default; MultiDiffusion's mask
            regions, one path per region) or ``"regional"`` (RPG's regional attention inside each
            window, for split and box scenes beyond the native size).
        base_ratio: with ``regions="regional"``, overrides ``scene.base_ratio`` when not ``None``
            (default ``None``).
    """

    window: int | None = None
    stride: int | None = None
    view_batch_size: int = 1
    circular: bool = False
    fast: bool = False
    bootstrap: float = 0.4
    regions: str = "paths"
    base_ratio: float | None = None

    def check(self) -> None:
        super().check()
        for name in ("window", "stride"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or a positive number of pixels, got {value!r}")
        if self.window is not None and self.stride is not None and self.stride > self.window:
            raise ValueError(f"stride ({self.stride}) must be at most the window ({self.window}), or pixels between "
                             "windows would never be denoised")
        batch = self.view_batch_size
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_VIEW_BATCH:
            raise ValueError(f"view_batch_size must be an integer in 1..{MAX_VIEW_BATCH}, got {batch!r}")
        for name in ("circular", "fast"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _check_share("bootstrap", self.bootstrap)
        if self.regions not in REGION_MODES:
            raise ValueError(f"regions must be one of {', '.join(REGION_MODES)}, got {self.regions!r}")
        if self.base_ratio is not None:
            _check_share("base_ratio", self.base_ratio)


def _check_share(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


# ----------------------------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class View:
    """A window of the latent: rows ``top:top + height``, columns ``left:left + width``.

    In a circular panorama ``left + width`` may pass the right edge; the columns then wrap around.
    """

    top: int
    left: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    def column_pieces(self, canvas_width: int) -> list[tuple[slice, slice]]:
        """``(canvas columns, window columns)`` pairs: one piece, or two where the window wraps."""
        first = min(self.width, canvas_width - self.left)
        pieces = [(slice(self.left, self.left + first), slice(0, first))]
        if first < self.width:
            pieces.append((slice(0, self.width - first), slice(first, self.width)))
        return pieces


def _check_axis_arguments(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis: every ``stride``, plus one flush with the far edge if the stride
    does not land there (the reference code drops it and leaves the right edge of some panoramas black)."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def window_views(latent_height: int, latent_width: int, *, window: int, stride: int) -> list[View]:
    """The windows that cover a ``latent_height x latent_width`` latent, row by row.

    Args:
        latent_height, latent_width: the latent's size (pixels divided by the VAE factor).
        window: a window's side in latent pixels (the backbone's native latent size, e.g. 64 for SD 1.x);
            a side shorter than ``window`` gets one window of its own length.
        stride: latent pixels between window starts (MultiDiffusion's default is 8); at most ``window``,
            so windows overlap or touch and every latent pixel is covered.
    """
    _check_axis_arguments(latent_height=latent_height, latent_width=latent_width, window=window, stride=stride)
    if stride > window:
        raise ValueError(f"stride ({stride}) must be at most the window ({window}), or pixels between windows "
                         "would never be denoised")
    rows, columns = _starts(latent_height, window, stride), _starts(latent_width, window, stride)
    height, width = min(window, latent_height), min(window, latent_width)
    return [View(top, left, height, width) for top in rows for left in columns]


def circular_views(latent_height: int, latent_width: int, *, window: int, stride: int) -> list[View]:
    """:func:`window_views` with columns that wrap: a window every ``stride`` columns all the way
    round, so the seam between the right and the left edge is denoised like any other column."""
    views = window_views(latent_height, latent_width, window=window, stride=stride)
    if latent_width <= window:
        return views
    rows = sorted({view.top for view in views})
    return [View(top, left, views[0].height, window) for top in rows for left in range(0, latent_width, stride)]


def _shifted_starts(length: int, window: int, offset: int, wrap: bool) -> list[int]:
    if length <= window:
        return [0]
    if wrap:
        return [(offset + k * window) % length for k in range(math.ceil(length / window))]
    # Tiles every `window` from `offset`; the ones that would cross an edge are moved flush with it.
    return sorted({min(max(start, 0), length - window) for start in range(offset - window, length, window)})


def shifted_views(latent_height: int, latent_width: int, *, window: int, offset: tuple[int, int],
                  circular: bool = False) -> list[View]:
    """SpotDiffusion's windows for one step: non-overlapping tiles shifted by ``offset = (rows, columns)``.

    Without ``circular`` the tiles at the edges are moved flush with them (overlapping their
    neighbour, which the fusion averages); with it the columns wrap. Either way every latent pixel
    is covered, by about ``(height / window) * (width / window)`` windows.
    """
    _check_axis_arguments(latent_height=latent_height, latent_width=latent_width, window=window)
    rows = _shifted_starts(latent_height, window, offset[0] % window, wrap=False)
    columns = _shifted_starts(latent_width, window, offset[1] % window, wrap=circular)
    height, width = min(window, latent_height), min(window, latent_width)
    return [View(top, left, height, width) for top in rows for left in columns]


def crop_view(tensor: torch.Tensor, view: View) -> torch.Tensor:
    """``tensor[..., view]``, its columns wrapped round the right edge where the view passes it."""
    rows = slice(view.top, view.top + view.height)
    pieces = view.column_pieces(tensor.shape[-1])
    if len(pieces) == 1:
        return tensor[..., rows, pieces[0][0]]
    return torch.cat([tensor[..., rows, canvas] for canvas, _ in pieces], dim=-1)


def _add_view(total: torch.Tensor, view: View, value: torch.Tensor) -> None:
    rows = slice(view.top, view.top + view.height)
    for canvas, window in view.column_pieces(total.shape[-1]):
        total[..., rows, canvas] += value[..., window]


def fuse_views(shape: torch.Size | tuple[int, ...], views: Sequence[View], values: Sequence[torch.Tensor],
               weights: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
    """The closed-form MultiDiffusion step: each latent pixel the weighted mean of the views covering it.

    Args:
        shape: the full latent's shape ``(B, C, H, W)``.
        views: the windows (they may wrap, see :class:`View`).
        values: each window's value, ``(B, C, view.height, view.width)``.
        weights: each window's per-pixel weight, broadcastable to ``(1, 1, view.height, view.width)``;
            ``None`` (the default, or an entry) is 1 everywhere. Pixels no weight covers are 0.

    Sums run in float32 (or the values' dtype if wider); the result has the values' dtype.
    """
    if len(values) != len(views) or (weights is not None and len(weights) != len(views)):
        raise ValueError(f"{len(views)} views need as many values (got {len(values)}) and weights")
    dtype = torch.promote_types(values[0].dtype, torch.float32)
    total = values[0].new_zeros(shape, dtype=dtype)
    count = values[0].new_zeros((1, 1, *shape[-2:]), dtype=dtype)
    for index, (view, value) in enumerate(zip(views, values)):
        weight = None if weights is None else weights[index]
        if weight is None:
            _add_view(total, view, value.to(dtype))
            _add_view(count, view, torch.ones((1, 1, view.height, view.width), dtype=dtype, device=value.device))
        else:
            weight = weight.to(device=value.device, dtype=dtype).expand(1, 1, view.height, view.width)
            _add_view(total, view, value.to(dtype) * weight)
            _add_view(count, view, weight)
    fused = torch.where(count > 0, total / count.clamp_min(torch.finfo(dtype).tiny), total)
    return fused.to(values[0].dtype)


# ----------------------------------------------------------------------------------------------- paths
@dataclass
class _Prompt:
    """One prompt's conditioning (batch of one) and where it applies on the canvas."""

    text: TextConditioning
    weight: torch.Tensor | None  # (1, 1, H, W) float32 on the canvas; None: 1 everywhere
    adapters: tuple[tuple[str, float], ...] = ()
    bootstrap: bool = False  # a region: its outside is a noised solid colour during bootstrapping
    layout: Callable[[View], SlotLayout] | None = None  # regional attention inside each window


@dataclass(frozen=True)
class Path:
    """A diffusion path of one step: a window seen through prompt ``prompt`` (an index)."""

    view: View
    prompt: int


class FusedDenoiser:
    """``(latents, t) -> noise``: every path's prediction on its window, fused over the canvas.

    Args:
        pipe: the diffusers pipeline (its UNet, scheduler, VAE factor).
        prompts: the prompts the paths see.
        views_at: the windows of step ``i``.
        guidance_scale: classifier-free guidance of every path.
        view_batch_size: paths per UNet call.
        total_steps: the run's steps (ControlNet's guidance window).
        canvas_px: the canvas's ``(height, width)`` in pixels (SDXL's original size).
        control: a ControlNet and its canvas-sized image, cropped to each window; ``None``: none.
        bootstrap: ``(steps, colour_for(step), noise)`` of bootstrapping, or ``None``.
        adapters: switches LoRA adapters per batch of paths (``None``: no region names one).
        regional: the regional attention processor whose layout follows the window (``None``: none).
    """

    def __init__(self, pipe, prompts: list[_Prompt], views_at: Callable[[int], list[View]], *, guidance_scale: float,
                 view_batch_size: int, total_steps: int, canvas_px: tuple[int, int],
                 control: ControlInput | None = None, bootstrap: _Bootstrap | None = None,
                 adapters: _AdapterSwitch | None = None, regional: RegionalAttnProcessor | None = None) -> None:
        self.pipe = pipe
        self.prompts = prompts
        self.views_at = views_at
        self.guidance_scale = guidance_scale
        self.view_batch_size = 1 if regional is not None else view_batch_size
        self.total_steps = total_steps
        self.canvas_px = canvas_px
        self.control = control
        self.bootstrap = bootstrap
        self.adapters = adapters
        self.regional = regional
        self.step_index = 0
        self.unet_calls = 0
        self.needs_bootstrap = False
        self._weights: dict[tuple[int, View], torch.Tensor | None] = {}

    def paths(self) -> list[Path]:
        """The paths of the current step: every window through every prompt with weight there."""
        found = []
        for view in self.views_at(self.step_index):
            for index in range(len(self.prompts)):
                weight = self._weight(index, view)
                if weight is None or float(weight.max()) > _NEGLIGIBLE:
                    found.append(Path(view, index))
        return found

    def _weight(self, index: int, view: View) -> torch.Tensor | None:
        key = (index, view)
        if key not in self._weights:
            weight = self.prompts[index].weight
            self._weights[key] = None if weight is None else crop_view(weight, view)
        return self._weights[key]

    def batches(self, paths: list[Path]) -> list[list[Path]]:
        """Paths grouped into UNet calls: same adapters, window size and text length; at most
        ``view_batch_size`` each."""
        groups: dict[tuple, list[Path]] = {}
        for path in paths:
            prompt = self.prompts[path.prompt]
            key = (prompt.adapters, path.view.height, path.view.width, prompt.text.cond.shape[1])
            groups.setdefault(key, []).append(path)
        size = self.view_batch_size
        return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]

    def predictions(self, latents: torch.Tensor, t: torch.Tensor) -> Iterator[tuple[Path, torch.Tensor]]:
        """``(path, its noise prediction on its window)`` for every path of the current step."""
        images = latents.shape[0]
        for batch in self.batches(self.paths()):
            if self.adapters is not None:
                self.adapters.activate(self.prompts[batch[0].prompt].adapters)
            if self.regional is not None:
                self.regional.layout = self.prompts[batch[0].prompt].layout(batch[0].view)
            model_input = torch.cat([self._path_input(latents, path, t) for path in batch])
            denoise = CFGDenoiser(
                self.pipe.unet, self.pipe.scheduler, self._text(batch).repeat(images), self.guidance_scale,
                timestep_cond=guidance_embedding(self.pipe, self.guidance_scale, len(model_input), latents.dtype),
                control=self._control(batch, images), total_steps=self.total_steps)
            denoise.step_index = self.step_index
            noise = denoise(model_input, t)
            self.unet_calls += 1
            for index, path in enumerate(batch):
                yield path, noise[index * images : (index + 1) * images]

    def __call__(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        paths, values = [], []
        for path, noise in self.predictions(latents, t):
            paths.append(path)
            values.append(noise)
        weights = [self._weight(path.prompt, path.view) for path in paths]
        return fuse_views(latents.shape, [path.view for path in paths], values, weights)

    def _path_input(self, latents: torch.Tensor, path: Path, t: torch.Tensor) -> torch.Tensor:
        window = crop_view(latents, path.view)
        prompt = self.prompts[path.prompt]
        if self.bootstrap is None or not prompt.bootstrap or self.step_index >= self.bootstrap.steps:
            return window
        mask = self._weight(path.prompt, path.view).to(window.dtype)
        return window * mask + self.bootstrap.background(self.pipe.scheduler, path.view, t) * (1 - mask)

    def _text(self, batch: list[Path]) -> TextConditioning:
        texts = [self.prompts[path.prompt].text for path in batch]
        pooled = None if texts[0].pooled is None else torch.cat([text.pooled for text in texts])
        negative_pooled = None if texts[0].negative_pooled is None else torch.cat([text.negative_pooled for text in texts])
        time_ids = None if pooled is None else torch.cat([self._time_ids(path.view, texts[0].cond) for path in batch])
        return TextConditioning(torch.cat([text.cond for text in texts]), torch.cat([text.uncond for text in texts]),
                                pooled, negative_pooled, time_ids)

    def _time_ids(self, view: View, like: torch.Tensor) -> torch.Tensor:
        """SDXL's micro-conditioning of a window: the canvas as original size, the window's corner as
        crop and its size as target."""
        factor = self.pipe.vae_scale_factor
        row = [*self.canvas_px, view.top * factor, view.left * factor, view.height * factor, view.width * factor]
        return torch.tensor([row], dtype=like.dtype, device=like.device)

    def _control(self, batch: list[Path], images: int) -> ControlInput | None:
        if self.control is None:
            return None
        factor = self.pipe.vae_scale_factor
        crops = []
        for path in batch:
            view = path.view
            pixel_view = View(view.top * factor, view.left * factor, view.height * factor, view.width * factor)
            crop = crop_view(self.control.image, pixel_view)
            crops.append(crop.repeat(images // crop.shape[0], 1, 1, 1))
        return dataclasses.replace(self.control, image=torch.cat(crops))


@dataclass
class _Bootstrap:
    """The paper's bootstrapping: a region's outside replaced by a solid colour noised to the step's level."""

    steps: int
    colours: torch.Tensor  # (K, C, 1, 1) latents of solid colours
    noise: torch.Tensor  # (B, C, H, W) the initial noise
    pickers: list[torch.Generator]  # one per image: which colour each path gets

    def background(self, scheduler, view: View, t: torch.Tensor) -> torch.Tensor:
        picks = torch.cat([torch.randint(len(self.colours), (1,), generator=picker) for picker in self.pickers])
        noise = crop_view(self.noise, view)
        colour = self.colours[picks.to(self.colours.device)].expand_as(noise)
        return scheduler.add_noise(colour, noise, t.reshape(1)).to(noise.dtype)


class _AdapterSwitch:
    """The regions' LoRA adapters, loaded into the pipeline for one call and switched per path."""

    def __init__(self, pipe, scene: Scene) -> None:
        from diffusers.utils import is_peft_available

        if not is_peft_available():
            raise ValueError("a region names LoRA adapters, which need the peft package: pip install peft")
        self.pipe = pipe
        self.names: dict[str, str] = {}
        for region in scene.regions:
            for lora in _region_loras(region):
                if lora.path not in self.names:
                    name = f"scenecraft-region-{len(self.names)}"
                    try:
                        # safetensors only: a pickled .bin from someone else's scene file could run code.
                        pipe.load_lora_weights(lora.path, adapter_name=name, use_safetensors=True)
                    except _LOAD_ERRORS as error:
                        self.close()
                        raise ValueError(f"could not load the LoRA {lora.path!r} of region {region.prompt!r}: "
                                         f"{_reason(error)} (a .safetensors file, a folder holding one, or a hub "
                                         f"id)") from error
                    self.names[lora.path] = name
        self.active: tuple[tuple[str, float], ...] | None = None

    def adapters_of(self, region) -> tuple[tuple[str, float], ...]:
        return tuple((self.names[lora.path], float(lora.scale)) for lora in _region_loras(region))

    def activate(self, adapters: tuple[tuple[str, float], ...]) -> None:
        if adapters == self.active:
            return
        if adapters:
            self.pipe.enable_lora()
            self.pipe.set_adapters([name for name, _ in adapters], [scale for _, scale in adapters])
        else:
            self.pipe.disable_lora()
        self.active = adapters

    def close(self) -> None:
        if self.names:
            self.pipe.delete_adapters(list(self.names.values()))
            self.pipe.enable_lora()
        self.names = {}


def _region_loras(region) -> tuple:
    return tuple(getattr(region, "lora", ()) or ())


# ----------------------------------------------------------------------------------------------- the method
def _check_inputs(pipe, scene: Scene, config: MultiDiffusionConfig, control: ControlInput | None):
    """Reject bad arguments; return the latent ``(height, width)``, window and stride in latent pixels."""
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a scenecraft Scene, got {type(scene).__name__}")
    check_pipeline(pipe)
    config.check()
    if control is not None:
        check_control(control, scene, config.num_images)
    factor = pipe.vae_scale_factor
    latent_hw = latent_size(scene.height, scene.width, factor)
    window = pipe.unet.config.sample_size * factor if config.window is None else config.window
    stride = 8 * factor if config.stride is None else config.stride
    for name, value in (("window", window), ("stride", stride)):
        if value % factor:
            raise ValueError(f"{name} {value} px is not a multiple of this pipeline's VAE factor ({factor})")
    if stride > window:
        raise ValueError(f"stride ({stride} px) must be at most the window ({window} px)")
    if config.circular and scene.width <= window:
        raise ValueError(f"a circular panorama must be wider than one window ({window} px), got width {scene.width}")
    return latent_hw, window // factor, stride // factor


def generate_multidiffusion(
    pipe,
    scene: Scene,
    config: MultiDiffusionConfig | None = None,
    *,
    on_step: ProgressCallback | None = None,
    control: ControlInput | None = None,
    latents: torch.Tensor | None = None,
) -> GenerationResult:
    """Generate ``scene`` with MultiDiffusion on a diffusers SD 1.x/2.x/SDXL pipeline, at any size.

    Args:
        pipe: a diffusers ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline``.
        scene: the scene. Without regions: a panorama of its prompt (``base_prompt`` when set). With
            regions: see ``config.regions``.
        config: the knobs (see :class:`MultiDiffusionConfig`); defaults when ``None``.
        on_step: called as ``on_step(done, total)`` after every denoising step (progress bars).
        control: a ControlNet and its control image at the scene's size (default ``None``: none),
            cropped to every window.
        latents: the initial noise, ``(num_images, C, height / f, width / f)`` (default ``None``: drawn
            from the seed as the plain pipeline draws it).

    A scene no larger than one window, without regions, gives the plain pipeline's images.
    """
    config = config or MultiDiffusionConfig()
    latent_hw, window, stride = _check_inputs(pipe, scene, config, control)
    seed = resolve_seed(config.seed, config.num_images)
    if config.fast and config.num_images > 1:  # each image its own shifts, so that it regenerates alone
        return _one_by_one(pipe, scene, config, seed, on_step=on_step, control=control, latents=latents)
    generators = image_generators(seed, config.num_images)
    timesteps = prepare_timesteps(pipe.scheduler, config.num_inference_steps, pipe._execution_device)
    with fused_denoiser(pipe, scene, config, seed=seed, control=control) as denoise:
        if latents is None:
            latents = prepare_latents(pipe, generators, *latent_hw, denoise.prompts[0].text.cond.dtype)
        elif latents.shape != (config.num_images, pipe.unet.config.in_channels, *latent_hw):
            raise ValueError(f"latents must have shape {(config.num_images, pipe.unet.config.in_channels, *latent_hw)}, "
                             f"got {tuple(latents.shape)}")
        if denoise.needs_bootstrap:
            denoise.bootstrap = _make_bootstrap(pipe, config, latents, seed)
        extra = pipe.prepare_extra_step_kwargs(generators[0] if len(generators) == 1 else generators, 0.0)
        latents = sample(pipe.scheduler, denoise, latents, timesteps, extra_step_kwargs=extra, on_step=on_step)
    wrap = min(_WRAP_DECODE_COLUMNS, latent_hw[1]) if config.circular else 0
    images = decode_latents(pipe, latents, config.output_type, tiled=config.tiled_decode, generators=generators,
                            wrap=wrap)

    settings = asdict(config) | {"seed": seed, "scheduler": type(pipe.scheduler).__name__,
                                 "window": window * pipe.vae_scale_factor, "stride": stride * pipe.vae_scale_factor}
    return GenerationResult(images=list(images), seed=seed, scene=scene, method="multidiffusion", settings=settings,
                            seeds=[seed + i for i in range(config.num_images)])


def _one_by_one(pipe, scene: Scene, config: MultiDiffusionConfig, seed: int, *, on_step: ProgressCallback | None,
                control: ControlInput | None, latents: torch.Tensor | None) -> GenerationResult:
    """``num_images`` one-image calls with seeds ``seed + i``, as one result."""
    count, total_steps = config.num_images, config.num_images * config.num_inference_steps
    results = []
    for index in range(count):
        progress = None if on_step is None else (
            lambda done, _total, base=index * config.num_inference_steps: on_step(base + done, total_steps))
        one_control = control if control is None or control.image.shape[0] == 1 else dataclasses.replace(
            control, image=control.image[index : index + 1])
        results.append(generate_multidiffusion(
            pipe, scene, dataclasses.replace(config, num_images=1, seed=seed + index), on_step=progress,
            control=one_control, latents=None if latents is None else latents[index : index + 1]))
    images = [image for result in results for image in result.images]
    settings = results[0].settings | {"seed": seed, "num_images": count}
    return GenerationResult(images=images, seed=seed, scene=scene, method="multidiffusion", settings=settings,
                            seeds=[seed + i for i in range(count)])


@contextmanager
def fused_denoiser(pipe, scene: Scene, config: MultiDiffusionConfig, *, seed: int = 0,
                   control: ControlInput | None = None) -> Iterator[FusedDenoiser]:
    """The :class:`FusedDenoiser` of a call, with the regions' LoRA adapters loaded and the regional
    attention installed for the ``with`` block (both undone after, even on errors).

    ``seed`` draws SpotDiffusion's shifts; the bootstrapping (``denoiser.bootstrap``) is left to the caller,
    who has the initial noise. Set the scheduler's timesteps before the first call.
    """
    latent_hw, window, stride = _check_inputs(pipe, scene, config, control)
    regional_mode = bool(scene.regions) and config.regions == "regional"
    with ExitStack() as stack:
        adapters = None
        if not regional_mode and any(_region_loras(region) for region in scene.regions):
            adapters = _AdapterSwitch(pipe, scene)
            stack.callback(adapters.close)
        prompts = (_regional_prompts(pipe, scene, config, latent_hw) if regional_mode
                   else _path_prompts(pipe, scene, latent_hw, adapters))
        regional = None
        if regional_mode:
            first = View(0, 0, min(window, latent_hw[0]), min(window, latent_hw[1]))
            regional = RegionalAttnProcessor(prompts[0].layout(first))
            stack.enter_context(_regional_attention(pipe, control, regional))
        denoise = FusedDenoiser(
            pipe, prompts, _views_schedule(latent_hw, window, stride, config, seed), guidance_scale=config.guidance_scale,
            view_batch_size=config.view_batch_size, total_steps=config.num_inference_steps,
            canvas_px=(scene.height, scene.width), control=control, adapters=adapters, regional=regional)
        denoise.needs_bootstrap = config.bootstrap > 0 and any(prompt.bootstrap for prompt in prompts)
        yield denoise


def _views_schedule(latent_hw: tuple[int, int], window: int, stride: int, config: MultiDiffusionConfig,
                    seed: int) -> Callable[[int], list[View]]:
    """The windows of each step: fixed ones, or SpotDiffusion's shifted by a seeded random offset per step."""
    height, width = latent_hw
    if not config.fast:
        layout = circular_views if config.circular else window_views
        views = layout(height, width, window=window, stride=stride)
        return lambda step: views
    offsets = torch.randint(window, (config.num_inference_steps, 2), generator=torch.Generator().manual_seed(seed))
    return lambda step: shifted_views(height, width, window=window, offset=(int(offsets[step, 0]), int(offsets[step, 1])),
                                      circular=config.circular)


def _path_prompts(pipe, scene: Scene, latent_hw: tuple[int, int], adapters: _AdapterSwitch | None) -> list[_Prompt]:
    """The background (or panorama) prompt weighted by ``1 - union``, then each region's weighted by its mask."""
    device = pipe._execution_device
    encoders: dict[tuple, PromptEncoder] = {}

    def encode(prompt: str, negative: str, region_adapters: tuple) -> TextConditioning:
        if adapters is not None:
            adapters.activate(region_adapters)
        encoder = encoders.setdefault(region_adapters, PromptEncoder(pipe, device))
        slots = encoder.encode_slots([prompt], [negative])
        return TextConditioning(slots.cond, slots.uncond, slots.pooled, slots.negative_pooled)

    weights, rest = scene.weights(*latent_hw)
    background = next(text for text in (scene.background_prompt, scene.base_prompt, scene.prompt) if text is not None)
    background_weight = None if not scene.regions else _canvas_weight(rest, device)
    prompts = [_Prompt(encode(background, scene.negative_prompt, ()), background_weight)]
    for region, weight in zip(scene.regions, weights):
        region_adapters = () if adapters is None else adapters.adapters_of(region)
        negative = region.negative_prompt if region.negative_prompt is not None else scene.negative_prompt
        prompts.append(_Prompt(encode(region.prompt, negative, region_adapters), _canvas_weight(weight, device),
                               adapters=region_adapters, bootstrap=True))
    return prompts


def _canvas_weight(weight: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(weight, dtype=torch.float32, device=device)[None, None]


def _regional_prompts(pipe, scene: Scene, config: MultiDiffusionConfig, latent_hw: tuple[int, int]) -> list[_Prompt]:
    """One prompt, all of RPG's slots, whose regional layout is each window's share of the scene."""
    base_ratio = scene.base_ratio if config.base_ratio is None else config.base_ratio
    prompts, negatives = slot_prompts(scene)
    slots = PromptEncoder(pipe, pipe._execution_device).encode_slots(prompts, negatives)
    height, width = latent_hw
    canvas = slot_coefficients(scene, base_ratio, height, width).reshape(-1, height, width)
    layouts: dict[View, SlotLayout] = {}

    def window_coefficients(view: View, layer_height: int, layer_width: int) -> np.ndarray:
        if (view.height, view.width) == (height, width):  # the whole canvas: RPG's own coefficients
            return slot_coefficients(scene, base_ratio, layer_height, layer_width)
        window = crop_view(torch.from_numpy(canvas), view).numpy()
        return np.stack([resample_mask(slot, layer_height, layer_width).ravel() for slot in window])

    def layout(view: View) -> SlotLayout:
        if view not in layouts:
            layouts[view] = SlotLayout(spans=slots.spans, latent_height=view.height, latent_width=view.width,
                                       coefficients=lambda h, w: window_coefficients(view, h, w))
        return layouts[view]

    text = TextConditioning(slots.cond, slots.uncond, slots.pooled, slots.negative_pooled)
    return [_Prompt(text, None, layout=layout)]


@torch.no_grad()
def _make_bootstrap(pipe, config: MultiDiffusionConfig, latents: torch.Tensor, seed: int) -> _Bootstrap:
    """Solid colours as latents (VAE-encoded once), the noise they are noised with, and how many steps bootstrap.

    As in the reference code, the noise is the initial noise ``latents`` (so a region's outside is the
    colour on the trajectory's own noise), and image ``i`` picks colours with a generator of ``seed + i``,
    so that image ``i`` of a call and a one-image call with its seed agree.
    """
    side = 8 * pipe.vae_scale_factor
    palette = torch.rand(_BOOTSTRAP_COLOURS, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    vae = pipe.vae
    pixels = (palette * 2 - 1).expand(-1, -1, side, side).to(device=vae.device, dtype=vae.dtype)
    encoded = _scale_latents(vae, vae.encode(pixels).latent_dist.mean).mean(dim=(-2, -1), keepdim=True)
    return _Bootstrap(steps=round(config.bootstrap * config.num_inference_steps),
                      colours=encoded.to(device=latents.device, dtype=latents.dtype), noise=latents.clone(),
                      pickers=[torch.Generator().manual_seed(seed + i) for i in range(len(latents))])


def _scale_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """The VAE's encoding as the UNet sees it (its scaling factor, and SDXL's latent mean/std where set)."""
    stats = latent_mean_std(vae, latents)
    if stats is not None:
        return (latents - stats[0]) * vae.config.scaling_factor / stats[1]
    return latents * vae.config.scaling_factor
