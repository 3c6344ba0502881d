"""Cost of regional attention: UNet wall time with K regions over the plain UNet, measured in one run.

The UNet is built from Stable Diffusion 1.5's real configuration with random weights (the cost is
the same as with trained ones). Each repetition times one plain denoising step and one step for
every region count, interleaved, so that load from other processes hits all of them alike; the
figure is the ratio of medians.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch

from ..scene import Scene
from ..generation.attention import RegionalAttnProcessor, SlotLayout, installed_cross_attention_processors
from ..generation.regional import slot_coefficients

__all__ = ["SD15_UNET_CONFIG", "RegionalBenchResult", "grid_split", "run_regional_benchmark"]

SD15_UNET_CONFIG = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
TEXT_TOKENS = 77


@dataclass
class RegionalBenchResult:
    """Median seconds per UNet step (classifier-free guidance batch of 2) and the ratio to plain."""

    regions: int
    seconds: float
    plain_seconds: float

    @property
    def ratio(self) -> float:
        return self.seconds / self.plain_seconds


def grid_split(regions: int) -> str:
    """A near-square RPG split with exactly ``regions`` cells (rows of equal height and width)."""
    rows = max(r for r in range(1, int(math.isqrt(regions)) + 1) if regions % r == 0)
    columns = regions // rows
    return ";".join(",".join(["1"] * (columns + 1)) for _ in range(rows)) if rows > 1 else ",".join(["1"] * columns)


def _layout(regions: int, size: int, base_ratio: float, latent: int) -> SlotLayout:
    scene = Scene.from_split("base", grid_split(regions), [f"region {i}" for i in range(regions)],
                             width=size, height=size, base_ratio=base_ratio)
    spans = [(i * TEXT_TOKENS, (i + 1) * TEXT_TOKENS) for i in range(regions + 1)]
    return SlotLayout(spans, lambda h, w: slot_coefficients(scene, base_ratio, h, w), latent, latent)


def _time_step(unet, latents, timestep, context) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        unet(latents, timestep, encoder_hidden_states=context)
    return time.perf_counter() - start


def run_regional_benchmark(
    region_counts: tuple[int, ...] = (2, 4, 8, 16),
    repeats: int = 3,
    size: int = 512,
    base_ratio: float = 0.3,
    unet_config: dict | None = None,
    seed: int = 0,
) -> list[RegionalBenchResult]:
    """Time plain vs regional UNet steps; see the module docstring. Uses torch's current thread count."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    config = unet_config or SD15_UNET_CONFIG
    unet = UNet2DConditionModel.from_config(config).eval()
    latent = size // 8
    latents = torch.randn(2, config["in_channels"], latent, latent)
    timestep = torch.tensor(500)
    contexts = {k: torch.randn(2, TEXT_TOKENS * (k + 1), config["cross_attention_dim"]) for k in region_counts}
    plain_context = torch.randn(2, TEXT_TOKENS, config["cross_attention_dim"])
    layouts = {k: _layout(k, size, base_ratio, latent) for k in region_counts}

    _time_step(unet, latents, timestep, plain_context)  # warm-up; also builds each layout's per-call plan
    for k in region_counts:
        with installed_cross_attention_processors(unet, RegionalAttnProcessor(layouts[k])):
            _time_step(unet, latents, timestep, contexts[k])
    plain_times: list[float] = []
    region_times: dict[int, list[float]] = {k: [] for k in region_counts}
    for _ in range(repeats):
        plain_times.append(_time_step(unet, latents, timestep, plain_context))
        for k in region_counts:
            with installed_cross_attention_processors(unet, RegionalAttnProcessor(layouts[k])):
                region_times[k].append(_time_step(unet, latents, timestep, contexts[k]))
    plain = statistics.median(plain_times)
    return [RegionalBenchResult(k, statistics.median(region_times[k]), plain) for k in region_counts]
