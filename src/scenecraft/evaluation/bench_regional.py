"""Cost of regional attention: denoiser wall time with K regions over the plain denoiser, measured in one run.

``family="sd"`` (:func:`run_regional_benchmark`) times one step of a UNet built from Stable Diffusion 1.5's
real configuration, classifier-free guidance batch of 2, each region a 77-token CLIP slot of its own.
``"flux"`` and ``"sd3"`` (:func:`run_mmdit_regional_benchmark`) time one forward of an MMDiT transformer built
from FLUX.1-dev's or SD3.5-medium's real configuration with fewer blocks, where regions are a mask on the
joint attention (:mod:`~scenecraft.generation.joint_attention`) and each region slot holds its prompt's own
tokens. Weights are random (the cost is the same as with trained ones). Each repetition times the plain call
and the call for every region count, interleaved, so that load from other processes hits all of them alike;
the figure is the ratio of medians. On CUDA the MMDiT figures also carry each configuration's peak allocated
memory during its warm-up call.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial

import torch

from ..scene import Scene
from ..generation.attention import RegionalAttnProcessor, SlotLayout, installed_cross_attention_processors
from ..generation.joint_attention import (JointSlotLayout, RegionalFluxAttnProcessor, RegionalJointAttnProcessor,
                                          installed_joint_attention_processors)
from ..generation.regional import slot_coefficients

__all__ = ["SD15_UNET_CONFIG", "FLUX1_DEV_CONFIG", "SD35_MEDIUM_CONFIG", "MMDIT_CONFIGS", "FAMILIES", "TARGETS",
           "RegionalBenchResult", "MMDiTBenchResult", "MMDiTBench", "grid_split", "mmdit_config", "describe_model",
           "flux_image_ids", "run_regional_benchmark", "run_mmdit_regional_benchmark"]

SD15_UNET_CONFIG = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
TEXT_TOKENS = 77
# black-forest-labs/FLUX.1-dev transformer/config.json (the same numbers as the flux-dev params of BFL's reference
# code: hidden 3072 = 24 heads x 128, depth 19 double + 38 single, RoPE axes 16/56/56, T5 4096, CLIP pooled 768).
FLUX1_DEV_CONFIG = {
    "patch_size": 1, "in_channels": 64, "out_channels": None, "num_layers": 19, "num_single_layers": 38,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768,
    "guidance_embeds": True, "axes_dims_rope": (16, 56, 56),
}
# stabilityai/stable-diffusion-3.5-medium transformer/config.json: 24 blocks of 24 heads x 64 = 1536, SD3.5's dual
# (image-only second) attention in blocks 0-12, RMS q/k norm, patch 2 over a 16-channel latent.
SD35_MEDIUM_CONFIG = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 24,
    "attention_head_dim": 64, "num_attention_heads": 24, "joint_attention_dim": 4096, "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048, "pos_embed_max_size": 384, "dual_attention_layers": tuple(range(13)),
    "qk_norm": "rms_norm",
}
#: The real config of each MMDiT family (tests swap in tiny ones here).
MMDIT_CONFIGS: dict[str, dict] = {"flux": FLUX1_DEV_CONFIG, "sd3": SD35_MEDIUM_CONFIG}
FAMILIES = ("sd", "flux", "sd3")
#: The base slot as the pipelines encode a prompt: Flux T5 512; SD3 CLIP-L/G 77 + T5 256.
BASE_TOKENS = {"flux": 512, "sd3": 77 + 256}
DEFAULT_LAYERS = {"flux": (1, 1), "sd3": (2,)}
TARGETS = {"flux": "<= 1.15x at 4 regions, <= 1.3x at 16 (InstantX Regional-Prompting-FLUX: 3.5x at 16)"}
TARGETS["sd3"] = TARGETS["flux"]
TARGETS["sd"] = "<= 1.10x at 4 regions, <= 1.25x at 16"
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

Timer = Callable[[], float]  # one timed call, in seconds


@dataclass
class RegionalBenchResult:
    """Median seconds per denoiser call (one step) with ``regions`` regions and the plain call's, and their ratio."""

    regions: int
    seconds: float
    plain_seconds: float

    @property
    def ratio(self) -> float:
        return self.seconds / self.plain_seconds


@dataclass
class MMDiTBenchResult(RegionalBenchResult):
    """An MMDiT figure: also the regional text sequence's length and the call's peak CUDA memory (``None`` off CUDA)."""

    text_tokens: int
    peak_mib: float | None


