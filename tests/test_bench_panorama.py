import json

from typer.testing import CliRunner

from scenecraft.cli import app
from scenecraft.evaluation.bench_panorama import SD15_VAE_CONFIG, bench_pipeline, run_panorama_benchmark, summary
from scenecraft.evaluation.bench_regional import SD15_UNET_CONFIG

TINY_UNET = SD15_UNET_CONFIG | {"block_out_channels": [32, 32, 64, 64], "cross_attention_dim": 32, "norm_num_groups": 8,
                                "sample_size": 8}
TINY_VAE = SD15_VAE_CONFIG | {"block_out_channels": [8, 8, 16, 16], "norm_num_groups": 4, "layers_per_block": 1}


def test_window_counts_follow_the_layout_and_the_fast_option_needs_fewer():
    pipe = bench_pipeline(TINY_UNET, TINY_VAE)
    runs = run_panorama_benchmark(pipe, (64, 512), steps=2, view_batch_size=4)
    by = {(r.mode, r.width): r for r in runs}
    # This UNet's window is 8 latent px, as is the default stride: 512 px (64 columns) is 8 windows a step,
    # batching packs them 4 to a call, and SpotDiffusion's shifted tiles need at most one more.
    assert by["default", 512].window_evaluations == by["batched", 512].window_evaluations == 2 * 8
    assert by["default", 512].unet_calls == 16 and by["batched", 512].unet_calls == 4
    assert by["fast", 512].window_evaluations <= 2 * 9
    assert by["default", 64].window_evaluations == 2  # one window: the plain pipeline
    figures = summary(runs, [])
    assert figures["default_cost_per_pixel_512_over_64"] > 0 and "fast_fewer_windows_512" in figures


def test_cli_json_with_decoding(tmp_path):
    unet, vae = tmp_path / "unet.json", tmp_path / "vae.json"
    unet.write_text(json.dumps(TINY_UNET))
    vae.write_text(json.dumps(TINY_VAE))
    result = CliRunner().invoke(app, ["bench", "panorama", "--unet-config", str(unet), "--vae-config", str(vae),
                                      "--widths", "64,128", "--modes", "default,fast", "--steps", "1", "--json",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert {(r["mode"], r["width"]) for r in payload["runs"]} == {(m, w) for m in ("default", "fast") for w in (64, 128)}
    assert {(d["width"], d["tiled"]) for d in payload["decodes"]} == {(w, t) for w in (64, 128) for t in (True, False)}
    assert all(d["peak_mib"] > 0 and d["seconds"] > 0 for d in payload["decodes"])
    assert "tiled_decode_peak_128_over_64" in payload and payload["device"] == "cpu"
