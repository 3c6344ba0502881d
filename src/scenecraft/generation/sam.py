"""Refine an object's mask with SAM (Segment Anything), prompted at its cross-attention peak.

This is LMD's point-input path (``models/sam.py: sam_refine_attn`` with ``use_box_input=False`` in the
LLM-grounded Diffusion code): the object's token attention map is smoothed with a gaussian and min-max
normalised; a threshold of it gives a coarse mask, and its argmax, scaled to image pixels, is the one
point SAM is asked about. SAM answers with three masks and a confidence for each; LMD's
``largest_over_conf`` rule keeps the largest one, discouraging those SAM is unsure of and those that
barely overlap the coarse mask.

SAM runs through transformers' ``SamModel`` and ``SamProcessor``. Nothing is loaded at import.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .loading import ModelLoadError

if TYPE_CHECKING:
    from PIL import Image
    from transformers import SamConfig, SamModel, SamProcessor

__all__ = [
    "SamMaskRefiner",
    "coarse_attention_mask",
    "smooth_attention",
    "peak_point",
    "select_mask",
    "mask_iou",
    "resize_masks",
]

# scipy.ndimage.gaussian_filter's default: the kernel reaches 4 sigma either side.
_TRUNCATE = 4.0
_DOWNLOAD_HINT = (
    "SAM weights must be downloaded first, e.g. `hf download facebook/sam-vit-base --local-dir ./sam-vit-base` "
    "(`huggingface-cli download ...` with huggingface_hub < 1.0), then pass that folder"
)


# ---------------------------------------------------------------------------------------------------
# Attention map -> coarse mask and prompt point
# ---------------------------------------------------------------------------------------------------


def _as_attention(attention: np.ndarray | torch.Tensor) -> np.ndarray:
    """A (h, w) float64 copy of a token attention map; rejects other shapes and non-finite values."""
    if isinstance(attention, torch.Tensor):
        attention = attention.detach().to(device="cpu", dtype=torch.float64).numpy()
    array = np.asarray(attention, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"attention must be a non-empty (h, w) map, got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError("attention must be finite, got NaN or infinite values")
    return array


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """The normalised 1-D gaussian scipy uses: radius ``int(4 * sigma + 0.5)``."""
    radius = int(_TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def smooth_attention(attention: np.ndarray | torch.Tensor, sigma: float) -> np.ndarray:
    """Gaussian-blur a (h, w) attention map, as ``scipy.ndimage.gaussian_filter(map, sigma)`` does.

    A separable torch convolution with a normalised kernel truncated at 4 sigma, over a map padded by
    reflection about its edge (scipy's ``reflect``, numpy's ``symmetric``: the edge value repeats), in
    float64. ``sigma`` is in attention-grid cells; 0 returns the map unchanged. Returns float64 (h, w).
    """
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    array = _as_attention(attention)
    if sigma == 0:
        return array
    kernel = torch.from_numpy(_gaussian_kernel(sigma))
    radius = (kernel.numel() - 1) // 2
    padded = torch.from_numpy(np.pad(array, radius, mode="symmetric"))[None, None]
    blurred = F.conv2d(padded, kernel.view(1, 1, -1, 1))
    blurred = F.conv2d(blurred, kernel.view(1, 1, 1, -1))
    return blurred[0, 0].numpy()


def _normalised(smoothed: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1]; a flat map (no peak) becomes all zeros."""
    span = smoothed.max() - smoothed.min()
    if span == 0:
        return np.zeros_like(smoothed)
    return (smoothed - smoothed.min()) / span


def _check_threshold(threshold: float, name: str = "threshold") -> None:
    if not (math.isfinite(threshold) and 0 <= threshold < 1):
        raise ValueError(f"{name} must be in [0, 1), got {threshold!r}")


