"""The ``scenecraft`` command line: a thin shell over the library."""

from importlib import import_module

from .app import app, bench_app

# Each module registers its commands on ``app`` / ``bench_app`` when imported. Command modules
# import the library (torch, diffusers) lazily, inside the commands, so ``--help`` stays fast.
_COMMAND_MODULES = ("generate", "bench_regional", "plan", "bench_toyworld")

for _name in _COMMAND_MODULES:
    try:
        import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _error:  # a command module this version does not ship yet
        if _error.name != f"{__name__}.{_name}":
            raise


def main() -> None:
    app()


__all__ = ["app", "bench_app", "main"]
