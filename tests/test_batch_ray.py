"""Batches on a local Ray instance (2 CPUs, 2 workers): the same images and manifest as in one process,
written once when a worker dies mid-run; and ``scenecraft bench batch``."""

import json
import os
import re
import signal

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from scenecraft.batch import RayOptions, read_items, read_manifest, run_batch

ray = pytest.importorskip("ray")
STEPS = {"num_inference_steps": 3}
# Image differences allowed between processes (CPUs may pick other kernels): 2/255.
TOLERANCE = 2


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pipe():
    from scenecraft.generation import load_pipeline

    return load_pipeline("toyworld", device="cpu")


@pytest.fixture
def prompts(tmp_path):
    file = tmp_path / "prompts.jsonl"
    file.write_text("\n".join([
        json.dumps({"prompt": "a red circle to the left of a blue square"}),
        json.dumps({"prompt": "two yellow circles", "method": "layout", "seed": 5}),
        json.dumps({"scene": {"prompt": "an impossible size", "width": 60, "height": 64}}),
        json.dumps({"prompt": "a green triangle"}),
        json.dumps({"prompt": "a purple square above a red circle"}),
    ]) + "\n")
    return file


def test_ray_renders_the_same_images_and_manifest_as_one_process_even_when_a_worker_dies(local_ray, pipe, prompts,
                                                                                          tmp_path, monkeypatch):
    import scenecraft.batch.distributed as distributed

    renderers = []
    original_init = distributed.RayRenderer.__init__

    def keep(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        renderers.append(self)

    monkeypatch.setattr(distributed.RayRenderer, "__init__", keep)
    killed = []

    def kill_a_worker(progress):
        if progress.finished == 1 and not killed:  # SIGKILL one worker's process while it holds items
            os.kill(renderers[0].pids[0], signal.SIGKILL)
            killed.append(renderers[0].pids[0])

    on_ray = run_batch(prompts, tmp_path / "ray", settings=STEPS, ray=RayOptions(workers=2), progress=kill_a_worker)
    assert killed and len(set(renderers[0].devices)) == 1
    here = run_batch(prompts, tmp_path / "here", settings=STEPS, pipe=pipe)
    assert (on_ray.done, on_ray.failed) == (here.done, here.failed) == (4, 1)

    def done(folder):
        return {r["key"]: r for r in read_manifest(folder / "manifest.jsonl") if r["status"] == "done"}

    ray_done, here_done = done(tmp_path / "ray"), done(tmp_path / "here")
    assert len(read_manifest(tmp_path / "ray" / "manifest.jsonl")) == 5  # each item written once, worker death or not
    assert ray_done.keys() == here_done.keys() == {i.key for i in read_items(prompts) if i.scene is None}
    for key, record in here_done.items():
        assert ray_done[key]["seed"] == record["seed"] and ray_done[key]["config"] == record["config"]
        assert ray_done[key]["scene"] == record["scene"] and ray_done[key]["output"] == record["output"]
        a = np.asarray(Image.open(tmp_path / "here" / record["output"]), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "ray" / record["output"]), dtype=np.int16)
        assert np.abs(a - b).max() <= TOLERANCE
    # a Ray batch's folder is resumed like any other, here or on Ray: nothing left but the failed line
    again = run_batch(prompts, tmp_path / "ray", settings=STEPS, pipe=pipe)
    assert (again.done, again.skipped, again.failed) == (0, 4, 1)


def test_more_workers_than_the_cluster_has_is_an_error(local_ray, prompts, tmp_path):
    from scenecraft.batch import BatchError

    with pytest.raises(BatchError, match="3 workers each take at least one CPU, but the Ray cluster has 2"):
        run_batch(prompts, tmp_path / "out", settings=STEPS, ray=RayOptions(workers=3))


def test_bench_batch_prints_its_figures(local_ray):
    from scenecraft.cli import app

    result = CliRunner().invoke(app, ["bench", "batch", "--prompts", "2", "--steps", "2"])
    assert result.exit_code == 0, result.output
    single = re.search(r"1 process +([\d.]+) images/min", result.output)
    on_ray = re.search(r"Ray, 2 workers +([\d.]+) images/min .* ([\d.]+)x", result.output)
    overhead = re.search(r"overhead ([\d.]+) ms/item, ([\d.]+)% of an image", result.output)
    same = re.search(r"max pixel difference (\d+)/255", result.output)
    assert single and on_ray and overhead and same, result.output
    assert float(single[1]) > 0 and float(on_ray[1]) > 0 and float(on_ray[2]) > 0  # images/min and the ratio
    assert float(overhead[1]) > 0 and float(overhead[2]) > 0 and int(same[1]) <= TOLERANCE
