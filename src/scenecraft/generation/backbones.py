"""Backbone adapters: what differs between SD 1.x/2.x, SDXL, SD3 and Flux pipelines, in one place.

Every method asks the adapter instead of assuming a UNet:

- ``family``: ``"sd"``, ``"sd-gligen"``, ``"sdxl"``, ``"sd3"`` or ``"flux"`` (detected from the pipeline's
  parts, not from which text encoders it has: SD3 and Flux also have a ``text_encoder_2``);
- ``denoiser``: the network that predicts the noise (``pipe.unet`` or ``pipe.transformer``);
- ``native_size``: the side in pixels the model was trained at;
- ``pixel_multiple``: what image sides must be a multiple of (the VAE factor, times the patch size of
  a transformer);
- ``token_grid(latent_h, latent_w, num_tokens)``: the image-token grid an attention layer sees (a UNet
  halves it per level; a transformer sees one patch grid in every layer);
- ``is_mmdit``: text and image tokens share one joint attention (SD3, Flux), so regions are an
  attention mask (:mod:`~scenecraft.generation.joint_attention`), not a cross-attention processor.
"""

from __future__ import annotations

from dataclasses import dataclass

from .latents import token_grid as unet_token_grid

__all__ = ["Backbone", "FAMILIES", "UNET_FAMILIES", "MMDIT_FAMILIES", "backbone", "pipeline_family", "check_pipeline",
           "family_settings"]

