"""scenecraft.batch in this process: reading batch files, hostile lines, the manifest, resuming, interrupts."""

import json
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from scenecraft.batch import BatchError, BatchInterrupted, Manifest, read_items, read_manifest, run_batch
from scenecraft.batch.items import MAX_SEED, seed_of
from scenecraft.imagefile import read_metadata
from scenecraft.scene import SceneLimits

STEPS = {"num_inference_steps": 2}


@pytest.fixture(scope="module")
def pipe():
    from scenecraft.generation import load_pipeline

    return load_pipeline("toyworld", device="cpu")


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def batch(pipe, file, out, **kwargs):
    return run_batch(file, out, pipe=pipe, settings=kwargs.pop("settings", STEPS), **kwargs)


def pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------- reading
def test_txt_lines_are_prompts_and_keys_seeds_and_names_are_stable(tmp_path):
    file = write(tmp_path / "p.txt", "a red circle", "", "# a comment", "  a blue square  ", "a red circle")
    items = read_items(file)
    assert [(i.index, i.line, i.prompt) for i in items] == [(0, 1, "a red circle"), (1, 4, "a blue square"),
                                                          (2, 5, "a red circle")]
    assert len({i.key for i in items}) == 3  # the repeated line is a second item, with its own key and seed
    assert [i.key for i in read_items(file)] == [i.key for i in items]
    assert all(i.seed == seed_of(i.key) and 0 <= i.seed <= MAX_SEED for i in items)
    assert items[0].output == f"00000-{items[0].key[:10]}.png"
    # the same prompt in a jsonl file is the same item: same key, same seed, same image
    same = read_items(write(tmp_path / "p.jsonl", '{"prompt": "a red circle"}'))
    assert same[0].key == items[0].key and same[0].seed == items[0].seed


def test_jsonl_lines_carry_a_scene_seed_method_config_and_id(tmp_path):
    scene = {"prompt": "two pets", "width": 64, "height": 64, "regions": [{"prompt": "a cat", "box": [0, 0, 0.5, 1]}]}
    file = write(tmp_path / "p.jsonl", json.dumps({"prompt": "a red circle", "seed": 7, "method": "layout",
                                                   "config": {"fast": True, "loss_scale": [1, 2]}, "id": "r-1"}),
                 json.dumps({"scene": scene}))
    first, second = read_items(file)
    assert (first.seed, first.method, first.config, first.id, first.error) == (7, "layout",
                                                                              {"fast": True, "loss_scale": (1, 2)},
                                                                              "r-1", None)
    assert second.scene["regions"][0]["box"] == [0, 0, 0.5, 1] and second.prompt == "two pets"


