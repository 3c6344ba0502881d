"""``scenecraft bench toyworld``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .app import bench_app, progress_bar, quiet_libraries
from .errors import check_output_path, printable

# A row is a registered method on a planned layout, with settings of its own: (method, planner layout, settings).
ROWS = {
    "plain": ("regional", None, {}),
    "regional-split": ("regional", "split", {}),
    "regional-boxes": ("regional", "boxes", {}),
    "layout": ("layout", "boxes", {}),
    "layout-fast": ("layout", "boxes", {"fast": True}),
    "layout+": ("layout+", "boxes", {}),
    "multidiffusion": ("multidiffusion", "boxes", {}),
}
METHODS = ("plain", "regional-split", "regional-boxes", "layout", "layout-fast", "multidiffusion")


def make_methods(pipe, names: list[str], steps: int, guidance: float, size: int, base_ratio: float | None = None,
                 model: str = "toyworld"):
    """``name -> (plan, generate)`` for the benchmark; every row is planned by the offline planner and run
    through the method registry, with the model's recommended settings for its method."""
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        raise typer.BadParameter(f"unknown method(s) {unknown}; available: {', '.join(ROWS)}")
    return {name: _row(pipe, name, steps, guidance, size, base_ratio, model) for name in names}


def _row(pipe, name: str, steps: int, guidance: float, size: int, base_ratio: float | None, model: str):
    import numpy as np

    from ..generation.loading import method_settings
    from ..generation.methods import generate, make_config
    from ..planning import plan_scene
    from ..scene import Scene

    method, planner_layout, extra = ROWS[name]
    values = method_settings(model, method) | extra | {"num_inference_steps": steps, "guidance_scale": guidance,
                                                       "output_type": "np"}
    if method == "regional" and base_ratio is not None:
        values["base_ratio"] = base_ratio

    def plan(text: str) -> Scene:
        if planner_layout is None:
            return Scene(prompt=text, width=size, height=size)
        return plan_scene(text, layout=planner_layout, width=size, height=size)

    def run(scene: Scene, seed: int) -> np.ndarray:
        config = make_config(method, values | {"seed": seed})
        image = generate(pipe, scene, config, method=method).images[0]
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)

    return plan, run


@bench_app.command("toyworld")
def bench_toyworld(
    quick: Annotated[bool, typer.Option("--quick", help="The small suite (2 prompts per category, 1 seed) for CI.")] = False,
    prompts: Annotated[Optional[int], typer.Option(help="Prompts per category (default 5; 2 with --quick).")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Seeds per prompt (default 3; 1 with --quick).")] = None,
    methods: Annotated[str, typer.Option(help=f"Comma-separated rows: {', '.join(ROWS)} (layout+ needs a GLIGEN model).")] = ",".join(METHODS),
    model: Annotated[str, typer.Option(help="Model (default: the shipped toy-world model).")] = "toyworld",
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 20,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale (3 suits the toy-world model).")] = 3.0,
    base_ratio: Annotated[Optional[float], typer.Option(help="Override the planned scenes' base ratio.")] = None,
    sheet: Annotated[Path, typer.Option(help="Contact sheet PNG to write.")] = Path("toyworld-contact-sheet.png"),
    threads: Annotated[int, typer.Option(help="torch threads (0 = torch's default).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Accuracy per category of every method on the toy world, seconds per image, and a contact sheet."""
    import torch

    from ..evaluation.bench_toyworld import CATEGORIES, build_suite, contact_sheet, run_toyworld_benchmark
    from ..generation import load_pipeline
    from ..imagefile import save_image
    from ..planning import plan_scene
    from ..planning.draw import draw_layout

    check_output_path(sheet, "--sheet")
    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    prompts = prompts or (2 if quick else 5)
    seed_list = list(range(seeds or (1 if quick else 3)))
    pipe = load_pipeline(model, device="cpu")
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    chosen = make_methods(pipe, [m.strip() for m in methods.split(",") if m.strip()], steps, guidance, size, base_ratio,
                          model)
    suite = build_suite(prompts)

    first_seed_images: dict[str, list] = {p.text: [] for p in suite}

    with progress_bar(Console(stderr=True)) as progress:
        task = progress.add_task("generating", total=len(chosen) * len(suite) * len(seed_list))

        def keep(method, prompt, seed, image, ok):
            progress.update(task, advance=1, description=method)
            if seed == seed_list[0]:
                first_seed_images[prompt.text].append((method, image, ok))

        reports = run_toyworld_benchmark(chosen, suite, seed_list, on_image=keep)
    rows = [(p.text, draw_layout(plan_scene(p.text, width=size, height=size), size=128), first_seed_images[p.text])
            for p in suite]
    save_image(contact_sheet(rows), sheet)

    columns = [*CATEGORIES, "compositional", "overall"]
    if as_json:
        payload = {
            "model": model, "steps": steps, "guidance": guidance, "base_ratio": base_ratio, "prompts_per_category": prompts,
            "seeds": len(seed_list), "threads": torch.get_num_threads(), "contact_sheet": str(sheet),
            "methods": {r.name: {"accuracy": r.accuracy(), "correct": r.correct, "images": r.total,
                                  "seconds_per_image": r.seconds_per_image} for r in reports},
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(f"toy world: {len(suite)} prompts x {len(seed_list)} seeds, {steps} steps, guidance {guidance}, "
               f"{torch.get_num_threads()} threads")
    typer.echo(f"{'method':<16}" + "".join(f"{c:>14}" for c in columns) + f"{'s/image':>10}")
    for report in reports:
        accuracy = report.accuracy()
        typer.echo(f"{report.name:<16}" + "".join(f"{100 * accuracy[c]:>13.1f}%" for c in columns)
                   + f"{report.seconds_per_image:>10.3f}")
    typer.echo(printable(f"contact sheet: {sheet}"))
