"""Write a tiny pipeline as one single-file checkpoint in the original LDM/CompVis key layout.

Artists download Stable Diffusion models as one ``.safetensors``/``.ckpt`` file whose keys follow
the original training code: ``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE),
``cond_stage_model.transformer.*`` (SD 1.x CLIP text encoder) or ``cond_stage_model.model.*``
(SD 2.x OpenCLIP text encoder) or, for SDXL,
``conditioner.embedders.0.transformer.*`` (CLIP) and ``conditioner.embedders.1.model.*`` (OpenCLIP).
This module is the reverse of diffusers' LDM->diffusers converters
(``diffusers.loaders.single_file_utils``): the layout is derived from each model's blocks, so it
works for any number of blocks and layers per block, not just SD's four blocks of two layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

__all__ = ["save_tiny_single_file", "pipeline_to_ldm", "unet_to_ldm", "vae_to_ldm", "clip_to_ldm", "open_clip_to_ldm"]

StateDict = dict[str, "torch.Tensor"]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPEN_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

# Parameter renames inside one block, diffusers name -> LDM name.
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_TOP = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
_OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                    "self_attn.out_proj": "attn.out_proj"}


def _rename_module(name: str, renames: dict[str, str]) -> str:
    """``name`` (a parameter path like ``norm1.weight``) with its leading module renamed per ``renames``."""
    for old, new in renames.items():
        if name.startswith(old + "."):
            return new + name[len(old):]
    return name


def _convert(state: StateDict, blocks: dict[str, tuple[str, dict[str, str]]], top: dict[str, str]) -> StateDict:
    """Rename every key of ``state``: a key under a block prefix of ``blocks`` gets that block's LDM
    prefix and inner renames; any other key gets the top-level renames of ``top``."""
    out = {}
    for key, tensor in state.items():
        prefix = max((p for p in blocks if key.startswith(p)), key=len, default=None)
        if prefix is None:
            new_key = _rename_module(key, top)
        else:
            ldm_prefix, inner = blocks[prefix]
            new_key = ldm_prefix + _rename_module(key[len(prefix):], inner)
        out[new_key] = tensor
    return out


def _unet_blocks(unet: UNet2DConditionModel) -> dict[str, tuple[str, dict[str, str]]]:
    """Diffusers block prefixes of a ``UNet2DConditionModel`` -> (LDM prefix, inner renames).

    LDM numbers the UNet's layers flat: ``input_blocks.0`` is ``conv_in``, then each down block's
    (resnet, attention) pairs and its downsampler each take one index; ``output_blocks`` does the
    same for the up blocks, with the upsampler sharing the index of its block's last layer. Inside
    an attention block the two layouts name the parameters alike.
    """
    blocks: dict[str, tuple[str, dict[str, str]]] = {}
    index = 1
    for b, block in enumerate(unet.down_blocks):
        for layer in range(len(block.resnets)):
            blocks[f"down_blocks.{b}.resnets.{layer}."] = (f"input_blocks.{index}.0.", _UNET_RESNET)
            blocks[f"down_blocks.{b}.attentions.{layer}."] = (f"input_blocks.{index}.1.", {})
            index += 1
        if block.downsamplers is not None:
            blocks[f"down_blocks.{b}.downsamplers.0.conv."] = (f"input_blocks.{index}.0.op.", {})
            index += 1
    mid = unet.mid_block
    for layer in range(len(mid.resnets)):
        blocks[f"mid_block.resnets.{layer}."] = (f"middle_block.{2 * layer}.", _UNET_RESNET)
        blocks[f"mid_block.attentions.{layer}."] = (f"middle_block.{2 * layer + 1}.", {})
    index = 0
    for b, block in enumerate(unet.up_blocks):
        has_attention = getattr(block, "attentions", None) is not None
        for layer in range(len(block.resnets)):
            blocks[f"up_blocks.{b}.resnets.{layer}."] = (f"output_blocks.{index}.0.", _UNET_RESNET)
            blocks[f"up_blocks.{b}.attentions.{layer}."] = (f"output_blocks.{index}.1.", {})
            index += 1
        if block.upsamplers is not None:
            blocks[f"up_blocks.{b}.upsamplers.0."] = (f"output_blocks.{index - 1}.{2 if has_attention else 1}.", {})
    return blocks


def unet_to_ldm(unet: UNet2DConditionModel, prefix: str = UNET_PREFIX) -> StateDict:
    """A diffusers ``UNet2DConditionModel``'s weights under LDM keys (``model.diffusion_model.*``)."""
    state = _convert(unet.state_dict(), _unet_blocks(unet), _UNET_TOP)
    return {prefix + key: tensor for key, tensor in state.items()}


