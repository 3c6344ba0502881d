"""Single-file checkpoints (original LDM key layout, as downloaded from civitai) loaded end to end offline.

The tiny pipelines are written both as a diffusers folder and as one LDM-format file; the file,
loaded through diffusers' ``from_single_file`` with a configs-only copy of the folder (so every
weight must come from the file), must reproduce the folder's pipeline bit for bit.
"""

import shutil
import socket

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors import safe_open

from scenecraft.generation import load_pipeline
from scenecraft.generation.loading import ModelLoadError, detect_family
from scenecraft.testing import save_tiny_pipeline, save_tiny_single_file

CLASSES = {"sd": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}


def configs_only(folder, dest):
    """The folder's configs and tokenizer files without its weights (what `--include '*.json' '*.txt'` downloads)."""
    return shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))


@pytest.fixture(scope="module", params=["sd", "sd2", "sdxl"])
def loaded(request, tmp_path_factory):
    kind = request.param
    tmp = tmp_path_factory.mktemp(kind)
    folder = save_tiny_pipeline(tmp / "folder", kind=kind)
    file = save_tiny_single_file(tmp / f"tiny-{kind}.safetensors", kind=kind)
    config = configs_only(folder, tmp / "config")
    from_file = load_pipeline(file, single_file_config=str(config), device="cpu")
    from_folder = load_pipeline(folder, device="cpu")
    return kind, file, from_file, from_folder


def test_single_file_is_detected_and_loads_as_its_family(loaded):
    kind, file, from_file, _ = loaded
    family = kind.rstrip("2")
    assert detect_family(file) == family
    assert type(from_file) is CLASSES[family] and from_file.device.type == "cpu"


def test_single_file_components_equal_the_folder_bit_for_bit(loaded):
    _, _, from_file, from_folder = loaded
    modules = [name for name, value in from_folder.components.items() if isinstance(value, torch.nn.Module)]
    assert {"unet", "vae", "text_encoder"} <= set(modules)
    for name in modules:
        expected = getattr(from_folder, name).state_dict()
        actual = getattr(from_file, name).state_dict()
        assert actual.keys() == expected.keys(), name
        for key, tensor in expected.items():
            assert actual[key].dtype == tensor.dtype and torch.equal(actual[key], tensor), f"{name}.{key}"
    assert dict(from_file.scheduler.config) == dict(from_folder.scheduler.config)


def test_single_file_generates_the_folders_images(loaded):
    _, _, from_file, from_folder = loaded
    kwargs = dict(num_inference_steps=2, height=64, width=64, output_type="np")
    a = from_file("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).images
    b = from_folder("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).images
    assert a.shape == (1, 64, 64, 3) and np.isfinite(a).all() and a.std() > 0
    # Equal weights, but not bit-equal images on every CPU: a converted tensor that is not 64-byte aligned
    # can take another matmul kernel (seen on an AMD EPYC: 1.5e-6). Bit-exactness holds within one load path.
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


TEXT_KEYS = {
    "sd": ["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"],
    "sd2": ["cond_stage_model.model.positional_embedding",
            "cond_stage_model.model.transformer.resblocks.2.attn.in_proj_weight"],
    "sdxl": ["conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight",
             "conditioner.embedders.1.model.text_projection",
             "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight"],
}
# The tiny UNet's 3 blocks of one layer: conv_in, (resnet+attention, downsample) x 2, resnet+attention make 6
# input blocks; up blocks have 2 layers, and the upsampler follows the attention of each block's last one.
UNET_VAE_KEYS = [f"model.diffusion_model.{key}" for key in (
    "input_blocks.0.0.weight", "input_blocks.2.0.op.weight", "input_blocks.5.1.proj_in.weight",
    "middle_block.2.in_layers.0.weight", "output_blocks.1.2.conv.weight", "output_blocks.5.0.skip_connection.weight",
    "out.2.weight")] + [f"first_stage_model.{key}" for key in (
    "encoder.down.0.downsample.conv.weight", "decoder.up.3.upsample.conv.weight", "encoder.mid.attn_1.q.weight",
    "decoder.norm_out.weight", "quant_conv.weight")]


def test_single_file_uses_the_original_ldm_keys(loaded):
    kind, file, _, _ = loaded
    with safe_open(str(file), framework="pt") as handle:
        keys = set(handle.keys())
    text = ("conditioner.embedders.",) if kind == "sdxl" else ("cond_stage_model.",)
    assert all(key.startswith(("model.diffusion_model.", "first_stage_model.") + text) for key in keys)
    assert set(UNET_VAE_KEYS + TEXT_KEYS[kind]) <= keys
    assert not any(".input_blocks.6." in key or ".output_blocks.6." in key for key in keys)
    assert ("model.diffusion_model.label_emb.0.0.weight" in keys) == (kind == "sdxl")


def test_ckpt_file_loads_too(tmp_path):
    folder = save_tiny_pipeline(tmp_path / "folder", kind="sd")
    file = save_tiny_single_file(tmp_path / "tiny.ckpt", kind="sd")
    assert detect_family(file) == "sd"
    pipe = load_pipeline(file, single_file_config=str(folder), device="cpu")
    expected = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True).unet.state_dict()
    assert all(torch.equal(pipe.unet.state_dict()[k], v) for k, v in expected.items())


@pytest.mark.parametrize("kind, repo", [("sd", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
                                        ("sdxl", "stabilityai/stable-diffusion-xl-base-1.0")])
def test_single_file_offline_without_config_says_what_to_pass(tmp_path, monkeypatch, kind, repo):
    attempts = []

    def refuse(self, *args):
        attempts.append(args)
        raise OSError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    file = save_tiny_single_file(tmp_path / "tiny.safetensors", kind=kind)
    with pytest.raises(ModelLoadError) as error:
        load_pipeline(file, device="cpu")
    message = str(error.value)
    assert "single_file_config (--model-config)" in message and str(file) in message
    assert f"huggingface-cli download {repo} --include '*.json' '*.txt'" in message
    assert attempts == []
