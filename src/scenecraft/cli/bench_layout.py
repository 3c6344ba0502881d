"""``scenecraft bench layout``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .app import bench_app, parse_counts, progress_bar, quiet_libraries


@bench_app.command("layout")
def bench_layout(
    boxes: Annotated[str, typer.Option(help="Comma-separated box counts.")] = "1,2,4,8",
    steps: Annotated[int, typer.Option(help="Denoising steps per call (LMD's 50-step schedules are rescaled).")] = 10,
    size: Annotated[int, typer.Option(help="Image size in pixels (latent = size / 8).")] = 512,
    threads: Annotated[int, typer.Option(help="torch threads (0 = torch's default).")] = 0,
    unet_config: Annotated[Optional[Path], typer.Option(help="A UNet config.json to time instead of SD 1.5's.", exists=True, dir_okay=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
) -> None:
    """Wall-time ratio layout/plain (default and fast) on an SD 1.5-size UNet (random weights), and peak memory."""
    import torch

    from ..evaluation.bench_layout import bench_pipeline, run_layout_benchmark

    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    counts = parse_counts(boxes, "--boxes")
    with progress_bar(Console(stderr=True)) as progress:
        task = progress.add_task("timing", total=3 * len(counts))  # the second plain call is not counted
        pipe = bench_pipeline(json.loads(unet_config.read_text()) if unet_config else None)
        rows = run_layout_benchmark(counts, steps=steps, size=size, pipe=pipe,
                                    on_call=lambda count, name: progress.update(task, advance=1,
                                                                                description=f"{count} boxes {name}"))
    meta = {"unet": f"{unet_config.name if unet_config else 'SD 1.5'} config, random weights", "size": size, "steps": steps, "threads": torch.get_num_threads()}
    if as_json:
        payload = [{"boxes": r.boxes, "seconds": r.seconds, "peak_mb": r.peak_mb,
                    "ratio": {name: r.ratio(name) for name in r.seconds if name != "plain"}} for r in rows]
        typer.echo(json.dumps(meta | {"results": payload}, indent=2))
        return
    typer.echo(f"{meta['unet']}, {size}x{size}, {steps} steps, CFG, {meta['threads']} threads")
    typer.echo(f"{'boxes':>5} {'plain s':>8} {'layout':>16} {'layout-fast':>16} {'peak MB plain/layout/fast':>28}")
    for r in rows:
        typer.echo(f"{r.boxes:>5} {r.seconds['plain']:>8.1f} {r.seconds['layout']:>8.1f} ({r.ratio('layout'):.2f}x) "
                   f"{r.seconds['layout-fast']:>8.1f} ({r.ratio('layout-fast'):.2f}x) "
                   f"{r.peak_mb['plain']:>10.0f}/{r.peak_mb['layout']:.0f}/{r.peak_mb['layout-fast']:.0f}")
