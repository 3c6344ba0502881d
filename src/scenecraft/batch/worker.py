"""The renderer of a batch: one pipeline, one item at a time, a PNG (bytes) out.

The same :class:`BatchWorker` runs in the batch's own process and, as a Ray actor, on every worker of
a cluster, so both give the same images for the same items.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ProgressCallback = Callable[[int, int], None]

__all__ = ["RenderSpec", "Job", "Rendered", "BatchWorker"]


@dataclass(frozen=True)
class RenderSpec:
    """What every worker of a batch loads and how it renders.

    Attributes:
        model: hub id, diffusers folder, single file or ``"toyworld"`` (default).
        device, dtype: as ``load_pipeline`` takes them (default: the best available).
        settings: method settings for every item (``--set``, ``--steps``, ``--guidance``), over the
            method's defaults and the model's recommendations, under a line's own ``config``.
        threads: torch threads (``None``: leave torch's choice).
    """

    model: str = "toyworld"
    device: str | None = None
    dtype: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None


@dataclass(frozen=True)
class Job:
    """One planned item, ready to render: its scene (dict form), method, the line's settings and seed."""

    key: str
    scene: dict[str, Any]
    method: str
    config: dict[str, Any]
    seed: int


@dataclass(frozen=True)
class Rendered:
    """What a worker returns: the PNG file (bytes, metadata inside) and the generation record, or the error.

    ``seconds`` is the whole render (the method, then the PNG's encoding); ``generate_seconds`` the
    method's call alone (denoising and decoding).
    """

    key: str
    png: bytes | None
    record: dict[str, Any] | None
    seconds: float
    generate_seconds: float = 0.0
    error: str | None = None


class BatchWorker:
    """Holds one pipeline; :meth:`render` turns a :class:`Job` into a :class:`Rendered`.

    ``pipe`` (default ``None``: load ``spec.model``) is an already loaded pipeline to use instead.
    """

    def __init__(self, spec: RenderSpec, pipe: Any = None) -> None:
        import torch

        from ..generation import load_pipeline
        from ..generation.backbones import backbone

        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.pipe = pipe if pipe is not None else load_pipeline(spec.model, device=spec.device, dtype=spec.dtype)
        adapter = backbone(self.pipe)
        self.family = adapter.flavour if adapter.is_mmdit else None
        self.native_size = adapter.native_size
        self._defaults: dict[str, dict[str, Any]] = {}

    def info(self) -> dict[str, Any]:
        """The native size of the model (the size prompts are planned at), the worker's device and process id."""
        return {"native_size": self.native_size, "device": str(self.pipe._execution_device), "pid": os.getpid()}

    def render(self, job: Job, on_step: ProgressCallback | None = None) -> Rendered:
        """Render ``job``; a failure (a scene the model cannot draw, a bad setting) is returned, not raised."""
        from ..generation.methods import generate
        from ..imagefile import image_metadata, png_bytes
        from ..scene import Scene

        start = time.perf_counter()
        try:
            config = self.config(job)
            result = generate(self.pipe, Scene.from_dict(job.scene), config, method=job.method, on_step=on_step)
            generated = time.perf_counter()
            parameters, record = image_metadata(result, 0, self.spec.model)
            png = png_bytes(result.images[0], result.scene, parameters, record)
        except Exception as error:  # noqa: BLE001 - one item's failure is recorded; the batch goes on
            return Rendered(job.key, None, None, time.perf_counter() - start, error=error_text(error))
        return Rendered(job.key, png, record, time.perf_counter() - start, generated - start)

    def config(self, job: Job):
        """The job's method config: the method's defaults, the family's and the model's recommendations,
        the batch's settings, the line's own, then its seed (one PIL image)."""
        from ..generation.backbones import family_settings
        from ..generation.loading import method_settings, recommended_settings
        from ..generation.methods import make_config

        if job.method not in self._defaults:
            self._defaults[job.method] = (family_settings(self.family) | dict(recommended_settings(self.spec.model))
                                          | method_settings(self.spec.model, job.method))
        values = self._defaults[job.method] | self.spec.settings | job.config
        try:
            config = make_config(job.method, values | {"seed": job.seed, "num_images": 1, "output_type": "pil"})
            config.check()
        except TypeError as error:  # a setting of the wrong JSON type, e.g. a number for a list
            raise ValueError(f"a setting of method {job.method} has the wrong type: {error}") from None
        return config


def error_text(error: BaseException) -> str:
    """The sentence recorded for a failed item: the message of a user's error (a ``ValueError``), the
    type and message of anything else."""
    message = str(error) or type(error).__name__
    return message if isinstance(error, ValueError) else f"{type(error).__name__}: {message}"
