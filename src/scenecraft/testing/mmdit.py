"""Tiny SD3 / SD3.5 and Flux.1 pipelines with random weights, the real CLIP tokenizer and a small T5 tokenizer.

The pipelines are diffusers' own ``StableDiffusion3Pipeline`` and ``FluxPipeline`` with their real component
classes (MMDiT transformer with joint attention over ``[text | image]`` tokens, a 16-channel VAE with an 8x down
factor and SD3's or Flux's shift and scaling factors, CLIP text encoders, a T5 encoder, a flow-matching scheduler)
at a size that runs a 2-step 64x64 call in a fraction of a second on one CPU core. Weights come from
``torch.manual_seed(seed)`` inside a forked RNG (the global RNG is left as it was), so the same seed builds the
same pipeline.

The T5 tokenizer is built here from a fixed word list (:data:`T5_WORDS`) that covers the toy world's and the
offline planner's words, with single characters as fallbacks; real T5 checkpoints ship a 32k-piece
SentencePiece model, which cannot be downloaded offline.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

__all__ = ["T5_WORDS", "t5_tokenizer", "tiny_sd3_pipeline", "tiny_flux_pipeline", "save_tiny_sd3", "save_tiny_flux"]

#: Whole-word pieces of :func:`t5_tokenizer`, in id order after the three specials. Appending words keeps the
#: ids of the ones before; never reorder them.
T5_WORDS: tuple[str, ...] = (
    # articles, conjunctions, prepositions
    "a", "an", "the", "and", "or", "of", "on", "in", "at", "to", "with", "without", "no", "not", "by", "from",
    "into", "onto", "over", "under", "near", "beside", "between", "behind", "inside", "outside", "around",
    "next", "front", "back", "across", "along", "against", "each", "other", "its", "their", "some", "all",
    # positions
    "left", "right", "above", "below", "top", "bottom", "middle", "center", "centre", "corner", "upper", "lower",
    "side", "half", "third", "edge", "far", "close", "up", "down", "row", "column", "grid", "pair", "group",
    # colours
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray", "grey",
    "violet", "cyan", "magenta", "teal", "gold", "golden", "silver", "beige", "turquoise", "navy", "maroon",
    "indigo", "lime", "crimson", "scarlet", "olive", "tan", "cream", "ivory", "lavender", "dark", "light",
    "bright", "pale", "colourful", "colorful",
    # shapes
    "circle", "circles", "square", "squares", "triangle", "triangles", "rectangle", "rectangles", "star",
    "stars", "heart", "hearts", "dot", "dots", "ball", "balls", "box", "boxes", "shape", "shapes", "object",
    "objects", "round", "flat",
    # counts
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
    "many", "few", "several", "single", "both", "dozen", "multiple", "numerous", "couple",
    # sizes
    "big", "small", "large", "tiny", "huge", "little", "tall", "short", "long", "giant",
    # scene and style words
    "background", "foreground", "image", "picture", "photo", "painting", "drawing", "scene", "view", "canvas",
    "sky", "grass", "sea", "room", "table", "wall", "floor", "park", "beach", "forest", "city", "street",
    "night", "day", "sunset", "cat", "dog", "bird", "horse", "tree", "house", "car", "apple", "flower",
    "person", "man", "woman", "sofa", "cup", "book", "clock", "vase", "lamp", "chair", "plain", "simple",
    "blurry", "sharp", "detailed", "realistic", "cartoon", "high", "quality", "low", "best", "bad", "style",
    # verbs and fillers
    "is", "are", "there", "sits", "sitting", "stands", "standing", "lies", "lying", "placed", "shown",
)

_SPECIALS = ("<pad>", "</s>", "<unk>")
#: Single-character fallbacks: a word outside :data:`T5_WORDS` is spelled with these.
_CHARACTERS = string.ascii_lowercase + string.ascii_uppercase + string.digits + ".,;:!?'\"()-/&+%"
_WORD_SCORE, _SPACE_SCORE, _CHARACTER_SCORE = -5.0, -8.0, -10.0
MAX_LENGTH = 512


def t5_tokenizer(model_max_length: int = MAX_LENGTH):
    """A T5 tokenizer (``transformers.T5Tokenizer``, what ``T5TokenizerFast`` names) on a small fixed vocabulary.

    Like T5's: a Unigram model over ``▁``-prefixed pieces, ``<pad>`` id 0, ``</s>`` id 1 (appended to every
    sequence), ``<unk>`` id 2, no sentinel (``<extra_id_*>``) tokens. Each word of :data:`T5_WORDS` is one piece;
    anything else is spelled letter by letter (ASCII letters, digits and common punctuation; other characters
    are ``<unk>``). It is cased, as T5's is. Deterministic, and it round-trips through ``save_pretrained`` /
    ``from_pretrained``.
    """
    from transformers import T5Tokenizer

    vocab = [(token, 0.0) for token in _SPECIALS]
    vocab += [("▁" + word, _WORD_SCORE) for word in T5_WORDS] + [("▁", _SPACE_SCORE)]
    vocab += [(character, _CHARACTER_SCORE) for character in _CHARACTERS]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def _t5_encoder(vocab_size: int, d_model: int):
    """A 2-layer T5 v1.1 encoder (gated GELU, as Flux's and SD3's ``t5-v1_1-xxl``) of width ``d_model``."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, is_encoder_decoder=False,
    )
    return T5EncoderModel(config)


