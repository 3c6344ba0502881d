"""The CLI's error contract: a user's error is one plain-text sentence and exit code 2, checked before
any expensive work; a bug keeps its traceback and asks to be reported. Hostile PNGs, output paths,
atomic writes."""

import errno
import os
import struct
import subprocess
import sys
import zlib

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import scenecraft.generation
import scenecraft.planning
from scenecraft.cli import app
from scenecraft.cli.errors import BUG_NOTE, printable, report_user_errors
from scenecraft.imagefile import MAX_TEXT_BYTES, read_metadata, save_image, save_png
from scenecraft.scene import Scene

runner = CliRunner()
ESC = "\x1b"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_sentence(result, message):
    """Exit code 2, ``error: ...`` with ``message``, no traceback and no raw escape character."""
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and ESC not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from scenecraft.testing import save_tiny_pipeline

    return str(save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd"))


@pytest.fixture
def no_expensive_work(monkeypatch):
    """Loading a model or planning with an LLM fails the test: the error must come first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("expensive work started before the input was checked")

    monkeypatch.setattr(scenecraft.generation, "load_pipeline", forbidden)
    monkeypatch.setattr(scenecraft.planning, "plan_scene", forbidden)


# --- Cause 1: error text is plain text, never markup; control characters escaped -------------------------

@pytest.mark.parametrize("split", ["[/]", "[bold]1", "[red]1,1[/red]"])
def test_split_errors_are_printed_as_plain_text_not_markup(split, tiny_model, tmp_path):
    result = run("generate", "a cat", "--split", split, "--region", "a", "--model", tiny_model, "--steps", "1",
                 "--width", "64", "--height", "64", "--out", tmp_path / "x.png")
    assert_sentence(result, f"invalid split ratio {split!r}")


def test_model_names_are_plain_text_in_errors_and_in_the_status_line(tmp_path):
    result = run("generate", "a cat", "--model", tmp_path / "[bold]no-such-model[/]", "--out", tmp_path / "x.png")
    assert_sentence(result, "[bold]no-such-model[/]")


def test_scene_file_errors_keep_their_brackets(tiny_model, tmp_path):
    scene_file = tmp_path / "scene.json"
    scene_file.write_text('{"prompt": "a cat", "regions": [{"prompt": "a cat", "box": "[bold]"}]}')
    result = run("generate", "--scene", scene_file, "--model", tiny_model, "--steps", "1", "--out", tmp_path / "x.png")
    assert_sentence(result, "box must be [x0, y0, x1, y1], got")
    scene_file.write_bytes(b'{"prompt": "a \xff cat"}')
    result = run("generate", "--scene", scene_file, "--model", tiny_model, "--steps", "1", "--out", tmp_path / "x.png")
    assert_sentence(result, f"--scene {scene_file} is not UTF-8 text (invalid start byte at byte 14)")


def test_escape_sequences_in_user_text_are_escaped(tiny_model, tmp_path):
    result = run("generate", "a cat", "--split", f"{ESC}]0;pwned\x07 1", "--region", "a", "--model", tiny_model,
                 "--steps", "1", "--width", "64", "--height", "64", "--out", tmp_path / "x.png")
    assert_sentence(result, "invalid split ratio")
    assert "\\x1b]0;pwned\\x07" in result.output


def test_printable_escapes_controls_bidi_and_c1_and_keeps_json_valid():
    import json

    text = f"a{ESC}[31m\r\x9b\u202e\U000e0001 é猫\n\t"
    assert printable(text) == "a\\x1b[31m\\r\\x9b\\u202e\\U000e0001 é猫\n\t"
    document = json.dumps({"prompt": text}, ensure_ascii=False)
    assert json.loads(printable(document, json=True)) == {"prompt": text}
    assert all(ch.isprintable() or ch in "\n\t" for ch in printable(document, json=True))


# --- The boundary: bugs keep their traceback and ask to be reported ---------------------------------------

def test_a_bug_keeps_its_exception_and_gets_the_report_note(monkeypatch):
    monkeypatch.setattr(scenecraft.planning, "plan_scene", lambda *args, **kwargs: 1 / 0)
    result = run("plan", "a cat")
    assert result.exit_code == 1 and isinstance(result.exception, ZeroDivisionError)
    assert BUG_NOTE in result.exception.__notes__


def test_a_bug_prints_its_traceback_and_the_note_in_a_terminal():
    code = ("import scenecraft.planning as p; p.plan_scene = lambda *a, **k: {}['missing']; "
            "from scenecraft.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", code, "plan", "a cat"], capture_output=True, text=True, timeout=120,
                          env=os.environ | {"COLUMNS": "200"})
    assert done.returncode == 1
    assert "KeyError" in done.stderr and "please report it" in done.stderr


@pytest.mark.parametrize("error", [ValueError("bad value"), OSError(errno.ENOENT, "No such file or directory", "a.png"),
                                   Image.DecompressionBombError("too many pixels")])
def test_user_errors_become_exit_code_2(error, capsys):
    with pytest.raises(typer.Exit) as exit:
        with report_user_errors():
            raise error
    assert exit.value.exit_code == 2
    printed = capsys.readouterr().err
    assert printed.startswith("error: ") and len(printed.strip().splitlines()) == 1


def test_an_os_error_reads_as_file_and_reason(capsys):
    with pytest.raises(typer.Exit):
        with report_user_errors():
            raise OSError(errno.ENOSPC, "No space left on device", "out.png")
    assert capsys.readouterr().err.strip() == "error: out.png: no space left on device"


# --- Cause 7: output paths are checked first --------------------------------------------------------------

def bad_paths(tmp_path):
    (tmp_path / "a-file.txt").write_text("x")
    (tmp_path / "folder").mkdir(exist_ok=True)
    return {
        "folder": (tmp_path / "folder", "is a folder"),
        "under a file": (tmp_path / "a-file.txt" / "x.png", "which is a file, not a folder"),
        "missing folder": (tmp_path / "missing" / "x.png", "does not exist; create it first"),
        "no suffix": (tmp_path / "picture", "has no suffix"),
    }


@pytest.mark.parametrize("case", ["folder", "under a file", "missing folder", "no suffix"])
def test_generate_checks_out_before_loading_the_model(case, tmp_path, no_expensive_work):
    path, message = bad_paths(tmp_path)[case]
    assert_sentence(run("generate", "a cat", "--region", "a cat", "--out", path), message)


def test_generate_out_must_be_a_png(tmp_path, no_expensive_work):
    assert_sentence(run("generate", "a cat", "--out", tmp_path / "x.jpg"), "must end in .png")


@pytest.mark.parametrize("case", ["folder", "under a file", "missing folder", "no suffix"])
def test_plan_checks_picture_before_planning(case, tmp_path, no_expensive_work):
    path, message = bad_paths(tmp_path)[case]
    assert_sentence(run("plan", "a cat", "--picture", path), message)


def test_bench_toyworld_checks_sheet_before_loading(tmp_path, no_expensive_work):
    assert_sentence(run("bench", "toyworld", "--quick", "--sheet", tmp_path), "is a folder")


def test_plan_checks_the_cache_folder_before_calling_the_llm(tmp_path, no_expensive_work):
    (tmp_path / "a-file").write_text("x")
    assert_sentence(run("plan", "a cat", "--llm", "openai:gpt-4o", "--cache-dir", tmp_path / "a-file"),
                    "is a file, not a folder")
    assert_sentence(run("plan", "a cat", "--llm", "openai:gpt-4o", "--cache-dir", tmp_path / "a-file" / "plans"),
                    "which is a file, not a folder")


def test_bench_plan_checks_the_cache_folder_before_planning(tmp_path, monkeypatch):
    import scenecraft.evaluation.plan_bench as plan_bench

    monkeypatch.setattr(plan_bench, "run_plan_bench", lambda *args, **kwargs: 1 / 0)
    (tmp_path / "a-file").write_text("x")
    assert_sentence(run("bench", "plan", "--planner", "llm:openai:gpt-4o", "--cache-dir", tmp_path / "a-file"),
                    "is a file, not a folder")


def test_an_unwritable_folder_is_reported_before_any_work(tmp_path, monkeypatch, no_expensive_work):
    import scenecraft.cli.errors as errors

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(errors.tempfile, "mkstemp", refuse)  # what a read-only folder does, even for root
    assert_sentence(run("plan", "a cat", "--picture", tmp_path / "x.png"),
                    f"cannot write into folder {tmp_path}: permission denied")


# --- Atomic writes ----------------------------------------------------------------------------------------

def failing_save(error):
    """An ``Image.save`` that writes half a PNG, then fails with ``error``."""
    def save(self, fp, format=None, **params):
        fp.write(b"\x89PNG\r\n\x1a\n half")
        raise error
    return save


def test_a_full_disk_is_a_sentence_and_leaves_the_old_picture_whole(tmp_path, monkeypatch):
    picture = tmp_path / "layout.png"
    assert run("plan", "a cat", "--picture", picture).exit_code == 0
    before = picture.read_bytes()
    monkeypatch.setattr(Image.Image, "save", failing_save(OSError(errno.ENOSPC, "No space left on device")))
    assert_sentence(run("plan", "a dog", "--picture", picture), f"cannot write {picture}: no space left on device")
    assert picture.read_bytes() == before and sorted(tmp_path.iterdir()) == [picture]


def test_an_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(Image.Image, "save", failing_save(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "x.png", Scene(prompt="a cat"), "a cat")
    assert list(tmp_path.iterdir()) == []


def test_atomic_writes_give_new_files_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = save_image(Image.new("RGB", (8, 8)), tmp_path / "x.png")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask and list(tmp_path.iterdir()) == [path]


# --- Cause 9: show on hostile PNGs ------------------------------------------------------------------------

def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(tmp_path, *chunks: bytes, width: int = 8, height: int = 8, name: str = "hostile.png"):
    """A PNG file of the given text chunks, with a header and no pixel data (``show`` never decodes pixels)."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    path = tmp_path / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + b"".join(chunks) + chunk(b"IEND", b""))
    return path


def text(key: str, value: str) -> bytes:
    return chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))


