"""``scenecraft bench toyworld``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .app import bench_app, progress_bar, quiet_libraries
from ..correction.verdict import MAX_ROUNDS
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
# The rows --self-correct runs by default (plain has no regions to check a picture against).
CORRECTED = ("layout", "regional-split")



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




def _uint8(image):
    import numpy as np

    return (np.clip(np.asarray(image), 0, 1) * 255).round().astype(np.uint8)


def _row_values(pipe_model: str, name: str, steps: int, guidance: float, base_ratio: float | None) -> tuple[str, dict]:
    from ..generation.loading import method_settings

    method, _, extra = ROWS[name]
    values = method_settings(pipe_model, method) | extra | {"num_inference_steps": steps, "guidance_scale": guidance,
                                                           "output_type": "np"}
    if method == "regional" and base_ratio is not None:
        values["base_ratio"] = base_ratio
    return method, values


def make_arms(pipe, names: list[str], steps: int, guidance: float, size: int, *, rounds: int, correct_with: str,
              base_ratio: float | None = None, model: str = "toyworld"):
    """``name -> CorrectionArm`` for ``bench toyworld --self-correct``: every row's first picture drawn with
    ``render_scene`` (the same pixels as the plain bench), corrected by ``self_correct`` with the row
    ``correct_with`` names (``same``: the row itself), judged by the toy scorer; denoiser calls counted."""
    from ..correction.verifiers import ToyVerifier
    from ..evaluation.bench_toyworld import CorrectionArm

    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        raise typer.BadParameter(f"unknown method(s) {unknown}; available: {', '.join(ROWS)}")
    if correct_with != "same" and correct_with not in ROWS:
        raise typer.BadParameter(f"--correct-with must be 'same' or one of {', '.join(ROWS)}; got {correct_with!r}")
    verifier = ToyVerifier()
    arms = {}
    for name in names:
        plan = make_methods(pipe, [name], steps, guidance, size, base_ratio, model)[name][0]
        draw_with = _row_values(model, name, steps, guidance, base_ratio)
        fix_with = _row_values(model, name if correct_with == "same" else correct_with, steps, guidance, base_ratio)
        arms[name] = CorrectionArm(plan, _drawer(pipe, *draw_with), _corrector(pipe, *fix_with, rounds, verifier),
                                   verifier.verify)
    return arms


def _drawer(pipe, method: str, values: dict):
    from ..correction.counting import count_denoiser_calls
    from ..generation.editing import render_scene
    from ..generation.methods import make_config

    def draw(scene, seed: int):
        with count_denoiser_calls(pipe) as count:
            result = render_scene(pipe, scene, make_config(method, values | {"seed": seed}), method=method, seed=seed)
        return _uint8(result.images[0]), count.calls, result

    return draw


def _corrector(pipe, method: str, values: dict, rounds: int, verifier):
    from ..correction.loop import self_correct
    from ..generation.methods import make_config

    def correct(scene, first, seed: int):
        fixed = self_correct(pipe, scene, first, verifier, rounds=rounds, correct_with=method,
                             config=make_config(method, values | {"seed": seed}), seed=seed)
        image = fixed.result.images[0] if hasattr(fixed.result, "images") else fixed.result
        return _uint8(image), fixed.cost.calls, len(fixed.rounds), fixed.verdict

    return correct


@bench_app.command("toyworld")
def bench_toyworld(
    quick: Annotated[bool, typer.Option("--quick", help="The small suite (2 prompts per category, 1 seed) for CI.")] = False,
    prompts: Annotated[Optional[int], typer.Option(help="Prompts per category (default 5; 2 with --quick).")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Seeds per prompt (default 3; 1 with --quick).")] = None,
    methods: Annotated[Optional[str], typer.Option(help=f"Comma-separated rows: {', '.join(ROWS)} (layout+ needs a GLIGEN model; default: {', '.join(METHODS)}; with --self-correct: {', '.join(CORRECTED)}).")] = None,
    model: Annotated[str, typer.Option(help="Model (default: the shipped toy-world model).")] = "toyworld",
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 20,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale (3 suits the toy-world model).")] = 3.0,
    base_ratio: Annotated[Optional[float], typer.Option(help="Override the planned scenes' base ratio.")] = None,
    sheet: Annotated[Path, typer.Option(help="Contact sheet PNG to write.")] = Path("toyworld-contact-sheet.png"),
    threads: Annotated[int, typer.Option(help="torch threads (0 = torch's default).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    self_correct: Annotated[int, typer.Option("--self-correct", help=f"Rounds of self-correction, 0..{MAX_ROUNDS} (0: none): each method with the loop beside best-of-N at the same UNet calls, the toy scorer verifying.")] = 0,
    correct_with: Annotated[str, typer.Option(help="The row whose method renders the corrections, or 'same' (the row's own).")] = "layout",
    best_of: Annotated[int, typer.Option(help="With --self-correct: the most seeds best-of-N draws per picture.")] = 16,
    budget: Annotated[float, typer.Option(help="With --self-correct: best-of-N's cap, in multiples of the loop's mean UNet calls (its table rows: 1x and this).")] = 2.0,
) -> None:
    """Accuracy per category of every method on the toy world, seconds per image, and a contact sheet; with
    --self-correct R, each method with and without the loop and best-of-N at the same UNet calls."""
    import torch

    from ..evaluation.bench_toyworld import CATEGORIES, build_suite, contact_sheet, run_toyworld_benchmark
    from ..generation import load_pipeline
    from ..imagefile import save_image
    from ..planning import plan_scene
    from ..planning.draw import draw_layout

    check_output_path(sheet, "--sheet")
    check_self_correct_flags(self_correct, best_of, budget)
    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    prompts = prompts or (2 if quick else 5)
    seed_list = list(range(seeds or (1 if quick else 3)))
    pipe = load_pipeline(model, device="cpu")
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    names = [m.strip() for m in (methods or ",".join(CORRECTED if self_correct else METHODS)).split(",") if m.strip()]
    suite = build_suite(prompts)
    if self_correct:
        arms = make_arms(pipe, names, steps, guidance, size, rounds=self_correct, correct_with=correct_with,
                         base_ratio=base_ratio, model=model)
        _self_correct_bench(arms, suite, seed_list, sheet, self_correct, correct_with, best_of, budget, as_json,
                            dict(model=model, steps=steps, guidance=guidance, threads=torch.get_num_threads()))
        return
    chosen = make_methods(pipe, names, steps, guidance, size, base_ratio, model)

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


def check_self_correct_flags(rounds: int, best_of: int, budget: float) -> None:
    """Refuse bad --self-correct, --best-of and --budget values before the model loads."""
    import math

    if not 0 <= rounds <= MAX_ROUNDS:
        raise typer.BadParameter(f"--self-correct must be a number of rounds in 0..{MAX_ROUNDS}, got {rounds}")
    if not 1 <= best_of <= 256:
        raise typer.BadParameter(f"--best-of must be a number of seeds in 1..256, got {best_of}")
    if not math.isfinite(budget) or not 1 <= budget <= 16:
        raise typer.BadParameter(f"--budget must be a multiple of the loop's UNet calls in [1, 16], got {budget}")


def _self_correct_bench(arms, suite, seed_list, sheet: Path, rounds: int, correct_with: str, best_of: int,
                        budget: float, as_json: bool, run: dict) -> None:
    from ..evaluation.bench_toyworld import contact_sheet, format_self_correct_table, run_self_correct_benchmark
    from ..imagefile import save_image
    from ..planning.draw import draw_layout

    pictures: dict[str, list] = {p.text: [] for p in suite}
    with progress_bar(Console(stderr=True)) as progress:
        task = progress.add_task("self-correct", total=None)

        def keep(arm, kind, prompt, seed, image, ok):
            progress.update(task, advance=1, description=f"{arm} {kind}")
            if seed == seed_list[0] and kind != "best-of":
                pictures[prompt.text].append((f"{arm} {'+fix' if kind == 'loop' else ''}".strip(), image, ok))

        reports = run_self_correct_benchmark(arms, suite, seed_list, budget=budget, max_n=best_of, on_picture=keep)
    first_arm = next(iter(arms.values()))
    rows = [(p.text, draw_layout(first_arm.plan(p.text), size=128), pictures[p.text]) for p in suite]
    save_image(contact_sheet(rows), sheet)
    if as_json:
        typer.echo(json.dumps(_self_correct_payload(reports, rounds, correct_with, budget, best_of, len(suite),
                                                    len(seed_list), run | {"contact_sheet": str(sheet)}), indent=2))
        return
    typer.echo(f"toy world: {len(suite)} prompts x {len(seed_list)} seeds, {run['steps']} steps, guidance "
               f"{run['guidance']}, {run['threads']} threads")
    typer.echo(format_self_correct_table(reports, rounds=rounds, correct_with=correct_with, budget=budget))
    typer.echo(printable(f"contact sheet: {sheet}"))


def _self_correct_payload(reports, rounds: int, correct_with: str, budget: float, best_of: int, prompts: int,
                          seeds: int, run: dict) -> dict:
    methods = {}
    for report in reports:
        loop_calls = report.mean_calls("loop")
        entry = {"first": _figures(report.first_report(), report.mean_calls("first")),
                 "self_correct": _figures(report.loop_report(), loop_calls),
                 "rounds_run": [case.rounds for case in report.cases]}
        for multiple in sorted({1.0, budget}):
            best, spent = report.best_of(multiple * loop_calls)
            entry[f"best_of_{multiple:g}x"] = _figures(best, spent)
        needed = report.calls_to_reach(report.loop_report().accuracy()["compositional"])
        entry["best_of_calls_to_reach_loop"] = needed
        entry["loop_over_best_of_calls"] = None if needed is None else loop_calls / max(needed, 1e-9)
        methods[report.name] = entry
    return run | {"rounds": rounds, "correct_with": correct_with, "budget": budget, "best_of": best_of,
                  "prompts": prompts, "seeds": seeds, "verifier": "toy (exact: an upper bound on any real detector)",
                  "methods": methods}


def _figures(report, calls: float) -> dict:
    return {"accuracy": report.accuracy(), "correct": report.correct, "images": report.total, "unet_calls": calls}