def coarse_attention_mask(
    attention: np.ndarray | torch.Tensor, *, gaussian_sigma: float = 1.5, threshold: float = 0.25
) -> np.ndarray:
    """A bool (h, w) mask: where the smoothed, min-max normalised attention exceeds ``threshold``.

    LMD's ``preprocess_mask`` on the gaussian-smoothed map. Knobs: ``gaussian_sigma`` (default 1.5,
    LMD's value for point input, in attention-grid cells) and ``threshold`` (default 0.25, LMD's
    ``mask_th_for_point``; in [0, 1)). A flat map has no peak and gives an all-False mask.
    """
    _check_threshold(threshold)
    return _normalised(smooth_attention(attention, gaussian_sigma)) > threshold


def peak_point(smoothed: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float]:
    """The argmax cell of a (h, w) map as an ``(x, y)`` point in pixels of an image of ``image_size`` (H, W).

    As LMD: the cell's top-left corner, ``(col * W / w, row * H / h)``; the first maximum on ties.
    """
    row, col = np.unravel_index(int(np.argmax(smoothed)), smoothed.shape)
    height, width = image_size
    return float(col * width / smoothed.shape[1]), float(row * height / smoothed.shape[0])


# ---------------------------------------------------------------------------------------------------
# Masks: resize, IoU, LMD's selection rule
# ---------------------------------------------------------------------------------------------------


