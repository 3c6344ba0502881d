import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file

from scenecraft.generation import load_pipeline
from scenecraft.generation.loading import ModelLoadError, detect_family, pick_device, pick_dtype
from scenecraft.testing import load_clip_tokenizer, save_tiny_pipeline


def test_real_clip_tokenizer_is_shipped():
    tokenizer = load_clip_tokenizer()
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize("kind, cls", [("sd", StableDiffusionPipeline), ("sd2", StableDiffusionPipeline),
                                       ("sdxl", StableDiffusionXLPipeline)])
def test_local_folder_is_detected_and_loaded_offline(tmp_path, kind, cls):
    folder = save_tiny_pipeline(tmp_path / kind, kind=kind)
    assert detect_family(folder) == kind.rstrip("2")
    pipe = load_pipeline(folder, device="cpu")
    assert type(pipe) is cls and pipe.device.type == "cpu" and pipe.unet.dtype == torch.float32


def test_reloaded_sd_pipeline_reproduces_the_built_one(tmp_path, sd_pipe):
    folder = tmp_path / "sd"
    sd_pipe.save_pretrained(folder)
    reloaded = load_pipeline(folder, device="cpu")
    kwargs = dict(num_inference_steps=3, height=64, width=64, output_type="np")
    a = sd_pipe("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    b = reloaded("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    # Two load paths (built in memory, read from disk): equal on most CPUs, not guaranteed on all.
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


@pytest.mark.parametrize("key, family", [
    ("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", "sdxl"),
    ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", "sd"),
    ("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", "sd"),
])
def test_single_file_family_is_detected_from_its_keys(tmp_path, key, family):
    path = tmp_path / "model.safetensors"
    save_file({key: torch.zeros(1), "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(path))
    assert detect_family(path) == family
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {key: torch.zeros(1)}}, ckpt)
    assert detect_family(ckpt) == family


def test_folder_without_model_index_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_pipeline(tmp_path)


def test_missing_checkpoint_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pipeline(tmp_path / "nope.safetensors")


def test_unrecognised_model_string_says_what_is_accepted():
    with pytest.raises(ModelLoadError, match="hub id like"):
        load_pipeline("not a model")


def test_hub_id_offline_says_what_to_download():
    # The test environment has no hub access (HF_HUB_OFFLINE=1 in conftest).
    with pytest.raises(ModelLoadError, match="huggingface-cli download someone/some-model"):
        load_pipeline("someone/some-model")


def test_device_and_dtype_defaults():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype(torch.device("cuda", 0)) == torch.float16
    assert pick_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of"):
        pick_dtype(torch.device("cpu"), "fp8")
