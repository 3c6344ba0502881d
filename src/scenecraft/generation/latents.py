"""Latent-space helpers shared by the generation methods."""

from __future__ import annotations

__all__ = ["latent_size", "token_grid"]


def latent_size(height: int, width: int, vae_scale_factor: int) -> tuple[int, int]:
    """Latent ``(h, w)`` of an image; the size must be a multiple of the VAE factor and of 8."""
    step = max(vae_scale_factor, 8)
    for name, value in (("height", height), ("width", width)):
        if value % step:
            lower, upper = value - value % step, value - value % step + step
            raise ValueError(
                f"{name} {value} is not a multiple of {step} (this pipeline's VAE factor and diffusers' "
                f"requirement); use {lower or upper} or {upper}"
            )
    return height // vae_scale_factor, width // vae_scale_factor


def token_grid(latent_height: int, latent_width: int, num_tokens: int) -> tuple[int, int]:
    """The ``(h, w)`` grid of an attention layer that sees ``num_tokens`` image tokens.

    A UNet downsampler (3x3 convolution, stride 2, padding 1) maps ``n`` to ``ceil(n / 2)``, so
    the layer's grid is the latent grid halved (rounding up) until it holds ``num_tokens`` tokens.
    """
    height, width = latent_height, latent_width
    while height * width > num_tokens:
        height, width = (height + 1) // 2, (width + 1) // 2
    if height * width != num_tokens:
        raise ValueError(
            f"an attention layer sees {num_tokens} image tokens, which is no downsampling of the "
            f"{latent_height}x{latent_width} latent grid"
        )
    return height, width
