"""``scenecraft bench panorama``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import bench_app, parse_counts, quiet_libraries

TARGETS = ("cost per output pixel at the widest canvas within 1.15x of the narrowest; tiled decoding's peak memory "
           "flat in width; fast >= 3x fewer UNet window evaluations")


@bench_app.command("panorama")
def bench_panorama(
    widths: Annotated[str, typer.Option(help="Comma-separated canvas widths in pixels.")] = "1024,2048,4096",
    modes: Annotated[str, typer.Option(help="Comma-separated modes: default, batched (view batching), fast (SpotDiffusion).")] = "default,batched,fast",
    steps: Annotated[int, typer.Option(help="Denoising steps per panorama.")] = 2,
    view_batch_size: Annotated[int, typer.Option(help="Windows per UNet call in the batched mode.")] = 4,
    repeats: Annotated[int, typer.Option(help="Timed runs per configuration (median taken).")] = 1,
    decode: Annotated[bool, typer.Option("--decode/--no-decode", help="Also time and measure VAE decoding, tiled and not.")] = True,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda... (default: the best available).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="fp16, bf16 or fp32 (default: fp16 on GPU, fp32 on CPU).")] = None,
    threads: Annotated[int, typer.Option(help="torch threads (0 = torch's default).")] = 0,
    unet_config: Annotated[Optional[Path], typer.Option(help="A UNet config.json to time instead of SD 1.5's.", exists=True, dir_okay=False)] = None,
    vae_config: Annotated[Optional[Path], typer.Option(help="A VAE config.json to decode with instead of SD 1.5's.", exists=True, dir_okay=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
) -> None:
    """Panorama cost as the canvas widens: seconds per output megapixel, UNet windows, decoding's peak memory."""
    import torch

    from ..evaluation.bench_panorama import MODES, bench_pipeline, measure_decode, run_panorama_benchmark, summary
    from ..generation.loading import pick_device, pick_dtype

    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    sizes = parse_counts(widths, "--widths")
    chosen = tuple(mode.strip() for mode in modes.split(",") if mode.strip())
    unknown = sorted(set(chosen) - set(MODES))
    if unknown or not chosen:
        raise ValueError(f"--modes must name some of {', '.join(MODES)}; got {modes!r}")
    target = pick_device(device)
    torch_dtype = pick_dtype(target, dtype)
    unet = json.loads(unet_config.read_text()) if unet_config else None
    vae = json.loads(vae_config.read_text()) if vae_config else None
    pipe = bench_pipeline(unet, vae, device=target, dtype=torch_dtype)
    height = pipe.unet.config.sample_size * pipe.vae_scale_factor
    runs = run_panorama_benchmark(pipe, sizes, chosen, steps=steps, view_batch_size=view_batch_size, repeats=repeats,
                                  height=height)
    del pipe
    dtype_name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[torch_dtype]
    decodes = measure_decode(sizes, height, vae_config=vae, device=str(target), dtype=dtype_name) if decode else []
    figures = summary(runs, decodes)
    meta = {"unet": f"{unet_config.name if unet_config else 'SD 1.5'} config, random weights", "device": str(target),
            "dtype": dtype_name, "threads": torch.get_num_threads(), "steps": steps, "height": height,
            "view_batch_size": view_batch_size, "targets": TARGETS}
    if as_json:
        typer.echo(json.dumps(meta | figures, indent=2))
        return
    typer.echo(f"{meta['unet']}, {target} {dtype_name}, {meta['threads']} threads, {steps} steps, height {height} px, "
               f"CFG batch 2")
    for run in runs:
        typer.echo(f"{run.mode:>8} {run.width:>5} px  {run.seconds:8.2f} s  {run.seconds_per_megapixel:8.2f} s/Mpx  "
                   f"{run.unet_calls:4d} UNet calls  {run.window_evaluations:4d} windows")
    for run in decodes:
        typer.echo(f"decode {'tiled' if run.tiled else 'whole':>5} {run.width:>5} px  {run.seconds:7.2f} s  "
                   f"peak {run.peak_mib:8.1f} MiB")
    for key, value in figures.items():
        if key not in ("runs", "decodes"):
            typer.echo(f"{key}: {value:.2f}x")
    typer.echo(f"targets: {TARGETS}")
