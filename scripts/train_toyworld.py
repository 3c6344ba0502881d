#!/usr/bin/env python
"""Train (or resume) the toy-world model; see the "Toy world" section of README.md.

Full run (about 2 h on one CPU thread):
    OMP_NUM_THREADS=1 nohup .venv/bin/python scripts/train_toyworld.py --out runs/toyworld \
        > runs/toyworld/train.log 2>&1 &
Re-running the same command resumes from the last checkpoint in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/toyworld", help="output/checkpoint folder (resumes if present)")
    ap.add_argument("--smoke", action="store_true", help="tiny model, a few steps (tests)")
    ap.add_argument("--vae-steps", type=int)
    ap.add_argument("--unet-steps", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--n-latents", type=int)
    ap.add_argument("--eval-every", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (keep 1 on the shared machine)")
    ap.add_argument("--evaluate", metavar="PIPELINE_DIR", help="only evaluate a saved pipeline folder")
    ap.add_argument("--n-single", type=int, default=60)
    ap.add_argument("--n-double", type=int, default=60)
    ap.add_argument("--n-regional", type=int, default=0, help="also run the left/right plain-vs-regional check")
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--release", nargs=2, metavar=("SRC", "DST"), help="copy a pipeline folder as fp16 to DST")
    a = ap.parse_args(argv)

    import torch
    torch.set_num_threads(a.threads)
    from scenecraft.toyworld import train as tw

    if a.release:
        from pathlib import Path
        tw.save_release(Path(a.release[0]), Path(a.release[1]))
        return 0
    if a.evaluate:
        from scenecraft.generation import load_pipeline
        pipe = load_pipeline(a.evaluate, device="cpu", dtype=torch.float32)
        res = tw.evaluate_pipeline(pipe, n_single=a.n_single, n_double=a.n_double, seed=4321, steps=a.steps,
                                   guidance=a.guidance)
        res = {k: v for k, v in res.items() if k != "samples"}
        if a.n_regional:
            res.update({f"lr_{k}": v for k, v in tw.evaluate_regional(pipe, n=a.n_regional, seed=4321, steps=a.steps,
                                                                      guidance=a.guidance).items()})
        print(json.dumps(res))
        return 0
    cfg = tw.TrainConfig.smoke(a.out) if a.smoke else tw.TrainConfig(out_dir=a.out)
    for name in ("vae_steps", "unet_steps", "batch", "n_latents", "eval_every", "seed"):
        if getattr(a, name) is not None:
            setattr(cfg, name, getattr(a, name))
    tw.train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