UNET_FAMILIES = ("sd", "sd-gligen", "sdxl")
MMDIT_FAMILIES = ("sd3", "flux")
FAMILIES = UNET_FAMILIES + MMDIT_FAMILIES
_NAMES = {"sd": "SD 1.x/2.x", "sd-gligen": "SD 1.x with GLIGEN", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux"}


def _transformer_family(transformer) -> str | None:
    name = type(transformer).__name__
    if name == "SD3Transformer2DModel":
        return "sd3"
    if name == "FluxTransformer2DModel":
        return "flux"
    return None


def pipeline_family(pipe) -> str:
    """The family of a diffusers pipeline: ``"flux"``, ``"sd3"``, ``"sdxl"``, ``"sd-gligen"`` (an SD 1.x UNet
    with GLIGEN's gated attention) or ``"sd"`` (1.x/2.x). Anything else is a TypeError naming what runs."""
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None:
        family = _transformer_family(transformer)
        if family is None:
            raise TypeError(f"pipe's transformer is a {type(transformer).__name__}; scenecraft runs the SD3 and Flux "
                            f"transformers (SD3Transformer2DModel, FluxTransformer2DModel) and SD/SDXL UNets")
        return family
    if not hasattr(pipe, "unet"):
        raise TypeError(f"pipe must be a diffusers Stable Diffusion (1.x/2.x/XL/3) or Flux pipeline; a "
                        f"{type(pipe).__name__} has neither a unet nor a transformer")
    if hasattr(pipe, "text_encoder_2"):
        return "sdxl"
    return "sd-gligen" if getattr(pipe.unet, "position_net", None) is not None else "sd"


_PARTS = {
    "unet": ("unet", "vae", "tokenizer", "scheduler", "encode_prompt", "prepare_latents", "image_processor"),
    "mmdit": ("transformer", "vae", "tokenizer", "tokenizer_2", "text_encoder_2", "scheduler", "encode_prompt",
              "prepare_latents", "image_processor"),
}


def check_pipeline(pipe, families: tuple[str, ...] = UNET_FAMILIES) -> str:
    """Reject anything that is not a diffusers pipeline of one of ``families`` (default: the UNet ones),
    naming the missing part or the family; return the family."""
    family = pipeline_family(pipe)
    for part in _PARTS["mmdit" if family in MMDIT_FAMILIES else "unet"]:
        if not hasattr(pipe, part):
            raise TypeError(f"pipe must be a diffusers {_NAMES[family]} pipeline; it has no {part!r}")
    if family not in families:
        names = ", ".join(dict.fromkeys(_NAMES[f] for f in families))
        raise ValueError(f"this runs on {names} pipelines; this one is {_NAMES[family]} ({family})")
    return family


@dataclass(frozen=True)
class Backbone:
    """The adapter of one pipeline (see the module docstring); build it with :func:`backbone`."""

    pipe: object
    family: str

    @property
    def is_mmdit(self) -> bool:
        return self.family in MMDIT_FAMILIES

    @property
    def name(self) -> str:
        return _NAMES[self.family]

    @property
    def flavour(self) -> str:
        """The family, with Flux's guidance-distilled dev (``"flux"``) told from the step-distilled schnell
        (``"flux-schnell"``: no guidance embedding); the key of :func:`family_settings`."""
        if self.family == "flux" and not self.pipe.transformer.config.guidance_embeds:
            return "flux-schnell"
        return self.family

    @property
    def denoiser(self):
        return self.pipe.transformer if self.is_mmdit else self.pipe.unet

    @property
    def patch_size(self) -> int:
        """Latent pixels per image token side: 1 for a UNet, the transformer's patch (Flux packs 2x2)."""
        if self.family == "flux":
            return 2
        if self.family == "sd3":
            return int(self.pipe.transformer.config.patch_size)
        return 1

    @property
    def pixel_multiple(self) -> int:
        """Image sides must be a multiple of this: the VAE factor times the patch size (at least 8)."""
        return max(self.pipe.vae_scale_factor * self.patch_size, 8)

    @property
    def native_size(self) -> int:
        """The side in pixels the backbone was trained at (512 for SD 1.5, 1024 for SDXL, SD3 and Flux)."""
        if self.family == "flux":
            return int(getattr(self.pipe, "default_sample_size", 128)) * self.pipe.vae_scale_factor
        return int(self.denoiser.config.sample_size) * self.pipe.vae_scale_factor

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent ``(h, w)`` of an image; a side that is no multiple of :attr:`pixel_multiple` is a ValueError
        that names the nearest good sizes."""
        step = self.pixel_multiple
        for name, value in (("height", height), ("width", width)):
            if value % step:
                lower, upper = value - value % step, value - value % step + step
                raise ValueError(f"{name} {value} is not a multiple of {step} (what {self.name} takes: its VAE "
                                 f"factor{' times its patch size' if self.patch_size > 1 else ''}); use "
                                 f"{lower or upper} or {upper}")
        factor = self.pipe.vae_scale_factor
        return height // factor, width // factor

    def token_grid(self, latent_height: int, latent_width: int, num_tokens: int) -> tuple[int, int]:
        """The ``(h, w)`` image-token grid of an attention layer that sees ``num_tokens`` image tokens."""
        if not self.is_mmdit:
            return unet_token_grid(latent_height, latent_width, num_tokens)
        grid = (latent_height // self.patch_size, latent_width // self.patch_size)
        if grid[0] * grid[1] != num_tokens:
            raise ValueError(f"a {self.name} layer sees {num_tokens} image tokens, not the {grid[0]}x{grid[1]} patch "
                             f"grid of the {latent_height}x{latent_width} latent")
        return grid


_FAMILY_SETTINGS = {
    "sd3": {"num_inference_steps": 28, "guidance_scale": 7.0},
    "flux": {"num_inference_steps": 28, "guidance_scale": 3.5},
    "flux-schnell": {"num_inference_steps": 4, "guidance_scale": 0.0},
}


def family_settings(flavour: str | None) -> dict:
    """The step count and guidance the diffusers pipeline of a family defaults to, where they differ from
    scenecraft's (30 steps, guidance 7): SD3 28 and 7.0, Flux-dev 28 and 3.5 (its distilled guidance), Flux-schnell
    4 steps (it takes no guidance). ``{}`` for the UNet families and ``None``."""
    return dict(_FAMILY_SETTINGS.get(flavour, {}))


def backbone(pipe) -> Backbone:
    """The adapter of ``pipe`` (a TypeError when it is no pipeline scenecraft runs)."""
    return Backbone(pipe, pipeline_family(pipe))
