"""Batches: a prompts file rendered into a folder, one PNG and one manifest line per item, resumable;
here or on a Ray cluster.

Import-light: no torch and no Ray here (the renderer imports torch, and Ray is imported only when a
batch asks for it).
"""

from .distributed import RayOptions
from .items import BatchError, BatchItem, read_items
from .manifest import MANIFEST, Manifest, read_manifest
from .run import BatchInterrupted, BatchProgress, BatchSummary, run_batch

__all__ = [
    "MANIFEST", "BatchError", "BatchInterrupted", "BatchItem", "BatchProgress", "BatchSummary", "Manifest",
    "RayOptions", "read_items", "read_manifest", "run_batch",
]