@dataclass
class MMDiTBench:
    """One MMDiT run: what was timed (model, tokens, batch, device) and a result per region count."""

    family: str
    model: str
    size: int
    batch: int
    image_tokens: int
    plain_text_tokens: int
    region_slot_tokens: int
    device: str
    dtype: str
    plain_peak_mib: float | None
    results: list[MMDiTBenchResult]


def grid_split(regions: int) -> str:
    """A near-square RPG split with exactly ``regions`` cells (rows of equal height and width)."""
    rows = max(r for r in range(1, int(math.isqrt(regions)) + 1) if regions % r == 0)
    columns = regions // rows
    return ";".join(",".join(["1"] * (columns + 1)) for _ in range(rows)) if rows > 1 else ",".join(["1"] * columns)


def _grid_scene(regions: int, size: int, base_ratio: float) -> Scene:
    return Scene.from_split("base", grid_split(regions), [f"region {i}" for i in range(regions)],
                            width=size, height=size, base_ratio=base_ratio)


def _layout(regions: int, size: int, base_ratio: float, latent: int) -> SlotLayout:
    scene = _grid_scene(regions, size, base_ratio)
    spans = [(i * TEXT_TOKENS, (i + 1) * TEXT_TOKENS) for i in range(regions + 1)]
    return SlotLayout(spans, lambda h, w: slot_coefficients(scene, base_ratio, h, w), latent, latent)


def _synchronize(device: torch.device) -> None:
    if device.type not in ("cpu", "meta"):  # meta: shapes only (tests run the real configs there)
        getattr(torch, device.type).synchronize()


def _timed(call: Callable[[], object], device: torch.device = torch.device("cpu")) -> float:
    _synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        call()
    _synchronize(device)
    return time.perf_counter() - start


def _timed_with(install: Callable[[], AbstractContextManager], call: Callable[[], object],
                device: torch.device = torch.device("cpu")) -> float:
    with install():
        return _timed(call, device)


def _peak_mib(timer: Timer, device: torch.device) -> float | None:
    """Run ``timer`` once (a warm-up); the peak allocated CUDA memory during it in MiB, ``None`` off CUDA."""
    if device.type != "cuda":
        timer()
        return None
    torch.cuda.reset_peak_memory_stats(device)
    timer()
    return torch.cuda.max_memory_allocated(device) / 2**20


def _measure(timers: dict, repeats: int, device: torch.device) -> dict:
    """``{key: (median seconds, peak MiB)}``: each timer warmed up once, then all run in turn ``repeats`` times."""
    peaks = {key: _peak_mib(timer, device) for key, timer in timers.items()}
    times: dict = {key: [] for key in timers}
    for _ in range(repeats):
        for key, timer in timers.items():
            times[key].append(timer())
    return {key: (statistics.median(times[key]), peaks[key]) for key in timers}


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
    timers: dict = {"plain": partial(_timed, partial(unet, latents, timestep, encoder_hidden_states=plain_context))}
    for k in region_counts:
        install = partial(installed_cross_attention_processors, unet, RegionalAttnProcessor(_layout(k, size, base_ratio,
                                                                                                     latent)))
        timers[k] = partial(_timed_with, install, partial(unet, latents, timestep, encoder_hidden_states=contexts[k]))
    medians = _measure(timers, repeats, torch.device("cpu"))  # the warm-up also builds each layout's per-call plan
    plain = medians["plain"][0]
    return [RegionalBenchResult(k, medians[k][0], plain) for k in region_counts]


def mmdit_config(family: str, layers: tuple[int, ...] | None = None, config: dict | None = None) -> dict:
    """``config`` (default: the family's real one, :data:`MMDIT_CONFIGS`) cut to ``layers`` blocks: Flux
    ``(double, single)`` (one number: that many of each), SD3 ``(blocks,)``, keeping SD3.5's dual attention
    in the kept blocks that had it. Default :data:`DEFAULT_LAYERS`."""
    base = dict(config or MMDIT_CONFIGS[family])
    layers = tuple(DEFAULT_LAYERS[family] if layers is None else layers)
    keys = ("num_layers", "num_single_layers") if family == "flux" else ("num_layers",)
    counts = layers * len(keys) if len(layers) == 1 else layers
    if len(counts) != len(keys) or any(not 1 <= n <= base[key] for n, key in zip(counts, keys)):
        shape = "DOUBLE,SINGLE block counts (one number: that many of each)" if family == "flux" else "one block count"
        most = ",".join(str(base[key]) for key in keys)
        raise ValueError(f"layers for {family} must be {shape}, at most {most}; got {','.join(map(str, layers))}")
    base.update(zip(keys, counts))
    if family == "sd3":
        base["dual_attention_layers"] = tuple(i for i in base["dual_attention_layers"] if i < base["num_layers"])
    return base


