"""``scenecraft panorama``: MultiDiffusion past the backbone's native size."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from .app import app, progress_bar, quiet_libraries
from .errors import check_output_path, printable
from .generate import (
    _save_all, check_control_flags, check_size_flags, console, control_for, method_config, parse_limits,
    with_control_settings,
)

METHOD = "multidiffusion"


@app.command()
def panorama(
    prompt: Annotated[str, typer.Argument(help="What the panorama shows.")],
    width: Annotated[int, typer.Option(help="Width in pixels (a multiple of 8).")] = 2048,
    height: Annotated[Optional[int], typer.Option(help="Height in pixels (default: the model's native size).")] = None,
    negative: Annotated[str, typer.Option(help="Negative prompt.")] = "",
    window: Annotated[Optional[int], typer.Option(help="Window side in pixels (default: the model's native size).")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Pixels between windows (default: 8 latent pixels, 64 px on SD); larger is faster, with more seams.")] = None,
    view_batch_size: Annotated[Optional[int], typer.Option(help="Windows per UNet call (default 1); more is faster on a GPU and takes more memory.")] = None,
    circular: Annotated[Optional[bool], typer.Option("--circular/--no-circular", help="A 360-degree panorama whose left and right edges meet.")] = None,
    fast: Annotated[Optional[bool], typer.Option("--fast/--no-fast", help="SpotDiffusion's shifted non-overlapping windows: several times fewer UNet calls.")] = None,
    tiled_decode: Annotated[Optional[bool], typer.Option("--tiled-decode/--no-tiled-decode", help="Decode in tiles, so memory does not grow with the width.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Hub id, diffusers folder, .safetensors/.ckpt file, or 'toyworld' (the shipped model, default).")] = None,
    model_config: Annotated[Optional[str], typer.Option(help="Config folder for single-file checkpoints offline.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps (default: the model's recommendation, else 30).")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Classifier-free guidance scale (default: the model's recommendation, else 7).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed; drawn and recorded when omitted.")] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n", help="Panoramas to generate (image i uses seed + i).")] = 1,
    setting: Annotated[Optional[list[str]], typer.Option("--set", help="A multidiffusion setting KEY=VALUE (JSON value); repeatable.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, mps... (default: the best available).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="fp16, bf16 or fp32 (default: fp16 on GPU, fp32 on CPU).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output PNG (default scenecraft-SEED.png).")] = None,
    limit: Annotated[Optional[list[str]], typer.Option(help="Raise a scene limit KEY=VALUE, e.g. --limit max_side=32768; repeatable.")] = None,
    control: Annotated[Optional[Path], typer.Option(help="A control image (canny, depth, pose...) for --controlnet; resized to the panorama's size.", exists=True, dir_okay=False)] = None,
    controlnet: Annotated[Optional[str], typer.Option(help="The ControlNet that reads --control: a diffusers folder, a .safetensors file or a hub id.")] = None,
    control_scale: Annotated[Optional[float], typer.Option(help="Weight of the ControlNet's residuals (default 1.0).")] = None,
) -> None:
    """Generate a panorama wider (or taller) than the model's native size with MultiDiffusion."""
    from ..generation import load_pipeline
    from ..generation.backbones import backbone
    from ..generation.loading import default_model
    from ..generation.methods import generate as run_method
    from ..scene import Scene

    check_output_path(out or Path("scenecraft.png"), "--out", (".png",))
    limits = parse_limits(limit or [])
    check_size_flags(width, height, limits)
    control_picture = check_control_flags(control, controlnet, control_scale, METHOD)
    quiet_libraries()
    model = model or default_model()
    config = method_config(METHOD, model, setting or [], steps=steps, guidance=guidance, seed=seed,
                           num_images=num_images, window=window, stride=stride, view_batch_size=view_batch_size,
                           circular=circular, fast=fast, tiled_decode=tiled_decode)
    with console.status(Text(printable(f"loading {model}"))):
        pipe = load_pipeline(model, device=device, dtype=dtype, single_file_config=model_config)
    native = backbone(pipe).native_size
    scene = Scene(prompt, width=width, height=native if height is None else height, negative_prompt=negative,
                  limits=limits)
    control_input = None
    if control_picture is not None:
        with console.status(Text(printable(f"loading {controlnet}"))):
            control_input = control_for(pipe, scene, control_picture, controlnet, control_scale)
    with progress_bar(console) as progress:
        task = progress.add_task("panorama", total=None)
        result = run_method(pipe, scene, config, method=METHOD, control=control_input,
                            on_step=lambda done, total: progress.update(task, completed=done, total=total))
    _save_all(with_control_settings(result, control, controlnet, control_input), model, out)
    console.print(f"seed {result.seed}")
