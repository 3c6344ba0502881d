"""Train the toy-world Stable-Diffusion-format model on CPU (resumable).

Three phases, each skipped when its output exists in ``out_dir`` (so re-running the same command
resumes):

1. **VAE** (``vae/``): ``AutoencoderKL`` 64x64x3 -> 16x16x4 (4x down), trained on 32x32 crops of
   rendered scenes (fully convolutional, 4x cheaper per sample). Afterwards the per-channel latent
   mean and std are *folded into* ``quant_conv``/``post_quant_conv`` so that latents are zero-mean,
   unit-variance with ``scaling_factor = 1`` (a non-zero latent mean leaves signal at the last
   timestep and hurts colour at high noise).
2. **Latents** (``latents.pt``): ``n_latents`` seeded scenes encoded once (posterior mean and std),
   so UNet steps never run the VAE.
3. **UNet + text encoder** (``ckpt.pt``, checkpointed every ``ckpt_every`` steps): v-prediction,
   min-SNR-5 weighting, caption dropout for classifier-free guidance, a single-object curriculum,
   EMA weights for sampling. The ``CLIPTextModel`` is trained through a compact embedding table
   of the ~15 token ids the captions use (the real CLIP tokenizer), expanded to the full 49,408-row
   table at export (unknown words get the embedding of "a"). The pooled text output is not used:
   conditioning is per-token cross-attention only, so a pixel draws what *its* cross-attention
   text says (what regional prompting needs).

Every ``eval_every`` steps the EMA weights are exported as a ``StableDiffusionPipeline`` folder
(``pipeline_latest/``, and ``pipeline_best/`` by accuracy) and scored with :func:`evaluate_pipeline`.
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
import torch.nn.functional as F

from .captions import caption, phrase, vocabulary
from .render import COLORS, IMAGE_SIZE, SHAPES, random_scene
from .score import matches_exactly, score_image

TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "clip_tokenizer"
BOS, EOS = 49406, 49407
FULL_VOCAB = 49408


@dataclass
class TrainConfig:
    """Every knob of the toy-world training run (defaults = the documented full run)."""

    out_dir: str = "runs/toyworld"
    seed: int = 0
    # VAE
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_norm_groups: int = 8
    vae_steps: int = 2000
    vae_batch: int = 32
    vae_lr: float = 3e-4
    vae_crop: int = 32
    vae_kl_weight: float = 1e-6
    # latent data set
    n_latents: int = 32768
    # UNet / text encoder
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_norm_groups: int = 16
    unet_heads: int = 4
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    max_length: int = 16
    unet_steps: int = 8000
    batch: int = 32
    lr: float = 5e-4
    text_lr: float = 1e-3
    warmup: int = 300
    final_lr_fraction: float = 0.1
    caption_dropout: float = 0.1
    curriculum_steps: int = 1500  # first steps: 80% single-object scenes
    p_single: float = 0.5  # afterwards
    regional_start: int = 3000  # from this step on, regional-caption samples (see RegionalCrossAttention)
    p_regional: float = 0.4  # fraction of two-object samples trained with per-region captions
    regional_base_start: int = 4250  # from here on, regional samples also read the whole caption (RPG mix)
    base_ratio_range: tuple[float, float] = (0.1, 0.6)
    regional_taper_start: int = 5250  # from here on p_regional_late: regional samples made single-object
    p_regional_late: float = 0.1      # prompts draw duplicates (each region "wants" its object)
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    # bookkeeping
    log_every: int = 50
    ckpt_every: int = 250
    eval_every: int = 1000
    eval_single: int = 36
    eval_double: int = 24
    eval_steps: int = 20
    eval_guidance: float = 4.0
    eval_regional: int = 24  # left/right prompts for the plain-vs-regional sanity check (0: off)

    @classmethod
    def smoke(cls, out_dir: str) -> "TrainConfig":
        """Tiny model and step counts: the same code path in seconds (for tests)."""
        return cls(out_dir=out_dir, vae_channels=(8, 8, 8), vae_norm_groups=4, vae_steps=2, vae_batch=2,
                   n_latents=8, unet_channels=(8, 8, 8), unet_norm_groups=4, unet_heads=2, text_hidden=16,
                   text_layers=1, unet_steps=3, batch=2, warmup=1, curriculum_steps=1, log_every=1,
                   ckpt_every=2, eval_every=3, eval_single=2, eval_double=1, eval_steps=2, regional_start=1, regional_base_start=2, regional_taper_start=3,
                   eval_regional=2)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- models

def make_vae(cfg: TrainConfig):
    from diffusers import AutoencoderKL
    n = len(cfg.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.vae_channels),
                         latent_channels=4, layers_per_block=1, norm_num_groups=cfg.vae_norm_groups,
                         sample_size=IMAGE_SIZE, scaling_factor=1.0)


def make_unet(cfg: TrainConfig):
    from diffusers import UNet2DConditionModel
    n = len(cfg.unet_channels)
    return UNet2DConditionModel(sample_size=IMAGE_SIZE // 2 ** (len(cfg.vae_channels) - 1), in_channels=4,
                                out_channels=4, block_out_channels=tuple(cfg.unet_channels), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D",) * n,
                                up_block_types=("CrossAttnUpBlock2D",) * n, cross_attention_dim=cfg.text_hidden,
                                attention_head_dim=cfg.unet_heads, norm_num_groups=cfg.unet_norm_groups)


def compact_ids(tokenizer) -> list[int]:
    """Token ids the caption grammar can produce (BOS, EOS first)."""
    ids = [BOS, EOS]
    for w in vocabulary():
        for i in tokenizer(w, add_special_tokens=False).input_ids:
            if i not in ids:
                ids.append(i)
    return ids


def text_config(cfg: TrainConfig, vocab_size: int, bos: int, eos: int):
    from transformers import CLIPTextConfig
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=cfg.text_hidden, intermediate_size=4 * cfg.text_hidden,
                          num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
                          max_position_embeddings=cfg.max_length, bos_token_id=bos, eos_token_id=eos,
                          pad_token_id=eos)


def load_tokenizer(max_length: int):
    from transformers import CLIPTokenizer
    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), model_max_length=max_length)


def expand_text_encoder(cfg: TrainConfig, compact, ids: list[int]):
    """Full-vocabulary ``CLIPTextModel`` from the compact one; unknown tokens embed as "a"."""
    from transformers import CLIPTextModel
    full = CLIPTextModel(text_config(cfg, FULL_VOCAB, BOS, EOS))
    sd = {k: v.detach().clone() for k, v in compact.state_dict().items()}
    key = next(k for k in sd if k.endswith("token_embedding.weight"))
    small = sd[key]
    a_id = ids.index(320) if 320 in ids else 0
    table = small[a_id].repeat(FULL_VOCAB, 1)
    table[torch.tensor(ids)] = small
    sd[key] = table
    missing, unexpected = full.load_state_dict(sd, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise RuntimeError(f"text encoder expansion mismatch: missing={missing} unexpected={unexpected}")
    return full.eval()


def scheduler_config() -> dict:
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="v_prediction", clip_sample=False)


def build_pipeline(vae, unet, text_encoder, tokenizer):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
    sched = DPMSolverMultistepScheduler(**{k: v for k, v in scheduler_config().items() if k != "clip_sample"},
                                        algorithm_type="dpmsolver++", solver_order=2, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------- data

def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def scene_batch(seed: int, tag: int, step: int, n: int, p_single: float = 0.4):
    rng = np.random.default_rng([seed, tag, step])
    scenes = [random_scene(rng, p_single=p_single) for _ in range(n)]
    return scenes, rng


# --------------------------------------------------------------------------- phase 1: VAE

def train_vae(cfg: TrainConfig, out: Path):
    from diffusers import AutoencoderKL
    final = out / "vae"
    if (final / "config.json").exists():
        return AutoencoderKL.from_pretrained(final).eval()
    torch.manual_seed(cfg.seed)
    vae = make_vae(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    ck = out / "vae_ckpt.pt"
    start = 0
    if ck.exists():
        st = torch.load(ck, weights_only=False)
        vae.load_state_dict(st["model"]); opt.load_state_dict(st["opt"]); start = st["step"]
        log(f"vae: resumed at step {start}")
    t0, run = time.time(), 0.0
    for step in range(start, cfg.vae_steps):
        lr = cfg.vae_lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.vae_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        scenes, rng = scene_batch(cfg.seed, 1, step, cfg.vae_batch)
        c = cfg.vae_crop
        crops = []
        for s in scenes:
            y, x = rng.integers(0, IMAGE_SIZE - c + 1, size=2)
            crops.append(s.image[y:y + c, x:x + c])
        x = to_tensor(np.stack(crops))
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + cfg.vae_kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        run = 0.98 * run + 0.02 * loss.item() if step > start else loss.item()
        if (step + 1) % cfg.log_every == 0:
            log(f"vae step {step + 1}/{cfg.vae_steps} loss {run:.4f} {(time.time() - t0) / (step + 1 - start):.2f}s/step")
        if (step + 1) % cfg.ckpt_every == 0:
            torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step + 1}, ck)
    vae.eval()
    normalize_vae(vae, cfg)
    vae.save_pretrained(final)
    rep = vae_report(vae, cfg)
    log(f"vae done: {json.dumps(rep)}")
    (out / "vae_report.json").write_text(json.dumps(rep, indent=1))
    return vae


@torch.no_grad()
def normalize_vae(vae, cfg: TrainConfig, n: int = 512) -> None:
    """Fold per-channel latent mean/std into the VAE: latents become ~N(0, 1), scaling_factor 1."""
    scenes, _ = scene_batch(cfg.seed, 4, 0, n)
    mu = vae.encode(to_tensor(np.stack([s.image for s in scenes]))).latent_dist.mean
    m, s = mu.mean((0, 2, 3)), mu.std((0, 2, 3)).clamp_min(1e-3)
    q, p = vae.quant_conv, vae.post_quant_conv
    q.weight[:4] /= s[:, None, None, None]
    q.bias[:4] = (q.bias[:4] - m) / s
    q.bias[4:] -= 2 * torch.log(s)
    w = p.weight[:, :, 0, 0].clone()  # (out, in)
    p.bias += w @ m
    p.weight *= s[None, :, None, None]
    vae.register_to_config(scaling_factor=1.0)


@torch.no_grad()
def vae_report(vae, cfg: TrainConfig, n: int = 64) -> dict:
    scenes, _ = scene_batch(cfg.seed, 5, 0, n)
    x = to_tensor(np.stack([s.image for s in scenes]))
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.mean).sample.clamp(-1, 1)
    mse = F.mse_loss(rec, x).item() / 4.0  # in [0, 1] units
    imgs = ((rec + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    ok = sum(matches_exactly(score_image(im), s.objects) for im, s in zip(imgs, scenes))
    return {"psnr_db": round(10 * math.log10(1.0 / max(mse, 1e-10)), 2), "scorer_correct": ok / n,
            "latent_mean": round(post.mean.mean().item(), 3), "latent_std": round(post.mean.std().item(), 3)}


# --------------------------------------------------------------------------- phase 2: latents

@torch.no_grad()
def encode_dataset(cfg: TrainConfig, out: Path, vae) -> dict:
    path = out / "latents.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    t0 = time.time()
    means, stds, specs = [], [], []
    chunk = 256
    for start in range(0, cfg.n_latents, chunk):
        n = min(chunk, cfg.n_latents - start)
        scenes, _ = scene_batch(cfg.seed, 2, start, n)
        post = vae.encode(to_tensor(np.stack([s.image for s in scenes]))).latent_dist
        means.append(post.mean.half()); stds.append(post.std.half())
        specs += [[(o.color, o.shape) for o in s.objects] for s in scenes]
        if (start // chunk) % 16 == 0:
            log(f"encoded {start + n}/{cfg.n_latents}")
    data = {"mean": torch.cat(means), "std": torch.cat(stds), "specs": specs}
    torch.save(data, path)
    log(f"latents: {tuple(data['mean'].shape)} in {time.time() - t0:.0f}s")
    return data


# --------------------------------------------------------------------------- phase 3: UNet + text

class RegionalCrossAttention:
    """Cross-attention where each pixel reads its own region's caption, optionally mixed with a base caption.

    Token layout of ``encoder_hidden_states``: with ``base_ratio`` set, the first
    ``tokens_per_region`` tokens are the base (whole-image) caption and the region captions follow,
    ``tokens_per_region`` each; without it, only region captions. ``maps`` is a ``(B, h, w)`` long
    tensor of region indices at the latent resolution, resized (nearest) to each layer. The output
    is ``base_ratio * attn(base) + (1 - base_ratio) * attn(own region)`` per sample (RPG's mix);
    ``base_ratio`` is a float or a ``(B,)`` tensor. With every pixel in region 0 and no base this
    equals plain cross-attention over the first caption, and ``base_ratio = 1`` equals plain
    attention over the base. Self-attention is plain.
    """

    def __init__(self, tokens_per_region: int):
        from diffusers.models.attention_processor import AttnProcessor2_0
        self.L = tokens_per_region
        self.maps: torch.Tensor | None = None
        self.base_ratio: float | torch.Tensor | None = None
        self.plain = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if encoder_hidden_states is None or self.maps is None:
            return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        b, n, _ = hidden_states.shape
        hh, ww = self.maps.shape[1:]
        side_h = int(round(math.sqrt(n * hh / ww)))
        pm = F.interpolate(self.maps[:, None].float(), size=(side_h, n // side_h), mode="nearest").long().view(b, n)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        hd = attn.to_q.out_features // attn.heads
        split = lambda x: x.view(b, -1, attn.heads, hd).transpose(1, 2)  # noqa: E731
        q = split(attn.to_q(hidden_states))
        k, v = split(attn.to_k(encoder_hidden_states)), split(attn.to_v(encoder_hidden_states))
        off = 0 if self.base_ratio is None else self.L
        treg = torch.arange(k.shape[2] - off) // self.L
        mask = (pm[:, :, None] == treg[None, None, :])[:, None]  # (B, 1, N, T)
        o = F.scaled_dot_product_attention(q, k[:, :, off:], v[:, :, off:], attn_mask=mask)
        if self.base_ratio is not None:
            beta = torch.as_tensor(self.base_ratio, dtype=o.dtype).reshape(-1, 1, 1, 1)
            o = beta * F.scaled_dot_product_attention(q, k[:, :, :off], v[:, :, :off]) + (1 - beta) * o
        o = o.transpose(1, 2).reshape(b, n, attn.heads * hd)
        return attn.to_out[1](attn.to_out[0](o))


def dataset_boxes(cfg: TrainConfig, specs: list) -> list:
    """Re-render the latent data set's scenes (deterministic) to recover object boxes."""
    boxes = []
    for start in range(0, cfg.n_latents, 256):
        scenes, _ = scene_batch(cfg.seed, 2, start, min(256, cfg.n_latents - start))
        boxes += [[o.bbox for o in sc.objects] for sc in scenes]
    if [len(b) for b in boxes] != [len(s) for s in specs]:
        raise RuntimeError("latents.pt does not match the scene generator; delete it to re-encode")
    return boxes


def region_split(boxes: list, rng: np.random.Generator, latent: int, factor: int):
    """Split two non-overlapping boxes by a random vertical or horizontal line through their gap.

    Returns ``(order, map)``: ``order[r]`` is the object index of region ``r`` and ``map`` the
    ``(latent, latent)`` region index of each latent cell (by the cell centre).
    """
    a, b = boxes
    options = []
    for axis in (0, 1):  # 0: vertical line (split x), 1: horizontal line (split y)
        lo_a, hi_a, lo_b, hi_b = a[axis], a[axis + 2], b[axis], b[axis + 2]
        if hi_a <= lo_b:
            options.append((axis, hi_a, lo_b, (0, 1)))
        elif hi_b <= lo_a:
            options.append((axis, hi_b, lo_a, (1, 0)))
    if not options:
        return None
    axis, lo, hi, order = options[int(rng.integers(len(options)))]
    cut = rng.uniform(lo, hi)
    centres = (np.arange(latent) + 0.5) * factor
    first = centres < cut  # cells on the first object's side
    grid = np.where(first[None, :], 0, 1) if axis == 0 else np.where(first[:, None], 0, 1)
    return order, np.broadcast_to(grid, (latent, latent)).copy()


def _lr_factor(cfg: TrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / max(cfg.warmup, 1))
    prog = min(1.0, step / max(cfg.unet_steps, 1))
    return warm * (cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * prog)))


