"""The shipped toy-world model: a ``StableDiffusionPipeline`` folder inside the package."""

from __future__ import annotations

from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "toyworld"


def load_pipeline(path: str | Path | None = None, torch_dtype=None):
    """Load the toy-world pipeline offline (weights ship as fp16; loaded as float32 by default for CPU).

    ``path`` defaults to the packaged ``assets/toyworld`` folder.
    """
    import warnings

    import torch
    from diffusers import StableDiffusionPipeline

    path = Path(path) if path is not None else ASSET_DIR
    if not (path / "model_index.json").exists():
        raise FileNotFoundError(f"no toy-world pipeline at {path} (model_index.json missing); "
                                "train one with scripts/train_toyworld.py")
    with warnings.catch_warnings():  # diffusers >= 0.36 prefers `dtype=`; `torch_dtype` works on all versions
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        pipe = StableDiffusionPipeline.from_pretrained(path, torch_dtype=torch_dtype or torch.float32,
                                                       local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe
