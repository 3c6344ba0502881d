"""Hostile model files and devices (issue 12, cause 8): every corrupt or foreign model folder, checkpoint file,
settings file or device string is a ModelLoadError sentence naming the file and what is wrong, never a
traceback from json, safetensors, torch or diffusers; pickles are refused and no pickled code ever runs."""

import os
import pickle
import random
import re
import shlex
import shutil

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from scenecraft.cli import app
from scenecraft.generation import load_pipeline, loading
from scenecraft.generation.loading import (
    ModelLoadError,
    detect_family,
    method_settings,
    pick_device,
    recommended_settings,
)

runner = CliRunner()


class Payload:
    """Pickles as a call of os.system that would create ``marker``. Only ever written, never unpickled here:
    scenecraft's loader must refuse it without running it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from scenecraft.testing import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "sd")


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_sentence(result, *messages):
    """Exit code 2, output starting with ``error:``, each of ``messages`` in it, and no traceback."""
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert output.startswith("error:"), result.output
    assert all(message in output for message in messages), result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- model_index.json ------------------------------------------------------------------------------------

INDEXES = [
    (b"[]", "must hold a JSON object, not an array"),
    (b"{}", r'names no pipeline class \(it has no "_class_name"\)'),
    (b"", "is empty"),
    (b"not json", r"is not valid JSON \(Expecting value at line 1 column 1\)"),
    (b'{"_class_name": "StableDiffusion\xffPipeline"}', r"is not UTF-8 text \(invalid start byte at byte 32\)"),
    (b'{"_class_name": 3}', r'"_class_name" must be a pipeline class name \(a string\), not a number'),
    (b'{"_class_name": null}', r'"_class_name" must be a pipeline class name \(a string\), not null'),
    (b'{"_class_name": "Flux2Pipeline"}', "pipeline class Flux2Pipeline .* is not Stable Diffusion 1.x/2.x, SDXL, SD3 or Flux.1"),
]


@pytest.mark.parametrize("body, message", INDEXES)
def test_bad_model_index_is_a_sentence_naming_the_file(tmp_path, body, message):
    index = tmp_path / "model_index.json"
    index.write_bytes(body)
    for call in (lambda: load_pipeline(tmp_path, device="cpu"), lambda: detect_family(tmp_path)):
        with pytest.raises(ModelLoadError, match=message) as error:
            call()
        assert str(index) in str(error.value)


# --- a valid folder with a corrupt component ----------------------------------------------------------------

def _write(name, data):
    def corrupt(folder):
        (folder / name).write_bytes(data)
    return corrupt


CORRUPTIONS = {
    "unet config not JSON": _write("unet/config.json", b"garbage"),
    "unet config an array": _write("unet/config.json", b"[]"),
    "unet weights random": _write("unet/diffusion_pytorch_model.safetensors", random.Random(0).randbytes(4096)),
    "unet weights empty": _write("unet/diffusion_pytorch_model.safetensors", b""),
    "tokenizer not JSON": _write("tokenizer/tokenizer.json", b"zz"),
    "vae folder missing": lambda folder: shutil.rmtree(folder / "vae"),
    "component not a pair": _write("model_index.json", b'{"_class_name": "StableDiffusionPipeline", "unet": 5}'),
}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_folder_with_a_corrupt_component_is_a_sentence(tiny_folder, tmp_path, name):
    folder = shutil.copytree(tiny_folder, tmp_path / "model")
    CORRUPTIONS[name](folder)
    with pytest.raises(ModelLoadError) as error:
        load_pipeline(folder, device="cpu")
    message = str(error.value)
    assert re.match(rf"could not load the diffusers folder {re.escape(str(folder))}: \w+(Error|Exception)?: ", message)
    assert message.rstrip().endswith("download the folder again.")
    assert error.value.__cause__ is not None  # the library's exception is kept, for a debugger


def test_intact_copy_of_the_tiny_folder_still_loads(tiny_folder, tmp_path):
    folder = shutil.copytree(tiny_folder, tmp_path / "model")
    assert load_pipeline(folder, device="cpu").unet is not None


# --- single checkpoint files ----------------------------------------------------------------------------------

def _random(path):
    path.write_bytes(random.Random(0).randbytes(2048))


def _empty(path):
    path.write_bytes(b"")


def _foreign_safetensors(path):
    save_file({"foo": torch.zeros(1)}, str(path))


def _torch_save(value):
    return lambda path: torch.save(value, path)


FILES = [
    ("model.safetensors", _empty, r"is empty \(0 bytes\)"),
    ("model.safetensors", _random, "is not a valid .safetensors file"),
    ("model.safetensors", _foreign_safetensors, "holds no Stable Diffusion UNet weights .*its first are 'foo'"),
    ("model.ckpt", _random, "is not a (plain|readable) PyTorch weights file"),
    ("model.ckpt", _empty, r"is empty \(0 bytes\)"),
    ("model.bin", _empty, r"is empty \(0 bytes\)"),
    ("model.pt", _random, "is not a (plain|readable) PyTorch weights file"),
    ("model.bin", lambda path: path.write_bytes(b"PK\x03\x04" + os.urandom(500)), "is not a readable PyTorch weights"),
    ("model.pt", _torch_save([1, 2, 3]), "holds a list, not a dict of named weights"),
    ("model.pt", _torch_save(torch.zeros(3)), r"holds a single tensor of shape \(3,\), not a dict of named weights"),
    ("model.ckpt", _torch_save({"state_dict": {"foo": torch.zeros(1)}}), "holds no Stable Diffusion UNet weights"),
]


@pytest.mark.parametrize("name, write, message", FILES, ids=[f"{n}-{w.__name__}-{i}" for i, (n, w, _) in
                                                             enumerate(FILES)])
def test_corrupt_or_foreign_checkpoint_file_is_a_sentence(tmp_path, name, write, message):
    path = tmp_path / name
    write(path)
    with pytest.raises(ModelLoadError, match=message) as error:
        load_pipeline(path, device="cpu")
    assert str(error.value).startswith(f"checkpoint file {path} ")


PICKLES = {
    "torch.save zip": lambda path, payload: torch.save({"state_dict": {"weight": payload}}, path),
    "torch.save legacy": lambda path, payload: torch.save({"weight": payload}, path,
                                                          _use_new_zipfile_serialization=False),
    "bare pickle, protocol 2": lambda path, payload: path.write_bytes(pickle.dumps(payload, protocol=2)),
}


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt"])
@pytest.mark.parametrize("kind", PICKLES)
def test_pickle_with_code_is_refused_and_never_runs(tmp_path, kind, suffix):
    marker = tmp_path / "code-ran"
    path = tmp_path / f"model{suffix}"
    PICKLES[kind](path, Payload(marker))
    refused = "is refused: it is not a plain weights file (its pickle calls posix.system), and scenecraft never runs"
    for call in (lambda: load_pipeline(path, device="cpu"), lambda: detect_family(path)):
        with pytest.raises(ModelLoadError, match=re.escape(refused)):
            call()
    assert not marker.exists()


def test_pickle_torch_cannot_read_is_refused_too_and_never_runs(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.ckpt"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=4))  # opcodes torch's weights-only reader refuses
    with pytest.raises(ModelLoadError, match="is not a plain PyTorch weights file .*scenecraft never runs"):
        load_pipeline(path, device="cpu")
    assert not marker.exists()


def test_unet_keys_with_garbage_tensors_and_a_config_is_a_sentence(tiny_folder, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.foo": torch.zeros(1)}, str(path))
    with pytest.raises(ModelLoadError, match=rf"could not load the checkpoint file {re.escape(str(path))} with the "
                                             rf"configs of '{re.escape(str(tiny_folder))}': \w+"):
        load_pipeline(path, device="cpu", single_file_config=str(tiny_folder))


# --- scenecraft.json ------------------------------------------------------------------------------------------

SETTINGS = [
    (b"{oops", "is not valid JSON"),
    (b"\xff\xfe", "is not UTF-8 text"),
    (b"[1, 2]", "must hold a JSON object, not an array"),
    (b'{"methods": []}', '"methods" must be an object mapping a method name to its settings, not an array'),
    (b'{"methods": {"layout": 5}}', "\"methods\" entry 'layout' must be an object of settings, not a number"),
    (b'{"num_inference_steps": "many"}', '"num_inference_steps" must be a number, not a string'),
    (b'{"guidance_scale": true}', '"guidance_scale" must be a number, not true'),
]


@pytest.mark.parametrize("body, message", SETTINGS)
def test_bad_settings_file_is_a_sentence_naming_it(tmp_path, body, message):
    (tmp_path / "scenecraft.json").write_bytes(body)
    for call in (lambda: method_settings(tmp_path, "layout"), lambda: recommended_settings(tmp_path)):
        with pytest.raises(ModelLoadError, match=re.escape(message)) as error:
            call()
        assert str(error.value).startswith(str(tmp_path / "scenecraft.json"))
        assert "fix the file or delete it" in str(error.value)


def test_good_settings_file_still_reads(tmp_path):
    (tmp_path / "scenecraft.json").write_text('{"num_inference_steps": 20, "guidance_scale": 3, '
                                              '"methods": {"layout": {"attn_layers": [1, 2]}}}')
    assert recommended_settings(tmp_path) == {"num_inference_steps": 20, "guidance_scale": 3}
    assert method_settings(tmp_path, "layout") == {"attn_layers": (1, 2)}
    assert method_settings(tmp_path, "regional") == {}
    assert recommended_settings(tmp_path / "missing") == {}


# --- devices ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["nonsense", "", "cuda:x", "gpu"])
def test_unparsable_device_is_a_sentence(device):
    with pytest.raises(ModelLoadError, match=rf"device {re.escape(repr(device))} is not a device name: give cpu, "
                                             r"cuda, cuda:N, mps or xpu \(available here: cpu"):
        pick_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_without_cuda_is_a_sentence(device):
    with pytest.raises(ModelLoadError, match=rf"device '{device}' is not available here: this machine has no CUDA "
                                             r"device \(available: cpu"):
        pick_device(device)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_where_unavailable_is_a_sentence():
    with pytest.raises(ModelLoadError, match=r"device 'mps' is not available here: this machine has no MPS"):
        pick_device("mps")


def test_cuda_index_past_the_devices_is_a_sentence(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ModelLoadError, match=r"device 'cuda:7' is not available here: this machine has 2 CUDA "
                                             r"devices, cuda:0 to cuda:1 \(available: cpu, cuda, cuda:0, cuda:1"):
        pick_device("cuda:7")
    assert pick_device("cuda:1") == torch.device("cuda", 1) and pick_device("cuda") == torch.device("cuda")


def test_meta_device_is_refused_and_cpu_still_works():
    with pytest.raises(ModelLoadError, match="device 'meta' holds no data"):
        pick_device("meta")
    assert pick_device("cpu") == torch.device("cpu") and pick_device(torch.device("cpu")) == torch.device("cpu")


def test_device_is_checked_before_any_weights_load(monkeypatch):
    def forbidden(*args):
        raise AssertionError("weights were loaded before the device was checked")

    monkeypatch.setattr(loading, "_load", forbidden)
    with pytest.raises(ModelLoadError, match="device 'nonsense' is not a device name"):
        load_pipeline("toyworld", device="nonsense")


# --- the CLI: one sentence, exit code 2 ---------------------------------------------------------------------

def test_cli_bad_model_files_are_sentences(tmp_path):
    out = tmp_path / "x.png"
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    assert_sentence(cli("generate", "a cat", "--model", empty, "--out", out), f"{empty} is empty (0 bytes)")
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"weight": Payload(marker)}}, evil)
    assert_sentence(cli("generate", "a cat", "--model", evil, "--out", out), "is refused", "never runs pickled code")
    assert not marker.exists()
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "model_index.json").write_text("[]")
    assert_sentence(cli("generate", "a cat", "--model", folder, "--out", out), "must hold a JSON object")
    (folder / "model_index.json").write_text('{"_class_name": "Flux2Pipeline"}')
    assert_sentence(cli("generate", "a cat", "--model", folder, "--out", out), "Flux2Pipeline", "not Stable Diffusion")
    (folder / "scenecraft.json").write_text('{"methods": 3}')
    assert_sentence(cli("generate", "a cat", "--model", folder, "--out", out), '"methods" must be an object')


def test_cli_corrupt_component_is_a_sentence(tiny_folder, tmp_path):
    folder = shutil.copytree(tiny_folder, tmp_path / "model")
    (folder / "unet" / "config.json").write_text("garbage")
    result = cli("generate", "a cat", "--model", folder, "--out", tmp_path / "x.png")
    assert_sentence(result, f"could not load the diffusers folder {folder}")


@pytest.mark.parametrize("device, message", [
    ("nonsense", "device 'nonsense' is not a device name"),
    pytest.param("cuda:7", "device 'cuda:7' is not available here", marks=pytest.mark.skipif(
        torch.cuda.device_count() > 7, reason="this machine has a cuda:7")),
])
def test_cli_bad_device_is_a_sentence(tmp_path, device, message):
    assert_sentence(cli("generate", "a cat", "--device", device, "--out", tmp_path / "x.png"), message)