HOSTILE = [
    ("not json", "is not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('"a cat"', "must be a JSON object"),
    ('{"prompt": "a cat", "seed": ' + "9" * 500 + "}", "has 500 digits"),
    ('{"prompt": "a cat", "seed": 1e999}', "too large for a float"),
    ('{"prompt": "a cat", "seed": NaN}', "NaN"),
    ("[" * 100 + "]" * 100, "nests"),
    ('{"prompt": "a cat", "seed": -1}', '"seed" must be an integer'),
    ('{"prompt": "a cat", "seed": true}', '"seed" must be an integer'),
    (f'{{"prompt": "a cat", "seed": {MAX_SEED + 1}}}', '"seed" must be an integer'),
    ('{"prompt": "a cat", "colour": "red"}', "unknown field(s) 'colour'"),
    ('{"seed": 1}', 'needs a "prompt"'),
    ('{"prompt": ""}', '"prompt" must be a non-empty string'),
    ('{"prompt": 5}', '"prompt" must be a non-empty string'),
    ('{"prompt": "a cat", "config": [1]}', '"config" must be an object'),
    ('{"prompt": "a cat", "config": {"seed": 3}}', "may not set 'seed'"),
    ('{"prompt": "a cat", "id": {"a": 1}}', '"id" must be'),
    ('{"scene": {"prompt": "x", "regions": [{"prompt": "a", "box": [0.5, 0, 0.2, 1]}]}}', "is empty: need x0 < x1"),
    ('{"scene": {"prompt": "x", "width": 100000}}', "width is 100000"),
    ('{"scene": [1]}', "a scene must be a JSON object"),
]


def test_hostile_jsonl_lines_are_items_with_clear_errors(tmp_path):
    file = write(tmp_path / "p.jsonl", *(line for line, _ in HOSTILE))
    items = read_items(file)
    assert len(items) == len(HOSTILE)
    for item, (line, expected) in zip(items, HOSTILE):
        assert item.error is not None and expected in item.error, (line, item.error)
    assert len({i.key for i in items}) == len(items)


def test_undecodable_and_overlong_lines_are_refused_without_being_held(tmp_path):
    file = tmp_path / "p.jsonl"
    file.write_bytes(b'{"prompt": "\xff\xfe"}\n' + b'{"prompt": "' + b"a" * 300 + b'"}\n{"prompt": "a cat"}\n')
    bad_utf8, too_long, fine = read_items(file, limits=SceneLimits(max_json_chars=100))
    assert "not UTF-8" in bad_utf8.error
    assert "longer than the 100 characters" in too_long.error and too_long.line == 2
    assert fine.error is None and fine.line == 3


def test_files_that_cannot_be_a_batch_are_errors(tmp_path):
    with pytest.raises(BatchError, match="must end in .txt"):
        read_items(write(tmp_path / "p.csv", "a cat"))
    with pytest.raises(BatchError, match="holds no prompt"):
        read_items(write(tmp_path / "p.txt", "", "# nothing"))
    with pytest.raises(OSError):
        read_items(tmp_path / "missing.txt")


# ------------------------------------------------------------------------------------------- running
def test_a_batch_writes_pngs_with_their_scene_and_a_manifest_line_each(pipe, tmp_path):
    file = write(tmp_path / "p.jsonl", '{"prompt": "a red circle"}', '{"prompt": "a blue square", "seed": 11, "id": 4}')
    seen = []
    summary = batch(pipe, file, tmp_path / "out", progress=seen.append)
    assert (summary.done, summary.skipped, summary.failed, summary.items) == (2, 0, 0, 2)
    records = read_manifest(tmp_path / "out" / "manifest.jsonl")
    items = read_items(file)
    assert [r["key"] for r in records] == [i.key for i in items]
    for record, item in zip(records, items):
        assert record["status"] == "done" and record["error"] is None and record["output"] == item.output
        assert record["seed"] == item.seed == record["config"]["seed"] and record["model"] == "toyworld"
        assert record["config"]["num_inference_steps"] == 2 and record["method"] == "regional" and record["seconds"] > 0
        metadata = read_metadata(tmp_path / "out" / item.output)
        assert metadata.scene.prompt == item.prompt and metadata.scene.to_dict() == record["scene"]
        assert metadata.generation["seed"] == item.seed and metadata.generation["config"] == record["config"]
        assert f"Seed: {item.seed}," in metadata.parameters
    assert records[1]["id"] == 4 and records[1]["seed"] == 11
    # progress: items done of total, and the denoising steps of the item in hand
    assert seen[-1].finished == 2 and seen[-1].total == 2
    assert {(p.step, p.steps) for p in seen if p.step is not None} == {(1, 2), (2, 2)}


def test_a_batch_png_is_what_generate_writes_for_the_same_scene_and_seed(pipe, tmp_path):
    from scenecraft.cli import app

    file = write(tmp_path / "p.txt", "a green triangle above a yellow circle")
    batch(pipe, file, tmp_path / "out")
    [record] = read_manifest(tmp_path / "out" / "manifest.jsonl")
    (tmp_path / "scene.json").write_text(json.dumps(record["scene"]))
    result = CliRunner().invoke(app, ["generate", "--scene", str(tmp_path / "scene.json"), "--seed", str(record["seed"]),
                                      "--steps", "2", "--out", str(tmp_path / "generate.png")])
    assert result.exit_code == 0, result.output
    ours, theirs = read_metadata(tmp_path / "out" / record["output"]), read_metadata(tmp_path / "generate.png")
    assert (ours.scene, ours.parameters, ours.generation) == (theirs.scene, theirs.parameters, theirs.generation)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / record["output"])),
                                  np.asarray(Image.open(tmp_path / "generate.png")))