def train_unet(cfg: TrainConfig, out: Path, vae, data: dict) -> None:
    from diffusers import DDPMScheduler
    from transformers import CLIPTextModel

    tok = load_tokenizer(cfg.max_length)
    ids = compact_ids(tok)
    lookup = torch.zeros(FULL_VOCAB, dtype=torch.long)
    lookup[torch.tensor(ids)] = torch.arange(len(ids))
    torch.manual_seed(cfg.seed + 1)
    unet = make_unet(cfg)
    text = CLIPTextModel(text_config(cfg, len(ids), 0, 1))
    with torch.no_grad():  # distinct, well-spread initial rows (orthogonal where possible)
        emb = text.get_input_embeddings().weight
        q = torch.nn.init.orthogonal_(torch.empty(max(len(ids), cfg.text_hidden), cfg.text_hidden))
        emb.copy_(q[: len(ids)] * math.sqrt(cfg.text_hidden) * 0.1)
    ema_unet, ema_text = make_unet(cfg), CLIPTextModel(text_config(cfg, len(ids), 0, 1))
    ema_unet.load_state_dict(unet.state_dict()); ema_text.load_state_dict(text.state_dict())
    for p in list(ema_unet.parameters()) + list(ema_text.parameters()):
        p.requires_grad_(False)
    opt = torch.optim.AdamW([{"params": unet.parameters(), "lr": cfg.lr, "base": cfg.lr},
                             {"params": text.parameters(), "lr": cfg.text_lr, "base": cfg.text_lr}],
                            weight_decay=0.0)
    sched = DDPMScheduler(**scheduler_config())
    ac = sched.alphas_cumprod
    snr = ac / (1 - ac)
    weight = torch.clamp(snr, max=cfg.min_snr_gamma) / (snr + 1)  # min-SNR for v-prediction

    ck = out / "ckpt.pt"
    start, best = 0, -1.0
    if ck.exists():
        st = torch.load(ck, weights_only=False)
        unet.load_state_dict(st["unet"]); text.load_state_dict(st["text"])
        ema_unet.load_state_dict(st["ema_unet"]); ema_text.load_state_dict(st["ema_text"])
        opt.load_state_dict(st["opt"]); start = st["step"]; best = st.get("best", -1.0)
        log(f"unet: resumed at step {start}")
    elapsed0 = st.get("elapsed", 0.0) if ck.exists() else 0.0

    specs = data["specs"]
    boxes = dataset_boxes(cfg, specs)
    proc = RegionalCrossAttention(cfg.max_length)
    unet.set_attn_processor(proc)
    latent = data["mean"].shape[-1]
    factor = IMAGE_SIZE // latent
    n_obj = np.array([len(s) for s in specs])
    single_idx, multi_idx = np.nonzero(n_obj == 1)[0], np.nonzero(n_obj != 1)[0]
    ema_params = list(ema_unet.parameters()) + list(ema_text.parameters())
    params = list(unet.parameters()) + list(text.parameters())
    t0, run, seen = time.time(), None, 0
    unet.train(); text.train()
    for step in range(start, cfg.unet_steps):
        rng = np.random.default_rng([cfg.seed, 3, step])
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        f = _lr_factor(cfg, step)
        for g in opt.param_groups:
            g["lr"] = g["base"] * f
        p_single = 0.8 if step < cfg.curriculum_steps else cfg.p_single
        use_single = rng.random(cfg.batch) < p_single
        pick = np.where(use_single, rng.choice(single_idx, cfg.batch) if len(single_idx) else rng.choice(multi_idx, cfg.batch),
                        rng.choice(multi_idx, cfg.batch) if len(multi_idx) else rng.choice(single_idx, cfg.batch))
        caps = ["" if rng.random() < cfg.caption_dropout else caption(specs[i], rng) for i in pick]
        tid = tok(caps, padding="max_length", max_length=cfg.max_length, truncation=True, return_tensors="pt").input_ids
        pick_t = torch.from_numpy(pick)
        lat = data["mean"][pick_t].float() + data["std"][pick_t].float() * torch.randn(
            data["mean"][pick_t].shape, generator=gen)
        noise = torch.randn(lat.shape, generator=gen)
        t = torch.randint(0, 1000, (cfg.batch,), generator=gen)
        noisy = sched.add_noise(lat, noise, t)
        target = sched.get_velocity(lat, noise, t)
        if step >= cfg.regional_start:
            tid, maps, beta = _regional_batch(cfg, step, pick, caps, specs, boxes, tid, tok, latent, factor)
            proc.maps, proc.base_ratio = maps, beta
            enc = text(lookup[tid.view(-1, cfg.max_length)])[0].view(cfg.batch, -1, cfg.text_hidden)
        else:
            proc.maps = None
            enc = text(lookup[tid])[0]
        pred = unet(noisy, t, enc).sample
        loss = ((pred - target) ** 2).mean((1, 2, 3))
        loss = (loss * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            d = min(cfg.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - d)
        run = loss.item() if run is None else 0.98 * run + 0.02 * loss.item()
        seen += 1
        done = step + 1
        if done % cfg.log_every == 0:
            el = elapsed0 + time.time() - t0
            log(f"unet step {done}/{cfg.unet_steps} loss {run:.4f} lr {f * cfg.lr:.2e} "
                f"{(time.time() - t0) / seen:.2f}s/step elapsed {el / 60:.1f}min")
        if done % cfg.eval_every == 0 or done == cfg.unet_steps:
            best = _eval_and_export(cfg, out, vae, ema_unet, ema_text, tok, ids, done, best,
                                    elapsed0 + time.time() - t0)
        if done % cfg.ckpt_every == 0 or done == cfg.unet_steps:
            tmp = out / "ckpt.pt.tmp"
            torch.save({"unet": unet.state_dict(), "text": text.state_dict(), "ema_unet": ema_unet.state_dict(),
                        "ema_text": ema_text.state_dict(), "opt": opt.state_dict(), "step": done, "best": best,
                        "elapsed": elapsed0 + time.time() - t0, "config": asdict(cfg)}, tmp)
            os.replace(tmp, ck)
    log("unet: done")


def _regional_batch(cfg, step, pick, caps, specs, boxes, tid, tok, latent, factor):
    """Captions per sample ``(B, R, L)``, region maps ``(B, latent, latent)`` and base ratios ``(B,)`` or None.

    Plain samples: every caption = the caption, all cells region 0, base ratio 1 (= plain
    cross-attention). Regional samples (two-object scenes, probability ``p_regional``, caption not
    dropped): each object's phrase on its side of a random line through the gap between the
    objects; from ``regional_base_start`` on, mixed with the whole caption at a base ratio drawn
    from ``base_ratio_range`` (the whole caption keeps the object count visible to every pixel).
    """
    rng = np.random.default_rng([cfg.seed, 6, step])
    with_base = step >= cfg.regional_base_start
    maps = torch.zeros(len(pick), latent, latent, dtype=torch.long)
    beta = torch.ones(len(pick))
    texts = [[c, c] for c in caps]
    for j, i in enumerate(pick):
        p_reg = cfg.p_regional if step < cfg.regional_taper_start else cfg.p_regional_late
        if len(specs[i]) == 2 and caps[j] and rng.random() < p_reg:
            split = region_split(boxes[i], rng, latent, factor)
            if split is not None:
                order, grid = split
                texts[j] = [phrase(*specs[i][order[0]]), phrase(*specs[i][order[1]])]
                maps[j] = torch.from_numpy(grid)
                beta[j] = rng.uniform(*cfg.base_ratio_range)
    if with_base:
        texts = [[c] + t for c, t in zip(caps, texts)]
    flat = [t for group in texts for t in group]
    ids = tok(flat, padding="max_length", max_length=cfg.max_length, truncation=True, return_tensors="pt").input_ids
    return ids.view(len(pick), -1, cfg.max_length), maps, (beta if with_base else None)


def export_pipeline(cfg: TrainConfig, vae, unet, text_compact, tok, ids, path: Path):
    """Save a ``StableDiffusionPipeline`` folder (fp32) from (EMA) training modules."""
    import copy
    full = expand_text_encoder(cfg, text_compact, ids)
    pipe = build_pipeline(vae, copy.deepcopy(unet).eval(), full, tok)
    if path.exists():
        shutil.rmtree(path)
    pipe.save_pretrained(path, safe_serialization=True)
    return pipe


def _eval_and_export(cfg, out, vae, ema_unet, ema_text, tok, ids, step, best, elapsed):
    t0 = time.time()
    pipe = export_pipeline(cfg, vae, ema_unet, ema_text, tok, ids, out / "pipeline_latest")
    res = evaluate_pipeline(pipe, n_single=cfg.eval_single, n_double=cfg.eval_double, seed=1234,
                            steps=cfg.eval_steps, guidance=cfg.eval_guidance)
    if cfg.eval_regional:
        res.update({f"lr_{k}": v for k, v in evaluate_regional(pipe, n=cfg.eval_regional, seed=77,
                                                               steps=cfg.eval_steps, guidance=cfg.eval_guidance).items()})
    res.update(step=step, elapsed_min=round(elapsed / 60, 1), eval_s=round(time.time() - t0, 1))
    with open(out / "eval.jsonl", "a") as fh:
        fh.write(json.dumps({k: v for k, v in res.items() if k != "samples"}) + "\n")
    log(f"EVAL step {step}: single {res['single_acc']:.3f} (n={res['n_single']}) "
        f"double {res['double_acc']:.3f} (n={res['n_double']}) colour-only single {res['single_color_acc']:.3f} "
        f"regional L/R {res.get('lr_regional_left_right_acc', -1):.3f} vs plain {res.get('lr_plain_left_right_acc', -1):.3f} "
        f"[{res['eval_s']}s]")
    score = res["single_acc"] + res["double_acc"]
    if score >= best:
        best = score
        if (out / "pipeline_best").exists():
            shutil.rmtree(out / "pipeline_best")
        shutil.copytree(out / "pipeline_latest", out / "pipeline_best")
        (out / "pipeline_best" / "eval.json").write_text(json.dumps({k: v for k, v in res.items() if k != "samples"}))
    return best


# --------------------------------------------------------------------------- evaluation

def eval_prompts(n_single: int, n_double: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    """Seeded evaluation specs: single objects cycle through all 18 colour x shape pairs."""
    rng = np.random.default_rng(seed)
    combos = [(c, s) for c in COLORS for s in SHAPES]
    out = [[combos[i % len(combos)]] for i in range(n_single)]
    for _ in range(n_double):
        a, b = rng.choice(len(combos), 2, replace=True)
        out.append([combos[a], combos[b]])
    return out


@torch.no_grad()
def evaluate_pipeline(pipe, n_single: int = 36, n_double: int = 24, seed: int = 0, steps: int = 20,
                      guidance: float = 4.0, batch: int = 30, return_images: bool = False) -> dict:
    """Sample prompts with a plain ``StableDiffusionPipeline`` and score them.

    Single-object prompt correct = exactly one object detected with the right colour and shape;
    two-object prompt correct = the detected multiset of (colour, shape) equals the prompt's.
    """
    specs = eval_prompts(n_single, n_double, seed)
    prompts = [" and ".join(phrase(c, s) for c, s in sp) for sp in specs]
    images = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator().manual_seed(seed + j) for j in range(i, min(i + batch, len(prompts)))]
        r = pipe(prompts[i:i + batch], num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                 output_type="np")
        images += list((r.images * 255).round().clip(0, 255).astype(np.uint8))
    ok, col_ok, samples = [], [], []
    for sp, p, im in zip(specs, prompts, images):
        det = score_image(im)
        ok.append(matches_exactly(det, sp))
        col_ok.append(sorted(d.color for d in det) == sorted(c for c, _ in sp))
        samples.append({"prompt": p, "detected": [(d.color, d.shape) for d in det], "ok": ok[-1]})
    ns = n_single
    res = {"single_acc": float(np.mean(ok[:ns])) if ns else 0.0,
           "double_acc": float(np.mean(ok[ns:])) if n_double else 0.0,
           "single_color_acc": float(np.mean(col_ok[:ns])) if ns else 0.0,
           "n_single": ns, "n_double": n_double, "steps": steps, "guidance": guidance, "samples": samples}
    if return_images:
        res["images"] = images
    return res


@torch.no_grad()
def evaluate_regional(pipe, n: int = 24, seed: int = 0, steps: int = 20, guidance: float = 4.0,
                      base_ratio: float = 0.3) -> dict:
    """Left/right two-object prompts, plain vs regional prompting (a sanity check of the model, not RPG itself).

    Prompt "A and B" with A and B distinct; plain: the pipeline on the whole prompt; regional: the
    left half of the latent reads "A", the right half "B", each mixed with the whole prompt at
    ``base_ratio`` (``RegionalCrossAttention``). Correct = exact (colour, shape) multiset and some
    A left of some B.
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    from .score import relation
    specs = [sp for sp in eval_prompts(0, 4 * n, seed=seed + 99) if sp[0] != sp[1]][:n]
    L = pipe.tokenizer.model_max_length
    latent = pipe.unet.config.sample_size

    def emb(texts):
        ids = pipe.tokenizer(texts, padding="max_length", max_length=L, truncation=True, return_tensors="pt").input_ids
        return pipe.text_encoder(ids)[0]

    a_txt = [phrase(*sp[0]) for sp in specs]
    b_txt = [phrase(*sp[1]) for sp in specs]
    gens = lambda: [torch.Generator().manual_seed(seed + j) for j in range(len(specs))]  # noqa: E731
    plain = pipe([f"{a} and {b}" for a, b in zip(a_txt, b_txt)], num_inference_steps=steps,
                 guidance_scale=guidance, generator=gens(), output_type="np").images
    proc = RegionalCrossAttention(L)
    maps = torch.zeros(2 * len(specs), latent, latent, dtype=torch.long)
    maps[:, :, latent // 2:] = 1
    proc.maps, proc.base_ratio = maps, base_ratio
    pipe.unet.set_attn_processor(proc)
    try:
        whole = emb([f"{a} and {b}" for a, b in zip(a_txt, b_txt)])
        reg = pipe(prompt_embeds=torch.cat([whole, emb(a_txt), emb(b_txt)], 1),
                   negative_prompt_embeds=torch.cat([emb([""] * len(specs))] * 3, 1), num_inference_steps=steps,
                   guidance_scale=guidance, generator=gens(), output_type="np").images
    finally:
        pipe.unet.set_attn_processor(AttnProcessor2_0())
    out = {"n": len(specs)}
    for name, ims in (("plain", plain), ("regional", reg)):
        ok_set = ok_pos = 0
        for sp, im in zip(specs, ims):
            det = score_image((im * 255).round().clip(0, 255).astype(np.uint8))
            m = matches_exactly(det, sp)
            ok_set += m
            ok_pos += m and relation(det, sp[0], "left", sp[1])
        out[f"{name}_objects_acc"] = ok_set / len(specs)
        out[f"{name}_left_right_acc"] = ok_pos / len(specs)
    return out


# --------------------------------------------------------------------------- entry point

def train(cfg: TrainConfig) -> Path:
    """Run (or resume) all phases; returns the output folder."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    t0 = time.time()
    vae = train_vae(cfg, out)
    for p in vae.parameters():
        p.requires_grad_(False)
    data = encode_dataset(cfg, out, vae)
    log(f"phases 1-2 ready in {time.time() - t0:.0f}s")
    train_unet(cfg, out, vae, data)
    return out


def save_release(src: Path, dst: Path, fp16: bool = True) -> None:
    """Copy a pipeline folder to ``dst`` (fp16 weights by default; load with torch_dtype=float32 on CPU)."""
    from ..generation import load_pipeline
    pipe = load_pipeline(src, device="cpu", dtype=torch.float32)
    if fp16:
        pipe = pipe.to(torch.float16)
    if dst.exists():
        shutil.rmtree(dst)
    pipe.save_pretrained(dst, safe_serialization=True)
