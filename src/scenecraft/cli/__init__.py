"""The ``scenecraft`` command line: a thin shell over the library."""

from .app import app, bench_app

# Each module registers its commands on ``app`` / ``bench_app`` when imported. Command modules
# import the library (torch, diffusers) lazily, inside the commands, so ``--help`` stays fast.
from . import bench_layout, bench_panorama, bench_regional, bench_toyworld, generate, panorama, plan  # noqa: E402, F401
from . import batch, bench_batch  # noqa: E402, F401
from . import ui  # noqa: E402, F401
from . import bench_edit, edit  # noqa: E402, F401


def main() -> None:
    app()


__all__ = ["app", "bench_app", "main"]
