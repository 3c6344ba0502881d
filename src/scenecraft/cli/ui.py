"""``scenecraft ui``: the web UI (gradio) on one shared pipeline."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from .app import app, quiet_libraries
from .errors import UserError, check_folder, note, printable

console = Console(stderr=True)


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 serves every network interface.")] = "127.0.0.1",
    port: Annotated[Optional[int], typer.Option(help="Port (default: the first free one from 7860).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Hub id, diffusers folder, .safetensors/.ckpt file, or 'toyworld' (the shipped model, default).")] = None,
    model_config: Annotated[Optional[str], typer.Option(help="Config folder for single-file checkpoints offline.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, mps... (default: the best available).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="fp16, bf16 or fp32 (default: on GPU fp16, bf16 for SD3 and Flux; fp32 on CPU).")] = None,
    llm: Annotated[Optional[str], typer.Option(help="LLM backend for planning, e.g. openai:gpt-4o (default: offline planner).")] = None,
    share: Annotated[bool, typer.Option("--share", help="Also publish the page through a gradio.live tunnel (anyone with the link can use it).")] = False,
    max_side: Annotated[Optional[int], typer.Option(help="Largest width or height a request may ask (default: twice the model's native size).")] = None,
    max_steps: Annotated[int, typer.Option(help="Most denoising steps a request may ask.")] = 100,
    max_regions: Annotated[int, typer.Option(help="Most regions in a scene.")] = 16,
    max_prompt_chars: Annotated[int, typer.Option(help="Longest prompt (and region prompt), in characters.")] = 1000,
    out_dir: Annotated[Optional[Path], typer.Option(help="Folder for the generated PNGs (default: a new temporary folder).")] = None,
) -> None:
    """Serve the web UI: plan a prompt, edit its regions, generate, download PNGs that keep their scene."""
    from ..generation import load_pipeline
    from ..generation.backbones import backbone
    from ..generation.loading import default_model
    from ..planning.cache import default_cache_dir
    from ..ui import UILimits, build_app, launch_app, require_gradio

    require_gradio()
    if port is not None and not 1 <= port <= 65535:
        raise UserError(f"--port must be 1 to 65535, got {port}")
    if out_dir is not None:
        check_folder(out_dir, "--out-dir")
    if llm:
        check_folder(default_cache_dir(), "the plan cache")
    limits = UILimits(max_steps=max_steps, max_regions=max_regions, max_prompt_chars=max_prompt_chars,
                      **({"max_side": max_side} if max_side is not None else {}))  # checked before the model loads
    quiet_libraries()
    model = model or default_model()
    with console.status(Text(printable(f"loading {model}"))):
        pipe = load_pipeline(model, device=device, dtype=dtype, single_file_config=model_config)
    if max_side is None:
        limits = UILimits.for_native_size(backbone(pipe).native_size, max_steps=max_steps, max_regions=max_regions,
                                          max_prompt_chars=max_prompt_chars)
    if not _loopback(host):
        note(f"--host {host}: anyone who can reach this machine can use the UI and its {model} pipeline")
    demo = build_app(pipe, model=model, limits=limits, llm=llm, out_dir=out_dir)
    address = launch_app(demo, host=host, port=port, share=share)
    console.print(Text(printable(f"scenecraft ui on {address} (PNGs go to {demo.scenecraft.out_dir}); "
                                 "Ctrl-C stops it")))
    demo.block_thread()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