def _vae(scaling_factor: float, shift_factor: float):
    """An ``AutoencoderKL`` with the 8x down factor and 16 latent channels of SD3's and Flux's, few channels wide."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 8, 16, 16), in_channels=3, out_channels=3, latent_channels=16,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=4, sample_size=64, use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=scaling_factor, shift_factor=shift_factor,
    )


def _finish(pipe, device, dtype):
    pipe.set_progress_bar_config(disable=True)
    # The weights are built in float32; casting only when asked keeps diffusers' cast warning away.
    return pipe.to(device) if dtype == torch.float32 else pipe.to(device, dtype)


# Widths: CLIP-L-like 32, CLIP-G-like 48 (SD3 pads their concatenation, 80, to T5's width as 2048 to 4096),
# T5 96, transformer 2 heads of 16 (inner width 32). Latents 8x8 at the native 64 px.
CLIP_WIDTH, CLIP_2_WIDTH, T5_WIDTH, HEADS, HEAD_DIM, NATIVE_LATENT = 32, 48, 96, 2, 16, 8


def tiny_sd3_pipeline(seed: int = 0, *, dual_attention: bool = False, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32):
    """A tiny ``StableDiffusion3Pipeline``: an ``SD3Transformer2DModel`` of 2 joint blocks, 2 heads of 16.

    Patch size 2 and native size 64 px (``sample_size`` 8 latents; ``pos_embed_max_size`` 32 allows up to
    512 px). ``dual_attention=True`` gives SD3.5 Medium's layout: block 0 has a second image self-attention
    (``attn2``) and every block RMS-normalises queries and keys. Two ``CLIPTextModelWithProjection`` (widths 32
    and 48, the real CLIP tokenizer), a T5 encoder of width 96 with :func:`t5_tokenizer`, a 16-channel VAE with
    SD3's ``scaling_factor`` 1.5305 and ``shift_factor`` 0.0609, and ``FlowMatchEulerDiscreteScheduler`` with
    SD3's shift 3.0.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    from . import _text_encoder_config, load_clip_tokenizer

    sd35 = dict(dual_attention_layers=(0,), qk_norm="rms_norm") if dual_attention else {}
    tokenizer_3 = t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=NATIVE_LATENT, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
            attention_head_dim=HEAD_DIM, num_attention_heads=HEADS, joint_attention_dim=T5_WIDTH,
            caption_projection_dim=HEADS * HEAD_DIM, pooled_projection_dim=CLIP_WIDTH + CLIP_2_WIDTH,
            pos_embed_max_size=32, **sd35,
        )
        text_encoder = CLIPTextModelWithProjection(_text_encoder_config(CLIP_WIDTH, hidden_size=CLIP_WIDTH))
        text_encoder_2 = CLIPTextModelWithProjection(_text_encoder_config(CLIP_2_WIDTH, hidden_size=CLIP_2_WIDTH))
        text_encoder_3 = _t5_encoder(len(tokenizer_3), T5_WIDTH)
        vae = _vae(scaling_factor=1.5305, shift_factor=0.0609)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=text_encoder, tokenizer=load_clip_tokenizer(), text_encoder_2=text_encoder_2,
        tokenizer_2=load_clip_tokenizer(), text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
    )
    return _finish(pipe, device, dtype)


