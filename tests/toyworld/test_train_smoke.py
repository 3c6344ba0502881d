import json

import numpy as np
import pytest
import torch

from scenecraft.toyworld import train as tw


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toyworld_smoke")
    cfg = tw.TrainConfig.smoke(str(out))
    tw.train(cfg)
    return cfg, out


def test_smoke_run_writes_a_loadable_pipeline(smoke_run):
    from diffusers import StableDiffusionPipeline

    cfg, out = smoke_run
    for name in ("vae", "latents.pt", "ckpt.pt", "eval.jsonl", "pipeline_latest", "pipeline_best"):
        assert (out / name).exists(), name
    pipe = StableDiffusionPipeline.from_pretrained(out / "pipeline_latest", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.tokenizer.model_max_length == cfg.max_length
    assert pipe.text_encoder.get_input_embeddings().num_embeddings == tw.FULL_VOCAB
    img = pipe(["a red circle", "an orange square and a blue triangle"], num_inference_steps=2, guidance_scale=3.0,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    assert img.shape == (2, 64, 64, 3) and np.isfinite(img).all()
    line = json.loads((out / "eval.jsonl").read_text().splitlines()[-1])
    assert line["step"] == cfg.unet_steps and 0.0 <= line["single_acc"] <= 1.0


def test_resume_continues_from_checkpoint(smoke_run):
    cfg, out = smoke_run
    cfg2 = tw.TrainConfig.smoke(cfg.out_dir)
    cfg2.unet_steps = cfg.unet_steps + 2
    tw.train(cfg2)
    assert torch.load(out / "ckpt.pt", weights_only=False)["step"] == cfg2.unet_steps


def test_release_is_fp16_and_loads_as_fp32(smoke_run, tmp_path):
    from diffusers import StableDiffusionPipeline

    _, out = smoke_run
    tw.save_release(out / "pipeline_latest", tmp_path / "rel")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "rel", torch_dtype=torch.float32, local_files_only=True)
    assert pipe.unet.dtype == torch.float32
    idx = json.loads((tmp_path / "rel" / "model_index.json").read_text())
    assert idx["safety_checker"] == [None, None] and idx["requires_safety_checker"] is False


@torch.no_grad()
def test_latent_normalisation_is_folded_exactly():
    cfg = tw.TrainConfig.smoke("unused")
    torch.manual_seed(0)
    vae = tw.make_vae(cfg).eval()
    for p in vae.quant_conv.parameters():
        p.add_(torch.randn_like(p) * 0.5)
    scenes, _ = tw.scene_batch(0, 9, 0, 8)
    x = tw.to_tensor(np.stack([s.image for s in scenes]))
    before = vae.decode(vae.encode(x).latent_dist.mean).sample
    tw.normalize_vae(vae, cfg, n=32)
    mu = vae.encode(x).latent_dist.mean
    assert torch.allclose(vae.decode(mu).sample, before, atol=1e-4)
    assert mu.mean().abs() < 0.3 and 0.5 < mu.std() < 1.5


@torch.no_grad()
def test_expanded_text_encoder_matches_compact():
    from transformers import CLIPTextModel

    cfg = tw.TrainConfig.smoke("unused")
    tok = tw.load_tokenizer(cfg.max_length)
    ids = tw.compact_ids(tok)
    torch.manual_seed(0)
    compact = CLIPTextModel(tw.text_config(cfg, len(ids), 0, 1)).eval()
    full = tw.expand_text_encoder(cfg, compact, ids)
    lookup = torch.zeros(tw.FULL_VOCAB, dtype=torch.long)
    lookup[torch.tensor(ids)] = torch.arange(len(ids))
    tid = tok(["a red circle and an orange square"], padding="max_length", max_length=cfg.max_length,
              return_tensors="pt").input_ids
    assert torch.allclose(full(tid)[0], compact(lookup[tid])[0], atol=1e-5)
