"""``scenecraft generate`` and ``scenecraft show``."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from ..scene import DEFAULT_LIMITS, Mask, Region, Scene, SceneError, SceneLimits
from .app import app, progress_bar, quiet_libraries
from ..correction.verdict import MAX_ROUNDS
from .errors import UserError, check_folder, check_output_path, note, printable

console = Console(stderr=True)


def build_scene(
    prompt: str | None,
    scene_file: Path | None,
    split: str | None,
    regions: list[str],
    layout: str | None,
    llm: str | None,
    width: int | None,
    height: int | None,
    default_size: int,
    limits: SceneLimits | None = None,
    masks: list | None = None,
) -> Scene:
    """The scene of a ``generate`` call: from a file, from --split/--region (or --region with --mask), or
    planned from the prompt.

    A size not given keeps the scene file's, else the masks' (with --mask), else takes ``default_size``
    (the model's native size). ``masks`` are the --mask pictures' region masks, one per region.
    """
    if scene_file is not None:
        if prompt or split or regions:
            raise SceneError("give either --scene or a prompt (with --split/--region), not both")
        scene = Scene.from_json(_read_text(scene_file, "--scene"), limits=limits)
        return scene.with_size(_given(width, scene.width), _given(height, scene.height))
    if masks:
        default_width, default_height = masks[0].width, masks[0].height
        width, height = _given(width, default_width), _given(height, default_height)
    else:
        width, height = _given(width, default_size), _given(height, default_size)
    if not prompt:
        raise SceneError("give a prompt, or --scene scene.json")
    if masks:
        if split:
            raise SceneError("give either --split or --mask: masks place the regions themselves")
        return Scene(prompt, tuple(Region(text, mask) for text, mask in zip(regions, masks, strict=True)),
                     width=width, height=height, limits=limits)
    if regions:
        split = split or ",".join("1" for _ in regions)
        return Scene.from_split(prompt, split, regions, width=width, height=height, limits=limits)
    if split:
        raise SceneError(f"--split {split!r} needs one --region prompt per region")
    from ..planning import plan_scene

    kwargs = {"layout": layout} if layout else {}
    return plan_scene(prompt, llm=llm, width=width, height=height, **kwargs)


def _given(value: int | None, default: int) -> int:
    return default if value is None else value


def check_size_flags(width: int | None, height: int | None, limits: SceneLimits | None) -> None:
    """Refuse ``--width``/``--height`` of 0, below 8 or past ``limits`` before any model is loaded."""
    limits = limits or DEFAULT_LIMITS
    for name, value in (("--width", width), ("--height", height)):
        if value is None:
            continue
        if value < 8:
            raise UserError(f"{name} must be at least 8 pixels, got {value}")
        if value > limits.max_side:
            raise UserError(f"{name} {value} is more than the {limits.max_side:,} pixels per side allowed "
                            f"(raise it with --limit max_side=...); past the model's native size, panoramas and "
                            "high-resolution scenes are the way")


def parse_limits(texts: list[str]) -> SceneLimits | None:
    """``--limit KEY=VALUE`` options as a SceneLimits (None when there are none)."""
    if not texts:
        return None
    known = {item.name for item in dataclasses.fields(SceneLimits)}
    values = {}
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise UserError(f"--limit must be KEY=VALUE with KEY one of {', '.join(sorted(known))}; got {text!r}")
        try:
            values[key] = int(raw.replace("_", "").replace(",", "").strip())
        except ValueError:
            raise UserError(f"--limit {key} must be a whole number, got {raw!r}") from None
    return SceneLimits(**values)


def _read_text(path: Path, option: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{option} {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None


@app.command()
def generate(
    prompt: Annotated[Optional[str], typer.Argument(help="The whole prompt. Without --split/--region it is planned first.")] = None,
    scene_file: Annotated[Optional[Path], typer.Option("--scene", help="A scene JSON file.", exists=True, dir_okay=False)] = None,
    split: Annotated[Optional[str], typer.Option(help='RPG split ratio, e.g. "1,1" or "1,1;2,1,1".')] = None,
    region: Annotated[Optional[list[str]], typer.Option(help="A region prompt; repeat once per region, row by row.")] = None,
    mask: Annotated[Optional[list[Path]], typer.Option(help="A region's mask picture (white inside), one per --region in the same order, instead of --split.", exists=True, dir_okay=False)] = None,
    base_ratio: Annotated[Optional[float], typer.Option(help="Weight of the whole prompt in every region, 0..1 (scene's value, default 0.3).")] = None,
    negative: Annotated[Optional[str], typer.Option(help="Negative prompt.")] = None,
    layout: Annotated[Optional[str], typer.Option(help="Planner layout when planning: split or boxes.")] = None,
    llm: Annotated[Optional[str], typer.Option(help="LLM backend for planning, e.g. openai:gpt-4o (default: offline planner).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Hub id, diffusers folder, .safetensors/.ckpt file, or 'toyworld' (the shipped model, default).")] = None,
    model_config: Annotated[Optional[str], typer.Option(help="Config folder for single-file checkpoints offline.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps (default: the model's recommendation, else the family's: SD3/Flux-dev 28, Flux-schnell 4, else the method's: 30 regional, 50 layout).")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Guidance scale (default: the model's recommendation, else the family's: SD3 7, Flux-dev 3.5 (its embedded guidance), else the method's: 7 regional, 7.5 layout).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed; drawn and recorded when omitted.")] = None,
    width: Annotated[Optional[int], typer.Option(help="Width in pixels (default: the scene's, else the model's).")] = None,
    height: Annotated[Optional[int], typer.Option(help="Height in pixels (default: the scene's, else the model's).")] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n", help="Images to generate (image i uses seed + i).")] = 1,
    method: Annotated[str, typer.Option(help="Generation method: regional (RPG), layout (LMD), layout+ (LMD+ on a GLIGEN model) or multidiffusion (any size; mask regions; per-region LoRA).")] = "regional",
    setting: Annotated[Optional[list[str]], typer.Option("--set", help="A method setting KEY=VALUE (JSON value), e.g. --set frozen_step_ratio=0.4; repeatable.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, mps... (default: the best available).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="fp16, bf16 or fp32 (default: on GPU fp16, bf16 for SD3 and Flux; fp32 on CPU).")] = None,
    offload: Annotated[bool, typer.Option("--offload", help="Keep the models on the CPU and move each to the GPU only while it runs (less GPU memory, slower; needs a GPU).")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Output PNG (default scenecraft-SEED.png).")] = None,
    limit: Annotated[Optional[list[str]], typer.Option(help="Raise a scene limit KEY=VALUE, e.g. --limit max_side=32768 (see the README's limits table); repeatable.")] = None,
    control: Annotated[Optional[Path], typer.Option(help="A control image (canny edges, depth, pose...) for --controlnet; resized to the output's size.", exists=True, dir_okay=False)] = None,
    controlnet: Annotated[Optional[str], typer.Option(help="The ControlNet that reads --control: a diffusers folder, a .safetensors file or a hub id.")] = None,
    control_scale: Annotated[Optional[float], typer.Option(help="Weight of the ControlNet's residuals (default 1.0; 0 turns it off).")] = None,
    self_correct: Annotated[int, typer.Option("--self-correct", help=f"Rounds of self-correction (SLD), 0..{MAX_ROUNDS}: verify the picture against its scene, redraw what is wrong, repeat until it passes (default 0: none).")] = 0,
    verifier: Annotated[str, typer.Option(help="With --self-correct: toy (the toy world's exact scorer; toy scenes only), owlv2:PATH, grounding-dino:PATH, detector:PATH (a folder or hub id) or llm:KIND:MODEL[@URL] (a backend that takes images).")] = "toy",
    correct_with: Annotated[Optional[str], typer.Option(help="With --self-correct: the method that renders the corrections (default layout: LMD redraws a region in its box; 'same': --method).")] = None,
    sam: Annotated[Optional[str], typer.Option(help="With a detector --verifier: a SAM folder or hub id; each object found is segmented (SAM prompted with its box) and the loop clears its pixels, not its whole box.")] = None,
) -> None:
    """Generate an image from a prompt, a split with region prompts, or a scene file."""
    from ..generation import load_pipeline
    from ..generation.backbones import backbone
    from ..generation.loading import default_model
    from ..generation.methods import generate as run_method
    from ..planning.cache import default_cache_dir

    check_output_path(out or Path("scenecraft.png"), "--out", (".png",))
    limits = parse_limits(limit or [])
    check_size_flags(width, height, limits)
    if scene_file is not None:  # a bad scene file is found before the model loads
        Scene.from_json(_read_text(scene_file, "--scene"), limits=limits)
    if llm and not (scene_file or region):
        check_folder(default_cache_dir(), "the plan cache")
    corrector = check_self_correct_flags(self_correct, verifier, correct_with, method, control, sam)
    control_picture = check_control_flags(control, controlnet, control_scale, method)
    masks = read_masks(mask or [], region or [], limits)
    quiet_libraries()
    model = model or default_model()
    config = method_config(method, model, setting or [], steps=steps, guidance=guidance, seed=seed,
                           num_images=num_images, base_ratio=base_ratio)
    with console.status(Text(printable(f"loading {model}"))):
        pipe = load_pipeline(model, device=device, dtype=dtype, single_file_config=model_config, offload=offload)
    adapter = backbone(pipe)
    native = adapter.native_size
    if adapter.is_mmdit:  # SD3's and Flux's own step counts and guidance, under what the user gave
        config = method_config(method, model, setting or [], family=adapter.flavour, steps=steps, guidance=guidance,
                               seed=seed, num_images=num_images, base_ratio=base_ratio)
    scene = build_scene(prompt, scene_file, split, region or [], layout, llm, width, height, native, limits, masks)
    if negative is not None:
        scene = Scene.from_dict(scene.to_dict() | {"negative_prompt": negative})
    control_input = None
    if control_picture is not None:
        with console.status(Text(printable(f"loading {controlnet}"))):
            control_input = control_for(pipe, scene, control_picture, controlnet, control_scale)
    if corrector is not None:
        corrected = correct_all(pipe, scene, config, method, model, corrector, self_correct, device, setting or [])
        _save_corrected(corrected, model, out, self_correct)
        console.print(f"seed {corrected[0][0].seed}")
        return
    with progress_bar(console) as progress:
        task = progress.add_task(f"{method}", total=None)
        result = run_method(pipe, scene, config, method=method, control=control_input,
                            on_step=lambda done, total: progress.update(task, completed=done, total=total))
    _save_all(with_control_settings(result, control, controlnet, control_input), model, out)
    console.print(f"seed {result.seed}")




def check_self_correct_flags(rounds: int, verifier: str, correct_with: str | None, method: str, control: Path | None,
                             sam: str | None = None):
    """Refuse, before any model loads, --self-correct out of 0..10, a verifier spec that names nothing known, a
    --correct-with or --method that cannot re-render inside a mask, --control with --self-correct, and --sam
    without a detector (or naming a folder that does not exist). Returns ``(verifier spec, correcting method, SAM
    model or None)``, or ``None`` without --self-correct."""
    if not 0 <= rounds <= MAX_ROUNDS:
        raise UserError(f"--self-correct must be a number of rounds in 0..{MAX_ROUNDS}, got {rounds}")
    if rounds == 0:
        if verifier != "toy" or correct_with is not None or sam is not None:
            given = "--verifier" if verifier != "toy" else "--correct-with" if correct_with is not None else "--sam"
            raise UserError(f"{given} is a setting of self-correction: give --self-correct R (1..{MAX_ROUNDS}) too")
        return None
    if control is not None:
        raise UserError("--self-correct does not take --control: the corrections are re-rendered without the "
                        "ControlNet; draw with --control first, then correct the picture with scenecraft edit")
    from ..correction.verifiers import DetectorVerifier, make_verifier

    checked = make_verifier(verifier)  # a spec that names nothing known fails here (nothing is loaded yet)
    if isinstance(checked, DetectorVerifier):
        checked.source()  # a detector folder that does not exist, too
    if sam is not None:
        if not isinstance(checked, DetectorVerifier):
            raise UserError(f"--sam segments a detector's boxes: give --verifier owlv2:PATH, grounding-dino:PATH or "
                            f"detector:PATH too (got --verifier {verifier})")
        if sam.startswith((".", "/", "~")) and not Path(sam).expanduser().exists():
            raise UserError(f"--sam: the SAM folder {sam!r} does not exist (download one first, e.g. "
                            "`hf download facebook/sam-vit-base --local-dir ./sam-vit-base`)")
    from ..generation.methods import METHODS, get_method

    fixer = method if correct_with == "same" else (correct_with or "layout")
    takers = ", ".join(name for name, other in METHODS.items() if other.blending)
    for option, name in (("--method", method), ("--correct-with", fixer)):
        if not get_method(name).blending:
            raise UserError(f"{option} {name} cannot re-render inside a mask, which self-correction needs; "
                            f"methods that can: {takers}")
    return verifier, fixer, sam


def correct_all(pipe, scene: Scene, config, method: str, model: str, corrector: tuple[str, str, str | None], rounds: int,
                device: str | None, settings: list[str]):
    """Draw every image with ``render_scene`` (the pixels ``generate`` draws) and run the self-correction loop on
    each, printing a line per round. Returns ``[(first result, CorrectionResult), ...]``."""
    from ..correction.loop import self_correct
    from ..correction.verifiers import make_verifier
    from ..generation.editing import render_scene
    from ..generation.result import resolve_seed

    spec, fixer, sam = corrector
    verifier = make_verifier(spec, device=device, **({} if sam is None else {"sam_model": sam}))
    seed = resolve_seed(config.seed, config.num_images)
    out = []
    for index in range(config.num_images):
        image_seed = seed + index
        fix_config = method_config(fixer, model, settings if fixer == method else [], steps=config.num_inference_steps,
                                   guidance=config.guidance_scale, seed=image_seed, num_images=1)
        with progress_bar(console) as progress:
            task = progress.add_task(method, total=None)
            first = render_scene(pipe, scene, dataclasses.replace(config, num_images=1, seed=image_seed), method=method,
                                 seed=image_seed,
                                 on_step=lambda done, total: progress.update(task, completed=done, total=total))
        label = f"image {index}: " if config.num_images > 1 else ""
        fixed = self_correct(pipe, scene, first, verifier, rounds=rounds, correct_with=fixer, config=fix_config,
                             seed=image_seed, on_round=lambda done, label=label: _say_round(label, done))
        _say(f"{label}first picture: {fixed.first.describe()}" if not fixed.rounds else
             f"{label}self-correction: {'passed' if fixed.passed else 'not passed'} after {len(fixed.rounds)} "
             f"round(s), {fixed.cost.calls} UNet calls: {fixed.verdict.describe()}")
        out.append((first, fixed, fix_config))
    return out


def _say(line: str) -> None:
    console.print(Text(printable(line)), soft_wrap=True)


def _say_round(label: str, done) -> None:
    problems = "; ".join(p.describe() for p in done.before.problems)
    redrew = f"redrew {', '.join(done.regenerate)}" if done.regenerate else "redrew nothing"
    cleared = f", cleared {len(done.clear)} stray object(s)" if done.clear else ""
    dropped = "" if done.kept else " (dropped: more problems than before)"
    _say(f"{label}round {done.index}: {problems} -> {redrew}{cleared}; {done.cost.calls} UNet calls; "
         f"now {done.after.describe()}{dropped}")


def _save_corrected(corrected, model: str, out: Path | None, rounds: int) -> None:
    """Save each corrected picture with the first picture's parameters and the rounds in its generation record."""
    from ..generation.result import GenerationResult
    from ..imagefile import image_metadata, save_png

    seed = corrected[0][0].seed
    for path, (first, fixed, fix_config) in zip(_output_paths(out, seed, len(corrected)), corrected):
        image = fixed.result.images[0]
        result = GenerationResult(images=[image], seed=first.seed, scene=fixed.scene, method=first.method,
                                  settings=first.settings, seeds=[first.seed])
        parameters, record = image_metadata(result, 0, model)
        record["self_correct"] = fixed.record(rounds) | {
            "config": {k: v for k, v in dataclasses.asdict(fix_config).items() if k != "seed"}}
        save_png(image, path, fixed.scene, parameters, record)
        typer.echo(printable(str(path)))


def check_control_flags(control: Path | None, controlnet: str | None, control_scale: float | None, method: str):
    """Refuse, before any model loads, a --control without --controlnet (or the reverse), a bad --control-scale,
    a method that takes no control, a --controlnet that does not exist and a --control that is no picture.
    Returns the control picture, loaded (``None`` without --control)."""
    if control is None and controlnet is None:
        if control_scale is not None:
            raise UserError("--control-scale needs --control and --controlnet")
        return None
    if control is None or controlnet is None:
        given, missing = ("--control", "--controlnet") if controlnet is None else ("--controlnet", "--control")
        raise UserError(f"{given} needs {missing}: give both the control image (--control) and the ControlNet that "
                        f"reads it (--controlnet), or neither")
    if control_scale is not None and not math.isfinite(control_scale):
        raise UserError(f"--control-scale must be a finite number, got {control_scale}")
    from ..generation.control import check_controlnet_source, takes_control
    from ..generation.methods import METHODS, get_method

    if not takes_control(get_method(method).run):
        takers = ", ".join(name for name, other in METHODS.items() if takes_control(other.run))
        raise UserError(f"--control: method {method} does not take a control image; methods that do: {takers}")
    check_controlnet_source(controlnet)
    return _open_picture(control, "--control")


def read_masks(paths: list[Path], regions: list[str], limits: SceneLimits | None) -> list[Mask]:
    """The --mask pictures as region masks (grey level above one half is inside), checked before any model
    loads: one per --region, readable pictures, within the scene limits' mask size, not empty."""
    if not paths:
        return []
    if len(paths) != len(regions):
        raise UserError(f"--mask needs one --region prompt per mask, in the same order: got {len(paths)} mask(s) "
                        f"and {len(regions)} region(s)")
    import numpy as np

    limits = limits or DEFAULT_LIMITS
    masks = []
    for path in paths:
        picture = _open_picture(path, "--mask")
        if picture.width * picture.height > limits.max_mask_pixels:
            raise UserError(f"--mask {path} is {picture.width}x{picture.height}, more than the "
                            f"{limits.max_mask_pixels:,} pixels a mask may have (raise it with --limit max_mask_pixels=...)")
        levels = np.asarray(picture.convert("L"), dtype=np.float64) / 255.0
        if not (levels > 0.5).any():
            raise UserError(f"--mask {path} has no white pixel: its region would cover nothing")
        masks.append(Mask.from_array(levels))
    return masks


def _open_picture(path: Path, option: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            picture.load()
            return picture.copy()
    except UnidentifiedImageError:
        raise UserError(f"{option} {path} is not a picture Pillow can read (PNG, JPEG, WebP...)") from None
    except Image.DecompressionBombError as error:
        raise UserError(f"{option} {path} is refused as a possible decompression bomb: {error}") from None


def control_for(pipe, scene: Scene, picture, controlnet: str, control_scale: float | None):
    """The ControlInput of a ``generate`` call: the ControlNet on the pipeline's device and dtype, the
    picture resized to the scene's size."""
    from ..generation.control import ControlInput, load_controlnet, prepare_control_image

    model = load_controlnet(controlnet, dtype=pipe.unet.dtype, device=pipe._execution_device)
    image = prepare_control_image(pipe, picture, scene.height, scene.width)
    control = ControlInput(model, image, 1.0 if control_scale is None else control_scale)
    control.check()
    control.check_fits(pipe.unet)
    return control


def with_control_settings(result, control: Path | None, controlnet: str | None, control_input):
    """``result`` with the control image, ControlNet and scale in its settings (for the PNG), if there was one."""
    if control_input is None:
        return result
    return dataclasses.replace(result, settings=result.settings | {
        "control": str(control), "controlnet": controlnet, "control_scale": control_input.conditioning_scale})


def method_config(method: str, model: str, settings: list[str], family: str | None = None, **flags):
    """The method's config: its defaults, then the family's (``family``: SD3's and Flux's step counts and
    guidance), then the model's recommendations, then ``--set``, then the flags."""
    from ..generation.backbones import family_settings
    from ..generation.loading import method_settings, recommended_settings
    from ..generation.methods import get_method, make_config, parse_setting

    get_method(method)
    values = family_settings(family) | dict(recommended_settings(model)) | method_settings(model, method)
    values |= dict(parse_setting(text) for text in settings)
    names = {"steps": "num_inference_steps", "guidance": "guidance_scale"}
    given = {names.get(key, key): value for key, value in flags.items() if value is not None}
    if "base_ratio" in given and "base_ratio" not in {field.name for field in dataclasses.fields(get_method(method).config)}:
        raise ValueError(f"--base-ratio is a setting of methods regional and multidiffusion, not {method}")
    try:
        config = make_config(method, values | given)
        config.check()
    except TypeError as error:  # a --set value of the wrong JSON type, e.g. max_iter=5 for a list
        raise ValueError(f"a setting of method {method} has the wrong type: {error}") from None
    return config


def _save_all(result, model: str, out: Path | None) -> None:
    from ..imagefile import image_metadata, save_png

    for index, path in enumerate(_output_paths(out, result.seed, len(result.images))):
        parameters, record = image_metadata(result, index, model)
        save_png(result.images[index], path, result.scene, parameters, record)
        typer.echo(printable(str(path)))


def _output_paths(out: Path | None, seed: int, count: int) -> list[Path]:
    base = out or Path(f"scenecraft-{seed}.png")
    if count == 1:
        return [base]
    return [base.with_name(f"{base.stem}-{i}{base.suffix or '.png'}") for i in range(count)]


@app.command()
def show(image: Annotated[Path, typer.Argument(help="A PNG written by scenecraft.", exists=True, dir_okay=False)]) -> None:
    """Print the scene JSON and the generation parameters stored in a PNG.

    Text from the file is printed with control characters and terminal escape sequences escaped.
    """
    from ..imagefile import MAX_TEXT_BYTES, PARAMETERS_KEY, read_metadata

    metadata = read_metadata(image)
    if metadata.scene is None and metadata.parameters is None:
        raise UserError(f"{image} carries no scenecraft metadata")
    if metadata.parameters is not None:
        typer.echo(printable(metadata.parameters))
    if PARAMETERS_KEY in metadata.cut:
        note(f"the parameters text of {image} is longer than {MAX_TEXT_BYTES:,} bytes; it was cut there")
    if metadata.scene is not None:
        typer.echo(printable(metadata.scene.to_json(), json=True))
    if metadata.generation is not None:
        typer.echo(json.dumps(metadata.generation, indent=2, sort_keys=True))
