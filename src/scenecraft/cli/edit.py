"""``scenecraft edit``: an instruction applied to a picture, its history kept in the PNG; ``--undo`` steps back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from .app import app, progress_bar, quiet_libraries
from .errors import UserError, check_output_path, note, printable

console = Console(stderr=True)
_MAX_EDITS_FILE = 5_000_000  # bytes: the scene layer's longest JSON (SceneLimits.max_json_chars)


@app.command()
def edit(
    image: Annotated[Path, typer.Argument(help="The picture: a PNG scenecraft wrote, or any picture with --scene.", exists=True, dir_okay=False)],
    instruction: Annotated[Optional[str], typer.Argument(help='What to change, e.g. "make the circle blue" (or "undo").')] = None,
    out: Annotated[Optional[Path], typer.Option(help="The edited PNG (its history inside).")] = None,
    undo: Annotated[bool, typer.Option("--undo", help="Step back one round (no instruction).")] = False,
    edits_file: Annotated[Optional[Path], typer.Option("--edits", help='A JSON file of edit operations instead of an instruction: [{"op": "remove", "id": "r2"}, ...].', exists=True, dir_okay=False)] = None,
    scene_file: Annotated[Optional[Path], typer.Option("--scene", help="The scene a picture scenecraft did not make shows (its regions' boxes and prompts).", exists=True, dir_okay=False)] = None,
    llm: Annotated[Optional[str], typer.Option(help="LLM backend for the instruction, as `plan --llm` takes it (default: the offline planner).")] = None,
    model: Annotated[Optional[str], typer.Option(help="The model (default: the one the picture records; for --scene, the shipped toy model).")] = None,
    model_config: Annotated[Optional[str], typer.Option(help="Config folder for single-file checkpoints offline.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, mps... (default: the best available).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="fp16, bf16 or fp32 (default: fp16 on GPU, fp32 on CPU).")] = None,
    method: Annotated[Optional[str], typer.Option(help="With --scene only: the method to edit with (default layout).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="With --scene only: denoising steps (default: the model's, else the method's).")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="With --scene only: guidance scale (default: the model's, else the method's).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="The new round's seed (default: the recorded one; with --scene, drawn).")] = None,
    dilate: Annotated[int, typer.Option(help="Latent cells the edit mask grows by.", min=0, max=16)] = 1,
    feather: Annotated[int, typer.Option(help="Latent cells of soft mask border (0: hard, which keeps --undo exact).", min=0, max=16)] = 0,
    no_paste: Annotated[bool, typer.Option("--no-paste", help="Do not lay the pixels outside the edit mask back after decoding.")] = False,
    no_replay: Annotated[bool, typer.Option("--no-replay", help="Draw over the picture's pixels at once instead of replaying its rounds (faster, not exact).")] = False,
    show_history: Annotated[bool, typer.Option("--show-history", help="Print the picture's rounds and exit.")] = False,
    limit: Annotated[Optional[list[str]], typer.Option(help="Raise a scene limit KEY=VALUE (as for generate); repeatable.")] = None,
) -> None:
    """Edit a picture with an instruction ("make the circle blue"), keeping what the instruction does not touch.

    The PNG written carries the whole history (every round's instruction, edits, scene and seed), so edits chain
    and --undo steps back (bit for bit where the rounds replay on this machine).
    """
    from .generate import parse_limits

    limits = parse_limits(limit or [])
    if show_history:
        _show_history(image, instruction, undo, edits_file, scene_file)
        return
    _check_request(instruction, undo, edits_file, out, scene_file, method, steps, guidance)
    check_output_path(out, "--out", (".png",))
    session = _open(image, scene_file, model, method, steps, guidance, seed, limits)
    for text in session.notes:
        note(text)
    plan = _plan(session, instruction, undo, edits_file, llm, limits)
    replay = not no_replay
    if model is not None and scene_file is None and model != session.record.model:
        note(f"the picture records model {session.record.model}; on {model} its rounds will not replay exactly, so "
             "the edit is drawn over its pixels")
        replay = False
    outcome = _render(session, plan, model or session.record.model, model_config, device, dtype, seed, dilate,
                      feather, not no_paste, replay)
    from ..edit_session import save_picture

    save_picture(outcome.session, out)
    _report(session, outcome)
    typer.echo(printable(str(out)))


def _check_request(instruction, undo, edits_file, out, scene_file, method, steps, guidance) -> None:
    """Refuse, before reading anything large, a request that asks for too little or two things at once."""
    asked = [name for name, given in (("an instruction", instruction is not None), ("--edits", edits_file is not None),
                                      ("--undo", undo)) if given]
    if len(asked) != 1:
        raise UserError("give one of: an instruction (\"make the circle blue\"), --edits edits.json or --undo"
                        + (f"; got {' and '.join(asked)}" if asked else ""))
    if out is None:
        raise UserError("give --out OUT.png, where the edited picture goes")
    if scene_file is None:
        given = [flag for flag, value in (("--method", method), ("--steps", steps), ("--guidance", guidance))
                 if value is not None]
        if given:
            raise UserError(f"{', '.join(given)}: only for a picture scenecraft did not make (with --scene); a "
                            "scenecraft PNG is edited with the method and settings it records")
    elif undo:
        raise UserError("--undo steps back through a picture's own history; a picture given with --scene has none")


def _show_history(image: Path, instruction, undo, edits_file, scene_file) -> None:
    from ..edit_session import history_lines, read_record

    if instruction is not None or undo or edits_file is not None or scene_file is not None:
        raise UserError("--show-history prints the rounds of a PNG scenecraft wrote and exits; give it alone")
    for line in history_lines(read_record(image).record):
        typer.echo(printable(line))


def _open(image: Path, scene_file: Path | None, model: str | None, method: str | None, steps: int | None,
          guidance: float | None, seed: int | None, limits):
    """The picture's session: its own history or metadata, or (``--scene``) a foreign picture of that scene."""
    from ..edit_session import FOREIGN_METHOD, open_picture, read_record
    from ..scene import Scene

    if scene_file is None:
        return read_record(image, limits=limits)
    from ..generation.loading import default_model
    from ..generation.result import resolve_seed
    from .generate import method_config

    scene = Scene.from_json(_read_text(scene_file, "--scene"), limits=limits)
    model, method = model or default_model(), method or FOREIGN_METHOD
    config = method_config(method, model, [], steps=steps, guidance=guidance, num_images=1)
    seed = resolve_seed(seed)
    return open_picture(image, scene=scene, method=method, model=model, config=config, seed=seed, limits=limits)


def _read_text(path: Path, option: str) -> str:
    if path.stat().st_size > _MAX_EDITS_FILE:
        raise UserError(f"{option} {path} is {path.stat().st_size:,} bytes, more than the {_MAX_EDITS_FILE:,} read")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{option} {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None


def _plan(session, instruction: str | None, undo: bool, edits_file: Path | None, llm: str | None, limits):
    """The round's plan (the planner's sentence for an instruction it cannot read); ``None`` for --undo,
    which is refused here on round 0, before any model loads."""
    from ..edit_session import plan_round

    if undo:
        session.record.undone()  # "nothing to undo" before the model loads
        return None
    if edits_file is not None:
        return plan_round(session, edits=_read_text(edits_file, "--edits"), limits=limits)
    plan = plan_round(session, instruction, llm=llm, limits=limits)
    if plan.is_undo:
        session.record.undone()
    return plan


def _render(session, plan, model: str, model_config, device, dtype, seed, dilate, feather, paste, replay):
    from ..edit_session import render_round, undo_round
    from ..generation import load_pipeline

    quiet_libraries()
    with console.status(Text(printable(f"loading {model}"))):
        pipe = load_pipeline(model, device=device, dtype=dtype, single_file_config=model_config)
    with progress_bar(console) as progress:
        task = progress.add_task("editing", total=None)

        def on_step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_stage(text: str) -> None:
            progress.update(task, description=text, completed=0, total=None)

        if plan is None or plan.is_undo:
            return undo_round(pipe, session, replay=replay, on_step=on_step, on_stage=on_stage)
        return render_round(pipe, session, plan, seed=seed, dilate=dilate, feather=feather, paste=paste,
                            replay=replay, on_step=on_step, on_stage=on_stage)


def _report(before, outcome) -> None:
    """What was done: the round and its changes in plain words, boxes reused and drawn again, the notes."""
    from ..edit_session import describe_changes

    after = outcome.session
    if outcome.undone:
        undone = before.record.history.rounds[-1]
        said = repr(undone.instruction) if undone.instruction else "edits given as data"
        same = "the same pixels bit for bit" if outcome.exact else "drawn again, close to it"
        typer.echo(printable(f"undid round {before.round} ({said}): back to round {after.round}, {same}"))
    else:
        said = repr(outcome.plan.instruction) if outcome.plan.instruction else "edits given as data"
        typer.echo(printable(f"round {after.round}: {said} (seed {after.record.history.rounds[-1].seed})"))
        for line in describe_changes(before.scene, after.scene):
            typer.echo(printable(f"  {line}"))
    result = outcome.result
    if not outcome.undone and result is not None and (result.box_hits or result.box_misses):
        typer.echo(f"boxes: {result.box_hits} reused, {result.box_misses} drawn again")
    for text in outcome.notes:
        note(text)
