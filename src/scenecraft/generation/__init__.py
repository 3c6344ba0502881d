"""Scene -> image on a diffusers pipeline: one module per method, plus shared attention and latent helpers."""

from .loading import load_pipeline
from .regional import RegionalConfig, generate_regional
from .result import GenerationResult

__all__ = ["GenerationResult", "RegionalConfig", "generate_regional", "load_pipeline"]