def test_show_refuses_a_decompression_bomb_without_decoding_it(tmp_path):
    bomb = png(tmp_path, text("parameters", "a cat"), width=100_000, height=100_000)
    assert_sentence(run("show", bomb), "100000x100000 pixels, more than the")


def test_show_cuts_a_huge_parameters_chunk_and_says_so(tmp_path):
    huge = png(tmp_path, text("parameters", "a cat, " * 500_000))  # 3.5 MB
    result = run("show", huge)
    assert result.exit_code == 0 and len(result.output) < MAX_TEXT_BYTES + 1000
    assert "it was cut there" in result.output


def test_show_cuts_a_compressed_bomb_in_a_text_chunk(tmp_path):
    inflated = zlib.compress(b"a" * 200_000_000, 9)  # 200 MB of text in about 200 kB
    bomb = png(tmp_path, chunk(b"iTXt", b"parameters\0\1\0\0\0" + inflated))
    result = run("show", bomb)
    assert result.exit_code == 0 and "it was cut there" in result.output
    assert read_metadata(bomb).cut == ("parameters",)


def test_show_refuses_a_huge_scene_chunk(tmp_path):
    huge = png(tmp_path, text("scenecraft.scene", '{"prompt": "' + "a" * 2_000_000 + '"}'))
    assert_sentence(run("show", huge), "longer than 1,000,000 bytes; it was not read")


def test_show_prints_escape_sequences_in_a_crafted_chunk_escaped(tmp_path):
    scene = Scene(prompt=f"a cat\x9b31m{ESC}[2J").to_json(indent=None)
    crafted = png(tmp_path, text("parameters", f"a cat{ESC}]0;pwned\x07{ESC}[2J\rSeed: 1"),
                  chunk(b"iTXt", b"scenecraft.scene\0\0\0\0\0" + scene.encode()))
    result = run("show", crafted)
    assert result.exit_code == 0, result.output
    assert ESC not in result.output and "\x9b" not in result.output and "\r" not in result.output
    assert "a cat\\x1b]0;pwned\\x07\\x1b[2J\\rSeed: 1" in result.output
    assert '"prompt": "a cat\\u009b31m\\u001b[2J"' in result.output


@pytest.mark.parametrize("content, message", [
    (b"not a png at all", "is not a PNG file"),
    (b"", "is not a PNG file"),
    (b"\x89PNG\r\n\x1a\n\0\0", "carries no scenecraft metadata"),  # cut short after the signature
])
def test_show_on_files_that_are_not_pngs(content, message, tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    assert_sentence(run("show", path), message)


def test_show_on_a_corrupt_compressed_chunk_or_a_bad_scene(tmp_path):
    corrupt = png(tmp_path, chunk(b"zTXt", b"parameters\0\0not zlib"), name="corrupt.png")
    assert_sentence(run("show", corrupt), "the parameters text of")
    bad = png(tmp_path, text("parameters", "a cat"), text("scenecraft.scene", "[1, 2"), name="bad-scene.png")
    assert_sentence(run("show", bad), f"the scene stored in {bad} is not valid: scene is not valid JSON")
    record = png(tmp_path, text("parameters", "a cat"), text("scenecraft.generation", "[1]"), name="record.png")
    assert_sentence(run("show", record), "is not a JSON object")
    deep = png(tmp_path, text("parameters", "a cat"), text("scenecraft.generation", "[" * 100_000), name="deep.png")
    assert_sentence(run("show", deep), "scenecraft.generation text of")


def test_read_metadata_reads_what_save_png_wrote(tmp_path):
    scene = Scene(prompt="猫 and a dog")
    path = save_png(Image.new("RGB", (8, 8)), tmp_path / "x.png", scene, "params", {"seed": 3})
    metadata = read_metadata(path)
    assert metadata.scene == scene and metadata.parameters == "params" and metadata.generation == {"seed": 3}
    assert metadata.cut == ()


# --- Cause 4: unbounded work is refused at the door, with the limit and how to raise it ----------------

@pytest.mark.parametrize("args, message", [
    (["a cat", "--width", "0"], "--width must be at least 8 pixels, got 0"),
    (["a cat", "--height", "4"], "--height must be at least 8 pixels"),
    (["a cat", "--width", "100000"], "more than the 16,384 pixels per side allowed (raise it with --limit max_side"),
    (["a cat", "--steps", "100000"], "num_inference_steps is 100,000, more than the 1000"),
    (["a cat", "-n", "100000"], "num_images is 100,000, more than the 64"),
    (["a cat", "--limit", "nope=3"], "--limit must be KEY=VALUE with KEY one of"),
    (["a cat", "--limit", "max_side=big"], "--limit max_side must be a whole number"),
    (["a cat", "--limit", "max_side=0"], "SceneLimits.max_side must be a positive integer"),
])
def test_generate_refuses_unbounded_work_before_loading(args, message, tmp_path, no_expensive_work):
    assert_sentence(run("generate", *args, "--out", tmp_path / "x.png"), message)


def _scene_file(tmp_path, **changes):
    data = {"prompt": "a cat", "width": 512, "height": 512, "regions": [{"prompt": "a cat", "box": [0, 0, 1, 1]}]}
    path = tmp_path / "scene.json"
    path.write_text(__import__("json").dumps(data | changes))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"width": 100000}, "width is 100000, more than the 16,384 pixels per side allowed (SceneLimits.max_side"),
    ({"width": 0}, "width must be a positive integer"),
    ({"regions": [{"prompt": "a cat", "box": [0, 0, 1, 1]}] * 10000}, "regions has 10,000 entries, more than the 256"),
    ({"prompt": "a cat " * 200_000}, "more than the 10,000"),
    ({"width": 16384, "height": 16384}, "more than the 67,108,864 pixels allowed (SceneLimits.max_pixels"),
])
def test_a_scene_file_cannot_bypass_the_limits(changes, message, tmp_path, no_expensive_work):
    result = run("generate", "--scene", _scene_file(tmp_path, **changes), "--out", tmp_path / "x.png")
    assert_sentence(result, message)


def test_limit_raises_a_scene_limit(tmp_path, no_expensive_work):
    wide = _scene_file(tmp_path, width=20000, height=64)
    assert_sentence(run("generate", "--scene", wide, "--out", tmp_path / "x.png"), "SceneLimits.max_side")
    raised = run("generate", "--scene", wide, "--limit", "max_side=32768", "--out", tmp_path / "x.png")
    assert isinstance(raised.exception, AssertionError) and "expensive work started" in str(raised.exception)
    assert raised.exit_code != 2  # past the door: the (forbidden) model load is what stopped it


def test_sampling_config_caps_steps_and_images():
    from scenecraft.generation.sampling import SamplingConfig

    SamplingConfig(num_inference_steps=1000, num_images=64).check()
    for bad in ({"num_inference_steps": 1001}, {"num_images": 65}):
        with pytest.raises(ValueError, match="more than"):
            SamplingConfig(**bad).check()
