import json

from typer.testing import CliRunner

from scenecraft.cli import app
from scenecraft.evaluation.bench_layout import bench_pipeline, grid_boxes, run_layout_benchmark
from scenecraft.evaluation.bench_regional import SD15_UNET_CONFIG

TINY_UNET = SD15_UNET_CONFIG | {"block_out_channels": [32, 32, 64, 64], "cross_attention_dim": 32, "norm_num_groups": 8}


def test_grid_boxes_are_disjoint_and_inside_the_canvas():
    for count in (1, 2, 3, 4, 8):
        boxes = grid_boxes(count)
        assert len(boxes) == count and all(0 <= b.x0 < b.x1 <= 1 and 0 <= b.y0 < b.y1 <= 1 for b in boxes)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0


def test_benchmark_times_plain_layout_and_fast_at_each_box_count():
    rows = run_layout_benchmark((1, 2), steps=4, size=64, pipe=bench_pipeline(TINY_UNET))
    assert [r.boxes for r in rows] == [1, 2]
    for row in rows:
        assert set(row.seconds) == {"plain", "layout", "layout-fast"} and all(s > 0 for s in row.seconds.values())
        assert row.ratio("layout") == row.seconds["layout"] / row.seconds["plain"]
        assert all(mb >= 0 for mb in row.peak_mb.values())


def test_cli_json(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_UNET))
    result = CliRunner().invoke(app, ["bench", "layout", "--unet-config", str(config), "--size", "64", "--steps", "3",
                                      "--boxes", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["results"][0]["boxes"] == 2 and set(payload["results"][0]["ratio"]) == {"layout", "layout-fast"}
