"""PNG files that carry their Scene JSON and an A1111-style ``parameters`` text chunk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from .scene import Scene

__all__ = ["save_png", "read_png_metadata", "read_generation", "a1111_parameters", "generation_record"]

SCENE_KEY = "scenecraft.scene"
GENERATION_KEY = "scenecraft.generation"
PARAMETERS_KEY = "parameters"


def a1111_parameters(scene: Scene, settings: dict[str, Any], model: str, method: str) -> str:
    """The ``parameters`` text A1111-compatible tools (and civitai) read back."""
    fields = {
        "Steps": settings.get("num_inference_steps"),
        "Sampler": settings.get("scheduler"),
        "CFG scale": settings.get("guidance_scale"),
        "Seed": settings.get("seed"),
        "Size": f"{scene.width}x{scene.height}",
        "Model": model,
        "Method": method,
        "Base ratio": settings.get("base_ratio"),
        "Split": scene.split,
        "Regions": len(scene.regions),
    }
    prompt = " BREAK ".join([scene.base_prompt or scene.prompt, *(r.prompt for r in scene.regions)])
    tail = ", ".join(f"{key}: {value}" for key, value in fields.items() if value is not None)
    return f"{prompt}\nNegative prompt: {scene.negative_prompt}\n{tail}"


def generation_record(method: str, model: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable record of one image: method, model and the full config that regenerates it."""
    return {"method": method, "model": model, "seed": settings.get("seed"), "config": settings}


def save_png(image: Image.Image, path: str | Path, scene: Scene, parameters: str,
             generation: dict[str, Any] | None = None) -> Path:
    """Write ``image`` to ``path`` with the scene JSON, the parameters text and (if given) the
    generation record as PNG text chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(SCENE_KEY, scene.to_json(indent=None))
    info.add_itxt(PARAMETERS_KEY, parameters)
    if generation is not None:
        info.add_itxt(GENERATION_KEY, json.dumps(generation, sort_keys=True))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", pnginfo=info)
    return path


def read_generation(path: str | Path) -> dict[str, Any] | None:
    """The generation record stored in a PNG (method, model, seed, config), or ``None``."""
    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}) or {})
    return json.loads(text[GENERATION_KEY]) if GENERATION_KEY in text else None


def read_png_metadata(path: str | Path) -> tuple[Scene | None, str | None]:
    """The scene and the parameters text stored in a PNG (``None`` for what is absent)."""
    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}) or {})
    scene = Scene.from_json(text[SCENE_KEY]) if SCENE_KEY in text else None
    return scene, text.get(PARAMETERS_KEY)
