"""``scenecraft bench regional``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import bench_app, parse_counts, quiet_libraries

_MMDIT_ONLY = ("--layers", "--region-tokens", "--region-clip-tokens", "--device", "--dtype")


@bench_app.command("regional")
def bench_regional(
    family: Annotated[str, typer.Option(help="sd (SD 1.5 UNet), flux (FLUX.1-dev) or sd3 (SD3.5-medium).")] = "sd",
    regions: Annotated[str, typer.Option(help="Comma-separated region counts.")] = "2,4,8,16",
    repeats: Annotated[int, typer.Option(help="Timed steps per configuration (median taken).")] = 3,
    size: Annotated[Optional[int], typer.Option(help="Image side in px (default: 512 sd, 1024 flux and sd3).")] = None,
    base_ratio: Annotated[float, typer.Option(help="Base prompt weight (0.3 adds a full base attention).")] = 0.3,
    layers: Annotated[Optional[str], typer.Option(help="Blocks kept: flux DOUBLE,SINGLE (default 1,1 of 19,38), sd3 N (default 2 of 24).")] = None,
    region_tokens: Annotated[Optional[int], typer.Option(help="flux, sd3: T5 tokens per region slot (default: 24).")] = None,
    region_clip_tokens: Annotated[Optional[int], typer.Option(help="sd3: CLIP tokens per region slot (default: --region-tokens).")] = None,
    device: Annotated[Optional[str], typer.Option(help="flux, sd3: cpu, cuda... (default: the best available).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="flux, sd3: bf16, fp16 or fp32 (default: bf16 on GPU, fp32 on CPU).")] = None,
    threads: Annotated[int, typer.Option(help="torch threads (0 = torch's default).")] = 0,
    unet_config: Annotated[Optional[Path], typer.Option(help="sd: a UNet config.json to time instead of SD 1.5's.", exists=True, dir_okay=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
) -> None:
    """Wall-time ratio regional/plain of one denoiser step (random weights) at 2-16 regions, in one run."""
    import torch

    from ..evaluation.bench_regional import FAMILIES

    if family not in FAMILIES:
        raise ValueError(f"--family must be one of {', '.join(FAMILIES)}; got {family!r}")
    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    counts = parse_counts(regions, "--regions")
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1; got {repeats}")
    mmdit_options = (layers, region_tokens, region_clip_tokens, device, dtype)
    if family == "sd":
        given = [name for name, value in zip(_MMDIT_ONLY, mmdit_options) if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} set the flux and sd3 benchmarks; --family sd times the SD 1.5 "
                             f"UNet on the CPU in fp32")
        _bench_sd(counts, repeats, size or 512, base_ratio, unet_config, as_json)
        return
    if unet_config is not None:
        raise ValueError(f"--unet-config sets the UNet of --family sd; {family} times its own transformer config")
    _bench_mmdit(family, counts, repeats, size or 1024, base_ratio, *mmdit_options, as_json)


def _bench_sd(counts: tuple[int, ...], repeats: int, size: int, base_ratio: float, unet_config: Path | None,
              as_json: bool) -> None:
    import torch

    from ..evaluation.bench_regional import run_regional_benchmark

    config = json.loads(unet_config.read_text()) if unet_config else None
    results = run_regional_benchmark(counts, repeats=repeats, size=size, base_ratio=base_ratio, unet_config=config)
    unet = f"{unet_config.name}" if unet_config else "SD 1.5"
    meta = {"unet": f"{unet} config, random weights", "size": size, "threads": torch.get_num_threads(),
            "repeats": repeats, "base_ratio": base_ratio, "plain_seconds_per_step": results[0].plain_seconds}
    if as_json:
        rows = [{"regions": r.regions, "seconds_per_step": r.seconds, "ratio": r.ratio} for r in results]
        typer.echo(json.dumps(meta | {"results": rows}, indent=2))
        return
    typer.echo(f"{unet} UNet, {size}x{size}, CFG batch 2, {meta['threads']} threads, median of {repeats}; "
               f"plain {results[0].plain_seconds:.2f} s/step")
    for r in results:
        typer.echo(f"{r.regions:>2} regions  {r.seconds:.2f} s/step  {r.ratio:.2f}x")


def _bench_mmdit(family: str, counts: tuple[int, ...], repeats: int, size: int, base_ratio: float,
                 layers: str | None, region_tokens: int | None, region_clip_tokens: int | None, device: str | None,
                 dtype: str | None, as_json: bool) -> None:
    import torch

    from ..evaluation.bench_regional import TARGETS, run_mmdit_regional_benchmark
    from ..generation.loading import pick_device, pick_dtype

    t5 = 24 if region_tokens is None else region_tokens
    clip = t5 if region_clip_tokens is None else region_clip_tokens
    target = pick_device(device)
    torch_dtype = pick_dtype(target, dtype or (None if target.type == "cpu" else "bf16"))
    bench = run_mmdit_regional_benchmark(
        family, counts, repeats=repeats, size=size, base_ratio=base_ratio,
        layers=parse_counts(layers, "--layers") if layers else None, region_tokens=t5,
        region_clip_tokens=region_clip_tokens, device=target, dtype=torch_dtype)
    threads = torch.get_num_threads()
    slot = f"{t5} T5 + {clip} CLIP" if family == "sd3" else f"{t5} T5"
    if as_json:
        meta = {"family": family, "model": f"{bench.model}, random weights", "size": size, "batch": bench.batch,
                "device": bench.device, "dtype": bench.dtype, "threads": threads, "repeats": repeats,
                "base_ratio": base_ratio, "image_tokens": bench.image_tokens,
                "plain_text_tokens": bench.plain_text_tokens, "region_slot_tokens": bench.region_slot_tokens,
                "plain_seconds_per_step": bench.results[0].plain_seconds, "plain_peak_mib": bench.plain_peak_mib,
                "targets": TARGETS[family]}
        rows = [{"regions": r.regions, "seconds_per_step": r.seconds, "ratio": r.ratio, "text_tokens": r.text_tokens,
                 "peak_mib": r.peak_mib} for r in bench.results]
        typer.echo(json.dumps(meta | {"results": rows}, indent=2))
        return
    batch = "CFG batch 2" if bench.batch == 2 else "batch 1 (guidance-distilled, no CFG)"
    typer.echo(f"{bench.model}, random weights; {size}x{size}, {batch}, {bench.device} {bench.dtype}, "
               f"{threads} threads, median of {repeats}")
    typer.echo(f"tokens: {bench.image_tokens} image; text {bench.plain_text_tokens} plain, {bench.plain_text_tokens} "
               f"+ K x {bench.region_slot_tokens} regional ({slot} tokens per region slot, a typical region "
               f"prompt's own length)")
    typer.echo(f"plain {_per_step(bench.results[0].plain_seconds)}{_peak(bench.plain_peak_mib)}")
    for r in bench.results:
        typer.echo(f"{r.regions:>2} regions  {_per_step(r.seconds)}  {r.ratio:.2f}x  {r.text_tokens} text tokens"
                   f"{_peak(r.peak_mib)}")
    typer.echo(f"targets: {TARGETS[family]}")


def _per_step(seconds: float) -> str:
    return f"{seconds:.2f} s/step" if seconds >= 1 else f"{seconds * 1000:.1f} ms/step"


def _peak(mib: float | None) -> str:
    return "" if mib is None else f"  peak {mib:.0f} MiB"