def _vae_blocks(vae: AutoencoderKL) -> dict[str, tuple[str, dict[str, str]]]:
    """Diffusers block prefixes of an ``AutoencoderKL`` -> (LDM prefix, inner renames).

    LDM numbers the decoder's up blocks by resolution, highest first, which is the reverse of the
    order they run in: diffusers' ``up_blocks.0`` is LDM's ``up.{n-1}``.
    """
    blocks: dict[str, tuple[str, dict[str, str]]] = {}
    for part in ("encoder", "decoder"):
        coder = getattr(vae, part)
        for layer in range(len(coder.mid_block.resnets)):
            blocks[f"{part}.mid_block.resnets.{layer}."] = (f"{part}.mid.block_{layer + 1}.", {})
        blocks[f"{part}.mid_block.attentions.0."] = (f"{part}.mid.attn_1.", _VAE_ATTENTION)
    for b in range(len(vae.encoder.down_blocks)):
        blocks[f"encoder.down_blocks.{b}.resnets."] = (f"encoder.down.{b}.block.", {})
        blocks[f"encoder.down_blocks.{b}.downsamplers.0."] = (f"encoder.down.{b}.downsample.", {})
    n = len(vae.decoder.up_blocks)
    for b in range(n):
        blocks[f"decoder.up_blocks.{b}.resnets."] = (f"decoder.up.{n - 1 - b}.block.", {})
        blocks[f"decoder.up_blocks.{b}.upsamplers.0."] = (f"decoder.up.{n - 1 - b}.upsample.", {})
    return blocks


def vae_to_ldm(vae: AutoencoderKL, prefix: str = VAE_PREFIX) -> StateDict:
    """An ``AutoencoderKL``'s weights under LDM keys (``first_stage_model.*``).

    The mid-block attention's linear layers become LDM's 1x1 convolutions.
    """
    state = _convert(vae.state_dict(), _vae_blocks(vae), _VAE_TOP)
    out = {}
    for key, tensor in state.items():
        key = key.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid.attn_1." in key and key.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        out[prefix + key] = tensor
    return out


def clip_to_ldm(text_encoder: CLIPTextModel, prefix: str = SD_CLIP_PREFIX) -> StateDict:
    """A transformers ``CLIPTextModel``'s weights under LDM keys (``<prefix>text_model.*``).

    transformers >= 5.6 dropped the ``text_model.`` level of ``CLIPTextModel``; checkpoints keep it.
    """
    return {prefix + (key if key.startswith("text_model.") else "text_model." + key): tensor
            for key, tensor in text_encoder.state_dict().items()}


def open_clip_to_ldm(text_encoder: CLIPTextModel | CLIPTextModelWithProjection,
                     prefix: str = SDXL_OPEN_CLIP_PREFIX) -> StateDict:
    """A CLIP text encoder's weights in OpenCLIP's layout (SDXL's second encoder, SD 2.x's encoder).

    OpenCLIP fuses the query, key and value projections into one ``in_proj`` and stores the text
    projection as a matrix applied on the right (the transpose of the linear layer's weight).
    """
    import torch

    state = {key.removeprefix("text_model."): tensor for key, tensor in text_encoder.state_dict().items()}
    out = {
        prefix + "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        prefix + "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        prefix + "ln_final.weight": state.pop("final_layer_norm.weight"),
        prefix + "ln_final.bias": state.pop("final_layer_norm.bias"),
    }
    if "text_projection.weight" in state:
        out[prefix + "text_projection"] = state.pop("text_projection.weight").T.contiguous()
    layers = {key.split(".")[2] for key in state if key.startswith("encoder.layers.")}
    for layer in sorted(layers, key=int):
        src = f"encoder.layers.{layer}."
        dst = f"{prefix}transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            qkv = [state.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv)
    for key, tensor in state.items():
        layer, rest = key.removeprefix("encoder.layers.").split(".", 1)
        out[f"{prefix}transformer.resblocks.{layer}.{_rename_module(rest, _OPEN_CLIP_LAYER)}"] = tensor
    return out


def pipeline_to_ldm(pipe: StableDiffusionPipeline | StableDiffusionXLPipeline) -> StateDict:
    """The whole checkpoint of an SD 1.x/2.x or SDXL pipeline, in LDM keys.

    SD 2.x is told from SD 1.x by its UNet's linear projections, as in the original models.
    """
    state = {**unet_to_ldm(pipe.unet), **vae_to_ldm(pipe.vae)}
    if getattr(pipe, "text_encoder_2", None) is not None:
        state.update(clip_to_ldm(pipe.text_encoder, SDXL_CLIP_PREFIX))
        state.update(open_clip_to_ldm(pipe.text_encoder_2))
    elif pipe.unet.config.use_linear_projection:
        state.update(open_clip_to_ldm(pipe.text_encoder, SD2_OPEN_CLIP_PREFIX))
    else:
        state.update(clip_to_ldm(pipe.text_encoder))
    return state


def save_tiny_single_file(path: str | Path, kind: str = "sd", seed: int = 0) -> Path:
    """Build the tiny pipeline ``kind`` (``"sd"``, ``"sd2"`` or ``"sdxl"``) with ``seed`` and save it to
    ``path`` as one LDM-format checkpoint (``.safetensors``, else a torch ``.ckpt`` with a ``state_dict``).

    The weights equal those :func:`scenecraft.testing.save_tiny_pipeline` writes for the same kind
    and seed, so loading the file with that folder as its config reproduces the folder's pipeline.
    """
    import torch
    from safetensors.torch import save_file

    from . import tiny_sd_pipeline, tiny_sdxl_pipeline

    builders = {"sd": tiny_sd_pipeline, "sd2": lambda seed: tiny_sd_pipeline(seed, version=2),
                "sdxl": tiny_sdxl_pipeline}
    if kind not in builders:
        raise ValueError(f"kind must be one of {sorted(builders)}, got {kind!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Copies: safetensors refuses tensors that share memory, and the file should own its data.
    state = {key: tensor.detach().clone().contiguous() for key, tensor in pipeline_to_ldm(builders[kind](seed)).items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path
