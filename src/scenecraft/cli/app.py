"""The typer applications every CLI module registers its commands on."""

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .errors import ErrorBoundary

# ErrorBoundary runs every command (bench ones too): a user's error is one sentence and exit code 2.
app = typer.Typer(
    cls=ErrorBoundary,
    name="scenecraft",
    help="Compositional text-to-image: plan a scene, then generate it region by region.",
    no_args_is_help=True,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks that print ratios and accuracies measured in one run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def quiet_libraries() -> None:
    """Keep diffusers' and transformers' progress bars and advisory warnings off the terminal.

    Called by commands before they load models; scenecraft draws its own progress.
    """
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (diffusers_logging, transformers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers")


def progress_bar(console: Console) -> Progress:
    """The progress bar every long command draws: description, bar, done/total, time left; erased when done."""
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=console, transient=True,
    )


def parse_counts(text: str, option: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> ``(1, 2, 4)``: the comma-separated positive counts of a benchmark option."""
    try:
        counts = tuple(int(k) for k in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise ValueError(f"{option} must be comma-separated whole numbers >= 1, e.g. 1,2,4; got {text!r}")
    return counts
