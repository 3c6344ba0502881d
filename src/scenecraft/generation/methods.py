"""The one table of generation methods: the CLI, the benchmarks and the PNG metadata read it.

A method is a module with a config class (extending :class:`SamplingConfig`) and an entry point
``generate(pipe, scene, config, *, on_step) -> GenerationResult``, plus one line in ``METHODS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..scene import Scene, SceneError, load_json
from .control import ControlInput, takes_control
from .layout import LayoutConfig, LayoutPlusConfig, generate_layout, generate_layout_plus
from .multidiffusion import MultiDiffusionConfig, generate_multidiffusion
from .regional import RegionalConfig, generate_regional
from .result import GenerationResult
from .sampling import ProgressCallback, SamplingConfig, pipeline_family

__all__ = ["Method", "METHODS", "get_method", "generate", "make_config"]


@dataclass(frozen=True)
class Method:
    """A generation method.

    Attributes:
        name: what ``--method`` and the PNG metadata call it.
        run: ``run(pipe, scene, config, *, on_step) -> GenerationResult``.
        config: its config class.
        families: the pipeline families it runs on (see :func:`pipeline_family`).
        summary: one line for ``--help`` and the README.
        blending: whether the picture's denoising loop runs on the sampling core's ``sample``, so that
            hooks installed with ``step_hooks`` reach it: what ``editing.render_edit``'s masked latent
            blending needs (default ``False``; on the UNet families, whose latents are a pixel grid).
    """

    name: str
    run: Callable[..., GenerationResult]
    config: type[SamplingConfig]
    families: tuple[str, ...]
    summary: str
    blending: bool = False


METHODS: dict[str, Method] = {method.name: method for method in (
    Method("regional", generate_regional, RegionalConfig, ("sd", "sdxl", "sd-gligen", "sd3", "flux"),
           "RPG: each region's pixels attend to its own prompt, mixed with the base prompt", blending=True),
    Method("layout", generate_layout, LayoutConfig, ("sd", "sdxl", "sd-gligen"),
           "LMD: one guided generation per box, composed, then a guided final pass", blending=True),
    Method("layout+", generate_layout_plus, LayoutPlusConfig, ("sd-gligen",),
           "LMD+: LMD on a GLIGEN UNet, its gated attention fed the boxes", blending=True),
    Method("multidiffusion", generate_multidiffusion, MultiDiffusionConfig, ("sd", "sdxl", "sd-gligen"),
           "MultiDiffusion: windows fused every step; panoramas at any size, mask regions, per-region LoRA",
           blending=True),
)}


def get_method(name: str) -> Method:
    """The registered method called ``name``; the error lists the others."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    return METHODS[name]


def make_config(method: str, values: dict[str, Any]) -> SamplingConfig:
    """``method``'s config from ``values``; unknown names are an error that lists the known ones."""
    config_class = get_method(method).config
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{method} has no setting {', '.join(unknown)}; its settings: {', '.join(sorted(known))}")
    return config_class(**values)


def parse_setting(text: str) -> tuple[str, Any]:
    """``"key=value"`` with a JSON value (``0.4``, ``true``, ``[2, 1]``), else the value as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"a setting must look like key=value, got {text!r}")
    try:
        value = load_json(raw, what=f"setting {key.strip()}")
    except SceneError:  # not JSON (or past the JSON limits): the text itself; the config's check judges it
        value = raw
    return key.strip(), tuple(value) if isinstance(value, list) else value


def generate(pipe, scene: Scene, config: SamplingConfig | None = None, *, method: str = "regional",
             on_step: ProgressCallback | None = None, control: ControlInput | None = None) -> GenerationResult:
    """Generate ``scene`` with the registered ``method`` (default ``"regional"``).

    ``config`` must be the method's config class (default: its defaults). ``control`` (default ``None``)
    guides the generation with a ControlNet; only methods whose entry point takes it accept one.
    """
    chosen = get_method(method)
    config = config if config is not None else chosen.config()
    if not isinstance(config, chosen.config):
        raise TypeError(f"method {method!r} takes a {chosen.config.__name__}, got {type(config).__name__}")
    family = pipeline_family(pipe)
    if family not in chosen.families:
        hint = " (a GLIGEN UNet, e.g. the LMD authors' longlian/lmd_plus)" if chosen.families == ("sd-gligen",) else ""
        raise ValueError(f"method {method} runs on {', '.join(chosen.families)} pipelines{hint}; this one is {family}")
    if control is None:
        return chosen.run(pipe, scene, config, on_step=on_step)
    if not takes_control(chosen.run):
        takers = ", ".join(name for name, other in METHODS.items() if takes_control(other.run))
        raise ValueError(f"method {method} does not take a control image (ControlNet); methods that do: {takers}")
    return chosen.run(pipe, scene, config, on_step=on_step, control=control)
