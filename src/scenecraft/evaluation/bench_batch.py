"""``bench batch``: a batch's throughput in one process and on Ray, and what its bookkeeping costs.

The same prompts (the toy-world suite's, one of each category in turn) are rendered three times, in
fresh folders: in this process, with one torch thread; again in the first folder, where every item
is already done (the cost of resuming); and on a local Ray instance of ``workers`` CPUs with
``workers`` actors, so each renderer has one thread on either side and the ratio is the workers'
scaling. Throughput is images per minute of the rendering loop, the models already loaded
(their loading is reported apart, as startup). The bookkeeping overhead is the single-process
loop's time less its planning and its methods' calls (denoising and decoding): the PNG encoding and
atomic write, the manifest line and its fsync, progress, per item, as a share of one image's time.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["BatchRun", "BatchBenchmark", "bench_prompts", "run_batch_benchmark"]


@dataclass(frozen=True)
class BatchRun:
    """One timed batch: ``images`` rendered in ``seconds`` of rendering loop, after ``startup`` seconds
    of loading (the pipeline; on Ray, Ray itself and every actor's pipeline)."""

    images: int
    seconds: float
    startup: float

    @property
    def images_per_minute(self) -> float:
        return 60.0 * self.images / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class BatchBenchmark:
    """The figures of one run of the benchmark.

    Attributes:
        single, ray: the two timed batches.
        workers: Ray actors, one CPU (one torch thread) each; the single process has one torch thread too.
        image_seconds: one image's planning and method call in the single process (mean).
        overhead_seconds: everything else per item in the single process (PNG, write, manifest, progress).
        resume_seconds: per item, a rerun in which every item is already done (reads the file and manifest).
        max_pixel_difference: largest difference (0-255) between the two batches' images of the same item.
    """

    model: str
    prompts: int
    steps: int
    size: int
    workers: int
    single: BatchRun
    ray: BatchRun
    image_seconds: float
    overhead_seconds: float
    resume_seconds: float
    max_pixel_difference: int

    @property
    def speedup(self) -> float:
        """Ray's images per minute over the single process's."""
        return self.ray.images_per_minute / self.single.images_per_minute

    @property
    def overhead_share(self) -> float:
        """The bookkeeping per item as a share of one image's time (target < 0.05)."""
        return self.overhead_seconds / self.image_seconds

    def to_dict(self) -> dict:
        return asdict(self) | {"single": asdict(self.single) | {"images_per_minute": self.single.images_per_minute},
                               "ray": asdict(self.ray) | {"images_per_minute": self.ray.images_per_minute},
                               "speedup": self.speedup, "overhead_share": self.overhead_share}


def bench_prompts(count: int) -> list[str]:
    """``count`` prompts of the toy-world suite, one of each category in turn."""
    from .bench_toyworld import CATEGORIES, build_suite

    per = math.ceil(count / len(CATEGORIES))
    suite = build_suite(per)
    return [suite[c * per + i].text for i in range(per) for c in range(len(CATEGORIES))][:count]


def run_batch_benchmark(prompts: int = 8, steps: int = 20, workers: int = 2, model: str = "toyworld",
                        size: int | None = None, on_run=None) -> BatchBenchmark:
    """Time ``prompts`` toy-world prompts at ``steps`` steps: here, resumed, and on Ray with ``workers`` actors.

    ``size`` (default: the model's native size) is the planned image side. ``on_run(name)`` is called
    before each of the three runs. A Ray instance already initialised is used as it is; otherwise one
    is started on this machine with ``workers`` CPUs and shut down after.
    """
    import torch

    from ..batch import RayOptions, run_batch
    from ..generation import load_pipeline

    settings = {"num_inference_steps": steps}
    sizes = {"width": size, "height": size}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="scenecraft-bench-batch-") as tmp:
        folder = Path(tmp)
        file = folder / "prompts.txt"
        file.write_text("\n".join(bench_prompts(prompts)) + "\n", encoding="utf-8")
        _announce(on_run, "1 process")
        start = time.perf_counter()
        pipe = load_pipeline(model, device="cpu")
        startup = time.perf_counter() - start
        torch.set_num_threads(1)
        try:
            single = run_batch(file, folder / "single", model=model, pipe=pipe, settings=settings, **sizes)
        finally:
            torch.set_num_threads(threads)
        _announce(on_run, "resume")
        start = time.perf_counter()
        resumed = run_batch(file, folder / "single", model=model, pipe=pipe, settings=settings, **sizes)
        resume = time.perf_counter() - start
        _announce(on_run, f"Ray, {workers} workers")
        start = time.perf_counter()
        on_ray = run_batch(file, folder / "ray", model=model, settings=settings, **sizes,
                           ray=RayOptions(workers=workers, init={"num_cpus": workers}))
        ray_startup = time.perf_counter() - start - on_ray.seconds
        if single.done != prompts or on_ray.done != prompts or resumed.skipped != prompts:
            raise RuntimeError(f"the benchmark's batches did not all render: {single.failures or on_ray.failures}")
        difference = _max_difference(folder / "single", folder / "ray")
        image_seconds = single.work_seconds / prompts
        return BatchBenchmark(
            model=model, prompts=prompts, steps=steps, size=_size(folder / "single"), workers=workers,
            single=BatchRun(prompts, single.seconds, startup),
            ray=BatchRun(prompts, on_ray.seconds, ray_startup), image_seconds=image_seconds,
            overhead_seconds=(single.seconds - single.work_seconds) / prompts, resume_seconds=resume / prompts,
            max_pixel_difference=difference)


def _announce(on_run, name: str) -> None:
    if on_run is not None:
        on_run(name)


def _size(folder: Path) -> int:
    from PIL import Image

    with Image.open(next(folder.glob("*.png"))) as image:
        return image.width


def _max_difference(first: Path, second: Path) -> int:
    """The largest pixel difference between same-named PNGs of two folders."""
    from PIL import Image

    worst = 0
    for path in sorted(first.glob("*.png")):
        with Image.open(path) as a, Image.open(second / path.name) as b:
            diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
            worst = max(worst, int(diff.max()))
    return worst
