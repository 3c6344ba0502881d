"""The SD3 / Flux.1 test kit (tiny pipelines, the T5 tokenizer) and loading SD3 and Flux.1 pipelines."""

import json
import shutil

import pytest
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel, StableDiffusion3Pipeline
from safetensors.torch import save_file
from transformers import AutoTokenizer

from scenecraft.generation import loading
from scenecraft.generation.loading import ModelLoadError, detect_family, load_pipeline, pick_dtype
from scenecraft.planning.lexicon import COLOURS, NUMBER_WORDS
from scenecraft.testing import (
    save_tiny_flux, save_tiny_sd3, t5_tokenizer, tiny_flux_pipeline, tiny_sd3_pipeline,
)
from scenecraft.testing.mmdit import T5_WORDS
from scenecraft.toyworld.captions import vocabulary

PROMPT = "a red circle left of a blue square"
BUILDERS = {
    "sd3": lambda seed: tiny_sd3_pipeline(seed),
    "sd35": lambda seed: tiny_sd3_pipeline(seed, dual_attention=True),
    "flux-dev": lambda seed: tiny_flux_pipeline(seed),
    "flux-schnell": lambda seed: tiny_flux_pipeline(seed, guidance_embeds=False),
}


def draw(pipe, seed=0, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    return pipe(PROMPT, num_inference_steps=2, generator=generator, output_type="pt", **kwargs).images


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmdit")
    return {"sd3": save_tiny_sd3(root / "sd3"), "flux": save_tiny_flux(root / "flux")}


def write_keys(path, keys):
    save_file({key: torch.zeros(1) for key in keys}, str(path))
    return path


# --- the T5 tokenizer ----------------------------------------------------------------------------------------

def test_t5_tokenizer_has_t5s_specials_and_one_piece_per_known_word():
    tokenizer = t5_tokenizer()
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
    assert tokenizer.model_max_length == 512
    ids = tokenizer("a red circle").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["▁a", "▁red", "▁circle", "</s>"]
    assert ids == [3 + T5_WORDS.index(word) for word in ("a", "red", "circle")] + [1]
    # Unknown words are spelled; characters outside the fallbacks are <unk>.
    assert tokenizer.convert_ids_to_tokens(tokenizer("Zebra").input_ids) == ["▁", "Z", "e", "b", "r", "a", "</s>"]
    assert 2 in tokenizer("é").input_ids
    assert tokenizer(["red", "red circle"], padding="max_length", max_length=5).input_ids == [
        [ids[1], 1, 0, 0, 0], [ids[1], ids[2], 1, 0, 0]]
    assert tokenizer.decode(tokenizer("two blue squares").input_ids, skip_special_tokens=True) == "two blue squares"
    assert t5_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_t5_vocabulary_covers_the_toy_world_and_the_planners_words():
    words = {*vocabulary(), *COLOURS, *NUMBER_WORDS, "left", "right", "above", "below", "top", "bottom", "center",
             "middle", "background"}
    assert len(T5_WORDS) == len(set(T5_WORDS))
    assert words <= set(T5_WORDS), sorted(words - set(T5_WORDS))
    tokenizer = t5_tokenizer()
    assert all(len(tokenizer(word).input_ids) == 2 for word in words)


def test_t5_tokenizer_round_trips_through_save_pretrained(tmp_path):
    tokenizer = t5_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded) is type(tokenizer) and reloaded.model_max_length == 512
    for text in (PROMPT, "A Zebra, 3 dogs & a cat!", "", "é"):
        assert reloaded(text).input_ids == tokenizer(text).input_ids


# --- the tiny pipelines ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", BUILDERS)
def test_tiny_pipeline_draws_its_native_size_and_is_deterministic_per_seed(kind):
    pipe, same, other = BUILDERS[kind](0), BUILDERS[kind](0), BUILDERS[kind](1)
    image = draw(pipe)
    assert image.shape == (1, 3, 64, 64)
    assert torch.equal(image, draw(same))
    assert not torch.equal(image, draw(other))
    assert pipe.transformer.config.patch_size == (2 if kind.startswith("sd3") else 1)
    assert pipe.vae_scale_factor == 8 and pipe.vae.config.latent_channels == 16


