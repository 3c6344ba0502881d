"""Load a Stable Diffusion (1.x/2.x, SDXL, SD3) or Flux.1 pipeline from a hub id, a local diffusers folder or a single
checkpoint file."""

from __future__ import annotations

import json
import pickle
import re
import struct
from importlib.resources import files
from pathlib import Path

import torch
from safetensors import SafetensorError

__all__ = ["load_pipeline", "default_model", "recommended_settings", "method_settings", "pick_device", "pick_dtype", "detect_family",
           "is_gligen_model", "ModelLoadError"]

TOYWORLD = "toyworld"
# A model folder may carry the sampling settings it works best with (the shipped toy-world model does).
SETTINGS_FILE = "scenecraft.json"
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
# A key prefix that only SDXL single-file checkpoints carry (its second text encoder).
_SDXL_KEY = "conditioner.embedders.1.model."
# Every SD 1.x/2.x/SDXL single file in the original (LDM) layout keeps its UNet under this prefix.
_UNET_KEY = "model.diffusion_model."
# SD3's MMDiT (original layout) has joint blocks; Flux.1's transformer (BFL layout) double- and single-stream blocks.
# Both come bare or under _UNET_KEY (ComfyUI-style all-in-one files).
_SD3_BLOCKS = "joint_blocks."
_FLUX_BLOCKS = ("double_blocks.", "single_blocks.")
# Keys of transformers that also have double/single blocks but are not Flux.1 (as diffusers' single-file loader
# tells them apart), and what they are.
_NOT_FLUX_1 = {"single_stream_modulation.": "Flux.2", "early_stream_modulations.": "a later Flux",
               "distilled_guidance_layer.": "Chroma"}
# A Flux.1 transformer with guidance embedding is dev-like; without it, schnell-like.
_FLUX_GUIDANCE = "guidance_in."
# Text encoders in an SD3 (and all-in-one Flux) single file: text_encoders.clip_l / clip_g / t5xxl.
_TEXT_ENCODERS_KEY = "text_encoders."
# Families: what each is called in messages, and the hub repos its single files take their other parts from.
_FAMILY_NAMES = {"sd": "SD 1.x/2.x", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux.1"}
_SD3_REPOS = {"sd3": "stabilityai/stable-diffusion-3-medium-diffusers",
              "sd35-medium": "stabilityai/stable-diffusion-3.5-medium",
              "sd35-large": "stabilityai/stable-diffusion-3.5-large"}
_FLUX_REPOS = {"dev": "black-forest-labs/FLUX.1-dev", "schnell": "black-forest-labs/FLUX.1-schnell"}
_GATED_NOTE = dict.fromkeys([*_SD3_REPOS.values(), _FLUX_REPOS["dev"]],
                            "; the repo is gated: accept its licence on the hub and `huggingface-cli login` first")
# MMDiT families: the default dtype on an accelerator is bfloat16 (Flux's activations overflow float16).
_BF16_FAMILIES = ("sd3", "flux")
# What diffusers' from_pretrained/from_single_file raise for a folder or file that is corrupt, incomplete or
# foreign (bad JSON, bad configs, random weights, missing tensors, wrong shapes). Caught only around those calls.
_LOAD_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, RuntimeError, EOFError,
                pickle.UnpicklingError, SafetensorError)


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
    """A model folder's ``scenecraft.json`` (``{}`` if none); a corrupt or ill-shaped one is a ModelLoadError."""
    path = toyworld_path() if str(model) == TOYWORLD else Path(str(model)).expanduser()
    file = path / SETTINGS_FILE
    if not (path.is_dir() and file.is_file()):
        return {}
    fix = "fix the file or delete it (it only holds the model's recommended settings)"
    settings = _read_json_object(file, fix)
    methods = settings.get("methods", {})
    if not isinstance(methods, dict):
        raise ModelLoadError(f'{file}: "methods" must be an object mapping a method name to its settings, not '
                             f"{_json_kind(methods)}; {fix}")
    for name, value in methods.items():
        if not isinstance(value, dict):
            raise ModelLoadError(f'{file}: "methods" entry {name!r} must be an object of settings, not '
                                 f"{_json_kind(value)}; {fix}")
    for key in ("num_inference_steps", "guidance_scale"):
        value = settings.get(key)
        if key in settings and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ModelLoadError(f'{file}: "{key}" must be a number, not {_json_kind(value)}; {fix}')
    return settings


