"""Train GLIGEN grounding (gated self-attention + position net) on top of the shipped toy-world model.

The toy-world UNet is rebuilt with ``attention_type="gated"`` (diffusers adds a ``position_net`` and
one ``GatedSelfAttentionDense`` *fuser* per transformer block, gates at 0) and its weights are loaded
into it; only the new GLIGEN parameters are trained, everything else (UNet backbone, text encoder,
VAE) stays frozen. Data: freshly rendered toy scenes with 1-4 objects and the renderer's exact boxes
(fractions ``[x0, y0, x1, y1]``), one grounding token per object made from the object's phrase
("a red circle") -- its pooled toy text-encoder output, computed once per phrase -- and its box.
The diffusion loss is the toy trainer's: v-prediction on the same noise schedule, min-SNR-5 weights,
whole-image captions in its grammar with 10% caption dropout; grounding dropout (all masks 0) for
10% of samples, as GLIGEN trains its null grounding for classifier-free guidance.

A pool of scenes is rendered and VAE-encoded once (posterior mean and std) and batches are drawn
from it. Resumable: the trainable parameters, optimiser and step are checkpointed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .captions import caption, phrase
from .render import COLORS, IMAGE_SIZE, SHAPES, random_scene
from .train import scheduler_config, to_tensor

MAX_OBJECTS = 30  # grounding slots, as scenecraft.generation.gligen (and diffusers' GLIGEN pipeline) pad to


@dataclass
class GligenTrainConfig:
    out_dir: str = "runs/toyworld_gligen"
    base_model: str = "toyworld"
    seed: int = 0
    pool: int = 8192
    object_counts: tuple[int, ...] = (1, 2, 3, 4)
    count_weights: tuple[float, ...] = (0.15, 0.35, 0.25, 0.25)
    steps: int = 2000
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 100
    final_lr_fraction: float = 0.1
    caption_dropout: float = 0.1
    grounding_dropout: float = 0.1
    min_snr_gamma: float = 5.0  # 0: unweighted v-loss (min-SNR all but ignores the high-noise steps where layout forms)
    grad_clip: float = 1.0
    log_every: int = 25
    ckpt_every: int = 100
    time_limit_min: float = 0.0  # > 0: stop (and export) after this many minutes of training


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def gated_unet(unet):
    """A ``attention_type="gated"`` copy of ``unet``: same config and weights plus new GLIGEN layers.

    Returns ``(gated, missing_keys)``; ``missing_keys`` are the new fuser and position-net parameters.
    """
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    gated = UNet2DConditionModel.from_config({**config, "attention_type": "gated"})
    missing, unexpected = gated.load_state_dict(unet.state_dict(), strict=False)
    if unexpected:
        raise RuntimeError(f"unexpected keys loading the toy UNet into the gated UNet: {unexpected}")
    bad = [k for k in missing if not is_gligen_param(k)]
    if bad:
        raise RuntimeError(f"missing non-GLIGEN keys: {bad}")
    return gated, missing


def is_gligen_param(name: str) -> bool:
    return ".fuser." in name or name.startswith("position_net.")


@torch.no_grad()
def phrase_table(pipe) -> dict[str, torch.Tensor]:
    """Pooled text-encoder output of every toy phrase (6 colours x 3 shapes), as gligen_conditioning makes it."""
    from ..generation.gligen import _phrase_embeddings

    phrases = [phrase(c, s) for c in COLORS for s in SHAPES]
    return {p: _phrase_embeddings(pipe, [p], torch.device("cpu"))[0].float() for p in phrases}


@torch.no_grad()
def build_pool(cfg: GligenTrainConfig, vae, path: Path) -> dict:
    if path.exists():
        return torch.load(path, weights_only=False)
    t0 = time.time()
    rng = np.random.default_rng([cfg.seed, 11])
    counts = rng.choice(cfg.object_counts, size=cfg.pool, p=np.asarray(cfg.count_weights) / sum(cfg.count_weights))
    means, stds, specs, boxes = [], [], [], []
    chunk = 256
    for start in range(0, cfg.pool, chunk):
        scenes = [random_scene(rng, n_objects=int(n)) for n in counts[start:start + chunk]]
        post = vae.encode(to_tensor(np.stack([s.image for s in scenes]))).latent_dist
        means.append(post.mean.half()); stds.append(post.std.half())
        specs += [[(o.color, o.shape) for o in s.objects] for s in scenes]
        boxes += [[tuple(v / IMAGE_SIZE for v in o.bbox) for o in s.objects] for s in scenes]
    data = {"mean": torch.cat(means), "std": torch.cat(stds), "specs": specs, "boxes": boxes}
    torch.save(data, path)
    log(f"pool: {tuple(data['mean'].shape)} encoded in {time.time() - t0:.0f}s; "
        f"object counts {np.bincount(counts).tolist()}")
    return data


def grounding_batch(specs, boxes, table: dict, drop: np.ndarray, width: int):
    """``{"boxes", "positive_embeddings", "masks"}`` for a batch; dropped samples keep nothing (masks 0)."""
    b = len(specs)
    box_t = torch.zeros(b, MAX_OBJECTS, 4)
    emb_t = torch.zeros(b, MAX_OBJECTS, width)
    mask_t = torch.zeros(b, MAX_OBJECTS)
    for j, (sp, bx) in enumerate(zip(specs, boxes)):
        if drop[j]:
            continue
        for k, ((c, s), box) in enumerate(zip(sp, bx)):
            box_t[j, k] = torch.tensor(box)
            emb_t[j, k] = table[phrase(c, s)]
            mask_t[j, k] = 1
    return {"boxes": box_t, "positive_embeddings": emb_t, "masks": mask_t}


def _lr_factor(cfg: GligenTrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / max(cfg.warmup, 1))
    prog = min(1.0, step / max(cfg.steps, 1))
    return warm * (cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * prog)))


def train(cfg: GligenTrainConfig) -> Path:
    from diffusers import DDPMScheduler

    from ..generation import load_pipeline

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    pipe = load_pipeline(cfg.base_model, device="cpu")
    for m in (pipe.vae, pipe.text_encoder, pipe.unet):
        m.requires_grad_(False).eval()
    unet, missing = gated_unet(pipe.unet)
    log(f"gated UNet: {len(missing)} missing keys (new GLIGEN layers), e.g. {missing[:3]} ... {missing[-2:]}")
    (out / "missing_keys.json").write_text(json.dumps(missing, indent=1))
    names = [n for n, _ in unet.named_parameters()]
    params = []
    for n, p in unet.named_parameters():
        p.requires_grad_(is_gligen_param(n))
        if p.requires_grad:
            params.append(p)
    if sorted(n for n in names if is_gligen_param(n)) != sorted(missing):
        raise RuntimeError("trainable parameters differ from the missing keys")
    log(f"trainable {sum(p.numel() for p in params):,} of {sum(p.numel() for p in unet.parameters()):,} parameters")
    table = phrase_table(pipe)
    width = unet.position_net.positive_len
    data = build_pool(cfg, pipe.vae, out / "pool.pt")
    specs, boxes = data["specs"], data["boxes"]
    tok, text = pipe.tokenizer, pipe.text_encoder
    L = tok.model_max_length

    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = DDPMScheduler(**scheduler_config())
    ac = sched.alphas_cumprod
    snr = ac / (1 - ac)
    weight = torch.clamp(snr, max=cfg.min_snr_gamma) / (snr + 1) if cfg.min_snr_gamma > 0 else torch.ones_like(snr)
    ck = out / "ckpt.pt"
    start, elapsed0, history = 0, 0.0, []
    if ck.exists():
        st = torch.load(ck, weights_only=False)
        unet.load_state_dict(st["gligen"], strict=False)
        opt.load_state_dict(st["opt"]); start, elapsed0, history = st["step"], st["elapsed"], st["history"]
        log(f"resumed at step {start}")
    cap_cache: dict[str, torch.Tensor] = {}

    def encode(caps: list[str]) -> torch.Tensor:
        todo = [c for c in dict.fromkeys(caps) if c not in cap_cache]
        if todo:
            with torch.no_grad():
                ids = tok(todo, padding="max_length", max_length=L, truncation=True, return_tensors="pt").input_ids
                for c, e in zip(todo, text(ids)[0]):
                    cap_cache[c] = e
        return torch.stack([cap_cache[c] for c in caps])

    def save(step: int, elapsed: float) -> None:
        tmp = out / "ckpt.pt.tmp"
        torch.save({"gligen": {n: p.detach().clone() for n, p in unet.named_parameters() if p.requires_grad},
                    "opt": opt.state_dict(), "step": step, "elapsed": elapsed, "history": history,
                    "config": asdict(cfg)}, tmp)
        os.replace(tmp, ck)

    unet.train()
    t0, run, seen, step = time.time(), None, 0, start
    for step in range(start, cfg.steps):
        rng = np.random.default_rng([cfg.seed, 12, step])
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        f = _lr_factor(cfg, step)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * f
        pick = rng.choice(len(specs), cfg.batch)
        caps = ["" if rng.random() < cfg.caption_dropout else caption(specs[i], rng) for i in pick]
        drop = rng.random(cfg.batch) < cfg.grounding_dropout
        gl = grounding_batch([specs[i] for i in pick], [boxes[i] for i in pick], table, drop, width)
        pt = torch.from_numpy(pick)
        lat = data["mean"][pt].float() + data["std"][pt].float() * torch.randn(data["mean"][pt].shape, generator=gen)
        noise = torch.randn(lat.shape, generator=gen)
        t = torch.randint(0, 1000, (cfg.batch,), generator=gen)
        noisy = sched.add_noise(lat, noise, t)
        target = sched.get_velocity(lat, noise, t)
        pred = unet(noisy, t, encode(caps), cross_attention_kwargs={"gligen": gl}).sample
        per = ((pred - target) ** 2).mean((1, 2, 3))
        loss = (per * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        run = loss.item() if run is None else 0.98 * run + 0.02 * loss.item()
        seen += 1
        done = step + 1
        el = elapsed0 + time.time() - t0
        if done % cfg.log_every == 0:
            gates = [torch.tanh(m.alpha_attn).item() for m in unet.modules() if hasattr(m, "alpha_attn")]
            history.append({"step": done, "loss": round(run, 5), "min": round(el / 60, 2),
                            "gate_attn_mean": round(float(np.mean(gates)), 4)})
            log(f"step {done}/{cfg.steps} loss {run:.4f} lr {f * cfg.lr:.2e} {(time.time() - t0) / seen:.2f}s/step "
                f"elapsed {el / 60:.1f}min tanh(alpha_attn) mean {np.mean(gates):.3f}")
        stop = cfg.time_limit_min > 0 and el > cfg.time_limit_min * 60
        if done % cfg.ckpt_every == 0 or done == cfg.steps or stop:
            save(done, el)
        if stop:
            log(f"time limit reached at step {done}")
            break
    log("training done; exporting")
    unet.eval()
    export(pipe, unet, out / "pipeline")
    return out


def export(pipe, unet, path: Path) -> None:
    """Save a ``StableDiffusionGLIGENPipeline``-named folder (fp32) with the gated UNet."""
    from diffusers import StableDiffusionPipeline

    gl = StableDiffusionPipeline(**{**pipe.components, "unet": unet}, requires_safety_checker=False)
    if path.exists():
        shutil.rmtree(path)
    gl.save_pretrained(path, safe_serialization=True)
    name_as_gligen(path)


def name_as_gligen(path: Path) -> None:
    index = path / "model_index.json"
    config = json.loads(index.read_text(encoding="utf-8"))
    config["_class_name"] = "StableDiffusionGLIGENPipeline"
    index.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def release(src: Path, dst: Path, settings: Path | None) -> None:
    """fp16 copy of a trained folder at ``dst`` (named as GLIGEN) plus the model's ``scenecraft.json``."""
    from ..generation import load_pipeline

    pipe = load_pipeline(str(src), device="cpu").to(torch.float16)
    if dst.exists():
        shutil.rmtree(dst)
    pipe.save_pretrained(dst, safe_serialization=True)
    name_as_gligen(dst)
    if settings is not None and settings.is_file():
        stored = json.loads(settings.read_text(encoding="utf-8"))
        methods = stored.setdefault("methods", {})
        if "layout" in methods and "layout+" not in methods:
            # layout+ (LMD+) is LMD on this UNet: the same attention layers and toy-world prompts suit it
            methods["layout+"] = dict(methods["layout"])
        (dst / "scenecraft.json").write_text(json.dumps(stored, indent=2) + "\n", encoding="utf-8")
