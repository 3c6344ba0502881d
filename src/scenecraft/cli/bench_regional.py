"""``scenecraft bench regional``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import bench_app, parse_counts, quiet_libraries


@bench_app.command("regional")
def bench_regional(
    regions: Annotated[str, typer.Option(help="Comma-separated region counts.")] = "2,4,8,16",
    repeats: Annotated[int, typer.Option(help="Timed UNet steps per configuration (median taken).")] = 3,
    size: Annotated[int, typer.Option(help="Image size in pixels (latent = size / 8).")] = 512,
    base_ratio: Annotated[float, typer.Option(help="Base prompt weight (0.3 adds a full base attention).")] = 0.3,
    threads: Annotated[int, typer.Option(help="torch threads (0 = torch's default).")] = 0,
    unet_config: Annotated[Optional[Path], typer.Option(help="A UNet config.json to time instead of SD 1.5's.", exists=True, dir_okay=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
) -> None:
    """Wall-time ratio regional/plain of an SD 1.5-size UNet step (random weights, CPU), in one run."""
    import torch

    from ..evaluation.bench_regional import run_regional_benchmark

    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    counts = parse_counts(regions, "--regions")
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
