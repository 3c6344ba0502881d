#!/usr/bin/env python
"""Train GLIGEN grounding for the shipped toy-world model and (with --release) ship it.

    OMP_NUM_THREADS=1 nohup .venv/bin/python scripts/train_toyworld_gligen.py --out runs/toyworld_gligen \
        --steps 2000 --time-limit-min 40 > runs/toyworld_gligen.log 2>&1 &
    .venv/bin/python scripts/train_toyworld_gligen.py --out runs/toyworld_gligen --release-only

Only the new GLIGEN layers (the fusers and the position net) are trained; see
``scenecraft.toyworld.gligen_train``. Re-running the same command resumes from the last checkpoint.
--release writes an fp16 ``StableDiffusionGLIGENPipeline`` folder to
src/scenecraft/assets/toyworld_gligen with the toy model's scenecraft.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "src" / "scenecraft" / "assets" / "toyworld_gligen"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/toyworld_gligen", help="output/checkpoint folder (resumes if present)")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--pool", type=int, help="scenes rendered and VAE-encoded once")
    ap.add_argument("--time-limit-min", type=float, help="stop and export after this many training minutes")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--min-snr-gamma", type=float, help="min-SNR loss weighting (0: unweighted v-loss)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (keep 1 on the shared machine)")
    ap.add_argument("--release", action="store_true", help=f"after training, write the fp16 release to {RELEASE}")
    ap.add_argument("--release-only", action="store_true", help="only write the release from --out/pipeline")
    args = ap.parse_args(argv)

    import torch

    from scenecraft.generation.loading import toyworld_path
    from scenecraft.toyworld.gligen_train import GligenTrainConfig, release, train

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if not args.release_only:
        cfg = GligenTrainConfig(out_dir=str(out))
        for key in ("steps", "batch", "lr", "pool", "time_limit_min", "seed", "min_snr_gamma"):
            if getattr(args, key) is not None:
                setattr(cfg, key, getattr(args, key))
        train(cfg)
    if args.release or args.release_only:
        release(out / "pipeline", RELEASE, toyworld_path() / "scenecraft.json")
        print(f"released to {RELEASE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
