"""Load a Stable Diffusion pipeline from a hub id, a local diffusers folder or a single checkpoint file."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import torch

__all__ = ["load_pipeline", "default_model", "recommended_settings", "method_settings", "pick_device", "pick_dtype", "detect_family",
           "is_gligen_model", "ModelLoadError"]

TOYWORLD = "toyworld"
# A model folder may carry the sampling settings it works best with (the shipped toy-world model does).
SETTINGS_FILE = "scenecraft.json"
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
# A key prefix that only SDXL single-file checkpoints carry (its second text encoder).
_SDXL_KEY = "conditioner.embedders.1.model."


class ModelLoadError(RuntimeError):
    """A model that could not be loaded; the message says what to download or fix."""


def clip_tokenizer_path() -> Path:
    """Folder of the real CLIP BPE tokenizer (vocab.json, merges.txt) shipped with scenecraft."""
    return Path(str(files("scenecraft") / "assets" / "clip_tokenizer"))


def toyworld_path() -> Path:
    return Path(str(files("scenecraft") / "assets" / "toyworld"))


def default_model() -> str:
    """The model that ships with scenecraft (the toy-world model)."""
    return TOYWORLD


def _settings_file(model: str | Path) -> dict:
    path = toyworld_path() if str(model) == TOYWORLD else Path(str(model)).expanduser()
    file = path / SETTINGS_FILE
    return json.loads(file.read_text(encoding="utf-8")) if path.is_dir() and file.is_file() else {}


def method_settings(model: str | Path, method: str) -> dict:
    """Settings of ``method``'s config that a model folder's ``scenecraft.json`` recommends (``{}`` if none).

    The file's ``"methods"`` object maps a method name to config fields, e.g. the toy-world model's
    attention layers for LMD (its UNet is smaller than the one LMD's defaults name).
    """
    settings = _settings_file(model).get("methods", {}).get(method, {})
    return {key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()}


def recommended_settings(model: str | Path) -> dict[str, float]:
    """``num_inference_steps`` / ``guidance_scale`` a model folder's ``scenecraft.json`` recommends.

    The shipped toy-world model's says 20 steps and guidance 3, as measured; a model without the
    file recommends nothing (``{}``), and each method's own defaults apply.
    """
    stored = _settings_file(model)
    return {key: stored[key] for key in ("num_inference_steps", "guidance_scale") if key in stored}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the available accelerator (CUDA, MPS, XPU...), else the CPU."""
    if device is not None:
        return torch.device(device)
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and accelerator.is_available():
        return accelerator.current_accelerator()
    if torch.cuda.is_available():
        return torch.device(torch.cuda.current_device())
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: torch.dtype | str | None = None) -> torch.dtype:
    """``dtype`` if given, else float16 on an accelerator and float32 on the CPU."""
    if isinstance(dtype, str):
        names = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
                 "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
        if dtype not in names:
            raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
        return names[dtype]
    if dtype is not None:
        return dtype
    return torch.float32 if device.type == "cpu" else torch.float16


def detect_family(model: str | Path) -> str:
    """``"sdxl"`` or ``"sd"`` for a local diffusers folder or a single checkpoint file."""
    path = Path(model)
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise ModelLoadError(f"{path} is not a diffusers pipeline folder: it has no model_index.json")
        return _family_of_class(json.loads(index.read_text())["_class_name"])
    keys = _checkpoint_keys(path)
    return "sdxl" if any(k.startswith(_SDXL_KEY) for k in keys) else "sd"


def is_gligen_model(model: str | Path) -> bool:
    """True when a diffusers folder or hub id holds a GLIGEN UNet (``unet/config.json`` says ``attention_type``
    ``"gated"`` or ``"gated-text-image"``), as ``masterful/gligen-1-4-generation-text-box`` and ``longlian/lmd_plus``
    do. Single checkpoint files are not GLIGEN. A hub id's config is fetched (or read from the cache)."""
    from diffusers import UNet2DConditionModel

    path = toyworld_path() if str(model) == TOYWORLD else Path(str(model)).expanduser()
    if path.suffix in _SINGLE_FILE_SUFFIXES:
        return False
    try:
        config = UNet2DConditionModel.load_config(str(path) if path.is_dir() else str(model), subfolder="unet")
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not read unet/config.json of {str(model)!r}: {error}\nIf this is a hub id and you "
                             f"are offline, download it first and pass the folder") from error
    return config.get("attention_type") in ("gated", "gated-text-image")


