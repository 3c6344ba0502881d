"""Offline test kit: tiny SD 1.x and SDXL pipelines with random weights and the real CLIP tokenizer.

The pipelines have the real architecture families (VAE with an 8x down factor, UNet with
cross-attention at several resolutions, CLIP text encoders, SDXL's two encoders, pooled embedding
and time ids) at a size that runs 20 steps in about a second on one CPU core. Weights are drawn from
``torch.manual_seed(seed)``, so the same seed builds the same pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

from .detectors import save_tiny_grounding_dino, save_tiny_owlv2, save_tiny_sam
from .mmdit import save_tiny_flux, save_tiny_sd3, t5_tokenizer, tiny_flux_pipeline, tiny_sd3_pipeline
from .single_file import save_tiny_single_file

__all__ = ["clip_tokenizer_path", "load_clip_tokenizer", "tiny_sd_pipeline", "tiny_sdxl_pipeline",
           "tiny_gligen_pipeline", "tiny_controlnet", "save_tiny_pipeline", "save_tiny_controlnet",
           "save_tiny_single_file", "t5_tokenizer", "tiny_sd3_pipeline", "tiny_flux_pipeline", "save_tiny_sd3",
           "save_tiny_flux", "save_tiny_owlv2", "save_tiny_grounding_dino", "save_tiny_sam"]

# The class GLIGEN checkpoints on the hub (masterful/gligen-1-4-generation-text-box, longlian/lmd_plus) name in
# their model_index.json.
GLIGEN_PIPELINE_CLASS = "StableDiffusionGLIGENPipeline"


def clip_tokenizer_path() -> Path:
    """Folder of the real CLIP BPE tokenizer (vocab.json, merges.txt) shipped with scenecraft."""
    from ..generation.loading import clip_tokenizer_path as shipped

    return shipped()


def load_clip_tokenizer(model_max_length: int = 77):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(clip_tokenizer_path()), model_max_length=model_max_length)


def _text_encoder_config(projection_dim: int | None = None, hidden_size: int = 32):
    from transformers import CLIPTextConfig

    config = dict(
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_size=hidden_size, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=3, vocab_size=49408,
        max_position_embeddings=77, hidden_act="gelu",
    )
    if projection_dim is not None:
        config["projection_dim"] = projection_dim
    return CLIPTextConfig(**config)


def _tiny_vae():
    from ..evaluation.bench_layout import small_vae

    # Four blocks give SD's 8x down factor; few channels keep it cheap.
    return small_vae()


def _scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )


def tiny_sd_pipeline(seed: int = 0, version: int = 1):
    """A tiny ``StableDiffusionPipeline``: UNet 32/64/64 with cross-attention dim 32.

    ``version=1`` has SD 1.x's layout (convolutional projections in the transformer blocks, one
    head size, epsilon prediction); ``version=2`` SD 2.x's (linear projections, a head size per
    block, v-prediction).
    """
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    if version not in (1, 2):
        raise ValueError(f"version must be 1 or 2, got {version!r}")
    torch.manual_seed(seed)
    sd2 = dict(use_linear_projection=True, attention_head_dim=(2, 4, 4)) if version == 2 else dict(attention_head_dim=8)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=8, **sd2,
    )
    vae = _tiny_vae()
    text_encoder = CLIPTextModel(_text_encoder_config())
    scheduler = _scheduler()
    if version == 2:
        scheduler = type(scheduler).from_config(scheduler.config, prediction_type="v_prediction")
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=load_clip_tokenizer(), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(seed: int = 0):
    """A tiny ``StableDiffusionXLPipeline``: two text encoders, pooled embedding, time ids."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    time_embed_dim = 8
    projection_dim = 32
    # Like SDXL's 768 and 1280, the two encoders differ in width: diffusers' single-file loader tells them apart by it.
    hidden, hidden_2 = 32, 48
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim, transformer_layers_per_block=(1, 1, 2),
        projection_class_embeddings_input_dim=6 * time_embed_dim + projection_dim,
        cross_attention_dim=hidden + hidden_2, norm_num_groups=8,
    )
    vae = _tiny_vae()
    text_encoder = CLIPTextModel(_text_encoder_config(hidden_size=hidden))
    text_encoder_2 = CLIPTextModelWithProjection(_text_encoder_config(projection_dim, hidden_size=hidden_2))
    tokenizer = load_clip_tokenizer()
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=load_clip_tokenizer(), unet=unet, scheduler=_scheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_gligen_pipeline(seed: int = 0):
    """A tiny SD 1.x ``StableDiffusionPipeline`` whose UNet is a GLIGEN (text-box) UNet.

    The UNet is ``tiny_sd_pipeline(seed)``'s with ``attention_type="gated"``: the same backbone weights
    (so with the fuser off, or without ``gligen`` kwargs, it computes exactly what ``tiny_sd_pipeline``'s
    UNet does) plus a random position net and gated self-attention layers. diffusers sets the position
    net's phrase width (``positive_len``) to ``cross_attention_dim``, 32, the tiny text encoder's pooled
    width. diffusers initialises each fuser's gates (``alpha_attn``, ``alpha_dense``) to 0, which makes
    a fresh fuser a no-op; here they are 1, like a trained GLIGEN's non-zero gates.
    """
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    pipe = tiny_sd_pipeline(seed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(pipe.unet.config, attention_type="gated")
    missing, unexpected = unet.load_state_dict(pipe.unet.state_dict(), strict=False)
    if unexpected or not all(".fuser." in key or key.startswith("position_net.") for key in missing):
        raise RuntimeError(f"the gated UNet does not extend the SD UNet: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if name.endswith(("fuser.alpha_attn", "fuser.alpha_dense")):
                parameter.fill_(1.0)
    gligen = StableDiffusionPipeline(**{**pipe.components, "unet": unet}, requires_safety_checker=False)
    gligen.set_progress_bar_config(disable=True)
    return gligen


def tiny_controlnet(pipe, seed: int = 0, zero_conv_std: float = 0.1):
    """A ``ControlNetModel`` for a tiny pipeline (SD 1.x/2.x or SDXL), its backbone copied from ``pipe.unet``.

    The conditioning embedding has ``log2(pipe.vae_scale_factor) + 1`` blocks, so it shrinks the control
    image by the VAE's factor. diffusers starts a ControlNet's output ("zero") convolutions at zero, which
    makes a fresh one a no-op; here their weights are drawn from ``N(0, zero_conv_std)`` (default 0.1)
    so that the control has an effect. All random weights come from ``seed``; the global RNG is left
    as it was.
    """
    import math

    import torch
    from diffusers import ControlNetModel

    blocks = int(math.log2(pipe.vae_scale_factor)) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        channels = tuple(min(8 * 2**i, 32) for i in range(blocks))
        controlnet = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=channels)
    generator = torch.Generator().manual_seed(seed)
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                  controlnet.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for conv in zero_convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * zero_conv_std)
    controlnet = controlnet.to(pipe.unet.device)
    return controlnet if pipe.unet.dtype == controlnet.dtype else controlnet.to(dtype=pipe.unet.dtype)


