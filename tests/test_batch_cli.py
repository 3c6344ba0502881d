"""``scenecraft batch`` as a user runs it: killed with SIGKILL and resumed, stopped with Ctrl-C, mistakes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scenecraft.batch import read_items, read_manifest
from scenecraft.cli import app
from scenecraft.imagefile import read_metadata

COMMAND = [sys.executable, "-c", "from scenecraft.cli import main; main()", "batch"]
PROMPTS = ["a red circle", "a blue square", "a green triangle", "two yellow circles", "a purple square",
           "a red circle to the left of a blue square", "a green circle above a yellow triangle", "a red circle"]
IMPOSSIBLE = json.dumps({"scene": {"prompt": "an impossible size", "width": 60, "height": 64}})
runner = CliRunner()


def start(file: Path, out: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen([*COMMAND, str(file), "--out", str(out), *options], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"COLUMNS": "200"})


def wait_for_done(out: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> int:
    """Poll the manifest until it has ``count`` done lines (or the process ended); how many it has."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(r["status"] == "done" for r in read_manifest(out / "manifest.jsonl"))
        if done >= count or process.poll() is not None:
            return done
        time.sleep(0.01)
    raise AssertionError("the batch did not get going")


def check_consistent(out: Path) -> list[dict]:
    """Every manifest line whole, no temporary file, and a PNG for every done line."""
    text = (out / "manifest.jsonl").read_text()
    assert text == "" or text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert all((out / r["output"]).is_file() for r in records if r["status"] == "done")
    return records


def test_a_batch_killed_mid_run_resumes_and_renders_every_prompt_once(tmp_path):
    lines = [json.dumps({"prompt": p}) for p in PROMPTS[:4]] + [IMPOSSIBLE, "not json"] + [
        json.dumps({"prompt": p}) for p in PROMPTS[4:]]
    file = tmp_path / "prompts.jsonl"
    file.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    options = ["--steps", "8"]
    process = start(file, out, *options)
    done_at_kill = wait_for_done(out, 1, process)
    process.kill()
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL and 1 <= done_at_kill < len(PROMPTS), "killed after it finished"
    check_consistent(out)

    result = runner.invoke(app, ["batch", str(file), "--out", str(out), *options])
    assert result.exit_code == 3, result.output  # some lines failed: exit code 3, and the rest rendered
    records = check_consistent(out)
    items = read_items(file)
    good = [i for i in items if i.prompt in PROMPTS and i.scene is None]
    done = [r for r in records if r["status"] == "done"]
    assert sorted(r["key"] for r in done) == sorted(i.key for i in good)  # one done line per prompt
    assert sorted(p.name for p in out.glob("*.png")) == sorted(i.output for i in good)  # one PNG each
    for item in good:
        assert read_metadata(out / item.output).scene.prompt == item.prompt
    assert len({i.key for i in good}) == len(PROMPTS)  # "a red circle" twice: two items, two images
    failed = {r["line"]: r["error"] for r in records if r["status"] == "failed"}
    assert "width 60 is not a multiple of 8" in failed[5] and "not valid JSON" in failed[6]
    assert f"{len(PROMPTS) - done_at_kill} done, {done_at_kill} skipped, 2 failed of {len(items)}" in result.output

    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    again = runner.invoke(app, ["batch", str(file), "--out", str(out), *options])
    assert f"0 done, {len(PROMPTS)} skipped, 2 failed" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == before
    assert sum(r["status"] == "done" for r in check_consistent(out)) == len(PROMPTS)


def test_ctrl_c_stops_a_batch_cleanly_and_says_how_to_resume(tmp_path):
    file = tmp_path / "prompts.txt"
    file.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "out"
    process = start(file, out, "--steps", "8")
    assert wait_for_done(out, 1, process) < len(PROMPTS)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted by SIGINT" in stderr
    assert "run the same command again to resume" in stderr and "skipped" in stdout
    records = check_consistent(out)
    assert all(r["status"] == "done" for r in records) and len({r["key"] for r in records}) == len(records)


@pytest.mark.parametrize("args, message", [
    (["--workers", "2"], "--workers needs --ray"),
    (["--ray", "--workers", "0"], "--workers must be at least 1"),
    (["--set", "nonsense=1"], "has no setting nonsense"),
    (["--set", "seed=1"], "fixed in a batch"),
    (["--layout", "grid"], "layout must be one of"),
    (["--width", "4"], "--width must be at least 8"),
])
def test_mistakes_are_one_sentence_and_exit_code_2(tmp_path, args, message):
    file = tmp_path / "prompts.txt"
    file.write_text("a red circle\n")
    result = runner.invoke(app, ["batch", str(file), "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_files_and_folders_that_cannot_be_used_are_refused(tmp_path):
    (tmp_path / "prompts.csv").write_text("a red circle\n")
    result = runner.invoke(app, ["batch", str(tmp_path / "prompts.csv"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "must end in .txt" in result.output
    (tmp_path / "prompts.txt").write_text("a red circle\n")
    (tmp_path / "a-file").write_text("")
    result = runner.invoke(app, ["batch", str(tmp_path / "prompts.txt"), "--out", str(tmp_path / "a-file")])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output


def test_without_ray_installed_the_error_says_how_to_install_it(monkeypatch):
    from scenecraft.batch import BatchError
    from scenecraft.batch.distributed import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BatchError, match=r"pip install 'scenecraft\[ray\]'"):
        import_ray()