def test_sd35_variant_has_a_second_attention_in_block_0_and_qk_norm():
    sd3, sd35 = tiny_sd3_pipeline(), tiny_sd3_pipeline(dual_attention=True)
    assert [block.attn2 is not None for block in sd35.transformer.transformer_blocks] == [True, False]
    assert all(block.attn2 is None for block in sd3.transformer.transformer_blocks)
    assert sd35.transformer.transformer_blocks[0].attn.norm_q is not None
    assert sd3.transformer.transformer_blocks[0].attn.norm_q is None


def test_flux_variants_differ_in_guidance_embedding_and_scheduler_shift():
    dev, schnell = tiny_flux_pipeline(), tiny_flux_pipeline(guidance_embeds=False)
    assert dev.transformer.config.guidance_embeds and not schnell.transformer.config.guidance_embeds
    assert dev.scheduler.config.use_dynamic_shifting and not schnell.scheduler.config.use_dynamic_shifting
    assert sum(dev.transformer.config.axes_dims_rope) == dev.transformer.config.attention_head_dim


def test_tiny_pipeline_takes_device_and_dtype():
    pipe = tiny_flux_pipeline(dtype=torch.bfloat16)
    assert pipe.transformer.dtype == pipe.text_encoder_2.dtype == torch.bfloat16


# --- loading SD3 and Flux folders --------------------------------------------------------------------------------

@pytest.mark.parametrize("family, cls, build", [("sd3", StableDiffusion3Pipeline, tiny_sd3_pipeline),
                                                ("flux", FluxPipeline, tiny_flux_pipeline)])
