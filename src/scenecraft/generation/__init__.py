"""Scene -> image on a diffusers pipeline: a sampling core, one module per method, one registry of methods."""

from .layout import LayoutConfig, LayoutPlusConfig, generate_layout, generate_layout_plus
from .loading import load_pipeline
from .methods import METHODS, generate, get_method
from .multidiffusion import MultiDiffusionConfig, generate_multidiffusion
from .regional import RegionalConfig, generate_regional
from .result import GenerationResult
from .sampling import SamplingConfig

__all__ = [
    "GenerationResult", "LayoutConfig", "LayoutPlusConfig", "METHODS", "MultiDiffusionConfig", "RegionalConfig",
    "SamplingConfig", "generate", "generate_layout", "generate_layout_plus", "generate_multidiffusion",
    "generate_regional", "get_method", "load_pipeline",
]
