import json

from typer.testing import CliRunner

from scenecraft.cli import app
from scenecraft.evaluation.bench_regional import SD15_UNET_CONFIG, grid_split, run_regional_benchmark
from scenecraft.scene import parse_split

TINY_UNET = SD15_UNET_CONFIG | {"block_out_channels": [32, 32, 64, 64], "cross_attention_dim": 32, "norm_num_groups": 8}


def test_grid_split_has_exactly_the_requested_cells():
    for regions in (1, 2, 3, 4, 6, 8, 9, 12, 16, 17):
        assert parse_split(grid_split(regions)).num_regions == regions
    assert grid_split(4) == "1,1,1;1,1,1"


def test_benchmark_times_every_region_count_against_one_plain_figure():
    results = run_regional_benchmark((2, 4), repeats=1, size=64, unet_config=TINY_UNET)
    assert [r.regions for r in results] == [2, 4]
    assert len({r.plain_seconds for r in results}) == 1
    assert all(r.seconds > 0 and r.ratio == r.seconds / r.plain_seconds for r in results)


def test_cli_json(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_UNET))
    result = CliRunner().invoke(app, ["bench", "regional", "--unet-config", str(config), "--size", "64",
                                      "--regions", "2,16", "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert [row["regions"] for row in payload["results"]] == [2, 16]
    assert payload["threads"] >= 1 and payload["size"] == 64
