"""The typer applications every CLI module registers its commands on."""

import typer

app = typer.Typer(
    name="scenecraft",
    help="Compositional text-to-image: plan a scene, then generate it region by region.",
    no_args_is_help=True,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks that print ratios and accuracies measured in one run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
