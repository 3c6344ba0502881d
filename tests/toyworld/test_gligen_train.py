"""The experimental toy-world GLIGEN trainer: only the new layers train, and a run resumes and exports."""

import torch

from scenecraft.generation import load_pipeline
from scenecraft.generation.gligen import is_gligen_unet
from scenecraft.toyworld.gligen_train import GligenTrainConfig, gated_unet, is_gligen_param, train


def test_gated_unet_keeps_the_toy_weights_and_adds_only_gligen_layers():
    pipe = load_pipeline("toyworld", device="cpu")
    gated, missing = gated_unet(pipe.unet)
    assert is_gligen_unet(gated) and missing and all(is_gligen_param(k) for k in missing)
    state = gated.state_dict()
    assert all(torch.equal(state[k], v) for k, v in pipe.unet.state_dict().items())


def test_two_steps_train_only_the_new_layers_and_write_a_pipeline(tmp_path):
    out = train(GligenTrainConfig(out_dir=str(tmp_path / "run"), pool=8, steps=2, batch=2, warmup=1, log_every=1,
                                  ckpt_every=1))
    folder = tmp_path / "run" / "pipeline"
    assert out and (folder / "model_index.json").is_file()
    reloaded = load_pipeline(folder, device="cpu")
    assert is_gligen_unet(reloaded.unet)
