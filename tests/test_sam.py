"""SAM mask refinement (LMD's point input) on a tiny random SamModel: no network, no downloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import SamConfig, SamModel, SamProcessor

from scenecraft.generation.loading import ModelLoadError
from scenecraft.generation.sam import (
    SamMaskRefiner,
    coarse_attention_mask,
    mask_iou,
    peak_point,
    resize_masks,
    select_mask,
    smooth_attention,
)

SIDE = 64  # the tiny SAM's square input size


def tiny_sam_config() -> SamConfig:
    return SamConfig(
        vision_config=dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=SIDE, patch_size=16,
            output_channels=32, window_size=2, global_attn_indexes=[1], num_pos_feats=16, mlp_dim=64,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=SIDE, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )


class RecordingSam(SamModel):
    """A SamModel that keeps the keyword arguments of each call."""

    def __init__(self, config: SamConfig) -> None:
        super().__init__(config)
        self.calls: list[dict] = []

    def forward(self, *args, **kwargs):
        self.calls.append(kwargs)
        return super().forward(*args, **kwargs)


class RecordingProcessor(SamProcessor):
    """A SamProcessor that keeps the input points it is given (in image pixels)."""

    def __init__(self, image_processor) -> None:
        super().__init__(image_processor)
        self.points: list = []

    def __call__(self, *args, input_points=None, **kwargs):
        self.points.append(input_points)
        return super().__call__(*args, input_points=input_points, **kwargs)


def tiny_model(cls: type[SamModel] = SamModel) -> SamModel:
    torch.manual_seed(0)
    return cls(tiny_sam_config()).eval()


def tiny_processor(cls: type[SamProcessor] = SamProcessor) -> SamProcessor:
    try:
        from transformers import SamImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import SamImageProcessor as ImageProcessor
    image_processor = ImageProcessor(
        size={"longest_edge": SIDE}, pad_size={"height": SIDE, "width": SIDE},
        mask_size={"longest_edge": SIDE // 4}, mask_pad_size={"height": SIDE // 4, "width": SIDE // 4},
    )
    return cls(image_processor=image_processor)


def bump(shape: tuple[int, int], row: float, col: float, sigma: float) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma**2))


def image(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- smoothing and the coarse mask -----------------------------------------------------------------


def test_smoothing_a_delta_gives_scipys_normalised_gaussian() -> None:
    delta = np.zeros((21, 21))
    delta[10, 10] = 1.0
    smoothed = smooth_attention(delta, 1.5)
    x = np.arange(-6, 7)  # scipy's radius: int(4 * 1.5 + 0.5) = 6
    kernel = np.exp(-(x**2) / (2 * 1.5**2))
    kernel /= kernel.sum()
    expected = np.zeros((21, 21))
    expected[4:17, 4:17] = np.outer(kernel, kernel)
    np.testing.assert_allclose(smoothed, expected, atol=1e-12)
    assert smoothed.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(smoothed, smoothed.T, atol=1e-15)
    np.testing.assert_allclose(smoothed, smoothed[::-1, ::-1], atol=1e-15)


def test_smoothing_reflects_about_the_edge_like_scipy_and_keeps_the_mass() -> None:
    corner = np.zeros((12, 12))
    corner[0, 0] = 1.0
    smoothed = smooth_attention(torch.tensor(corner), 1.5)
    x = np.arange(-6, 7)
    kernel = np.exp(-(x**2) / 4.5)
    kernel /= kernel.sum()
    # scipy's "reflect" repeats the edge cell, so the corner gets the weights at offsets 0 and 1.
    assert smoothed[0, 0] == pytest.approx((kernel[6] + kernel[7]) ** 2)
    assert smoothed.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    noise = rng.random((16, 16))
    assert smooth_attention(noise, 1.5).sum() == pytest.approx(noise.sum(), rel=1e-9)
    np.testing.assert_array_equal(smooth_attention(noise, 0.0), noise)


def test_coarse_mask_is_the_bump_neighbourhood_and_the_threshold_moves_it() -> None:
    attention = bump((16, 16), 5, 10, sigma=2.0)
    rows, cols = np.mgrid[:16, :16]
    distance = np.hypot(rows - 5, cols - 10)
    # Smoothed, the bump is a gaussian of sigma sqrt(2^2 + 1.5^2) = 2.5; > t where d < 2.5 sqrt(2 ln(1/t)).
    for threshold in (0.25, 0.6):
        mask = coarse_attention_mask(attention, threshold=threshold)
        radius = 2.5 * np.sqrt(2 * np.log(1 / threshold))
        assert mask.dtype == bool and mask.shape == (16, 16)
        assert mask[distance < radius - 0.4].all() and not mask[distance > radius + 0.4].any()
    wide, narrow = coarse_attention_mask(attention), coarse_attention_mask(attention, threshold=0.6)
    assert narrow.sum() < wide.sum() and not (narrow & ~wide).any()


def test_a_flat_map_has_no_peak_and_an_empty_coarse_mask() -> None:
    assert not coarse_attention_mask(np.full((8, 8), 0.3)).any()


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="attention must be a non-empty"):
        coarse_attention_mask(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="attention must be finite"):
        coarse_attention_mask(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="threshold must be in"):
        coarse_attention_mask(np.zeros((4, 4)), threshold=1.5)
    with pytest.raises(ValueError, match="sigma must be"):
        smooth_attention(np.zeros((4, 4)), -1.0)


def test_peak_point_is_the_argmax_cell_corner_in_pixels() -> None:
    smoothed = np.zeros((12, 16))
    smoothed[3, 13] = 1.0
    assert peak_point(smoothed, (96, 128)) == (104.0, 24.0)


# --- LMD's selection rule ---------------------------------------------------------------------------


def masks_of_sizes(*sizes: int) -> np.ndarray:
    masks = np.zeros((len(sizes), 10, 10), dtype=bool)
    for mask, size in zip(masks, sizes):
        mask.flat[:size] = True
    return masks


def test_select_mask_takes_the_largest_confident_overlapping_mask() -> None:
    masks = masks_of_sizes(10, 30, 50)
    good_iou = np.array([0.5, 0.5, 0.5])
    assert select_mask(masks, np.array([0.9, 0.9, 0.9]), good_iou) == 2
    assert select_mask(masks, np.array([0.9, 0.95, 0.5]), good_iou) == 1  # the largest is unsure
    assert select_mask(masks, np.array([0.9, 0.9, 0.9]), np.array([0.5, 0.5, 0.1])) == 1  # it misses the attention
    assert select_mask(masks, np.array([0.9, 0.9, 0.9]), np.array([0.5, 0.5, 0.1]), min_coarse_iou=0.05) == 2
    assert select_mask(masks, np.array([0.5, 0.5, 0.5]), good_iou) == 2  # all unsure: the largest again
    # All unsure; twice discouraged loses to once: 10 - 50 > 50 - 2*50 > 30 - 2*50.
    assert select_mask(masks, np.array([0.5, 0.5, 0.5]), np.array([0.5, 0.1, 0.1])) == 0
    assert select_mask(masks, np.array([0.9, 0.95, 0.5])) == 1  # no coarse IoUs: confidence only
    assert select_mask(masks, np.array([0.5, 0.5, 0.5]), min_confidence=0.4) == 2


def test_select_mask_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="scores must have one value per mask"):
        select_mask(masks_of_sizes(1, 2, 3), np.array([0.9, 0.9]))
    with pytest.raises(ValueError, match="coarse_ious must have one value per mask"):
        select_mask(masks_of_sizes(1, 2, 3), np.ones(3), np.ones(4))


def test_resize_keeps_any_touched_pixel_and_iou_matches_by_hand() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[0:2, 0:2] = True
    assert resize_masks(mask, (4, 4)).sum() == 1 and resize_masks(mask[None], (16, 16)).shape == (1, 16, 16)
    other = np.zeros((1, 8, 8), dtype=bool)
    other[0, 0:2, 0:4] = True
    assert mask_iou(mask, other)[0] == pytest.approx(0.5)


# --- SAM ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width", "grid", "peak", "pixel_point"), [
    (128, 128, (16, 16), (5, 11), (88.0, 40.0)),
    (96, 128, (12, 16), (3, 13), (104.0, 24.0)),
])
def test_refine_asks_sam_at_the_attention_peak_and_returns_the_selected_mask(height, width, grid, peak, pixel_point):
    model, processor = tiny_model(RecordingSam), tiny_processor(RecordingProcessor)
    refiner = SamMaskRefiner(model, processor)
    attention = bump(grid, *peak, sigma=1.0) + 0.05 * np.random.default_rng(2).random(grid)
    mask = refiner.refine(image(height, width), torch.tensor(attention, dtype=torch.float32), (64, 64))

    assert mask.dtype == bool and mask.shape == (64, 64)
    assert processor.points == [[[list(pixel_point)]]]
    scale = SIDE / max(height, width)  # the processor rescales points with the image
    expected = torch.tensor([[[[pixel_point[0] * scale, pixel_point[1] * scale]]]])
    torch.testing.assert_close(model.calls[0]["input_points"], expected, check_dtype=False)
    assert model.calls[0]["multimask_output"] is True

    candidates, scores = refiner.candidates(image(height, width), pixel_point)
    assert candidates.shape == (3, height, width) and scores.shape == (3,)
    resized = resize_masks(candidates, (64, 64))
    coarse = coarse_attention_mask(attention)
    chosen = select_mask(resized, scores, mask_iou(coarse, resize_masks(resized, grid)))
    np.testing.assert_array_equal(mask, resized[chosen])


def test_refine_builds_a_matching_processor_and_honours_dtype() -> None:
    refiner = SamMaskRefiner(tiny_model(), dtype=torch.float64)
    assert refiner.processor.image_processor.size["longest_edge"] == SIDE
    assert refiner.model.dtype == torch.float64
    mask = refiner.refine(image(64, 80), bump((8, 8), 2, 6, 1.0), (32, 40))
    assert mask.dtype == bool and mask.shape == (32, 40)


def test_refine_checks_its_inputs() -> None:
    refiner = SamMaskRefiner(tiny_model(), tiny_processor())
    with pytest.raises(ValueError, match="mask_size must be two positive ints"):
        refiner.refine(image(64, 64), np.ones((8, 8)), (64,))
    with pytest.raises(ValueError, match="image must be a PIL image or an"):
        refiner.refine(np.zeros((64, 64)), np.ones((8, 8)), (64, 64))
    with pytest.raises(ValueError, match="min_confidence must be in"):
        SamMaskRefiner(tiny_model(), tiny_processor(), min_confidence=2.0)


def test_refine_takes_a_pil_image() -> None:
    from PIL import Image

    refiner = SamMaskRefiner(tiny_model(), tiny_processor())
    assert refiner.refine(Image.fromarray(image(64, 64)), bump((8, 8), 4, 4, 1.0), (16, 16)).shape == (16, 16)


def test_a_missing_sam_folder_says_to_download_the_weights(tmp_path) -> None:
    missing = str(tmp_path / "sam-vit-base")
    with pytest.raises(ModelLoadError, match="hf download facebook/sam-vit-base --local-dir") as info:
        SamMaskRefiner(missing)
    assert missing in str(info.value)
    with pytest.raises(ModelLoadError, match="could not load the SAM model .*SAM weights must be downloaded"):
        SamMaskRefiner(str(tmp_path))  # a folder, but no weights in it


def test_box_prompts_give_one_mask_per_box_at_the_pictures_size():
    refiner = SamMaskRefiner(tiny_model(), tiny_processor())
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    masks = refiner.box_masks(image, [(2, 3, 30, 40), (35.5, 1, 63, 20)])
    assert masks.shape == (2, 48, 64) and masks.dtype == bool
    assert refiner.box_masks(image, []).shape == (0, 48, 64)
    for bad in ((5, 5, 5, 9), (0, 0, float("nan"), 9)):
        with pytest.raises(ValueError, match="a SAM box must be finite"):
            refiner.box_masks(image, [bad])
