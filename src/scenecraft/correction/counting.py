"""Counting the denoiser's forward passes: the cost measure self-correction and best-of-N are compared on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["DenoiserCount", "count_denoiser_calls", "denoiser_of"]


@dataclass
class DenoiserCount:
    """Forward passes of a pipeline's denoiser while counting: ``calls`` (one per forward, whatever its batch)
    and ``rows`` (the batch rows they ran: classifier-free guidance's two rows, LMD's batched boxes)."""

    calls: int = 0
    rows: int = 0

    def __add__(self, other: DenoiserCount) -> DenoiserCount:
        return DenoiserCount(self.calls + other.calls, self.rows + other.rows)


def denoiser_of(pipe):
    """The pipeline's denoiser: its ``unet`` (SD 1.x/2.x, SDXL), else its ``transformer`` (SD3, Flux)."""
    model = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if model is None or not hasattr(model, "register_forward_pre_hook"):
        raise TypeError(f"{type(pipe).__name__} has no unet or transformer to count the forward passes of")
    return model


@contextmanager
def count_denoiser_calls(pipe) -> Iterator[DenoiserCount]:
    """Count the denoiser's forward passes inside the ``with`` block (a forward pre-hook, removed after,
    even on error); the counts are read from the yielded :class:`DenoiserCount`."""
    count = DenoiserCount()

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        count.calls += 1
        count.rows += int(sample.shape[0]) if hasattr(sample, "shape") and len(sample.shape) else 1

    handle = denoiser_of(pipe).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield count
    finally:
        handle.remove()
