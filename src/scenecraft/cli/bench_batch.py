"""``scenecraft bench batch``."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console

from .app import bench_app, quiet_libraries

#: The bookkeeping's target share of one image's time.
OVERHEAD_TARGET = 0.05


@bench_app.command("batch")
def bench_batch(
    prompts: Annotated[int, typer.Option(help="Prompts in the batch (the toy-world suite's, one category after another).")] = 8,
    steps: Annotated[int, typer.Option(help="Denoising steps per image.")] = 20,
    workers: Annotated[int, typer.Option(help="Ray workers, one CPU and torch thread each (the single process has one thread too).")] = 2,
    model: Annotated[str, typer.Option(help="Model (default: the shipped toy-world model).")] = "toyworld",
    size: Annotated[Optional[int], typer.Option(help="Image side in pixels (default: the model's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
) -> None:
    """Images per minute in 1 process vs on Ray, and the manifest/resume overhead per item, on the CPU."""
    from ..batch.distributed import import_ray
    from ..evaluation.bench_batch import run_batch_benchmark

    for name, value in (("--prompts", prompts), ("--steps", steps), ("--workers", workers)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    import_ray()
    quiet_libraries()
    with Console(stderr=True).status("1 process") as status:
        result = run_batch_benchmark(prompts, steps, workers, model, size, on_run=status.update)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    single, ray = result.single, result.ray
    typer.echo(f"{result.model}, {result.prompts} prompts, {result.steps} steps, {result.size}x{result.size}, CPU; "
               f"1 process vs Ray with {result.workers} workers, 1 torch thread each")
    typer.echo(f"1 process       {single.images_per_minute:8.1f} images/min  ({60 / single.images_per_minute:.3f} "
               f"s/image; startup {single.startup:.1f} s)")
    typer.echo(f"Ray, {result.workers} workers  {ray.images_per_minute:8.1f} images/min  ({60 / ray.images_per_minute:.3f} "
               f"s/image; startup {ray.startup:.1f} s)  {result.speedup:.2f}x")
    verdict = "under" if result.overhead_share < OVERHEAD_TARGET else "OVER"
    typer.echo(f"manifest/resume overhead {1000 * result.overhead_seconds:.1f} ms/item, {100 * result.overhead_share:.2f}% "
               f"of an image ({1000 * result.image_seconds:.0f} ms), {verdict} the {OVERHEAD_TARGET:.0%} target")
    typer.echo(f"resume, every item done  {1000 * result.resume_seconds:.2f} ms/item")
    typer.echo(f"same images on Ray: max pixel difference {result.max_pixel_difference}/255")