def resize_masks(masks: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Resize bool masks (..., h, w) to ``size`` as LMD does: bilinear, then True wherever non-zero.

    (``F.interpolate(..., mode="bilinear").bool()`` in LMD's ``sam``; its ``cv2.resize`` for the IoU is
    the same half-pixel bilinear.) A pixel is kept if any sampled source pixel is in the mask.
    """
    tensor = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    lead = tensor.shape[:-2]
    flat = tensor.reshape(-1, 1, *tensor.shape[-2:]).float()
    resized = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False) > 0
    return resized.reshape(*lead, *size).cpu().numpy()


def mask_iou(mask: np.ndarray, masks: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """IoU of one bool (h, w) mask with each of (n, h, w) masks (LMD's ``utils.iou``, same ``eps``)."""
    mask, masks = np.asarray(mask, dtype=bool)[None], np.asarray(masks, dtype=bool)
    if mask.shape[1:] != masks.shape[1:]:
        raise ValueError(f"masks must share the mask's shape {mask.shape[1:]}, got {masks.shape[1:]}")
    return (mask & masks).sum(axis=(1, 2)) / ((mask | masks).sum(axis=(1, 2)) + eps)


def select_mask(
    masks: np.ndarray,
    scores: np.ndarray,
    coarse_ious: np.ndarray | None = None,
    *,
    min_confidence: float = 0.85,
    min_coarse_iou: float = 0.25,
) -> int:
    """The index of the mask LMD's ``largest_over_conf`` rule picks among SAM's candidates.

    Each mask scores its pixel count, less the largest mask's pixel count once if its confidence
    (``scores``, SAM's predicted IoU) is below ``min_confidence`` (default 0.85) and once more if its
    ``coarse_ious`` (IoU with the coarse attention mask; optional) is below ``min_coarse_iou``
    (default 0.25, LMD's ``discourage_mask_below_coarse_iou`` in ``lmd.py``/``lmd_plus.py``). The
    highest score wins, the first on ties; so a discouraged mask wins only if all are discouraged.
    """
    masks, scores = np.asarray(masks, dtype=bool), np.asarray(scores, dtype=np.float64)
    if masks.ndim != 3 or masks.shape[0] == 0:
        raise ValueError(f"masks must be a non-empty (n, h, w) stack, got shape {masks.shape}")
    if scores.shape != masks.shape[:1]:
        raise ValueError(f"scores must have one value per mask, shape {masks.shape[:1]}, got {scores.shape}")
    sizes = masks.sum(axis=(1, 2)).astype(np.float64)
    penalty = (scores < min_confidence).astype(np.float64)
    if coarse_ious is not None:
        coarse_ious = np.asarray(coarse_ious, dtype=np.float64)
        if coarse_ious.shape != masks.shape[:1]:
            raise ValueError(f"coarse_ious must have one value per mask, shape {masks.shape[:1]}, got {coarse_ious.shape}")
        penalty += coarse_ious < min_coarse_iou
    return int(np.argmax(sizes - penalty * sizes.max()))


# ---------------------------------------------------------------------------------------------------
# SAM
# ---------------------------------------------------------------------------------------------------


def _as_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 array from a PIL image or such an array."""
    if hasattr(image, "convert"):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or 0 in array.shape:
        raise ValueError(f"image must be a PIL image or an (H, W, 3) uint8 array, got {array.dtype} {array.shape}")
    return array


def _looks_like_path(name: str) -> bool:
    """A name meant as a local folder (not a hub id like ``facebook/sam-vit-base``)."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def _load(name: str, loader: Any, what: str) -> Any:
    """``loader(name)`` with a load failure turned into a ModelLoadError saying what to download."""
    folder = Path(name).expanduser()
    if _looks_like_path(name) and not folder.exists():
        raise ModelLoadError(f"the SAM {what} folder {name!r} does not exist; {_DOWNLOAD_HINT}")
    try:
        return loader(str(folder) if folder.exists() else name)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load the SAM {what} {name!r} ({error}); {_DOWNLOAD_HINT}") from error


def _processor_for(config: SamConfig) -> SamProcessor:
    """A SamProcessor matching a SAM config: images resized and padded to its square input size."""
    from transformers import SamProcessor

    try:  # the PIL backend needs no torchvision (transformers >= 5)
        from transformers import SamImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import SamImageProcessor as ImageProcessor
    side = config.vision_config.image_size
    mask_side = 4 * (side // config.vision_config.patch_size)  # the mask decoder upsamples embeddings 4x
    image_processor = ImageProcessor(
        size={"longest_edge": side},
        pad_size={"height": side, "width": side},
        mask_size={"longest_edge": mask_side},
        mask_pad_size={"height": mask_side, "width": mask_side},
    )
    return SamProcessor(image_processor=image_processor)


class SamMaskRefiner:
    """Refines an object's mask with SAM, prompted at its attention peak (LMD's point input).

    Knobs (defaults are LMD's, ``generation/lmd.py``):

    - ``model``: a local folder or hub id for ``SamModel.from_pretrained`` (e.g. a download of
      ``facebook/sam-vit-base``, LMD's model), or a built ``SamModel``. Offline, a hub id works only if
      it is in the Hugging Face cache; a failure raises ModelLoadError saying how to download it.
    - ``processor``: the ``SamProcessor``; default: loaded from ``model`` when it is a name, else built
      to match the model's config.
    - ``device``, ``dtype``: where and in what precision SAM runs; default: leave the model as it is
      (a loaded one stays on the CPU in float32).
    - ``gaussian_sigma`` (1.5): the blur of the attention map, in attention-grid cells.
    - ``mask_threshold`` (0.25): the coarse mask is the normalised, smoothed attention above this
      (LMD's ``mask_th_for_point``).
    - ``min_confidence`` (0.85): SAM masks with a predicted IoU below this are discouraged.
    - ``min_coarse_iou`` (0.25): SAM masks overlapping the coarse mask less than this are discouraged.
    """

    def __init__(
        self,
        model: str | Path | SamModel,
        processor: SamProcessor | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        gaussian_sigma: float = 1.5,
        mask_threshold: float = 0.25,
        min_confidence: float = 0.85,
        min_coarse_iou: float = 0.25,
    ) -> None:
        self._check_knobs(gaussian_sigma, mask_threshold, min_confidence, min_coarse_iou)
        self.gaussian_sigma, self.mask_threshold = gaussian_sigma, mask_threshold
        self.min_confidence, self.min_coarse_iou = min_confidence, min_coarse_iou
        self.model = self._load_model(model).eval()
        if device is not None or dtype is not None:
            self.model.to(device=device, dtype=dtype)
        self.processor = processor if processor is not None else self._default_processor(model)

    @staticmethod
    def _check_knobs(sigma: float, threshold: float, min_confidence: float, min_coarse_iou: float) -> None:
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"gaussian_sigma must be a finite number >= 0, got {sigma!r}")
        _check_threshold(threshold, "mask_threshold")
        for name, value in (("min_confidence", min_confidence), ("min_coarse_iou", min_coarse_iou)):
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")

    @staticmethod
    def _load_model(model: str | Path | SamModel) -> SamModel:
        if not isinstance(model, (str, Path)):
            return model
        from transformers import SamModel

        return _load(str(model), SamModel.from_pretrained, "model")

    def _default_processor(self, model: str | Path | SamModel) -> SamProcessor:
        if not isinstance(model, (str, Path)):
            return _processor_for(self.model.config)
        from transformers import SamProcessor

        return _load(str(model), SamProcessor.from_pretrained, "processor")

    def refine(
        self, image: Image.Image | np.ndarray, attention: np.ndarray | torch.Tensor, mask_size: tuple[int, int]
    ) -> np.ndarray:
        """The object's bool mask of shape ``mask_size``, chosen among SAM's masks at its attention peak.

        ``image``: the per-box generated image (PIL or (H, W, 3) uint8); ``attention``: the object
        token's (h, w) cross-attention map; ``mask_size``: the (rows, cols) of the result, e.g. the
        latent grid (64, 64). SAM's masks are resized to ``mask_size``, then (as LMD) to the attention
        grid to measure their IoU with the coarse mask.
        """
        mask_size = self._check_mask_size(mask_size)
        smoothed = smooth_attention(attention, self.gaussian_sigma)
        coarse = _normalised(smoothed) > self.mask_threshold
        pixels = _as_rgb(image)
        masks, scores = self.candidates(pixels, peak_point(smoothed, pixels.shape[:2]))
        masks = resize_masks(masks, mask_size)
        ious = mask_iou(coarse, resize_masks(masks, coarse.shape))
        index = select_mask(
            masks, scores, ious, min_confidence=self.min_confidence, min_coarse_iou=self.min_coarse_iou
        )
        return masks[index]

    @staticmethod
    def _check_mask_size(mask_size: tuple[int, int]) -> tuple[int, int]:
        size = tuple(mask_size)
        if len(size) != 2 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in size):
            raise ValueError(f"mask_size must be two positive ints (rows, cols), got {mask_size!r}")
        return int(size[0]), int(size[1])

    @torch.no_grad()
    def candidates(self, image: Image.Image | np.ndarray, point: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """SAM's multimask answer for one ``(x, y)`` pixel point: bool masks (3, H, W) at the image's
        size and their confidences (SAM's predicted IoU), shape (3,)."""
        masks, scores = self._ask(_as_rgb(image), "input_points", [[[float(point[0]), float(point[1])]]], True)
        return masks[0].numpy(), scores[0, 0].float().cpu().numpy()

    @torch.no_grad()
    def box_masks(self, image: Image.Image | np.ndarray, boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
        """SAM's mask of the object in each ``(x0, y0, x1, y1)`` pixel box (a detector's): bool ``(K, H, W)`` at the
        image's size, one per box (SAM's single-mask answer, the one it recommends for a box prompt)."""
        pixels = _as_rgb(image)
        height, width = pixels.shape[:2]
        if not boxes:
            return np.zeros((0, height, width), dtype=bool)
        checked = []
        for box in boxes:
            x0, y0, x1, y1 = (float(v) for v in box)
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (x0 < x1 and y0 < y1):
                raise ValueError(f"a SAM box must be finite (x0, y0, x1, y1) pixels with x0 < x1, y0 < y1, got {box!r}")
            checked.append([x0, y0, x1, y1])
        masks, _ = self._ask(pixels, "input_boxes", [checked], False)
        return masks[:, 0].numpy().astype(bool)

    def _ask(self, pixels: np.ndarray, prompt: str, value: list, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM on one picture with one kind of prompt (``input_points`` or ``input_boxes``): the masks at the
        picture's size, ``(prompts, masks, H, W)``, and SAM's predicted IoUs."""
        inputs = self.processor(images=pixels, return_tensors="pt", **{prompt: value})
        outputs = self.model(pixel_values=self._to_model(inputs["pixel_values"]),
                             multimask_output=multimask, **{prompt: self._to_model(inputs[prompt])})
        masks = self.processor.image_processor.post_process_masks(
            outputs.pred_masks.float().cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )
        return masks[0], outputs.iou_scores

    def _to_model(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device=self.model.device, dtype=self.model.dtype)
