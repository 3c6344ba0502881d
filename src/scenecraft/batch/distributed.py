"""Rendering a batch on Ray: one actor per worker, each holding its own pipeline.

The driver keeps at most :data:`IN_FLIGHT` items queued per actor, so a fast worker takes more of the
batch than a slow one, and writes what comes back itself (the manifest and resume rules are the
driver's). An actor whose process dies is restarted by Ray (it loads its pipeline again) and its
tasks are retried; a task that runs twice is written once, since the driver keeps the first answer
of each key. Ray is imported only here, when a batch asks for it.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from .items import BatchError
from .worker import BatchWorker, Job, Rendered, RenderSpec, error_text

__all__ = ["RayOptions", "RayRenderer", "RayWorker", "import_ray"]

#: Items queued on each actor at a time: one rendering, one waiting, so an actor never idles on the driver.
IN_FLIGHT = 2
#: How often Ray restarts a dead actor, and retries a task whose actor died.
RESTARTS = 3


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a batch runs on Ray.

    Attributes:
        address: ``None`` (default) starts a Ray instance on this machine (or joins the one
            ``RAY_ADDRESS`` names); ``"auto"`` joins the cluster this machine is a node of;
            ``"HOST:6379"`` or ``"ray://HOST:10001"`` a remote one.
        workers: actors, each with its own pipeline (default: one per GPU of the cluster; without
            GPUs, one per node). On GPUs each takes one GPU; on CPUs each takes an equal share of the cores.
        init: more ``ray.init`` keyword arguments (e.g. ``num_cpus=2`` for a local instance), used only
            when this call starts or joins Ray (an already initialised Ray is used as it is).
    """

    address: str | None = None
    workers: int | None = None
    init: dict[str, Any] = field(default_factory=dict)


@contextmanager
def _own_sigterm():
    """Keep the SIGTERM handler in place across ``ray.init``, which installs its own in the driver."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, handler)


def import_ray():
    """The ``ray`` module, or a BatchError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise BatchError("running a batch on Ray needs the ray package: pip install 'scenecraft[ray]'") from None
    return ray


class RayWorker:
    """The actor's body: a :class:`BatchWorker`, loaded on first use (again after Ray restarts the actor)."""

    def __init__(self, spec: RenderSpec) -> None:
        self.spec = spec
        self.worker: BatchWorker | None = None

    def start(self) -> dict[str, Any]:
        """Load the pipeline; its native size, or ``{"error": ...}`` when it will not load."""
        try:
            return self._worker().info()
        except Exception as error:  # noqa: BLE001 - reported to the driver as a sentence
            return {"error": error_text(error)}

    def render(self, job: Job) -> Rendered:
        return self._worker().render(job)

    def _worker(self) -> BatchWorker:
        if self.worker is None:
            self.worker = BatchWorker(self.spec)
        return self.worker


class RayRenderer:
    """Renders jobs on ``options.workers`` Ray actors; :meth:`close` ends them (and Ray, if it started it)."""

    reports_steps = False

    def __init__(self, spec: RenderSpec, options: RayOptions) -> None:
        ray = self.ray = import_ray()
        self.started = not ray.is_initialized()
        if self.started:
            with _own_sigterm():
                ray.init(address=options.address, include_dashboard=False, logging_level=logging.ERROR,
                         log_to_driver=False, **options.init)
        self.actors: list[Any] = []
        try:
            resources, threads = self._resources(options.workers, cpu_only=str(spec.device or "").startswith("cpu"))
            actor = ray.remote(RayWorker).options(**resources, max_restarts=RESTARTS, max_task_retries=RESTARTS)
            spec = replace(spec, threads=spec.threads or threads)
            self.actors = [actor.remote(spec) for _ in range(self.workers)]
            infos = ray.get([a.start.remote() for a in self.actors])
        except BaseException:
            self.close()
            raise
        errors = [info["error"] for info in infos if "error" in info]
        if errors:
            self.close()
            raise BatchError(f"a Ray worker could not load {spec.model}: {errors[0]}")
        self.native_size = infos[0]["native_size"]
        self.devices = [info["device"] for info in infos]
        self.pids = [info["pid"] for info in infos]

    def _resources(self, workers: int | None, cpu_only: bool) -> tuple[dict[str, Any], int | None]:
        """The resources each actor asks for, and its torch threads (``None``: torch's choice on a GPU)."""
        total = self.ray.cluster_resources()
        gpus, cpus = 0 if cpu_only else int(total.get("GPU", 0)), int(total.get("CPU", 0))
        nodes = sum(1 for node in self.ray.nodes() if node.get("Alive"))
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise BatchError(f"workers must be a whole number >= 1, got {workers!r}")
        self.workers = workers or gpus or max(1, nodes)
        if gpus:
            if self.workers > gpus:
                raise BatchError(f"{self.workers} workers each take a GPU, but the Ray cluster has {gpus}")
            return {"num_gpus": 1}, None
        if self.workers > cpus:
            raise BatchError(f"{self.workers} workers each take at least one CPU, but the Ray cluster has {cpus}")
        share = cpus // self.workers
        return {"num_cpus": share}, share

    def run(self, jobs: Iterator[Job], on_step=None) -> Iterator[Rendered]:
        ray = self.ray
        queue = iter(jobs)
        in_flight: dict[Any, tuple[Any, Job]] = {}

        def submit(actor: Any) -> None:
            job = next(queue, None)
            if job is not None:
                in_flight[actor.render.remote(job)] = (actor, job)

        for actor in list(self.actors):
            for _ in range(IN_FLIGHT):
                submit(actor)
        while in_flight:
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            actor, job = in_flight.pop(ref)
            rendered = self._result(ref, actor, job)
            yield rendered
            if actor in self.actors:
                submit(actor)
            elif not self.actors:
                raise BatchError("every Ray worker died (see the failed lines in the manifest); run again to resume")

    def _result(self, ref: Any, actor: Any, job: Job) -> Rendered:
        """The task's answer; a task whose actor died for good (past its restarts) is a failed item."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayActorError as error:
            if actor in self.actors:
                self.actors.remove(actor)
            return Rendered(job.key, None, None, 0.0, error=f"the Ray worker rendering it died: {error_text(error)}")
        except self.ray.exceptions.RayError as error:
            return Rendered(job.key, None, None, 0.0, error=f"Ray could not run it: {error_text(error)}")

    def close(self) -> None:
        """End the actors: with Ray itself when this renderer started or joined it (actors die with their
        driver's connection), else one by one."""
        if self.started:
            if self.ray.is_initialized():
                self.ray.shutdown()
        else:
            for actor in self.actors:
                self.ray.kill(actor, no_restart=True)
        self.actors = []
