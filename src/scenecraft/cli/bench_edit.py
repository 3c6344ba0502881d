"""``scenecraft bench edit``: the toy-world edit suite (instructions of every kind on generated pictures)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .app import bench_app, progress_bar, quiet_libraries
from .errors import UserError, check_output_path, printable

#: The methods run by default: the three the README's edit figures compare.
DEFAULT_METHODS = ("layout", "regional", "multidiffusion")
#: Seeds and steps by default and with ``--quick``.
DEFAULT_SEEDS, QUICK_SEEDS = 24, 1
DEFAULT_STEPS, QUICK_STEPS = 20, 10
#: Spelled out here so that ``--help`` needs no torch; a test checks it is the suite's list.
OPERATIONS_HELP = "recolour, reshape, remove, add, move, resize, swap, set_count, undo"


def parse_names(text: str, option: str, allowed: Sequence[str]) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (each once, in order; ``-`` read as ``_``), or a UserError naming what
    is not in ``allowed``."""
    names = list(dict.fromkeys(name.strip().lower().replace("-", "_") for name in text.split(",") if name.strip()))
    if not names:
        raise UserError(f"{option} names nothing; give one or more of: {', '.join(allowed)}")
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise UserError(f"{option}: unknown {', '.join(repr(name) for name in unknown)}; "
                        f"available: {', '.join(allowed)}")
    return names


def blending_methods() -> list[str]:
    """The registered methods that can keep the pixels outside an edit mask (``Method.blending``)."""
    from ..generation.methods import METHODS

    return [name for name, method in METHODS.items() if method.blending]


def method_config(model: str, method: str, steps: int, guidance: float):
    """``method``'s config with the model's recommended settings for it, ``steps`` and ``guidance``."""
    from ..generation.loading import method_settings
    from ..generation.methods import make_config

    values = method_settings(model, method) | {"num_inference_steps": steps, "guidance_scale": guidance,
                                               "output_type": "np"}
    return make_config(method, values)


def _label(case) -> str:
    said = case.instruction if case.undoes is None else f"{case.undoes.instruction}, then {case.instruction}"
    return f"{case.operation}, seed {case.seed}: {said}"


@bench_app.command("edit")
def bench_edit(
    methods: Annotated[str, typer.Option(help="Comma-separated methods that keep the outside of an edit mask "
                                              "(layout, layout+, regional, multidiffusion).")] = ",".join(DEFAULT_METHODS),
    operations: Annotated[str, typer.Option(help=f"Comma-separated operations: {OPERATIONS_HELP}; "
                                                 "'all' for every one.")] = "all",
    seeds: Annotated[Optional[int], typer.Option(help=f"Seeds (scenes) per operation (default {DEFAULT_SEEDS}; "
                                                      f"{QUICK_SEEDS} with --quick).")] = None,
    steps: Annotated[Optional[int], typer.Option(help=f"Denoising steps (default {DEFAULT_STEPS}; {QUICK_STEPS} "
                                                      "with --quick).")] = None,
    model: Annotated[str, typer.Option(help="Model (default: the shipped toy-world model; the scorer reads "
                                            "toy-world pictures only).")] = "toyworld",
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale (3 suits the toy-world model).")] = 3.0,
    device: Annotated[str, typer.Option(help="Device to run on.")] = "cpu",
    quick: Annotated[bool, typer.Option("--quick", help=f"The small suite: {QUICK_SEEDS} seed, {QUICK_STEPS} steps.")] = False,
    sheet: Annotated[Optional[Path], typer.Option(help="Contact sheet PNG to write: per case, before, after and "
                                                       "the mask's outline, per method.")] = None,
    threads: Annotated[int, typer.Option(help="torch threads (0 = torch's default).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Edit instructions of every kind, planned offline, on toy-world pictures: per operation and method the
    share applied, untouched objects kept, the change outside the mask (returned picture and blending alone),
    seconds per edit and LMD boxes reused; targets >= 90% applied, 100% kept, <= 2/255 outside."""
    import torch

    from ..evaluation.bench_edit import (
        INSTRUCTION_OPERATIONS, edit_contact_sheet, edit_report, format_edit_table, instruction_edit_cases,
        run_edit_benchmark,
    )
    from ..generation import load_pipeline
    from ..imagefile import save_image

    chosen = parse_names(methods, "--methods", blending_methods())
    wanted = list(INSTRUCTION_OPERATIONS) if operations.strip().lower() == "all" else parse_names(
        operations, "--operations", INSTRUCTION_OPERATIONS)
    for name, value in (("--seeds", seeds), ("--steps", steps)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be a whole number >= 1, got {value}")
    if sheet is not None:
        check_output_path(sheet, "--sheet")
    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    seed_count = seeds or (QUICK_SEEDS if quick else DEFAULT_SEEDS)
    steps = steps or (QUICK_STEPS if quick else DEFAULT_STEPS)
    pipe = load_pipeline(model, device=device)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    cases = instruction_edit_cases(range(seed_count), wanted, size)
    configs = {method: method_config(model, method, steps, guidance) for method in chosen}

    tiles: dict[int, list] = {index: [] for index in range(len(cases))}
    rows = []
    with progress_bar(Console(stderr=True)) as progress:
        task = progress.add_task("editing", total=len(chosen) * len(cases))
        for method in chosen:
            done = iter(range(len(cases)))

            def keep(case, original, edited, mask, ok, method=method, done=done):
                progress.update(task, advance=1, description=f"{method} {case.operation}")
                if sheet is not None:
                    tiles[next(done)].append((method, original.images[0], edited.images[0], mask, ok))

            rows += run_edit_benchmark(pipe, cases, configs[method], method=method, on_case=keep)
    if sheet is not None:
        save_image(edit_contact_sheet([(_label(case), tiles[k]) for k, case in enumerate(cases)]), sheet)

    meta = {"model": model, "steps": steps, "guidance": guidance, "seeds": seed_count, "operations": wanted,
            "edits_per_method": len(cases), "threads": torch.get_num_threads(),
            "contact_sheet": None if sheet is None else str(sheet)}
    if as_json:
        typer.echo(printable(json.dumps(meta | edit_report(rows), indent=2), json=True))
        return
    typer.echo(f"edit suite: {len(cases)} edits per method ({seed_count} seeds x {len(wanted)} operations), "
               f"{steps} steps, guidance {guidance}, {torch.get_num_threads()} threads")
    typer.echo(format_edit_table(rows))
    if sheet is not None:
        typer.echo(printable(f"contact sheet: {sheet}"))