def describe_model(family: str, config: dict) -> str:
    """``"FLUX.1-dev transformer, 1 of 19 double + 1 of 38 single blocks"`` and the like (against the real depth)."""
    real = MMDIT_CONFIGS[family]
    if family == "flux":
        return (f"FLUX.1-dev transformer, {config['num_layers']} of {real['num_layers']} double + "
                f"{config['num_single_layers']} of {real['num_single_layers']} single blocks")
    dual = len(config["dual_attention_layers"])
    return (f"SD3.5-medium transformer, {config['num_layers']} of {real['num_layers']} blocks "
            f"({dual} with dual attention)")


def _check_mmdit(family: str, region_counts: tuple[int, ...], repeats: int, size: int, base_ratio: float,
                 region_tokens: int, region_clip_tokens: int | None, config: dict | None) -> None:
    if family not in MMDIT_CONFIGS:
        raise ValueError(f"family must be one of {', '.join(MMDIT_CONFIGS)} for the MMDiT benchmark; got {family!r}")
    config = config or MMDIT_CONFIGS[family]
    if not region_counts or min(region_counts) < 1:
        raise ValueError(f"region counts must be whole numbers >= 1; got {region_counts!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1; got {repeats}")
    if size < 16 or size % 16:
        raise ValueError(f"size must be a multiple of 16 (the VAE's 8x times the 2x2 patch); got {size}")
    if family == "sd3" and size // 16 > config["pos_embed_max_size"]:
        raise ValueError(f"size {size} is beyond SD3's position embedding: at most {16 * config['pos_embed_max_size']}")
    if not 0 <= base_ratio <= 1:
        raise ValueError(f"base_ratio must lie in [0, 1]; got {base_ratio!r}")
    if not 1 <= region_tokens <= BASE_TOKENS["flux"]:
        raise ValueError(f"region_tokens (T5 tokens of a region slot) must lie in [1, 512]; got {region_tokens}")
    if region_clip_tokens is not None and (family != "sd3" or not 1 <= region_clip_tokens <= TEXT_TOKENS):
        raise ValueError("region_clip_tokens sets the CLIP tokens of SD3 region slots, 1 to 77 (Flux has no CLIP "
                         f"tokens in its text sequence); got {region_clip_tokens} for {family}")