def test_failing_items_are_recorded_the_rest_render_and_failures_are_retried(pipe, tmp_path):
    file = write(tmp_path / "p.jsonl", '{"prompt": "a red circle"}',
                 '{"scene": {"prompt": "an impossible size", "width": 60, "height": 64}}',
                 '{"prompt": "a cat", "method": "layout+"}', "not json", '{"prompt": "a blue square"}')
    out = tmp_path / "out"
    summary = batch(pipe, file, out)
    assert (summary.done, summary.failed) == (2, 3)
    failed = {r["line"]: r["error"] for r in read_manifest(out / "manifest.jsonl") if r["status"] == "failed"}
    assert "line 2: width 60 is not a multiple of 8" in failed[2]
    assert failed[3].startswith("line 3: method layout+ runs on sd-gligen") and failed[4].startswith("line 4: text is")
    assert [e for _, e in summary.failures] == list(failed.values())
    again = batch(pipe, file, out)
    assert (again.done, again.skipped, again.failed) == (0, 2, 3)  # failed items are tried again, done ones not
    records = read_manifest(out / "manifest.jsonl")
    assert len(records) == 8 and sum(r["status"] == "done" for r in records) == 2


def test_a_rerun_skips_done_items_and_writes_nothing(pipe, tmp_path):
    file = write(tmp_path / "p.txt", "a red circle", "a blue square")
    out = tmp_path / "out"
    batch(pipe, file, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    summary = batch(pipe, file, out)
    assert (summary.done, summary.skipped, summary.failed) == (0, 2, 0)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_torn_last_manifest_line_is_cut_and_ignored(pipe, tmp_path):
    file = write(tmp_path / "p.txt", "a red circle", "a blue square")
    out = tmp_path / "out"
    batch(pipe, file, out)
    manifest = out / "manifest.jsonl"
    lines = manifest.read_bytes().splitlines(keepends=True)
    manifest.write_bytes(lines[0] + lines[1][:40])  # killed while writing the second line
    summary = batch(pipe, file, out)
    assert (summary.done, summary.skipped) == (1, 1)  # the second item's line was torn: it is rendered again
    records = read_manifest(manifest)
    assert [r["status"] for r in records] == ["done", "done"]
    assert all(json.loads(line) for line in manifest.read_text().splitlines())  # no torn fragment left


def test_a_done_item_whose_png_is_missing_is_rendered_again(pipe, tmp_path):
    file = write(tmp_path / "p.txt", "a red circle", "a blue square")
    out = tmp_path / "out"
    batch(pipe, file, out)
    first = read_items(file)[0]
    image = np.asarray(Image.open(out / first.output))
    (out / first.output).unlink()
    summary = batch(pipe, file, out)
    assert (summary.done, summary.skipped) == (1, 1)
    np.testing.assert_array_equal(np.asarray(Image.open(out / first.output)), image)  # same seed, same image
    assert [r["key"] for r in read_manifest(out / "manifest.jsonl")].count(first.key) == 2


def test_leftover_temp_files_are_removed_and_never_count(pipe, tmp_path):
    file = write(tmp_path / "p.txt", "a red circle")
    out = tmp_path / "out"
    out.mkdir()
    item = read_items(file)[0]
    (out / f".{item.output}.x1y2z3.part").write_bytes(b"\x89PNG half")
    summary = batch(pipe, file, out)
    assert summary.done == 1 and leftovers(out) == [] and pngs(out) == [item.output]


def test_a_folder_in_use_or_written_with_other_options_is_refused(pipe, tmp_path):
    file = write(tmp_path / "p.txt", "a red circle")
    out = tmp_path / "out"
    with Manifest(out):
        with pytest.raises(BatchError, match="in use by another batch"):
            batch(pipe, file, out)
    batch(pipe, file, out)
    with pytest.raises(BatchError, match=r"other options \(settings .*num_inference_steps.*: 2"):
        batch(pipe, file, out, settings={"num_inference_steps": 3})
    with pytest.raises(BatchError, match="fixed in a batch"):
        batch(pipe, file, tmp_path / "other", settings={"seed": 3})


def test_a_task_answered_twice_is_written_once(pipe, tmp_path, monkeypatch):
    import scenecraft.batch.run as run_module
    from scenecraft.batch.worker import BatchWorker, RenderSpec

    class Twice:
        """A renderer that answers every job twice, as a task Ray retried after its worker died may."""

        native_size, reports_steps = 64, False

        def __init__(self):
            self.local = run_module._LocalRenderer(BatchWorker(RenderSpec(settings=STEPS), pipe))

        def run(self, jobs, on_step):
            for rendered in self.local.run(jobs, None):
                yield rendered
                yield rendered

    @contextmanager
    def renderer(spec, given_pipe, ray):
        yield Twice()

    monkeypatch.setattr(run_module, "_renderer", renderer)
    file = write(tmp_path / "p.txt", "a red circle", "a blue square")
    summary = batch(pipe, file, tmp_path / "out")
    assert summary.done == 2
    assert len(read_manifest(tmp_path / "out" / "manifest.jsonl")) == 2


# ---------------------------------------------------------------------------------------- interrupts
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_denoising_stops_cleanly_and_a_rerun_finishes(pipe, tmp_path, signum):
    file = write(tmp_path / "p.txt", "a red circle", "a blue square", "a green triangle")
    out = tmp_path / "out"

    def progress(p):
        if p.finished == 1 and p.step == 1:
            signal.raise_signal(signum)

    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(BatchInterrupted) as stopped:
        batch(pipe, file, out, progress=progress)
    summary = stopped.value.summary
    assert stopped.value.signum == signum and summary.interrupted and (summary.done, summary.pending) == (1, 2)
    assert len(pngs(out)) == 1 and leftovers(out) == [] and len(read_manifest(out / "manifest.jsonl")) == 1
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored
    assert batch(pipe, file, out).done == 2


def test_a_signal_while_an_item_is_written_waits_for_its_manifest_line(pipe, tmp_path, monkeypatch):
    file = write(tmp_path / "p.txt", "a red circle", "a blue square")
    out = tmp_path / "out"
    append = Manifest.append

    def append_after_a_signal(self, record):
        signal.raise_signal(signal.SIGINT)  # arrives between the PNG's rename and its manifest line
        append(self, record)

    monkeypatch.setattr(Manifest, "append", append_after_a_signal)
    with pytest.raises(BatchInterrupted):
        batch(pipe, file, out)
    [record] = read_manifest(out / "manifest.jsonl")
    assert record["status"] == "done" and pngs(out) == [record["output"]] and leftovers(out) == []


def test_a_signal_during_the_png_write_leaves_no_temp_file(pipe, tmp_path, monkeypatch):
    import scenecraft.imagefile as imagefile

    file = write(tmp_path / "p.txt", "a red circle")
    out = tmp_path / "out"
    replace = imagefile.os.replace

    def interrupted_replace(source, target):
        raise BatchInterrupted(signal.SIGTERM)  # killed politely between the temp file's fsync and its rename

    monkeypatch.setattr(imagefile.os, "replace", interrupted_replace)
    with pytest.raises(BatchInterrupted):
        batch(pipe, file, out)
    monkeypatch.setattr(imagefile.os, "replace", replace)
    assert pngs(out) == [] and leftovers(out) == [] and read_manifest(out / "manifest.jsonl") == []