def test_saved_folder_loads_as_its_family_and_draws_the_same_image(folders, family, cls, build):
    folder = folders[family]
    assert detect_family(folder) == family
    pipe = load_pipeline(folder, device="cpu")
    assert type(pipe) is cls and pipe.transformer.dtype == torch.float32
    torch.testing.assert_close(draw(pipe, height=64, width=64), draw(build(0)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("class_name", ["Flux2Pipeline", "FluxKontextPipeline", "KandinskyV22Pipeline"])
def test_folder_of_another_pipeline_class_is_a_sentence_naming_what_loads(tmp_path, class_name):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    for call in (lambda: load_pipeline(tmp_path, device="cpu"), lambda: detect_family(tmp_path)):
        with pytest.raises(ModelLoadError, match=f"pipeline class {class_name} .* is not Stable Diffusion 1.x/2.x, "
                                                 f"SDXL, SD3 or Flux.1"):
            call()


def test_sd3_variant_classes_are_the_sd3_family():
    assert loading._family_of_class("StableDiffusion3Pipeline") == "sd3"
    assert loading._family_of_class("StableDiffusion3Img2ImgPipeline") == "sd3"
    assert loading._family_of_class("StableDiffusionXLPipeline") == "sdxl"
    assert loading._family_of_class("StableDiffusionPipeline") == "sd"


# --- single files --------------------------------------------------------------------------------------------------

FLUX_KEYS = ["double_blocks.0.img_attn.norm.key_norm.scale", "single_blocks.0.linear1.weight", "img_in.weight"]
SD3_KEYS = ["joint_blocks.0.context_block.adaLN_modulation.1.bias", "pos_embed"]


@pytest.mark.parametrize("keys, family", [
    (["model.diffusion_model." + key for key in SD3_KEYS], "sd3"),
    (SD3_KEYS, "sd3"),
    (["model.diffusion_model." + key for key in SD3_KEYS] + ["text_encoders.clip_l.transformer.x"], "sd3"),
    (FLUX_KEYS, "flux"),
    (["model.diffusion_model." + key for key in FLUX_KEYS], "flux"),
    (["single_blocks.0.linear1.weight"], "flux"),
    (["model.diffusion_model.input_blocks.0.0.weight"], "sd"),
    (["model.diffusion_model.input_blocks.0.0.weight", "conditioner.embedders.1.model.ln_final.weight"], "sdxl"),
])
def test_single_file_family_is_told_from_its_tensor_names(tmp_path, keys, family):
    assert detect_family(write_keys(tmp_path / "model.safetensors", keys)) == family


@pytest.mark.parametrize("key, name", [("single_stream_modulation.lin.weight", "Flux.2"),
                                       ("distilled_guidance_layer.in_proj.bias", "Chroma")])
def test_flux_like_file_of_another_model_is_a_sentence(tmp_path, key, name):
    path = write_keys(tmp_path / "model.safetensors", FLUX_KEYS + [key])
    for call in (lambda: detect_family(path), lambda: load_pipeline(path, device="cpu")):
        with pytest.raises(ModelLoadError, match=f"holds a {name} transformer, not Flux.1"):
            call()


def _offline(monkeypatch, cls, method):
    """``cls.method`` raises what diffusers raises offline for a hub id, and records its arguments."""
    calls = []

    def offline(*args, **kwargs):
        calls.append((args, kwargs))
        raise OSError("Cannot load model: the model is not fully cached locally and outgoing traffic has been disabled")

    monkeypatch.setattr(cls, method, offline)
    return calls


def _forbidden(monkeypatch, cls, method):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"{cls.__name__}.{method} must not be called")

    monkeypatch.setattr(cls, method, forbidden)


@pytest.mark.parametrize("keys, repo", [
    (FLUX_KEYS + ["guidance_in.in_layer.bias"], "black-forest-labs/FLUX.1-dev"),
    (["model.diffusion_model." + key for key in FLUX_KEYS], "black-forest-labs/FLUX.1-schnell"),
])
def test_flux_transformer_file_offline_says_to_pass_a_local_flux_folder(tmp_path, monkeypatch, keys, repo):
    calls = _offline(monkeypatch, FluxPipeline, "from_pretrained")
    _forbidden(monkeypatch, FluxTransformer2DModel, "from_single_file")
    path = write_keys(tmp_path / "flux1.safetensors", keys)
    with pytest.raises(ModelLoadError) as error:
        load_pipeline(path, device="cpu")
    message = str(error.value)
    assert calls[0][0][0] == repo and calls[0][1]["transformer"] is None
    assert f"{path}" in message and "holds only the Flux.1 transformer" in message
    assert "single_file_config (--model-config)" in message and "local diffusers Flux.1 folder" in message
    assert f"huggingface-cli download {repo} --exclude 'transformer/*'" in message


def test_sd3_file_with_text_encoders_offline_says_what_configs_to_download(tmp_path, monkeypatch):
    _offline(monkeypatch, StableDiffusion3Pipeline, "from_single_file")
    path = write_keys(tmp_path / "sd3.safetensors", SD3_KEYS + ["text_encoders.clip_g.transformer.x"])
    with pytest.raises(ModelLoadError, match="diffusers folder of the same family \\(SD3\\)") as error:
        load_pipeline(path, device="cpu")
    assert ("huggingface-cli download stabilityai/stable-diffusion-3-medium-diffusers --include '*.json' '*.txt' "
            "'*.model'") in str(error.value)


def test_sd3_file_without_t5_says_to_pass_a_folder_that_has_it(tmp_path, monkeypatch):
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    def missing(*args, **kwargs):
        raise SingleFileComponentError("Failed to load T5EncoderModel. Weights for this component appear to be missing")

    monkeypatch.setattr(StableDiffusion3Pipeline, "from_single_file", missing)
    path = write_keys(tmp_path / "sd3.safetensors", SD3_KEYS + ["text_encoders.clip_g.transformer.x"])
    with pytest.raises(ModelLoadError, match="leaves out a component's weights .* local diffusers SD3 folder"):
        load_pipeline(path, device="cpu")


@pytest.mark.parametrize("extra, repo", [([], "stabilityai/stable-diffusion-3-medium-diffusers"),
                                         (["joint_blocks.0.x_block.attn2.qkv.weight"],
                                          "stabilityai/stable-diffusion-3.5-medium"),
                                         (["joint_blocks.37.x_block.mlp.fc1.weight"],
                                          "stabilityai/stable-diffusion-3.5-large")])
def test_sd3_transformer_file_takes_its_components_from_its_models_repo(tmp_path, monkeypatch, extra, repo):
    calls = _offline(monkeypatch, StableDiffusion3Pipeline, "from_pretrained")
    path = write_keys(tmp_path / "sd3.safetensors", ["model.diffusion_model." + key for key in SD3_KEYS + extra])
    with pytest.raises(ModelLoadError, match="holds only the SD3 transformer"):
        load_pipeline(path, device="cpu")
    assert calls[0][0][0] == repo


def test_flux_transformer_file_takes_the_rest_from_single_file_config(tmp_path, monkeypatch, folders):
    # diffusers' Flux converter assumes the real width (3072), so a tiny transformer cannot go through a
    # BFL-layout file: the transformer diffusers would read from the file is the folder's own.
    reference = FluxTransformer2DModel.from_pretrained(folders["flux"], subfolder="transformer")
    calls = []

    def from_single_file(path, **kwargs):
        calls.append((path, kwargs))
        return reference

    monkeypatch.setattr(FluxTransformer2DModel, "from_single_file", from_single_file)
    path = write_keys(tmp_path / "flux1-dev.safetensors", FLUX_KEYS + ["guidance_in.in_layer.bias"])
    pipe = load_pipeline(path, device="cpu", single_file_config=str(folders["flux"]))
    assert type(pipe) is FluxPipeline and pipe.transformer is reference
    assert calls == [(str(path), {"config": str(folders["flux"]), "subfolder": "transformer", "dtype": torch.float32})]
    torch.testing.assert_close(draw(pipe, height=64, width=64), draw(tiny_flux_pipeline(0)), atol=1e-5, rtol=0)


def test_transformer_file_with_a_folder_lacking_weights_is_a_sentence(tmp_path, folders):
    folder = shutil.copytree(folders["flux"], tmp_path / "configs-only")
    for weights in folder.glob("*/*.safetensors"):
        weights.unlink()
    path = write_keys(tmp_path / "flux1-dev.safetensors", FLUX_KEYS)
    with pytest.raises(ModelLoadError, match="holds only the Flux.1 transformer") as error:
        load_pipeline(path, device="cpu", single_file_config=str(folder))
    assert f"the folder {folder}" in str(error.value)


# --- dtype and offload -----------------------------------------------------------------------------------------

CUDA, CPU, MPS = torch.device("cuda", 0), torch.device("cpu"), torch.device("mps")


@pytest.mark.parametrize("device, family, dtype", [
    (CPU, "sd", torch.float32), (CPU, "sdxl", torch.float32), (CPU, "sd3", torch.float32), (CPU, "flux", torch.float32),
    (CUDA, "sd", torch.float16), (CUDA, "sdxl", torch.float16), (CUDA, "sd3", torch.bfloat16),
    (CUDA, "flux", torch.bfloat16), (MPS, "flux", torch.bfloat16), (MPS, "sd", torch.float16),
])
def test_default_dtype_per_family_and_device(device, family, dtype):
    assert pick_dtype(device, None, family) == dtype
    assert pick_dtype(device, "fp16", family) == torch.float16  # an explicit dtype wins
    assert pick_dtype(device, torch.float32, family) == torch.float32


@pytest.mark.parametrize("family, dtype", [("flux", torch.bfloat16), ("sd3", torch.bfloat16)])
def test_loading_on_an_accelerator_picks_the_familys_dtype(folders, monkeypatch, family, dtype):
    seen = []
    cls = FluxPipeline if family == "flux" else StableDiffusion3Pipeline
    monkeypatch.setattr(cls, "from_pretrained", lambda *args, **kwargs: seen.append(kwargs["dtype"]))
    loading._load(str(folders[family]), CUDA, None, None)
    loading._load(str(folders[family]), CUDA, torch.float16, None)
    assert seen == [dtype, torch.float16]


def test_offload_on_the_cpu_is_a_value_error_before_loading(monkeypatch):
    monkeypatch.setattr(loading, "_load", lambda *args: pytest.fail("weights were loaded"))
    with pytest.raises(ValueError, match="offload=True .* but the device is the CPU"):
        load_pipeline("toyworld", device="cpu", offload=True)


def test_offload_on_an_accelerator_enables_diffusers_model_cpu_offload(monkeypatch):
    class Pipe:
        calls = []

        def enable_model_cpu_offload(self, **kwargs):
            self.calls.append(("offload", kwargs))

        def to(self, device):
            self.calls.append(("to", device))
            return self

        def set_progress_bar_config(self, **kwargs):
            pass

    monkeypatch.setattr(loading, "pick_device", lambda device: CUDA)
    monkeypatch.setattr(loading, "_load", lambda *args: Pipe())
    load_pipeline("toyworld", offload=True)
    load_pipeline("toyworld")
    assert Pipe.calls == [("offload", {"device": CUDA}), ("to", CUDA)]
