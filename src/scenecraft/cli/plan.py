"""``scenecraft plan`` and ``scenecraft bench plan``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from .app import app, bench_app, progress_bar
from .errors import check_folder, check_output_path, printable

_console = Console(stderr=True)


@app.command("plan")
def plan(
    prompt: Annotated[str, typer.Argument(help="What the picture shows.")],
    layout: Annotated[str, typer.Option(help="boxes (one box per object, LMD-style) or split (RPG cells).")] = "boxes",
    llm: Annotated[Optional[str], typer.Option(help="openai:MODEL[@URL], gemini:MODEL, anthropic:MODEL or local:PATH; "
                                                    "default: the offline planner.")] = None,
    width: Annotated[int, typer.Option(help="Image width in pixels.")] = 512,
    height: Annotated[int, typer.Option(help="Image height in pixels.")] = 512,
    picture: Annotated[Optional[Path], typer.Option(help="Also draw the layout to this PNG file.")] = None,
    as_json: Annotated[bool, typer.Option("--json/--plain", help="Print the Scene as JSON (default) or as text.")] = True,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Plan cache folder (LLM plans).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the plan cache.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds per LLM request.")] = 60.0,
) -> None:
    """Plan PROMPT into a Scene and print it (text from the LLM with control characters escaped)."""
    from ..planning import plan_scene
    from ..planning.cache import default_cache_dir

    if picture is not None:
        check_output_path(picture, "--picture")
    if llm and not no_cache:
        check_folder(cache_dir or default_cache_dir(), "--cache-dir" if cache_dir else "the plan cache")
    scene = plan_scene(prompt, layout=layout, llm=llm, width=width, height=height, cache_dir=cache_dir,
                       use_cache=not no_cache, timeout=timeout)
    if as_json:
        typer.echo(printable(scene.to_json(), json=True))
    else:
        for line in _plain_lines(scene):
            typer.echo(printable(line))
    if picture is not None:
        from ..planning.draw import draw_layout

        draw_layout(scene, picture)
        _console.print(Text(printable(f"layout drawn to {picture}")))


def _plain_lines(scene) -> list[str]:
    lines = [f"prompt: {scene.prompt}", f"base: {scene.base_prompt}", f"background: {scene.background_prompt}",
             f"negative: {scene.negative_prompt}"]
    if scene.split:
        lines.append(f"split: {scene.split}")
    for index, region in enumerate(scene.regions):
        rect = scene.region_rect(region)
        where = "[" + ", ".join(f"{v:.2f}" for v in rect) + "]" if rect else "mask"
        lines.append(f"{index}: {region.prompt}  {where}")
    return lines


@bench_app.command("plan")
def bench_plan(
    planner: Annotated[str, typer.Option(help="offline, replay:PATH (LMD cache file) or llm:SPEC.")] = "offline",
    layout: Annotated[str, typer.Option(help="boxes or split.")] = "boxes",
    limit: Annotated[Optional[int], typer.Option(help="Prompts per category (default all 100).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    failures: Annotated[int, typer.Option(help="How many failed prompts to list.")] = 10,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Plan cache folder for llm: planners.")] = None,
) -> None:
    """Score a planner on LMD's 400-prompt stage-1 layout benchmark (4 tasks x 100)."""
    from ..evaluation.plan_bench import run_plan_bench
    from ..planning.cache import default_cache_dir

    if planner.startswith("llm:"):
        check_folder(cache_dir or default_cache_dir(), "--cache-dir" if cache_dir else "the plan cache")
    with progress_bar(_console) as progress:
        task = progress.add_task(escape(printable(f"planning ({planner})")), total=None)
        result = run_plan_bench(planner, layout=layout, limit=limit, cache_dir=cache_dir,
                                on_prompt=lambda done, total: progress.update(task, completed=done, total=total))
    if planner != "offline":
        offline = run_plan_bench("offline", layout=layout, limit=limit)
        offline_ms = offline.ms_per_prompt
    else:
        offline_ms = result.ms_per_prompt
    if as_json:
        data = result.to_dict()
        data["offline_ms_per_prompt"] = round(offline_ms, 3)
        typer.echo(json.dumps(data, indent=2))
        return
    for line in result.lines():
        typer.echo(line)
    typer.echo(f"offline planner {offline_ms:.3f} ms/prompt")
    for prompt, reason in result.failures[:failures]:
        typer.echo(printable(f"  failed: {prompt}  ({reason})"))
