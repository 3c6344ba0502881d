"""``run_batch``: plan and render every item of a batch file into a folder, resumably.

The driver (the process that calls ``run_batch``) alone plans, writes the PNGs and appends to the
manifest; a renderer in the same process, or one Ray actor per worker, only turns planned items
into PNG bytes. So the manifest and resume rules are the same however the images are made.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..imagefile import write_atomically
from ..scene import Scene, SceneLimits
from .items import FIXED_SETTINGS, BatchError, BatchItem, read_items
from .manifest import Manifest
from .worker import Job, Rendered, RenderSpec, error_text

__all__ = ["run_batch", "BatchProgress", "BatchSummary", "BatchInterrupted"]


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands: ``finished`` of ``total`` items to render this run (rendered or failed),
    and the denoising ``step`` of ``steps`` of the item in hand (``None`` between items, and on Ray)."""

    finished: int
    total: int
    failed: int
    step: int | None = None
    steps: int | None = None


@dataclass
class BatchSummary:
    """What a run did.

    Attributes:
        manifest: the manifest's path.
        items: items in the file.
        done: items rendered by this run.
        skipped: items already done (their latest manifest line says done and their PNG exists).
        failed: items that failed in this run, recorded with their error (retried by the next run).
        failures: ``(item, error)`` of each.
        interrupted: the run was stopped by SIGINT/SIGTERM before it finished.
        seconds: wall time from the first item planned to the last line written.
        work_seconds: planning plus the methods' calls (denoising and decoding) of every item.
    """

    manifest: Path
    items: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[tuple[BatchItem, str]] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    work_seconds: float = 0.0

    @property
    def pending(self) -> int:
        """Items left for the next run: failed ones and, after an interrupt, those never reached."""
        return self.items - self.done - self.skipped


class BatchInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a batch between two consistent states; ``summary`` says what was done."""

    def __init__(self, signum: int, summary: BatchSummary | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.summary = summary


def run_batch(
    file: str | Path,
    out: str | Path,
    *,
    model: str = "toyworld",
    method: str = "regional",
    settings: dict[str, Any] | None = None,
    layout: str | None = None,
    llm: str | None = None,
    width: int | None = None,
    height: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    pipe: Any = None,
    ray: Any = None,
    progress: Callable[[BatchProgress], None] | None = None,
    limits: SceneLimits | None = None,
    plan_cache_dir: str | Path | None = None,
    threads: int | None = None,
) -> BatchSummary:
    """Plan and render every item of ``file`` (``.txt`` or ``.jsonl``) into the folder ``out``.

    Each image is written atomically as ``out/<index>-<short key>.png`` with its scene and settings in
    the PNG, then one line is appended to ``out/manifest.jsonl``. Items whose latest line says
    ``"done"`` and whose PNG exists are skipped, so running again resumes; failed items are retried.

    Args:
        model: what every worker loads (default ``"toyworld"``); ``pipe`` (a loaded pipeline, this
            process only) is used instead of loading it, and ``model`` is what the PNGs record.
        method: the method of items whose line names none (default ``"regional"``).
        settings: method settings for every item (e.g. ``{"num_inference_steps": 20}``), under a line's own.
        layout, llm: the planner's layout and LLM spec, as ``plan_scene`` takes (default: offline, boxes);
            LLM plans go through the plan cache (``plan_cache_dir``).
        width, height: the size prompts are planned at, and a line's scene is resized to (default: the
            scene's own, else the model's native size).
        device, dtype: as ``load_pipeline`` takes them.
        ray: a :class:`~scenecraft.batch.distributed.RayOptions` to render on Ray (default ``None``: here).
        progress: called with a :class:`BatchProgress` after every item and denoising step.
        limits: the scene limits lines are read within (default: the defaults).
        threads: torch threads of each renderer (default: torch's choice).

    Raises:
        BatchError: the file is not .txt/.jsonl or holds no item, ``out`` is in use by another batch, or its
            manifest was written with other options. ``OSError`` when the file or folder cannot be read or written.
        BatchInterrupted: on SIGINT/SIGTERM, after the item in hand was written or dropped whole.
    """
    settings = dict(settings or {})
    for key, why in FIXED_SETTINGS.items():
        if key in settings:
            raise BatchError(f"setting {key!r} is fixed in a batch: {why}")
    items = read_items(file, limits=limits)
    out = Path(out)
    options = _options(model=model, method=method, settings=settings, layout=layout, llm=llm, width=width,
                       height=height)
    spec = RenderSpec(model=model, device=device, dtype=dtype, settings=settings, threads=threads)
    with Manifest(out) as manifest, _Signals() as signals:
        latest = manifest.latest()
        _check_options(latest.values(), options, manifest.path)
        pending = [item for item in items if not _is_done(latest.get(item.key), out)]
        summary = BatchSummary(manifest.path, len(items), skipped=len(items) - len(pending))
        driver = _Driver(manifest, signals, summary, options, progress, len(pending),
                         dict(layout=layout, llm=llm, width=width, height=height, cache_dir=plan_cache_dir))
        try:
            driver.record_unreadable([item for item in pending if item.error is not None])
            if renderable := [item for item in pending if item.error is None]:
                with _renderer(spec, pipe, ray) as renderer:  # loads the model only when something can render
                    driver.run(renderable, renderer)
        except BatchInterrupted as interrupt:
            summary.interrupted = True
            interrupt.summary = summary
            raise
        return summary


def _options(**options: Any) -> dict[str, Any]:
    """The batch's options as its manifest records them (JSON's view: tuples become lists)."""
    return json.loads(json.dumps(options))


def _check_options(records, options: dict[str, Any], path: Path) -> None:
    for record in records:
        recorded = record.get("options")
        if isinstance(recorded, dict) and recorded != options:
            changed = sorted(k for k in options.keys() | recorded.keys() if options.get(k) != recorded.get(k))
            was = ", ".join(f"{k} {recorded.get(k)!r}" for k in changed)
            raise BatchError(f"{path} was written by a batch with other options ({was}; now "
                             f"{', '.join(f'{k} {options.get(k)!r}' for k in changed)}); run with the same options "
                             "to resume, or give another --out")


def _is_done(record: dict[str, Any] | None, out: Path) -> bool:
    if record is None or record.get("status") != "done" or not isinstance(record.get("output"), str):
        return False
    return (out / Path(record["output"]).name).is_file()


@contextmanager
def _renderer(spec: RenderSpec, pipe: Any, ray: Any):
    if ray is None:
        from .worker import BatchWorker

        yield _LocalRenderer(BatchWorker(spec, pipe))
        return
    if pipe is not None:
        raise BatchError("pipe= renders in this process; Ray workers load the model themselves (give model=)")
    from .distributed import RayRenderer

    renderer = RayRenderer(spec, ray)
    try:
        yield renderer
    finally:
        renderer.close()


class _LocalRenderer:
    """Renders the jobs one after another in this process."""

    def __init__(self, worker) -> None:
        self.worker = worker
        self.native_size = worker.native_size
        self.reports_steps = True

    def run(self, jobs: Iterator[Job], on_step) -> Iterator[Rendered]:
        for job in jobs:
            yield self.worker.render(job, on_step)


class _Driver:
    """Plans the pending items, hands them to the renderer, and writes what comes back."""

    def __init__(self, manifest: Manifest, signals: _Signals, summary: BatchSummary, options: dict[str, Any],
                 progress, total: int, plan: dict[str, Any]) -> None:
        self.manifest, self.signals, self.summary, self.options = manifest, signals, summary, options
        self.progress, self.total, self.plan_options = progress, total, plan
        # The items handed to the renderer and not yet written: a retried task's second answer finds none.
        self.planned: dict[str, tuple[BatchItem, dict[str, Any], float]] = {}

    def record_unreadable(self, items: list[BatchItem]) -> None:
        """Record the lines that could not be read as failed, before any model loads."""
        for item in items:
            self._record(item, None, None, 0.0, item.error)

    def run(self, pending: list[BatchItem], renderer) -> None:
        start = time.perf_counter()
        self._report()
        on_step = self._on_step if renderer.reports_steps else None
        try:
            for rendered in renderer.run(self._jobs(pending, renderer.native_size), on_step):
                self._write(rendered)
        finally:
            self.summary.seconds = time.perf_counter() - start

    def _jobs(self, pending: list[BatchItem], native_size: int) -> Iterator[Job]:
        for item in pending:
            start = time.perf_counter()
            try:
                scene = self._scene(item, native_size)
            except Exception as error:  # noqa: BLE001 - a line that cannot be planned is recorded, not fatal
                self._record(item, None, None, time.perf_counter() - start, error_text(error))
                continue
            seconds = time.perf_counter() - start
            self.summary.work_seconds += seconds
            self.planned[item.key] = (item, scene, seconds)
            yield Job(item.key, scene, item.method or self.options["method"], item.config, item.seed)

    def _scene(self, item: BatchItem, native_size: int) -> dict[str, Any]:
        width, height = self.plan_options["width"], self.plan_options["height"]
        if item.scene is not None:
            if width is None and height is None:
                return item.scene
            scene = Scene.from_dict(item.scene)
            return scene.with_size(width or scene.width, height or scene.height).to_dict()
        from ..planning import plan_scene

        layout, llm = self.plan_options["layout"], self.plan_options["llm"]
        kwargs = {"layout": layout} if layout else {}
        return plan_scene(item.prompt, llm=llm, width=width or native_size, height=height or native_size,
                          cache_dir=self.plan_options["cache_dir"], **kwargs).to_dict()

    def _write(self, rendered: Rendered) -> None:
        if rendered.key not in self.planned:  # a task Ray ran twice (its worker died): written once
            return
        item, scene, plan_seconds = self.planned.pop(rendered.key)
        seconds = plan_seconds + rendered.seconds
        self.summary.work_seconds += rendered.generate_seconds
        if rendered.error is not None:
            self._record(item, scene, None, seconds, rendered.error)
            return
        with self.signals.deferred():  # the PNG and its line, both or neither (short of SIGKILL)
            write_atomically(self.manifest.folder / item.output, rendered.png)
            self.manifest.append(self._line(item, scene, rendered.record, seconds, None))
            self.summary.done += 1
        self._report()

    def _record(self, item: BatchItem, scene: dict[str, Any] | None, record, seconds: float, error: str) -> None:
        error = f"line {item.line}: {error}"
        with self.signals.deferred():
            self.manifest.append(self._line(item, scene, record, seconds, error))
            self.summary.failed += 1
            self.summary.failures.append((item, error))
        self._report()

    def _line(self, item: BatchItem, scene, record, seconds: float, error: str | None) -> dict[str, Any]:
        done = error is None
        return {
            "key": item.key, "index": item.index, "line": item.line, "id": item.id, "prompt": item.prompt,
            "scene": scene, "seed": item.seed, "method": item.method or self.options["method"],
            "config": record["config"] if done else item.config, "model": self.options["model"],
            "seconds": round(seconds, 4), "status": "done" if done else "failed", "error": error,
            "output": item.output if done else None, "options": self.options,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def _finished(self) -> int:
        return self.summary.done + self.summary.failed

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(BatchProgress(self._finished(), self.total, self.summary.failed))

    def _on_step(self, step: int, steps: int) -> None:
        if self.progress is not None:
            self.progress(BatchProgress(self._finished(), self.total, self.summary.failed, step, steps))


class _Signals:
    """SIGINT and SIGTERM raise :class:`BatchInterrupted`, except inside :meth:`deferred`, where they wait
    for its end. Installed in the main thread only (elsewhere Python delivers no signals)."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.depth = 0
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.depth:
            self.pending = signum
            return
        raise BatchInterrupted(signum)

    @contextmanager
    def deferred(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth and self.pending is not None:
            signum, self.pending = self.pending, None
            raise BatchInterrupted(signum)