def _family_of_class(class_name: str) -> str:
    if class_name.startswith("StableDiffusionGLIGEN"):
        # GLIGEN checkpoints are SD 1.x plus gated self-attention; diffusers' GLIGEN pipelines are deprecated, so
        # they load as a StableDiffusionPipeline of the same components (is_gligen_model tells them apart).
        return "sd"
    if "XL" in class_name:
        return "sdxl"
    if class_name.startswith("StableDiffusion"):
        return "sd"
    raise ModelLoadError(f"pipeline class {class_name} is not Stable Diffusion 1.x/2.x or SDXL")


def _checkpoint_keys(path: Path) -> list[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    return list(state.get("state_dict", state).keys())


def _single_file_help(path: Path, family: str, error: Exception) -> str:
    name, repos = {
        "sd": ("SD 1.x/2.x", ["stable-diffusion-v1-5/stable-diffusion-v1-5", "stabilityai/stable-diffusion-2-1"]),
        "sdxl": ("SDXL", ["stabilityai/stable-diffusion-xl-base-1.0"]),
    }[family]
    download = " or ".join(
        f"`huggingface-cli download {repo} --include '*.json' '*.txt' --local-dir ./{repo.split('/')[1]}`"
        for repo in repos
    )
    return (
        f"could not load the checkpoint file {path}: {error}\n"
        f"A single file holds only weights: diffusers takes the components' configs, tokenizer and scheduler from a "
        f"diffusers folder of the same family ({name}), which it fetches from the hub. Offline, pass "
        f"single_file_config (--model-config) pointing at a local one: download its configs (a few MB) on a machine "
        f"with internet with {download}."
    )


def _pipeline_class(family: str):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline


def _load(model: str, dtype: torch.dtype, single_file_config: str | None):
    if model == TOYWORLD:
        if not (toyworld_path() / "model_index.json").is_file():
            raise ModelLoadError("the toy-world model is not shipped with this installation of scenecraft")
        model = str(toyworld_path())
    path = Path(model).expanduser()
    if path.is_dir():
        return _pipeline_class(detect_family(path)).from_pretrained(str(path), dtype=dtype, local_files_only=True)
    if path.suffix in _SINGLE_FILE_SUFFIXES:
        if not path.is_file():
            raise ModelLoadError(f"checkpoint file {path} does not exist")
        family = detect_family(path)
        if single_file_config:
            return _pipeline_class(family).from_single_file(str(path), dtype=dtype, config=single_file_config)
        try:
            return _pipeline_class(family).from_single_file(str(path), dtype=dtype)
        except (OSError, ValueError) as error:
            raise ModelLoadError(_single_file_help(path, family, error)) from error
    if model.count("/") != 1 or path.exists():
        raise ModelLoadError(
            f"{model!r} is neither a local diffusers folder, a checkpoint file ({', '.join(_SINGLE_FILE_SUFFIXES)}) "
            f"nor a HuggingFace hub id like 'stable-diffusion-v1-5/stable-diffusion-v1-5'"
        )
    from diffusers import DiffusionPipeline

    class_name = DiffusionPipeline.load_config(model)["_class_name"]
    return _pipeline_class(_family_of_class(class_name)).from_pretrained(model, dtype=dtype)


def load_pipeline(
    model: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    single_file_config: str | None = None,
):
    """Load an SD 1.x/2.x or SDXL pipeline and move it to a device.

    Args:
        model: a HuggingFace hub id (``"stable-diffusion-v1-5/stable-diffusion-v1-5"``), a local
            diffusers folder, a single ``.safetensors``/``.ckpt`` file, or ``"toyworld"`` (the model that
            ships with scenecraft). Default: :func:`default_model`.
        device: where to run; default the available accelerator, else the CPU.
        dtype: weights' dtype; default float16 on an accelerator and float32 on the CPU.
        single_file_config: for single files offline, a local diffusers folder or hub id whose
            configs describe the checkpoint (diffusers otherwise fetches them from the hub).

    The family (SD 1.x/2.x vs SDXL) is detected from ``model_index.json`` or the checkpoint's keys. GLIGEN
    checkpoints (``model_index.json`` names ``StableDiffusionGLIGENPipeline``) load as a plain
    ``StableDiffusionPipeline`` whose UNet has gated self-attention; see :mod:`scenecraft.generation.gligen`.
    """
    model = str(model) if model is not None else default_model()
    device = pick_device(device)
    dtype = pick_dtype(device, dtype)
    try:
        pipe = _load(model, dtype, single_file_config)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"could not load {model!r}: {error}\nIf this is a hub id and you are offline, download it first on a "
            f"machine with internet (`huggingface-cli download {model} --local-dir ./{Path(model).name}`) and pass the "
            f"folder; for single files offline, also pass single_file_config (--model-config) pointing at a local "
            f"diffusers folder of the same family."
        ) from error
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
