import json
import math
import re

import pytest
import torch
from typer.testing import CliRunner

from scenecraft.cli import app
from scenecraft.evaluation import bench_regional
from scenecraft.evaluation.bench_regional import (FLUX1_DEV_CONFIG, SD15_UNET_CONFIG, SD35_MEDIUM_CONFIG,
                                                  flux_image_ids, grid_split, mmdit_config,
                                                  run_mmdit_regional_benchmark, run_regional_benchmark)
from scenecraft.generation import joint_attention
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


# --- flux and sd3 families -----------------------------------------------------------------------------------------

TINY = {"flux": FLUX1_DEV_CONFIG | {"num_attention_heads": 2, "attention_head_dim": 16, "axes_dims_rope": (4, 6, 6),
                                    "joint_attention_dim": 32, "pooled_projection_dim": 16},
        "sd3": SD35_MEDIUM_CONFIG | {"num_attention_heads": 2, "attention_head_dim": 16, "joint_attention_dim": 32,
                                     "caption_projection_dim": 32, "pooled_projection_dim": 16}}


@pytest.fixture
def masked_attention(monkeypatch):
    """Mask shapes of the regional processors' masked attention calls (diffusers' own processors never call it)."""
    lengths = []
    attend = joint_attention.attend

    def counting(query, key, value, mask):
        lengths.append(mask.shape)
        return attend(query, key, value, mask)

    monkeypatch.setattr(joint_attention, "attend", counting)
    return lengths


def test_real_configs_are_flux_dev_and_sd35_medium():
    assert FLUX1_DEV_CONFIG["num_attention_heads"] * FLUX1_DEV_CONFIG["attention_head_dim"] == 3072
    assert sum(FLUX1_DEV_CONFIG["axes_dims_rope"]) == FLUX1_DEV_CONFIG["attention_head_dim"]
    assert (FLUX1_DEV_CONFIG["num_layers"], FLUX1_DEV_CONFIG["num_single_layers"]) == (19, 38)
    width = SD35_MEDIUM_CONFIG["num_attention_heads"] * SD35_MEDIUM_CONFIG["attention_head_dim"]
    assert width == SD35_MEDIUM_CONFIG["caption_projection_dim"] == 1536
    assert SD35_MEDIUM_CONFIG["dual_attention_layers"] == tuple(range(13))


def test_mmdit_config_keeps_the_asked_blocks_and_their_dual_attention():
    assert (mmdit_config("flux")["num_layers"], mmdit_config("flux")["num_single_layers"]) == (1, 1)
    assert (mmdit_config("flux", (2,))["num_layers"], mmdit_config("flux", (2,))["num_single_layers"]) == (2, 2)
    assert mmdit_config("flux", (1, 3))["num_single_layers"] == 3
    assert mmdit_config("sd3")["num_layers"] == 2 and mmdit_config("sd3")["dual_attention_layers"] == (0, 1)
    assert mmdit_config("sd3", (20,))["dual_attention_layers"] == tuple(range(13))
    assert FLUX1_DEV_CONFIG["num_layers"] == 19  # the real config is left as it was
    for family, layers in (("flux", (20, 1)), ("flux", (1, 2, 3)), ("sd3", (25,)), ("sd3", (1, 1)), ("sd3", (0,))):
        with pytest.raises(ValueError, match=f"layers for {family} must be"):
            mmdit_config(family, layers)


def test_flux_image_ids_are_the_pipelines():
    from diffusers import FluxPipeline

    assert torch.equal(flux_image_ids(5), FluxPipeline._prepare_latent_image_ids(1, 5, 5, "cpu", torch.float32))


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_mmdit_benchmark_times_the_regional_processors_on_the_right_tokens(family, masked_attention):
    bench = run_mmdit_regional_benchmark(family, (2, 4), repeats=1, size=64, region_tokens=5, region_clip_tokens=(
        3 if family == "sd3" else None), config=TINY[family])
    base, slot = (512, 5) if family == "flux" else (77 + 256, 5 + 3)
    assert (bench.image_tokens, bench.plain_text_tokens, bench.region_slot_tokens) == (16, base, slot)
    assert bench.batch == (1 if family == "flux" else 2)
    assert [(r.regions, r.text_tokens) for r in bench.results] == [(2, base + 2 * slot), (4, base + 4 * slot)]
    assert all(math.isfinite(r.ratio) and r.ratio > 0 and r.plain_seconds > 0 for r in bench.results)
    # Flux: 1 double + 1 single block, SD3: 2 joint blocks; warm-ups, then one timed round.
    expected = [(16 + base + k * slot,) * 2 for _run in range(2) for k in (2, 4) for _layer in range(2)]
    assert masked_attention == expected


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_real_configs_at_the_default_size_run_shape_for_shape(family, masked_attention):
    """What the CLI times by default, on the meta device (shapes only: no memory, no compute)."""
    bench = run_mmdit_regional_benchmark(family, (16,), repeats=1, device="meta")
    slot = 24 if family == "flux" else 48
    assert (bench.image_tokens, bench.results[0].text_tokens) == (4096, bench.plain_text_tokens + 16 * slot)
    assert masked_attention == [(4096 + bench.plain_text_tokens + 16 * slot,) * 2] * 4


