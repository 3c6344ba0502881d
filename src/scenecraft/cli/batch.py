"""``scenecraft batch``: a prompts file rendered into a folder, resumably; here or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .app import app, progress_bar, quiet_libraries
from .errors import UserError, check_folder, note, printable

console = Console(stderr=True, highlight=False)
#: The exit code when some items failed (each recorded with its error in the manifest).
EXIT_FAILED = 3
#: Failures listed at the end; the manifest has them all.
SHOWN_FAILURES = 5


@app.command()
def batch(
    file: Annotated[Path, typer.Argument(help="prompts.txt (one prompt a line) or prompts.jsonl (one JSON object a line: prompt or scene, and seed, method, config, id).", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Folder of the PNGs and manifest.jsonl; run again with the same options to resume.")],
    method: Annotated[str, typer.Option(help="Method of the lines that name none: regional, layout, layout+ or multidiffusion.")] = "regional",
    model: Annotated[Optional[str], typer.Option(help="Hub id, diffusers folder, .safetensors/.ckpt file, or 'toyworld' (the shipped model, default).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps (default: the model's recommendation, else the method's).")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Guidance scale (default: the model's recommendation, else the method's).")] = None,
    setting: Annotated[Optional[list[str]], typer.Option("--set", help="A method setting KEY=VALUE (JSON value) for every line; a line's config overrides it; repeatable.")] = None,
    layout: Annotated[Optional[str], typer.Option(help="Planner layout: boxes (default) or split.")] = None,
    llm: Annotated[Optional[str], typer.Option(help="LLM backend for planning, e.g. openai:gpt-4o (default: offline planner); plans are cached.")] = None,
    width: Annotated[Optional[int], typer.Option(help="Width in pixels (default: a line's scene's, else the model's).")] = None,
    height: Annotated[Optional[int], typer.Option(help="Height in pixels (default: a line's scene's, else the model's).")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, mps... (default: the best available; on Ray, each worker's).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="fp16, bf16 or fp32 (default: fp16 on GPU, bf16 for SD3 and Flux; fp32 on CPU).")] = None,
    use_ray: Annotated[bool, typer.Option("--ray", help="Render on a Ray instance started on this machine (needs Ray: pip install 'scenecraft\\[ray]').")] = False,
    ray_address: Annotated[Optional[str], typer.Option(help="Render on the Ray cluster at ADDR (auto, HOST:6379 or ray://HOST:10001).", metavar="ADDR")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray workers, each with its own pipeline (default: one per GPU, else one per node).")] = None,
) -> None:
    """Plan and render every prompt of FILE into --out: one PNG and one manifest line each; rerun to resume."""
    from ..batch import BatchInterrupted, RayOptions, run_batch
    from .generate import check_size_flags, method_config

    check_folder(out, "--out")
    check_size_flags(width, height, None)
    if workers is not None and not (use_ray or ray_address):
        raise UserError("--workers needs --ray or --ray-address (without Ray a batch renders in this process)")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if layout is not None:
        from ..planning.offline import check_layout

        check_layout(layout)
    if llm:
        from ..planning.cache import default_cache_dir

        check_folder(default_cache_dir(), "the plan cache")
    quiet_libraries()
    from ..generation.loading import default_model
    from ..generation.methods import parse_setting

    model = model or default_model()
    method_config(method, model, setting or [], steps=steps, guidance=guidance)  # a bad --set fails here, not per line
    settings = dict(parse_setting(text) for text in setting or [])
    settings |= {key: value for key, value in (("num_inference_steps", steps), ("guidance_scale", guidance))
                 if value is not None}
    ray = RayOptions(address=ray_address, workers=workers) if (use_ray or ray_address) else None
    where = f"on Ray ({ray_address or 'this machine'})" if ray else "here"
    try:
        with progress_bar(console) as bar:
            items = bar.add_task(printable(f"loading {model} {where}"), total=None)
            step = bar.add_task("step", total=None, visible=False)

            def show(progress) -> None:
                bar.update(items, completed=progress.finished, total=progress.total,
                           description=f"items ({progress.failed} failed)" if progress.failed else "items")
                if progress.step is not None:
                    bar.update(step, completed=progress.step, total=progress.steps, visible=True)

            summary = run_batch(file, out, model=model, method=method, settings=settings, layout=layout, llm=llm,
                                width=width, height=height, device=device, dtype=dtype, ray=ray, progress=show)
    except BatchInterrupted as interrupt:
        _report(interrupt.summary, interrupted=interrupt.signum)
        raise typer.Exit(code=128 + interrupt.signum) from None
    except KeyboardInterrupt:
        console.print("interrupted before the batch started; nothing was written")
        raise typer.Exit(code=130) from None
    _report(summary)
    if summary.failed:
        raise typer.Exit(code=EXIT_FAILED)


def _report(summary, interrupted: int | None = None) -> None:
    """The closing lines: done, skipped and failed counts, the manifest, and how to resume."""
    import signal

    if summary is None:
        console.print("interrupted before the batch started; nothing was written")
        return
    for item, error in summary.failures[:SHOWN_FAILURES]:
        note(f"failed: {error}")
    if len(summary.failures) > SHOWN_FAILURES:
        note(f"... and {len(summary.failures) - SHOWN_FAILURES} more failed lines (see the manifest)")
    counts = f"{summary.done} done, {summary.skipped} skipped, {summary.failed} failed of {summary.items}"
    typer.echo(printable(f"{counts}; manifest: {summary.manifest}"))
    if interrupted is not None:
        console.print(printable(f"interrupted by {signal.Signals(interrupted).name}: {summary.pending} item(s) left; "
                                "run the same command again to resume"))
    elif summary.failed:
        console.print("failed items are retried when the same command runs again")
