"""Cost of MultiDiffusion panoramas as the canvas widens: wall time per output megapixel, UNet window
evaluations and peak memory, for the faithful default, view batching and the fast (SpotDiffusion)
option, and for decoding with and without tiles, measured in one run.

The pipeline is built from Stable Diffusion 1.5's real UNet and VAE configurations with random
weights (the cost is the same as with trained ones); its text encoder is a small CLIP on the shipped
toy model's tokenizer (text encoding is a negligible part of a panorama). Denoising and decoding
are timed apart. Peak decoding memory is the CUDA allocator's peak on a GPU, and on a CPU the peak
resident memory of a fresh subprocess during its first decode, less its resident memory before it
(a fresh process, because a CPU allocator keeps freed memory and would hide a second decode's).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

from .bench_regional import SD15_UNET_CONFIG

__all__ = ["SD15_VAE_CONFIG", "MODES", "PanoramaRun", "DecodeRun", "bench_pipeline", "run_panorama_benchmark",
           "measure_decode"]

SD15_VAE_CONFIG = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
    "sample_size": 512, "scaling_factor": 0.18215,
}
SD15_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
                  "set_alpha_to_one": False, "steps_offset": 1}
#: mode -> MultiDiffusionConfig settings (the view batch size is filled in from the run's argument).
MODES = {"default": {}, "batched": {"view_batch_size": None}, "fast": {"fast": True}}
PROMPT = "a photo of a mountain range at sunset, wide landscape"


@dataclass
class PanoramaRun:
    """One denoising run: ``mode`` at ``width`` px, with its seconds, UNet calls and window evaluations."""

    mode: str
    width: int
    height: int
    seconds: float
    unet_calls: int
    window_evaluations: int

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def seconds_per_megapixel(self) -> float:
        return self.seconds / self.megapixels


@dataclass
class DecodeRun:
    """One VAE decode at ``width`` px, tiled or not: seconds and peak memory above the baseline (MiB)."""

    width: int
    height: int
    tiled: bool
    seconds: float
    peak_mib: float


def bench_pipeline(unet_config: dict | None = None, vae_config: dict | None = None, seed: int = 0,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """A ``StableDiffusionPipeline`` of random weights at SD 1.5's sizes (or the configs given)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ..generation.loading import toyworld_path

    unet_config = unet_config or SD15_UNET_CONFIG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config or SD15_VAE_CONFIG)
        tokenizer = CLIPTokenizer.from_pretrained(toyworld_path() / "tokenizer")
        text_config = CLIPTextConfig(hidden_size=unet_config["cross_attention_dim"], intermediate_size=256,
                                     num_hidden_layers=1, num_attention_heads=8,
                                     max_position_embeddings=tokenizer.model_max_length)
        text_encoder = CLIPTextModel(text_config)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(**SD15_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


def _count_unet(pipe) -> tuple[dict, object]:
    counts = {"calls": 0, "windows": 0}

    def count(_module, args, kwargs):
        counts["calls"] += 1
        sample = args[0] if args else kwargs["sample"]
        counts["windows"] += sample.shape[0] // 2 if sample.shape[0] > 1 else 1  # [uncond, cond] per window

    return counts, pipe.unet.register_forward_pre_hook(count, with_kwargs=True)


def run_panorama_benchmark(pipe, widths: tuple[int, ...] = (1024, 2048, 4096), modes: tuple[str, ...] = tuple(MODES),
                           *, steps: int = 2, view_batch_size: int = 4, repeats: int = 1, guidance_scale: float = 7.0,
                           height: int | None = None, seed: int = 0) -> list[PanoramaRun]:
    """Denoise (``output_type="latent"``) one panorama per width and mode, timing each (median of ``repeats``)."""
    from ..generation.multidiffusion import MultiDiffusionConfig, generate_multidiffusion
    from ..scene import Scene, SceneLimits

    height = height or pipe.unet.config.sample_size * pipe.vae_scale_factor
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; available: {', '.join(MODES)}")
    runs = []
    counts, hook = _count_unet(pipe)
    try:
        for width in widths:
            scene = Scene(PROMPT, width=width, height=height, limits=SceneLimits(max_side=max(16384, width)))
            for mode in modes:
                values = {key: view_batch_size if value is None else value for key, value in MODES[mode].items()}
                config = MultiDiffusionConfig(num_inference_steps=steps, guidance_scale=guidance_scale, seed=seed,
                                              output_type="latent", **values)
                times = []
                for _ in range(repeats):
                    counts.update(calls=0, windows=0)
                    _synchronize(pipe)
                    start = time.perf_counter()
                    generate_multidiffusion(pipe, scene, config)
                    _synchronize(pipe)
                    times.append(time.perf_counter() - start)
                runs.append(PanoramaRun(mode, width, height, statistics.median(times), counts["calls"],
                                        counts["windows"]))
    finally:
        hook.remove()
    return runs


def _synchronize(pipe) -> None:
    if pipe.device.type == "cuda":
        torch.cuda.synchronize(pipe.device)


def decode_once(pipe, width: int, height: int, tiled: bool, seed: int = 0) -> tuple[float, float]:
    """``(seconds, peak MiB above the baseline)`` of decoding a random ``height x width`` latent."""
    from ..generation.sampling import decode_latents

    factor = pipe.vae_scale_factor
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 4, height // factor, width // factor, generator=generator).to(pipe.device, pipe.dtype)
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(pipe.device)
        torch.cuda.reset_peak_memory_stats(pipe.device)
        baseline = torch.cuda.memory_allocated(pipe.device)
    else:
        baseline = _resident_mib()
    start = time.perf_counter()
    decode_latents(pipe, latents, "np", tiled=tiled)
    if cuda:
        torch.cuda.synchronize(pipe.device)
        return time.perf_counter() - start, (torch.cuda.max_memory_allocated(pipe.device) - baseline) / 2**20
    return time.perf_counter() - start, _peak_resident_mib() - baseline


def _resident_mib() -> float:
    """This process's resident memory now, after resetting its peak (Linux ``clear_refs``) to it."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status_mib("VmRSS")


def _peak_resident_mib() -> float:
    return _status_mib("VmHWM")


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}; peak memory on a CPU needs Linux")


def measure_decode(widths: tuple[int, ...], height: int, *, vae_config: dict | None = None, device: str = "cpu",
                   dtype: str = "fp32") -> list[DecodeRun]:
    """Decode at every width, tiled and not. On a CPU each decode runs in a fresh subprocess (see the module
    docstring); on a GPU in this process, with the allocator's peak reset before each."""
    runs = []
    for tiled in (True, False):
        for width in widths:
            request = {"width": width, "height": height, "tiled": tiled, "vae_config": vae_config,
                       "device": device, "dtype": dtype}
            if device == "cpu":
                done = subprocess.run([sys.executable, "-m", __name__, json.dumps(request)], capture_output=True,
                                      text=True, check=False)
                if done.returncode:
                    raise RuntimeError(f"the decode subprocess failed:\n{done.stderr[-2000:]}")
                seconds, peak = json.loads(done.stdout.strip().splitlines()[-1])
            else:
                seconds, peak = _decode_request(request)
            runs.append(DecodeRun(width, height, tiled, seconds, peak))
    return runs


_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _decode_request(request: dict) -> tuple[float, float]:
    from diffusers import AutoencoderKL
    from diffusers.image_processor import VaeImageProcessor

    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(request["vae_config"] or SD15_VAE_CONFIG).to(
        device=request["device"], dtype=_DTYPES[request["dtype"]])
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    pipe = _VaeOnly(vae, VaeImageProcessor(vae_scale_factor=factor), factor)
    with torch.inference_mode():
        # Memory from the first decode (a second one reuses what the allocator kept), time from the second.
        _, peak = decode_once(pipe, request["width"], request["height"], request["tiled"])
        seconds, _ = decode_once(pipe, request["width"], request["height"], request["tiled"])
    return seconds, peak


class _VaeOnly:
    """What :func:`~scenecraft.generation.sampling.decode_latents` reads of a pipeline: its VAE, image
    processor and VAE factor (building the UNet too would cost the subprocess seconds and gigabytes)."""

    def __init__(self, vae, image_processor, vae_scale_factor: int) -> None:
        self.vae, self.image_processor, self.vae_scale_factor = vae, image_processor, vae_scale_factor
        self.unet = None  # not SDXL, not GLIGEN: decoded as SD 1.x/2.x
        self.device, self.dtype = vae.device, vae.dtype


def summary(runs: list[PanoramaRun], decodes: list[DecodeRun]) -> dict:
    """The figures the issue's targets are about, as ratios measured in this run."""
    by = {(run.mode, run.width): run for run in runs}
    widths = sorted({run.width for run in runs})
    small, large = widths[0], widths[-1]
    out: dict = {"runs": [asdict(run) | {"seconds_per_megapixel": run.seconds_per_megapixel} for run in runs],
                 "decodes": [asdict(run) for run in decodes]}
    for mode in sorted({run.mode for run in runs}):
        if (mode, small) in by and (mode, large) in by:
            out[f"{mode}_cost_per_pixel_{large}_over_{small}"] = (
                by[mode, large].seconds_per_megapixel / by[mode, small].seconds_per_megapixel)
            out[f"{mode}_seconds_per_window_{large}_over_{small}"] = (
                (by[mode, large].seconds / by[mode, large].window_evaluations)
                / (by[mode, small].seconds / by[mode, small].window_evaluations))
    for width in widths:
        if ("default", width) in by and ("fast", width) in by:
            out[f"fast_fewer_windows_{width}"] = by["default", width].window_evaluations / by["fast", width].window_evaluations
        if ("default", width) in by and ("batched", width) in by:
            out[f"batched_speedup_{width}"] = by["default", width].seconds / by["batched", width].seconds
    for tiled in (True, False):
        peaks = {run.width: run.peak_mib for run in decodes if run.tiled == tiled}
        if len(peaks) > 1:
            out[f"{'tiled' if tiled else 'untiled'}_decode_peak_{max(peaks)}_over_{min(peaks)}"] = (
                peaks[max(peaks)] / max(peaks[min(peaks)], 1e-9))
    return out


if __name__ == "__main__":  # the decode subprocess of measure_decode
    print(json.dumps(_decode_request(json.loads(sys.argv[1]))))