def _flux_scheduler(guidance_embeds: bool):
    """FLUX.1-dev's scheduler config (resolution-dependent shift), or FLUX.1-schnell's (a fixed shift of 1)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
        shift=3.0 if guidance_embeds else 1.0, use_dynamic_shifting=guidance_embeds,
    )


def tiny_flux_pipeline(seed: int = 0, *, guidance_embeds: bool = True, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32):
    """A tiny ``FluxPipeline``: a ``FluxTransformer2DModel`` of 1 double-stream and 1 single-stream block.

    2 heads of 16 with rotary axes ``(4, 6, 6)``, 16 latent channels packed 2x2 into 64 input features (as
    Flux's), native size 64 px (``pipe.default_sample_size`` is 8 latents; a pipeline reloaded from a folder has
    diffusers' 128 again, so give it ``height``/``width``). ``guidance_embeds=True`` is FLUX.1-dev-like
    (embedded guidance, the resolution-dependent scheduler shift), ``False`` FLUX.1-schnell-like (no guidance
    embedding, a fixed shift of 1). A ``CLIPTextModel`` of width 32 with the real CLIP tokenizer, a T5 encoder of
    width 96 with :func:`t5_tokenizer`, a 16-channel VAE with Flux's ``scaling_factor`` 0.3611 and
    ``shift_factor`` 0.1159.
    """
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    from . import _text_encoder_config, load_clip_tokenizer

    tokenizer_2 = t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=HEAD_DIM,
            num_attention_heads=HEADS, joint_attention_dim=T5_WIDTH, pooled_projection_dim=CLIP_WIDTH,
            guidance_embeds=guidance_embeds, axes_dims_rope=(4, 6, 6),
        )
        text_encoder = CLIPTextModel(_text_encoder_config(hidden_size=CLIP_WIDTH))
        text_encoder_2 = _t5_encoder(len(tokenizer_2), T5_WIDTH)
        vae = _vae(scaling_factor=0.3611, shift_factor=0.1159)
    pipe = FluxPipeline(
        transformer=transformer, scheduler=_flux_scheduler(guidance_embeds), vae=vae, text_encoder=text_encoder,
        tokenizer=load_clip_tokenizer(), text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
    )
    pipe.default_sample_size = NATIVE_LATENT
    return _finish(pipe, device, dtype)


def save_tiny_sd3(directory: str | Path, seed: int = 0, *, dual_attention: bool = False) -> Path:
    """Save :func:`tiny_sd3_pipeline` of ``seed`` as a diffusers folder (safetensors) and return its path."""
    directory = Path(directory)
    tiny_sd3_pipeline(seed, dual_attention=dual_attention).save_pretrained(directory, safe_serialization=True)
    return directory


def save_tiny_flux(directory: str | Path, seed: int = 0, *, guidance_embeds: bool = True) -> Path:
    """Save :func:`tiny_flux_pipeline` of ``seed`` as a diffusers folder (safetensors) and return its path."""
    directory = Path(directory)
    tiny_flux_pipeline(seed, guidance_embeds=guidance_embeds).save_pretrained(directory, safe_serialization=True)
    return directory