def test_mmdit_benchmark_rejects_bad_arguments():
    with pytest.raises(ValueError, match="multiple of 16"):
        run_mmdit_regional_benchmark("flux", (2,), size=72, config=TINY["flux"])
    with pytest.raises(ValueError, match="CLIP tokens of SD3"):
        run_mmdit_regional_benchmark("flux", (2,), size=64, region_clip_tokens=4, config=TINY["flux"])
    with pytest.raises(ValueError, match="family must be one of flux, sd3"):
        run_mmdit_regional_benchmark("sd", (2,), size=64)


def _run(*args):
    return CliRunner().invoke(app, ["bench", "regional", *args])


def test_cli_flux_prints_tokens_ratios_and_targets(monkeypatch, masked_attention):
    monkeypatch.setitem(bench_regional.MMDIT_CONFIGS, "flux", TINY["flux"])
    result = _run("--family", "flux", "--size", "64", "--regions", "2,16", "--repeats", "1", "--threads", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("FLUX.1-dev transformer, 1 of 19 double + 1 of 38 single blocks, random weights; "
                               "64x64, batch 1 (guidance-distilled, no CFG), cpu fp32, 1 threads, median of 1")
    assert lines[1] == ("tokens: 16 image; text 512 plain, 512 + K x 24 regional (24 T5 tokens per region slot, "
                        "a typical region prompt's own length)")
    step = r"(\d+\.\d\d s|\d+\.\d ms)/step"
    assert re.fullmatch(f"plain {step}", lines[2])
    assert re.fullmatch(rf" 2 regions  {step}  \d+\.\d\dx  560 text tokens", lines[3])
    assert re.fullmatch(rf"16 regions  {step}  \d+\.\d\dx  896 text tokens", lines[4])
    assert lines[5] == "targets: <= 1.15x at 4 regions, <= 1.3x at 16 (InstantX Regional-Prompting-FLUX: 3.5x at 16)"
    assert len(masked_attention) == 2 * 2 * 2


def test_cli_sd3_json(monkeypatch):
    monkeypatch.setitem(bench_regional.MMDIT_CONFIGS, "sd3", TINY["sd3"])
    result = _run("--family", "sd3", "--size", "64", "--regions", "4", "--repeats", "1", "--region-tokens", "24",
                  "--region-clip-tokens", "12", "--layers", "3", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["model"] == "SD3.5-medium transformer, 3 of 24 blocks (3 with dual attention), random weights"
    assert (payload["batch"], payload["image_tokens"], payload["plain_text_tokens"]) == (2, 16, 333)
    assert payload["region_slot_tokens"] == 36 and payload["results"][0]["text_tokens"] == 333 + 4 * 36
    assert payload["results"][0]["ratio"] > 0 and payload["dtype"] == "fp32" and payload["device"] == "cpu"
    assert payload["targets"].startswith("<= 1.15x at 4 regions")


def test_cli_sd_family_is_the_default_and_unchanged(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_UNET))
    args = ["--unet-config", str(config), "--size", "64", "--regions", "2", "--repeats", "1", "--threads", "1"]
    default, sd = _run(*args), _run("--family", "sd", *args)
    assert default.exit_code == sd.exit_code == 0, default.output + sd.output
    for result in (default, sd):
        assert re.fullmatch(r"config\.json UNet, 64x64, CFG batch 2, 1 threads, median of 1; plain \d+\.\d\d s/step\n"
                            r" 2 regions  \d+\.\d\d s/step  \d+\.\d\dx\n", result.output)
    payload = json.loads(_run("--family", "sd", *args, "--json").output)
    assert set(payload) == {"unet", "size", "threads", "repeats", "base_ratio", "plain_seconds_per_step", "results"}
    assert set(payload["results"][0]) == {"regions", "seconds_per_step", "ratio"}


@pytest.mark.parametrize(("args", "message"), [
    (["--family", "xl"], "error: --family must be one of sd, flux, sd3; got 'xl'"),
    (["--layers", "2"], "error: --layers set the flux and sd3 benchmarks; --family sd times the SD 1.5 UNet"),
    (["--family", "flux", "--layers", "1,2,3"], "error: layers for flux must be DOUBLE,SINGLE block counts"),
    (["--family", "flux", "--region-clip-tokens", "4"], "error: region_clip_tokens sets the CLIP tokens of SD3"),
    (["--family", "sd3", "--repeats", "0"], "error: --repeats must be at least 1; got 0"),
])
def test_cli_bad_options_are_one_sentence(args, message, monkeypatch):
    monkeypatch.setitem(bench_regional.MMDIT_CONFIGS, "flux", TINY["flux"])
    result = _run("--size", "64", "--regions", "2", "--repeats", "1", *args)
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
