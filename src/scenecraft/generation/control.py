"""ControlNet: a control image (canny edges, depth, pose...) guides generation through diffusers' ``ControlNetModel``.

A :class:`ControlInput` is a ControlNet, its image and its knobs. The sampling core's
:class:`~scenecraft.generation.sampling.CFGDenoiser` asks it, at every step, for the residuals the
ControlNet adds to the UNet's skip connections (``down_block_additional_residuals``,
``mid_block_additional_residual``), computed as ``StableDiffusionControlNetPipeline`` and
``StableDiffusionXLControlNetPipeline`` compute them in their default (non-guess) mode: the ControlNet
runs on the same ``[uncond, cond]`` batch and text as the UNet, its output scaled by
``conditioning_scale``, and only inside the ``[guidance_start, guidance_end]`` share of the steps.

The control image is a ``(1 or B, 3, H, W)`` float tensor in ``[0, 1]`` at the output's pixel size;
:func:`prepare_control_image` makes one from a picture the way diffusers' ControlNet pipelines do.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .loading import _LOAD_ERRORS, ModelLoadError, _reason

if TYPE_CHECKING:
    from diffusers import ControlNetModel
    from PIL import Image

__all__ = ["ControlInput", "ControlNetLoadError", "prepare_control_image", "load_controlnet", "check_controlnet_source",
           "takes_control"]

Residuals = tuple[tuple[torch.Tensor, ...], torch.Tensor]


@dataclass
class ControlInput:
    """A ControlNet and its control image, as the sampling core applies them.

    Attributes:
        model: a diffusers ``ControlNetModel`` (see :func:`load_controlnet`), on the pipeline's device
            and dtype.
        image: ``(1 or B, 3, H, W)`` float tensor in ``[0, 1]`` at the output's pixel size ``H x W``
            (see :func:`prepare_control_image`); ``B`` images give image ``i`` of the batch its own control.
        conditioning_scale: multiplies the ControlNet's residuals (default 1.0, diffusers'
            ``controlnet_conditioning_scale``; 0 turns the control off).
        guidance_start: share of the steps, 0..1, before which the control is off (default 0.0,
            diffusers' ``control_guidance_start``).
        guidance_end: share of the steps, 0..1, after which the control is off (default 1.0,
            diffusers' ``control_guidance_end``). Step ``i`` of ``n`` runs the ControlNet when
            ``i / n >= guidance_start`` and ``(i + 1) / n <= guidance_end``, as diffusers computes it.
    """

    model: ControlNetModel
    image: torch.Tensor
    conditioning_scale: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0

    def check(self) -> None:
        """Reject bad values with a sentence naming the field."""
        _check_model(self.model)
        _check_image(self.image, self.down_factor)
        _check_number("conditioning_scale", self.conditioning_scale)
        for name in ("guidance_start", "guidance_end"):
            value = getattr(self, name)
            _check_number(name, value)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must lie in [0, 1] (a share of the steps), got {value!r}")
        if self.guidance_start > self.guidance_end:
            raise ValueError(f"guidance_start ({self.guidance_start}) must not be greater than guidance_end "
                             f"({self.guidance_end})")

    @property
    def down_factor(self) -> int:
        """How much the ControlNet's conditioning embedding shrinks the image: 2 per stride-2 block (8 for SD's)."""
        return 2 ** (len(self.model.config.conditioning_embedding_out_channels) - 1)

    def check_size(self, height: int, width: int) -> None:
        """Reject an image that is not ``height x width`` pixels (the output's size)."""
        found = tuple(self.image.shape[-2:])
        if found != (height, width):
            raise ValueError(f"image must be the output's size, {height}x{width} pixels (height x width), got "
                             f"{found[0]}x{found[1]}; prepare_control_image resizes a picture to it")

    def check_fits(self, unet: Any) -> None:
        """Reject a ControlNet made for another UNet than ``unet`` (an SD 1.5 ControlNet on SDXL, say), whose
        residuals would not fit its skip connections, or one of another dtype."""
        mine, theirs = self.model.config, unet.config
        for key in _FITTING_CONFIG:
            found, expected = _config_value(mine, key), _config_value(theirs, key)
            if found != expected:
                raise ValueError(f"model does not fit the pipeline's UNet: its {key} is {found}, the UNet's "
                                 f"{expected}; use a ControlNet trained for this base model (SD 1.x, SD 2.x or SDXL)")
        if self.model.dtype != unet.dtype:
            raise ValueError(f"model is {self.model.dtype} but the pipeline's UNet is {unet.dtype}; load it with the "
                             f"UNet's dtype (load_controlnet(..., dtype=pipe.unet.dtype))")

    def check_batch(self, num_images: int) -> None:
        """Reject an image batch that is neither 1 nor ``num_images``."""
        count = self.image.shape[0]
        if count not in (1, num_images):
            raise ValueError(f"image must hold 1 control image or one per image ({num_images}), got {count}")

    def crop(self, top_px: int, left_px: int, height_px: int, width_px: int) -> ControlInput:
        """The same control on the window ``[top, top + height) x [left, left + width)`` of the image (pixels)."""
        image_h, image_w = self.image.shape[-2:]
        for name, value in (("top_px", top_px), ("left_px", left_px), ("height_px", height_px), ("width_px", width_px)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if height_px == 0 or width_px == 0 or top_px + height_px > image_h or left_px + width_px > image_w:
            raise ValueError(f"the window {height_px}x{width_px} at (top {top_px}, left {left_px}) must be non-empty "
                             f"and lie inside the {image_h}x{image_w} control image")
        window = self.image[:, :, top_px : top_px + height_px, left_px : left_px + width_px]
        return dataclasses.replace(self, image=window)

    def active(self, step_index: int, total_steps: int) -> bool:
        """Whether step ``step_index`` of ``total_steps`` runs the ControlNet (diffusers' ``controlnet_keep``)."""
        outside = step_index / total_steps < self.guidance_start or (step_index + 1) / total_steps > self.guidance_end
        return not outside and self.conditioning_scale != 0

    def residuals(self, model_input: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                  added_cond_kwargs: dict | None, step_index: int, total_steps: int) -> Residuals | None:
        """``(down_block_res_samples, mid_block_res_sample)`` for the UNet call of step ``step_index``, or ``None``
        when the control is off at that step (outside the guidance window, or a scale of 0).

        ``model_input`` is the UNet's (scaled) input, ``[uncond, cond]`` doubled under guidance; the image
        batch is repeated to its batch, as diffusers does. ``added_cond_kwargs`` are SDXL's (else ``None``).
        """
        if not self.active(step_index, total_steps):
            return None
        image = self._image_for(model_input)
        return self.model(model_input, t, encoder_hidden_states=encoder_hidden_states, controlnet_cond=image,
                          conditioning_scale=float(self.conditioning_scale), added_cond_kwargs=added_cond_kwargs,
                          guess_mode=False, return_dict=False)

    def _image_for(self, model_input: torch.Tensor) -> torch.Tensor:
        """The image on the model's device and dtype, tiled to ``model_input``'s batch (``[uncond, cond]``)."""
        count, batch = self.image.shape[0], model_input.shape[0]
        factor = self.down_factor
        expected = (model_input.shape[-2] * factor, model_input.shape[-1] * factor)
        if tuple(self.image.shape[-2:]) != expected or batch % count:
            raise ValueError(f"control image of shape {tuple(self.image.shape)} does not fit the UNet input of shape "
                             f"{tuple(model_input.shape)}: it must be {expected[0]}x{expected[1]} pixels with 1 image "
                             f"or a divisor of {batch}")
        return self.image.repeat(batch // count, 1, 1, 1).to(device=self.model.device, dtype=self.model.dtype)


# The config entries a ControlNet shares with the UNet it feeds: its residuals' number, channels and inputs.
_FITTING_CONFIG = ("in_channels", "block_out_channels", "layers_per_block", "cross_attention_dim",
                   "addition_embed_type")


def _config_value(config: Any, key: str) -> Any:
    """``config[key]`` comparable across a UNet's and a ControlNet's configs (tuples and JSON lists alike;
    a per-block ``layers_per_block`` of equal blocks as its one number)."""
    value = getattr(config, key, None)
    if isinstance(value, (list, tuple)):
        value = list(value)
        if key == "layers_per_block" and len(set(value)) == 1:
            return value[0]
    return value


def _check_model(model: Any) -> None:
    from diffusers import ControlNetModel

    if not isinstance(model, ControlNetModel):
        raise ValueError(f"model must be a diffusers ControlNetModel, got {type(model).__name__}")
    if model.config.global_pool_conditions:
        raise ValueError("model is a ControlNet with global_pool_conditions (e.g. shuffle), which diffusers runs in "
                         "guess mode only; scenecraft runs ControlNets in the default mode")


def _check_image(image: Any, factor: int) -> None:
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        kind = f"a {image.dtype} tensor" if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a float tensor (prepare_control_image makes one), got {kind}")
    if image.ndim != 4 or image.shape[0] < 1 or image.shape[1] != 3:
        raise ValueError(f"image must have shape (1 or B, 3, H, W), got {tuple(image.shape)}")
    height, width = image.shape[-2:]
    if height < factor or width < factor or height % factor or width % factor:
        raise ValueError(f"image must be at least {factor} pixels and a multiple of {factor} on each side (the "
                         f"ControlNet's down factor), got {height}x{width}")
    if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise ValueError(f"image values must lie in [0, 1] (diffusers' do_normalize=False), got "
                         f"{float(image.min()):g}..{float(image.max()):g}")


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def prepare_control_image(pipe_or_scale_factor: Any, image: Image.Image | str | Path, height: int, width: int,
                          device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A picture (or a picture file) as a ``(1, 3, height, width)`` control image in ``[0, 1]``.

    As diffusers' ControlNet pipelines prepare it: ``VaeImageProcessor(do_convert_rgb=True,
    do_normalize=False)`` converts it to RGB and resizes it to ``height x width`` (Lanczos; the
    aspect ratio is not kept).

    Args:
        pipe_or_scale_factor: the pipeline (its ``vae_scale_factor``) or the factor itself (8 for SD/SDXL);
            ``height`` and ``width`` must be multiples of it.
        image: a PIL image, or the path of a picture file.
        height, width: the output's size in pixels.
        device: where the tensor goes (default: the pipeline's device, else the CPU).
        dtype: its dtype (default float32; the ControlNet casts it to its own).
    """
    from diffusers.image_processor import VaeImageProcessor

    factor = pipe_or_scale_factor if isinstance(pipe_or_scale_factor, int) else pipe_or_scale_factor.vae_scale_factor
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < factor or value % factor:
            raise ValueError(f"{name} must be a positive multiple of {factor} pixels, got {value!r}")
    if device is None:
        device = getattr(pipe_or_scale_factor, "_execution_device", "cpu")
    processor = VaeImageProcessor(vae_scale_factor=factor, do_convert_rgb=True, do_normalize=False)
    tensor = processor.preprocess(_open_image(image), height=height, width=width).to(dtype=torch.float32)
    return tensor.to(device=device, dtype=dtype)


def _open_image(image: Image.Image | str | Path) -> Image.Image:
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if not isinstance(image, (str, Path)):
        raise ValueError(f"image must be a PIL image or a picture file's path, got {type(image).__name__}")
    with Image.open(image) as opened:  # a missing file or a file that is no picture is an OSError naming it
        opened.load()
        return opened.copy()


class ControlNetLoadError(ModelLoadError, ValueError):
    """A ControlNet that could not be loaded; the message names the path or hub id and what to do."""


_SINGLE_FILE_SUFFIX = ".safetensors"


def check_controlnet_source(source: str | Path) -> Path | str:
    """The local folder or ``.safetensors`` file, or the hub id, ``source`` names; anything else is a
    :class:`ControlNetLoadError` (found before any model loads)."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ControlNetLoadError(f"controlnet folder {path} has no config.json, so it is not a diffusers "
                                      f"ControlNet folder")
        return path
    if path.is_file():
        if path.suffix != _SINGLE_FILE_SUFFIX:
            raise ControlNetLoadError(f"controlnet file {path} must be a {_SINGLE_FILE_SUFFIX} file (or give a "
                                      f"diffusers ControlNet folder or a hub id)")
        return path
    if path.suffix or text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise ControlNetLoadError(f"controlnet {text!r} does not exist: give a diffusers ControlNet folder, a "
                                  f"{_SINGLE_FILE_SUFFIX} file or a hub id like 'lllyasviel/sd-controlnet-canny'")
    return text


def load_controlnet(path_or_id: str | Path, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> ControlNetModel:
    """Load a ControlNet: ``ControlNetModel.from_pretrained`` for a diffusers folder or hub id,
    ``from_single_file`` for a ``.safetensors`` file; then move it to ``device``.

    Args:
        path_or_id: a local diffusers ControlNet folder, a ``.safetensors`` file, or a hub id
            (``"lllyasviel/sd-controlnet-canny"``; offline, download it first).
        dtype: the weights' dtype (default float32; give the pipeline's).
        device: where it runs (default the CPU; give the pipeline's).

    A source that does not exist, or will not load, is a :class:`ControlNetLoadError` (a ``ValueError``)
    naming it.
    """
    from diffusers import ControlNetModel

    source = check_controlnet_source(path_or_id)
    try:
        if isinstance(source, Path) and source.is_file():
            model = ControlNetModel.from_single_file(str(source), dtype=dtype)
        else:
            model = ControlNetModel.from_pretrained(str(source), dtype=dtype, local_files_only=isinstance(source, Path))
    except _LOAD_ERRORS as error:
        hint = _load_hint(source)
        raise ControlNetLoadError(f"could not load the controlnet {str(path_or_id)!r}: {_reason(error)}\n{hint}") \
            from error
    return model.to(device)


def _load_hint(source: Path | str) -> str:
    if isinstance(source, str):
        return "if it is a hub id and you are offline, download it first and pass the folder"
    if source.is_file():
        return ("diffusers reads a single-file ControlNet with a config it fetches from the hub; offline, or if the "
                "file is not an original-format ControlNet checkpoint, give a diffusers ControlNet folder instead")
    return "the files are corrupt, incomplete or not a ControlNet's"


def takes_control(run: Callable[..., Any]) -> bool:
    """Whether a method's entry point takes a ``control`` argument."""
    return "control" in inspect.signature(run).parameters