def _read_json_object(file: Path, fix: str) -> dict:
    """The JSON object in ``file``; a file that is not UTF-8, not JSON or not an object is a ModelLoadError
    whose sentence names the file, what is wrong and ``fix``."""
    data = file.read_bytes()
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ModelLoadError(f"{file} is not UTF-8 text ({error.reason} at byte {error.start}); {fix}") from error
    except json.JSONDecodeError as error:
        where = f"{error.msg} at line {error.lineno} column {error.colno}"
        what = "is empty" if not data.strip() else f"is not valid JSON ({where})"
        raise ModelLoadError(f"{file} {what}; {fix}") from error
    except RecursionError as error:
        raise ModelLoadError(f"{file} is nested too deeply to read; {fix}") from error
    if not isinstance(value, dict):
        raise ModelLoadError(f"{file} must hold a JSON object, not {_json_kind(value)}; {fix}")
    return value


def _json_kind(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    kinds = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


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
    """``device`` if given, else the available accelerator (CUDA, MPS, XPU...), else the CPU.

    A given device that is not a device name, or that this machine does not have (``cuda`` without CUDA,
    ``cuda:7`` on a machine with fewer GPUs, ``mps`` off a Mac), is a ModelLoadError naming the devices there are.
    """
    if device is not None:
        return _available_device(device)
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and accelerator.is_available():
        return accelerator.current_accelerator()
    if torch.cuda.is_available():
        return torch.device(torch.cuda.current_device())
    return torch.device("cpu")


_DEVICE_LABELS = {"cuda": "CUDA", "mps": "MPS (Apple GPU)", "xpu": "XPU (Intel GPU)"}


def _available_device(device: str | torch.device) -> torch.device:
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ModelLoadError(f"device {str(device)!r} is not a device name: give cpu, cuda, cuda:N, mps or xpu "
                             f"(available here: {', '.join(_available_devices())})") from error
    kind, index = parsed.type, parsed.index
    if kind == "cpu":
        return parsed
    here = f"(available: {', '.join(_available_devices())})"
    if kind == "meta":
        raise ModelLoadError(f"device {str(device)!r} holds no data and cannot run a model; give a real device {here}")
    label = _DEVICE_LABELS.get(kind, kind)
    if kind == "mps":
        available, count = torch.backends.mps.is_available(), 1
    else:
        backend = getattr(torch, kind, None)
        is_available, device_count = getattr(backend, "is_available", None), getattr(backend, "device_count", None)
        available = callable(is_available) and bool(is_available())
        count = device_count() if available and callable(device_count) else None
    if not available:
        raise ModelLoadError(f"device {str(device)!r} is not available here: this machine has no {label} device {here}")
    if index is not None and count is not None and index >= count:
        names = f"{kind}:0" if count == 1 else f"{kind}:0 to {kind}:{count - 1}"
        raise ModelLoadError(f"device {str(device)!r} is not available here: this machine has {count} {label} "
                             f"device{'s' if count != 1 else ''}, {names} {here}")
    return parsed


def _available_devices() -> list[str]:
    names = ["cpu"]
    for kind in (kind for kind in _DEVICE_LABELS if kind != "mps"):  # mps has no device_count of its own
        backend = getattr(torch, kind, None)
        if backend is not None and backend.is_available():
            names += [kind] + [f"{kind}:{i}" for i in range(backend.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def pick_dtype(device: torch.device, dtype: torch.dtype | str | None = None, family: str = "sd") -> torch.dtype:
    """``dtype`` if given (a name such as ``"bf16"`` or a torch dtype), else the default of ``family`` on ``device``:
    float32 on the CPU; on an accelerator bfloat16 for ``"sd3"`` and ``"flux"`` (Flux's activations overflow
    float16) and float16 for ``"sd"`` and ``"sdxl"``."""
    if isinstance(dtype, str):
        names = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
                 "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
        if dtype not in names:
            raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
        return names[dtype]
    if dtype is not None:
        return dtype
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if family in _BF16_FAMILIES else torch.float16


def detect_family(model: str | Path) -> str:
    """``"sd"`` (SD 1.x/2.x), ``"sdxl"``, ``"sd3"`` (SD3, SD3.5) or ``"flux"`` (Flux.1 dev, schnell) for a local
    diffusers folder (its ``model_index.json``) or a single checkpoint file (its tensor names)."""
    path = Path(model)
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise ModelLoadError(f"{path} is not a diffusers pipeline folder: it has no model_index.json")
        fix = "download the model folder again"
        return _family_of_class(_class_name(_read_json_object(index, fix), str(index), fix), str(index))
    return _family_of_keys(_checkpoint_keys(path), str(path))


def _family_of_keys(keys: list[str], source: str | None = None) -> str:
    """The family of a single file's tensor names: SD3 and Flux.1 by their transformer blocks, SDXL by its second
    text encoder, else SD 1.x/2.x. A Flux.2 or Chroma transformer is a ModelLoadError."""
    bare = [key.removeprefix(_UNET_KEY) for key in keys]
    if any(key.startswith(_SD3_BLOCKS) for key in bare):
        return "sd3"
    if any(key.startswith(_FLUX_BLOCKS) for key in bare):
        if other := next((name for prefix, name in _NOT_FLUX_1.items() if any(k.startswith(prefix) for k in bare)),
                         None):
            where = f"checkpoint file {source}" if source else "the checkpoint"
            raise ModelLoadError(f"{where} holds a {other} transformer, not Flux.1: scenecraft loads Stable Diffusion "
                                 f"1.x/2.x, SDXL, SD3 and Flux.1 (dev, schnell)")
        return "flux"
    return "sdxl" if any(k.startswith(_SDXL_KEY) for k in keys) else "sd"


def _class_name(index: dict, source: str, fix: str) -> str:
    """The pipeline class a ``model_index.json`` object names; a missing or non-string one is a ModelLoadError."""
    if "_class_name" not in index:
        raise ModelLoadError(f'{source} names no pipeline class (it has no "_class_name"), so it is not a diffusers '
                             f"pipeline's model_index.json; {fix}")
    name = index["_class_name"]
    if not isinstance(name, str):
        raise ModelLoadError(f'{source}: "_class_name" must be a pipeline class name (a string), not '
                             f"{_json_kind(name)}; {fix}")
    return name


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
    except (KeyError, TypeError, AttributeError) as error:  # a config.json that is JSON but not a config object
        raise ModelLoadError(f"could not read unet/config.json of {str(model)!r}: {_reason(error)}; download the "
                             f"model folder again") from error
    if not isinstance(config, dict):
        raise ModelLoadError(f"unet/config.json of {str(model)!r} must hold a JSON object, not {_json_kind(config)}; "
                             f"download the model folder again")
    return config.get("attention_type") in ("gated", "gated-text-image")


def _family_of_class(class_name: str, source: str | None = None) -> str:
    if class_name.startswith("StableDiffusionGLIGEN"):
        # GLIGEN checkpoints are SD 1.x plus gated self-attention; diffusers' GLIGEN pipelines are deprecated, so
        # they load as a StableDiffusionPipeline of the same components (is_gligen_model tells them apart).
        return "sd"
    if class_name.startswith("StableDiffusion3"):
        return "sd3"
    if class_name == "FluxPipeline":  # Flux.1 dev and schnell; Flux.2, Kontext, Fill... have other components
        return "flux"
    if "XL" in class_name:
        return "sdxl"
    if class_name.startswith("StableDiffusion"):
        return "sd"
    where = f" (named by {source})" if source else ""
    raise ModelLoadError(f"pipeline class {class_name}{where} is not Stable Diffusion 1.x/2.x, SDXL, SD3 or Flux.1: "
                         f"scenecraft loads only those (GLIGEN included; Flux.1 as FluxPipeline, dev or schnell)")


def _checkpoint_keys(path: Path) -> list[str]:
    """The tensor names of a single checkpoint file; an empty, corrupt or foreign file, or a pickle that is not
    plain weights, is a ModelLoadError (torch.load runs with ``weights_only=True``: no pickled code ever runs)."""
    if path.stat().st_size == 0:
        raise ModelLoadError(f"checkpoint file {path} is empty (0 bytes): its download failed or was cut short; "
                             f"download it again")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return list(handle.keys())
        except SafetensorError as error:
            raise ModelLoadError(f"checkpoint file {path} is not a valid .safetensors file ({error}): it is corrupt, "
                                 f"truncated or of another format; download it again") from error
    state = _load_weights_only(path)
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"checkpoint file {path} holds {_python_kind(state)}, not a dict of named weights, so it "
                             f"is not a Stable Diffusion checkpoint")
    return [key for key in state if isinstance(key, str)]


def _load_weights_only(path: Path):
    """``torch.load`` with ``weights_only=True``, its refusals and read failures turned into ModelLoadErrors."""
    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # Not a zip-format torch file (an old torch.save format, or no torch file at all): read it whole.
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        if found := re.search(r"GLOBAL ([\w.]+)", message):
            raise ModelLoadError(
                f"checkpoint file {path} is refused: it is not a plain weights file (its pickle calls "
                f"{found.group(1)}), and scenecraft never runs pickled code; use a .safetensors version of the model"
            ) from error
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", message)
        raise ModelLoadError(
            f"checkpoint file {path} is not a plain PyTorch weights file (torch's weights-only reader stopped at: "
            f"{detail.group(1).strip() if detail else _reason(error)}): it is corrupt, truncated, of another format or "
            f"a pickle of more than weights, which scenecraft never runs; download it again or use a .safetensors "
            f"version"
        ) from error
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError, OverflowError,
            struct.error) as error:
        raise ModelLoadError(f"checkpoint file {path} is not a readable PyTorch weights file ({_reason(error)}): it is "
                             f"corrupt, truncated or of another format; download it again") from error


def _python_kind(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a single tensor of shape {tuple(value.shape)}"
    name = type(value).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _reason(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters) for a wrapped library error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if len(first) > 300:
        first = first[:297] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _single_file_help(path: Path, family: str, error: Exception) -> str:
    name = _FAMILY_NAMES[family]
    repos = {
        "sd": ["stable-diffusion-v1-5/stable-diffusion-v1-5", "stabilityai/stable-diffusion-2-1"],
        "sdxl": ["stabilityai/stable-diffusion-xl-base-1.0"],
        "sd3": [_SD3_REPOS["sd3"], _SD3_REPOS["sd35-large"]],
        "flux": [_FLUX_REPOS["dev"], _FLUX_REPOS["schnell"]],
    }[family]
    # T5 tokenizers (SD3's, Flux's) may come as a SentencePiece spiece.model.
    include = "'*.json' '*.txt'" + (" '*.model'" if family in _BF16_FAMILIES else "")
    download = " or ".join(
        f"`huggingface-cli download {repo} --include {include} --local-dir ./{repo.split('/')[1]}`" for repo in repos
    )
    return (
        f"could not load the checkpoint file {path}: {error}\n"
        f"A single file holds only weights: diffusers takes the components' configs, tokenizer and scheduler from a "
        f"diffusers folder of the same family ({name}), which it fetches from the hub. Offline, pass "
        f"single_file_config (--model-config) pointing at a local one: download its configs (a few MB) on a machine "
        f"with internet with {download}."
    )


def _transformer_file_help(path: Path, family: str, config: str, repo: str, error: Exception) -> str:
    """What to do when the other components of a transformer-only single file could not be loaded from ``config``
    (``repo``: the hub repo of the file's model)."""
    name = _FAMILY_NAMES[family]
    source = f"the folder {config}" if Path(config).expanduser().is_dir() else f"{config!r} on the hub"
    download = f"`huggingface-cli download {repo} --exclude 'transformer/*' --local-dir ./{repo.split('/')[-1]}`"
    return (
        f"could not load the checkpoint file {path}: {error}\n"
        f"It holds only the {name} transformer: the text encoders, tokenizers, VAE and scheduler come, with their "
        f"weights, from a diffusers {name} folder ({source}). Offline, pass single_file_config (--model-config) "
        f"pointing at a local diffusers {name} folder of the same model: download it on a machine with internet with "
        f"{download} (its transformer is not needed{_GATED_NOTE.get(repo, '')})."
    )


def _single_file_errors() -> tuple[type[BaseException], ...]:
    """:data:`_LOAD_ERRORS` plus diffusers' own error for a checkpoint that lacks a component's weights."""
    try:
        from diffusers.loaders.single_file_utils import SingleFileComponentError
    except ImportError:  # another diffusers version: its errors are among _LOAD_ERRORS
        return _LOAD_ERRORS
    return (*_LOAD_ERRORS, SingleFileComponentError)


def _pipeline_class(family: str):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    return {"sdxl": StableDiffusionXLPipeline, "sd3": StableDiffusion3Pipeline, "flux": FluxPipeline}.get(
        family, StableDiffusionPipeline)


def _transformer_class(family: str):
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    return FluxTransformer2DModel if family == "flux" else SD3Transformer2DModel


def _default_repo(keys: list[str], family: str) -> str:
    """The hub repo whose components a transformer-only SD3 or Flux.1 file goes with, told from its tensor names."""
    bare = [key.removeprefix(_UNET_KEY) for key in keys]
    if family == "flux":
        return _FLUX_REPOS["dev" if any(key.startswith(_FLUX_GUIDANCE) for key in bare) else "schnell"]
    if any(key.startswith(_SD3_BLOCKS + "37.") for key in bare):  # 38 joint blocks: SD3.5 Large
        return _SD3_REPOS["sd35-large"]
    if any(key.startswith(_SD3_BLOCKS) and ".attn2." in key for key in bare):  # dual attention: SD3.5 Medium
        return _SD3_REPOS["sd35-medium"]
    return _SD3_REPOS["sd3"]


def _load(model: str, device: torch.device, dtype: torch.dtype | None, single_file_config: str | None):
    """The pipeline ``model`` names, in ``dtype`` (``None``: its family's default on ``device``), on the CPU."""
    if model == TOYWORLD:
        if not (toyworld_path() / "model_index.json").is_file():
            raise ModelLoadError("the toy-world model is not shipped with this installation of scenecraft")
        model = str(toyworld_path())
    path = Path(model).expanduser()
    if path.is_dir():
        family = detect_family(path)
        try:
            return _pipeline_class(family).from_pretrained(str(path), dtype=pick_dtype(device, dtype, family),
                                                           local_files_only=True)
        except ModelLoadError:
            raise
        except _LOAD_ERRORS as error:
            raise ModelLoadError(
                f"could not load the diffusers folder {path}: {_reason(error)}\nOne of its components' configs or "
                f"weights is missing, corrupt or does not fit its model_index.json; download the folder again."
            ) from error
    if path.suffix in _SINGLE_FILE_SUFFIXES:
        if not path.is_file():
            raise ModelLoadError(f"checkpoint file {path} does not exist")
        keys = _checkpoint_keys(path)
        family = _family_of_keys(keys, str(path))
        if family in ("sd", "sdxl") and not any(key.startswith(_UNET_KEY) for key in keys):
            sample = ", ".join(repr(key) for key in keys[:3]) or "none"
            raise ModelLoadError(
                f"checkpoint file {path} holds no Stable Diffusion UNet weights (no tensor name starts with "
                f"{_UNET_KEY!r}; its first are {sample}): it is not an SD 1.x/2.x or SDXL checkpoint in the original "
                f"single-file layout, nor an SD3 or Flux.1 one (no {_SD3_BLOCKS!r} or {_FLUX_BLOCKS[0]!r} tensors)"
            )
        dtype = pick_dtype(device, dtype, family)
        if family in _BF16_FAMILIES and not any(key.startswith(_TEXT_ENCODERS_KEY) for key in keys):
            return _load_transformer_file(path, family, dtype, single_file_config, _default_repo(keys, family))
        return _load_single_file(path, family, dtype, single_file_config)
    if model.count("/") != 1 or path.exists():
        raise ModelLoadError(
            f"{model!r} is neither a local diffusers folder, a checkpoint file ({', '.join(_SINGLE_FILE_SUFFIXES)}) "
            f"nor a HuggingFace hub id like 'stable-diffusion-v1-5/stable-diffusion-v1-5'"
        )
    from diffusers import DiffusionPipeline

    config = DiffusionPipeline.load_config(model)
    source = f"the model_index.json of {model!r}"
    fix = "it is not a diffusers pipeline, or its download is corrupt"
    if not isinstance(config, dict):
        raise ModelLoadError(f"{source} must hold a JSON object, not {_json_kind(config)}; {fix}")
    family = _family_of_class(_class_name(config, source, fix), source)
    try:
        return _pipeline_class(family).from_pretrained(model, dtype=pick_dtype(device, dtype, family))
    except (OSError, ValueError, ModelLoadError):
        raise  # load_pipeline says how to download it
    except _LOAD_ERRORS as error:
        raise ModelLoadError(f"could not load {model!r}: {_reason(error)}\nIts downloaded files are corrupt or "
                             f"incomplete; download it again.") from error


def _load_single_file(path: Path, family: str, dtype: torch.dtype, single_file_config: str | None):
    """A whole pipeline from one checkpoint file (diffusers' ``from_single_file``)."""
    cls = _pipeline_class(family)
    if single_file_config:
        try:
            return cls.from_single_file(str(path), dtype=dtype, config=single_file_config)
        except ModelLoadError:
            raise
        except _single_file_errors() as error:
            raise ModelLoadError(
                f"could not load the checkpoint file {path} with the configs of {single_file_config!r}: "
                f"{_reason(error)}\nThe file may be corrupt, or of another family than the configs' folder; if "
                f"single_file_config (--model-config) is a hub id and you are offline, download it first and "
                f"pass the folder."
            ) from error
    try:
        return cls.from_single_file(str(path), dtype=dtype)
    except (OSError, ValueError) as error:
        raise ModelLoadError(_single_file_help(path, family, error)) from error
    except ModelLoadError:
        raise
    except _single_file_errors() as error:
        if family in _BF16_FAMILIES and type(error).__name__ == "SingleFileComponentError":
            name = _FAMILY_NAMES[family]
            raise ModelLoadError(
                f"could not load the checkpoint file {path}: {_reason(error)}\nThe file leaves out a component's "
                f"weights ({name} files often leave out T5): pass single_file_config (--model-config) pointing at a "
                f"local diffusers {name} folder that has them."
            ) from error
        what = {"sd3": "an SD3", "flux": "a Flux.1"}.get(family, "a Stable Diffusion")
        raise ModelLoadError(f"could not load the checkpoint file {path}: {_reason(error)}\nThe file is corrupt "
                             f"or not {what} checkpoint; download it again.") from error


def _load_transformer_file(path: Path, family: str, dtype: torch.dtype, config: str | None, repo: str):
    """An SD3 or Flux.1 pipeline from a single file without text encoders (Flux.1's and SD3.5's original files hold
    only the transformer): the transformer from the file, every other component (a VAE in the file included) from
    the diffusers folder or hub id ``config`` (default ``repo``, the file's model on the hub), loaded first so that
    a missing one fails before the big file is read."""
    cls = _pipeline_class(family)
    config = config or repo
    try:
        rest = cls.from_pretrained(config, transformer=None, dtype=dtype)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as error:
        raise ModelLoadError(_transformer_file_help(path, family, config, repo, error)) from error
    except _LOAD_ERRORS as error:
        raise ModelLoadError(f"could not load the components of {config!r} that go with the checkpoint file {path}: "
                             f"{_reason(error)}\nIts files are corrupt or incomplete; download it again.") from error
    try:
        transformer = _transformer_class(family).from_single_file(str(path), config=config, subfolder="transformer",
                                                                  dtype=dtype)
    except ModelLoadError:
        raise
    except _single_file_errors() as error:
        raise ModelLoadError(
            f"could not load the {_FAMILY_NAMES[family]} transformer of the checkpoint file {path} with the config "
            f"of {config!r}: {_reason(error)}\nThe file may be corrupt, or of another model than that folder (give "
            f"the right one as single_file_config, --model-config)."
        ) from error
    return cls(**{**rest.components, "transformer": transformer})


def load_pipeline(
    model: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    single_file_config: str | None = None,
    offload: bool = False,
):
    """Load an SD 1.x/2.x, SDXL, SD3/SD3.5 or Flux.1 (dev, schnell) pipeline and move it to a device.

    Args:
        model: a HuggingFace hub id (``"stable-diffusion-v1-5/stable-diffusion-v1-5"``,
            ``"black-forest-labs/FLUX.1-schnell"``), a local diffusers folder, a single
            ``.safetensors``/``.ckpt`` file, or ``"toyworld"`` (the model that ships with scenecraft).
            Default: :func:`default_model`.
        device: where to run; default the available accelerator, else the CPU.
        dtype: weights' dtype; default float32 on the CPU and, on an accelerator, float16 for SD 1.x/2.x
            and SDXL, bfloat16 for SD3 and Flux (see :func:`pick_dtype`).
        single_file_config: for single files offline, a local diffusers folder or hub id whose
            configs describe the checkpoint (diffusers otherwise fetches them from the hub). A Flux.1 or
            SD3 file without text encoders (the original Flux.1 files hold only the transformer) takes
            its other components, weights included, from this folder (default: the hub repo of its model,
            FLUX.1-dev or FLUX.1-schnell, SD3 Medium, SD3.5 Medium or Large).
        offload: keep the models on the CPU and move each to ``device`` only while it runs (diffusers'
            ``enable_model_cpu_offload``): slower, but it fits Flux and SD3.5 Large on smaller GPUs. Needs an
            accelerator; on the CPU it is a ValueError.

    The family is detected from ``model_index.json`` (its ``_class_name``) or the checkpoint's keys. GLIGEN
    checkpoints (``model_index.json`` names ``StableDiffusionGLIGENPipeline``) load as a plain
    ``StableDiffusionPipeline`` whose UNet has gated self-attention; see :mod:`scenecraft.generation.gligen`.
    """
    model = str(model) if model is not None else default_model()
    device = pick_device(device)
    if offload and device.type == "cpu":
        raise ValueError("offload=True keeps the models on the CPU and moves each to the accelerator only while it "
                         "runs, but the device is the CPU: pass an accelerator device (cuda, mps, xpu) or drop offload")
    if isinstance(dtype, str):
        dtype = pick_dtype(device, dtype)  # a bad name is refused before any weights load
    try:
        pipe = _load(model, device, dtype, single_file_config)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"could not load {model!r}: {error}\nIf this is a hub id and you are offline, download it first on a "
            f"machine with internet (`huggingface-cli download {model} --local-dir ./{Path(model).name}`) and pass the "
            f"folder; for single files offline, also pass single_file_config (--model-config) pointing at a local "
            f"diffusers folder of the same family."
        ) from error
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
