"""The ``scenecraft`` command line: a thin shell over the library."""

from importlib import import_module

from .app import app, bench_app

# Each module registers its commands on ``app`` / ``bench_app`` when imported.
_COMMAND_MODULES = ("generate", "bench_regional", "plan", "bench_toyworld")


def main() -> None:
    for name in _COMMAND_MODULES:
        try:
            import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
    app()


__all__ = ["app", "bench_app", "main"]
