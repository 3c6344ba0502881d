"""Cost of LMD: wall time of ``layout`` (default and fast) over the plain pipeline, measured in one run.

The pipeline has Stable Diffusion 1.5's real UNet configuration with random weights (the cost is
the same as with trained ones), a small CLIP text encoder of SD 1.5's width (768) and the test
kit's small 8x VAE, so the UNet dominates as it does at full size. For every box count the plain
call is timed before and after the layout calls and averaged, so slow drift in the load from other
processes cancels.
Peak memory is the peak allocated accelerator memory, or on the CPU the peak resident set size.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch

from ..generation.layout import LayoutConfig, generate_layout
from ..generation.regional import RegionalConfig, generate_regional
from ..scene import Box, Region, Scene
from .bench_regional import SD15_UNET_CONFIG

__all__ = ["LayoutBenchRow", "run_layout_benchmark", "bench_pipeline", "grid_boxes", "small_vae"]


@dataclass
class LayoutBenchRow:
    """Seconds and peak memory (MB) of plain and layout calls at one box count."""

    boxes: int
    seconds: dict[str, float] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)

    def ratio(self, name: str) -> float:
        return self.seconds[name] / self.seconds["plain"]


def bench_pipeline(unet_config: dict | None = None, seed: int = 0):
    """A ``StableDiffusionPipeline`` with the given (default: SD 1.5's) UNet config and random weights."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from transformers import CLIPTokenizer

    from ..generation.loading import clip_tokenizer_path

    torch.manual_seed(seed)
    config = unet_config or SD15_UNET_CONFIG
    unet = UNet2DConditionModel.from_config(config).eval()
    text = CLIPTextModel(CLIPTextConfig(hidden_size=config["cross_attention_dim"], intermediate_size=256,
                                        num_attention_heads=4, num_hidden_layers=1, vocab_size=49408,
                                        max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                                        pad_token_id=49407))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    tokenizer = CLIPTokenizer.from_pretrained(str(clip_tokenizer_path()), model_max_length=77)
    pipe = StableDiffusionPipeline(vae=small_vae(), text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def small_vae():
    """An ``AutoencoderKL`` with SD's 8x down factor and few channels (cheap next to the UNet)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 8, 16, 16), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=4, sample_size=64,
    )


def grid_boxes(count: int) -> list[Box]:
    """``count`` boxes in a near-square grid, each filling 80% of its cell."""
    columns = 1
    while columns * columns < count:
        columns += 1
    rows = -(-count // columns)
    boxes = []
    for index in range(count):
        row, column = divmod(index, columns)
        x0, y0 = column / columns, row / rows
        w, h = 1 / columns, 1 / rows
        boxes.append(Box(x0 + 0.1 * w, y0 + 0.1 * h, x0 + 0.9 * w, y0 + 0.9 * h))
    return boxes


class _PeakMemory:
    """Peak allocated memory of an accelerator with memory stats (CUDA, XPU...), else peak resident
    memory (sampled every 5 ms), during a block, in MB."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0.0, threading.Event()
        backend = getattr(torch, device.type, None)
        self.stats = backend if hasattr(backend, "max_memory_allocated") and device.type != "cpu" else None

    def __enter__(self):
        if self.stats is not None:
            self.stats.reset_peak_memory_stats(self.device)
            return self
        self.base = _rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mb() - self.base)

    def __exit__(self, *exc) -> None:
        if self.stats is not None:
            self.peak = self.stats.max_memory_allocated(self.device) / 2**20
            return
        self._stop.set()
        self._thread.join()


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


def _timed(pipe, call) -> tuple[float, float]:
    with _PeakMemory(pipe._execution_device) as memory:
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
    return elapsed, memory.peak


def run_layout_benchmark(box_counts: tuple[int, ...] = (1, 2, 4, 8), steps: int = 10, size: int = 512,
                         pipe=None, on_call=None) -> list[LayoutBenchRow]:
    """Time plain, layout and layout-fast at each box count (see the module docstring).

    ``steps`` is the denoising steps of every call; LMD's schedules (written for 50 steps) are rescaled to it.
    """
    pipe = pipe or bench_pipeline()
    plain = RegionalConfig(num_inference_steps=steps, guidance_scale=7.5, seed=0, output_type="latent")
    layouts = {"layout": LayoutConfig(num_inference_steps=steps, seed=0, output_type="latent"),
               "layout-fast": LayoutConfig(num_inference_steps=steps, seed=0, output_type="latent", fast=True)}
    rows = []
    for count in box_counts:
        scene = Scene(prompt="objects on a table", width=size, height=size,
                      regions=[Region(f"a small object number {i}", box) for i, box in enumerate(grid_boxes(count))])
        row = LayoutBenchRow(count)
        calls = {"plain": lambda: generate_regional(pipe, Scene(prompt=scene.prompt, width=size, height=size), plain)}
        calls |= {name: (lambda config=config: generate_layout(pipe, scene, config)) for name, config in layouts.items()}
        for name, call in calls.items():
            row.seconds[name], row.peak_mb[name] = _timed(pipe, call)
            if on_call is not None:
                on_call(count, name)
        # Plain again after the layout calls: its mean brackets them, so slow drift in the load cancels.
        again, _ = _timed(pipe, calls["plain"])
        row.seconds["plain"] = (row.seconds["plain"] + again) / 2
        rows.append(row)
    return rows
