import json

import numpy as np
import pytest
import torch

from scenecraft.generation import load_pipeline
from scenecraft.generation.loading import default_model, detect_family, toyworld_path
from scenecraft.toyworld.score import matches_exactly, score_image

ASSET_DIR = toyworld_path()
pytestmark = pytest.mark.skipif(not (ASSET_DIR / "model_index.json").exists(), reason="toy-world model not shipped yet")


def test_files_and_size():
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (ASSET_DIR / sub).is_dir(), sub
    total = sum(p.stat().st_size for p in ASSET_DIR.rglob("*") if p.is_file())
    assert total < 40 * 2**20, total
    idx = json.loads((ASSET_DIR / "model_index.json").read_text())
    assert idx["safety_checker"] == [None, None] and idx["requires_safety_checker"] is False
    sched = json.loads((ASSET_DIR / "scheduler" / "scheduler_config.json").read_text())
    assert sched.get("clip_sample", False) is False and sched["prediction_type"] == "v_prediction"


def test_loads_offline_and_draws_single_objects():
    assert default_model() == "toyworld" and detect_family(ASSET_DIR) == "sd"
    pipe = load_pipeline("toyworld", device="cpu")
    assert pipe.unet.dtype == torch.float32
    prompts = ["a red circle", "a blue square", "a green triangle", "a yellow circle", "an orange square",
               "a purple triangle"]
    gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    imgs = pipe(prompts, num_inference_steps=20, guidance_scale=3.0, generator=gens, output_type="np").images
    assert imgs.shape == (6, 64, 64, 3)
    ok = 0
    for p, im in zip(prompts, imgs):
        words = p.split()
        ok += matches_exactly(score_image((im * 255).round().astype(np.uint8)), [(words[1], words[2])])
    assert ok >= 4, ok