def _joint_layout(family: str, regions: int, size: int, base_ratio: float, slot_tokens: int) -> JointSlotLayout:
    scene, base = _grid_scene(regions, size, base_ratio), BASE_TOKENS[family]
    spans = [(0, base)] + [(base + i * slot_tokens, base + (i + 1) * slot_tokens) for i in range(regions)]
    return JointSlotLayout(spans, slot_coefficients(scene, base_ratio, size // 16, size // 16),
                           text_first=family == "flux")


def flux_image_ids(grid: int) -> torch.Tensor:
    """``(grid * grid, 3)`` ids of a square grid of packed latent tokens, as ``FluxPipeline`` builds them: 0, row,
    column."""
    rows, columns = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.stack([torch.zeros_like(rows), rows, columns], dim=-1).reshape(-1, 3).float()


def _flux_inputs(config: dict, size: int) -> tuple[dict, int]:
    """Random inputs of one FluxPipeline step at ``size`` px (batch 1, no text yet) and its image-token count."""
    grid = size // 16  # 8x VAE, then 2x2 latent patches packed into tokens
    inputs = {"hidden_states": torch.randn(1, grid * grid, config["in_channels"]),
              "pooled_projections": torch.randn(1, config["pooled_projection_dim"]),
              "timestep": torch.tensor([0.5]), "guidance": torch.tensor([3.5]), "img_ids": flux_image_ids(grid)}
    return inputs, grid * grid


def _sd3_inputs(config: dict, size: int) -> tuple[dict, int]:
    """Random inputs of one StableDiffusion3Pipeline step at ``size`` px (CFG batch 2) and its image-token count."""
    latent = size // 8
    inputs = {"hidden_states": torch.randn(2, config["in_channels"], latent, latent),
              "pooled_projections": torch.randn(2, config["pooled_projection_dim"]),
              "timestep": torch.tensor([500.0, 500.0])}
    return inputs, (latent // 2) ** 2


def _on(inputs: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """Inputs on ``device``; floats in ``dtype``, except Flux's guidance (float32, as FluxPipeline passes it)."""
    return {key: value.to(device, value.dtype if key == "guidance" else dtype) for key, value in inputs.items()}


def _text(family: str, inputs: dict, text: torch.Tensor) -> dict:
    if family == "flux":
        return inputs | {"encoder_hidden_states": text, "txt_ids": torch.zeros(text.shape[1], 3, device=text.device,
                                                                                 dtype=text.dtype)}
    return inputs | {"encoder_hidden_states": text}


def _model_and_inputs(family: str, config: dict, size: int, device: torch.device,
                      dtype: torch.dtype) -> tuple[torch.nn.Module, dict, int]:
    """The transformer of random weights, its inputs but the text, and the image-token count."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    model_class, make_inputs = ((FluxTransformer2DModel, _flux_inputs) if family == "flux"
                                else (SD3Transformer2DModel, _sd3_inputs))
    with device:  # random weights made where they run
        transformer = model_class.from_config(config).to(dtype).eval()
    inputs, image_tokens = make_inputs(config, size)
    return transformer, _on(inputs, device, dtype), image_tokens


def run_mmdit_regional_benchmark(
    family: str,
    region_counts: tuple[int, ...] = (2, 4, 8, 16),
    repeats: int = 3,
    size: int = 1024,
    base_ratio: float = 0.3,
    layers: tuple[int, ...] | None = None,
    region_tokens: int = 24,
    region_clip_tokens: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: dict | None = None,
    seed: int = 0,
) -> MMDiTBench:
    """Time one plain vs regional transformer forward of ``family`` ("flux" or "sd3"); see the module docstring.

    Args:
        region_counts: regions per regional call, each a cell of a near-square grid (:func:`grid_split`).
        repeats: timed calls per configuration after one warm-up, interleaved; the median is taken.
        size: image side in pixels (1024: a 64x64 grid of 4096 image tokens).
        base_ratio: the base prompt's weight (RPG's ``base_ratio``, 0.3): the base slot is seen everywhere.
        layers: transformer blocks kept, see :func:`mmdit_config` (default Flux 1 double + 1 single, SD3 2).
        region_tokens: T5 tokens of each region slot (24: a typical region prompt's own length).
        region_clip_tokens: SD3 only: CLIP tokens of each region slot, before its T5 ones (default
            ``region_tokens``: CLIP's BPE and T5's pieces count an English prompt about alike).
        device, dtype: where and in what the transformer runs (the CLI picks bf16 on accelerators).
        config: a transformer config to cut instead of the real one (tests pass tiny ones).
        seed: seeds the random weights and inputs.

    Plain is the base prompt alone (Flux 512 T5 tokens, batch 1, guidance-distilled; SD3 77 CLIP + 256 T5,
    classifier-free guidance batch 2) with diffusers' processors; regional appends the region slots and installs
    the regional joint attention processor built from a :class:`JointSlotLayout` of the grid scene.
    """
    _check_mmdit(family, tuple(region_counts), repeats, size, base_ratio, region_tokens, region_clip_tokens, config)
    model_config = mmdit_config(family, layers, config)
    device = torch.device(device)
    torch.manual_seed(seed)
    transformer, inputs, image_tokens = _model_and_inputs(family, model_config, size, device, dtype)
    batch, base_tokens = inputs["hidden_states"].shape[0], BASE_TOKENS[family]
    width = model_config["joint_attention_dim"]
    slot_tokens = region_tokens + ((region_clip_tokens or region_tokens) if family == "sd3" else 0)
    base = torch.randn(batch, base_tokens, width).to(device, dtype)
    processor = RegionalFluxAttnProcessor if family == "flux" else RegionalJointAttnProcessor
    timers: dict = {"plain": partial(_timed, partial(transformer, **_text(family, inputs, base), return_dict=False),
                                     device)}
    for k in region_counts:
        text = torch.cat([base, torch.randn(batch, k * slot_tokens, width).to(device, dtype)], dim=1)
        install = partial(installed_joint_attention_processors, transformer,
                          processor(_joint_layout(family, k, size, base_ratio, slot_tokens)))
        timers[k] = partial(_timed_with, install, partial(transformer, **_text(family, inputs, text),
                                                          return_dict=False), device)
    medians = _measure(timers, repeats, device)  # the warm-up also builds each layout's mask
    plain, plain_peak = medians["plain"]
    results = [MMDiTBenchResult(k, medians[k][0], plain, base_tokens + k * slot_tokens, medians[k][1])
               for k in region_counts]
    return MMDiTBench(family, describe_model(family, model_config), size, batch, image_tokens, base_tokens,
                      slot_tokens, str(device), DTYPE_NAMES.get(dtype, str(dtype)), plain_peak, results)