def save_tiny_pipeline(path: str | Path, kind: str = "sd", seed: int = 0) -> Path:
    """Build a tiny pipeline (``kind`` ``"sd"``, ``"sd2"``, ``"sdxl"``, ``"gligen"``) and save it to ``path``.

    A ``"gligen"`` folder is saved the way GLIGEN checkpoints on the hub are: its ``model_index.json``
    names ``StableDiffusionGLIGENPipeline`` (diffusers' deprecated GLIGEN pipeline) for the same components.
    """
    path = Path(path)
    _pipeline_builder(kind)(seed).save_pretrained(path)
    if kind == "gligen":
        _name_as_gligen_folder(path)
    return path


def save_tiny_controlnet(path: str | Path, kind: str = "sd", seed: int = 0) -> Path:
    """Save :func:`tiny_controlnet` of the tiny ``kind`` (``"sd"``, ``"sd2"``, ``"sdxl"``) pipeline of ``seed``
    as a diffusers ControlNet folder; it fits the pipeline :func:`save_tiny_pipeline` saves for the same arguments."""
    path = Path(path)
    tiny_controlnet(_pipeline_builder(kind, ("sd", "sd2", "sdxl"))(seed), seed).save_pretrained(path)
    return path


def _pipeline_builder(kind: str, kinds: tuple[str, ...] = ("sd", "sd2", "sdxl", "gligen")):
    """The tiny pipeline builder ``seed -> pipeline`` of ``kind``, one of ``kinds``."""
    builders = {"sd": tiny_sd_pipeline, "sd2": lambda seed: tiny_sd_pipeline(seed, version=2),
                "sdxl": tiny_sdxl_pipeline, "gligen": tiny_gligen_pipeline}
    if kind not in kinds:
        raise ValueError(f"kind must be one of {sorted(kinds)}, got {kind!r}")
    return builders[kind]


def _name_as_gligen_folder(path: Path) -> None:
    index = path / "model_index.json"
    config = json.loads(index.read_text(encoding="utf-8"))
    config["_class_name"] = GLIGEN_PIPELINE_CLASS
    # Those folders predate diffusers' image_encoder component.
    config.pop("image_encoder", None)
    index.write_text(json.dumps(config, indent=2), encoding="utf-8")
