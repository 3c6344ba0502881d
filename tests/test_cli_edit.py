"""``scenecraft edit`` in-process (typer's CliRunner): chains, --undo bit for bit, --show-history, a foreign picture
with --scene, and every mistake as one ``error:`` sentence with exit code 2, found before the model loads."""

import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from scenecraft.cli import app
from scenecraft.imagefile import HISTORY_KEY, read_history, read_metadata
from scenecraft.scene import Box, Region, Scene

runner = CliRunner()
LEFT, RIGHT = (0.05, 0.25, 0.45, 0.75), (0.55, 0.25, 0.95, 0.75)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def two(left="a red circle", right="a blue square"):
    regions = [Region(left, Box(*LEFT)), Region(right, Box(*RIGHT))]
    return Scene(prompt=f"{left} and {right}", width=64, height=64, regions=regions)


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module", autouse=True)
def one_load():
    """Every command loads its model; here the real loader runs once per model and the rest reuse its pipeline."""
    import scenecraft.generation as generation

    real, loaded = generation.load_pipeline, {}

    def load_once(model, **kwargs):
        if str(model) not in loaded:
            loaded[str(model)] = real(model, **kwargs)
        return loaded[str(model)]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generation, "load_pipeline", load_once)
        yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-edit")


def generated(folder, name, scene, steps):
    (folder / f"{name}.json").write_text(scene.to_json())
    result = run("generate", "--scene", folder / f"{name}.json", "--steps", steps, "--seed", 3, "--out",
                 folder / f"{name}.png")
    assert result.exit_code == 0, result.output
    return folder / f"{name}.png"


@pytest.fixture(scope="module")
def drawn(folder):
    return generated(folder, "g", two(), 6)


def test_edit_chains_then_undo_gives_the_same_scene_and_pixels_bit_for_bit(drawn, folder):
    first = run("edit", drawn, "make the circle green", "--out", folder / "e1.png")
    assert first.exit_code == 0, first.output
    assert "round 1: 'make the circle green' (seed 3)" in first.output
    assert "r1 'a red circle' -> 'a green circle'" in first.output and "replayed round 0" in first.output
    second = run("edit", folder / "e1.png", "remove the square", "--out", folder / "e2.png")
    assert second.exit_code == 0, second.output
    assert "removed r2 'a blue square'" in second.output and "replayed rounds 0-1 (2 renders)" in second.output
    rounds = read_history(folder / "e2.png")["history"]["rounds"]
    assert [r["instruction"] for r in rounds] == [None, "make the circle green", "remove the square"]
    assert [r.prompt for r in read_metadata(folder / "e2.png").scene.regions] == ["a green circle"]

    undone = run("edit", folder / "e2.png", "--undo", "--out", folder / "u1.png")
    assert undone.exit_code == 0, undone.output
    assert "undid round 2 ('remove the square'): back to round 1, the same pixels bit for bit" in undone.output
    np.testing.assert_array_equal(pixels(folder / "u1.png"), pixels(folder / "e1.png"))
    assert read_metadata(folder / "u1.png").scene == read_metadata(folder / "e1.png").scene
    assert read_history(folder / "u1.png") == read_history(folder / "e1.png")

    shown = run("edit", folder / "e2.png", "--show-history")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith("round 0: 'a red circle and a blue square' (drawn by scenecraft; regional, toyworld")
    assert "round 1: 'make the circle green' (seed 3, over the replay)" in lines
    assert "  removed r2 'a blue square'" in lines


def test_a_foreign_picture_edits_with_its_scene(folder):
    from scenecraft.generation.editing import pixel_change
    from scenecraft.toyworld.render import render_scene as draw_toy
    from scenecraft.toyworld.score import score_image

    world = draw_toy([("red", "circle"), ("blue", "square")], seed=2)
    Image.fromarray(world.image).save(folder / "foreign.png")
    boxes = [[v / 64 for v in (max(x0 - 2, 0), max(y0 - 2, 0), min(x1 + 2, 64), min(y1 + 2, 64))]
             for x0, y0, x1, y1 in (o.bbox for o in world.objects)]
    scene = {"prompt": "a red circle and a blue square", "width": 64, "height": 64,
             "regions": [{"prompt": "a red circle", "box": boxes[0]}, {"prompt": "a blue square", "box": boxes[1]}]}
    (folder / "foreign.json").write_text(json.dumps(scene))
    result = run("edit", folder / "foreign.png", "make the square green", "--scene", folder / "foreign.json",
                 "--steps", 8, "--seed", 0, "--out", folder / "foreign-1.png")
    assert result.exit_code == 0, result.output
    assert "round 0 is a picture scenecraft did not draw" in result.output
    assert "boxes: 0 reused, 2 drawn again" in result.output
    mask = np.zeros((64, 64), np.float32)
    x0, y0, x1, y1 = (round(v * 64) for v in boxes[1])
    mask[max(y0 - 8, 0):y1 + 8, max(x0 - 8, 0):x1 + 8] = 1  # the box and the latent cells the mask grows by
    change = pixel_change(world.image, pixels(folder / "foreign-1.png"), mask)
    assert change["outside_max"] <= 1 and change["inside_mean"] > 1
    found = score_image(pixels(folder / "foreign-1.png"))
    assert sorted((d.color, d.shape) for d in found) == [("green", "square"), ("red", "circle")]
    assert read_metadata(folder / "foreign-1.png").generation["edit"]["origin"] == "picture"


@pytest.fixture(scope="module")
def bad_files(folder, drawn):
    Image.new("RGB", (64, 64)).save(folder / "plain.png")
    (folder / "bad-edits.json").write_text('[{"op": "explode"}]')
    (folder / "deep-edits.json").write_text("[" * 100 + "]" * 100)
    info = PngImagePlugin.PngInfo()
    metadata = read_metadata(drawn)
    info.add_itxt("scenecraft.scene", metadata.scene.to_json())
    info.add_itxt("scenecraft.generation", json.dumps(metadata.generation))
    info.add_itxt(HISTORY_KEY, json.dumps({"version": 1, "rounds": "\x1b[31mred"}), zip=True)
    Image.open(drawn).save(folder / "hostile.png", pnginfo=info)
    (folder / "scene.json").write_text(two().to_json())
    return folder


@pytest.mark.parametrize("args, words", [
    (["{g}", "--undo", "--out", "{o}"], "nothing to undo: this picture is round 0"),
    (["{plain}", "make the circle blue", "--out", "{o}"], "carries no scenecraft scene: give the scene it shows"),
    (["{hostile}", "make the circle blue", "--out", "{o}"], "history stored in"),
    (["{g}", "--edits", "{bad}", "--out", "{o}"], "unknown edit op 'explode'"),
    (["{g}", "--edits", "{deep}", "--out", "{o}"], "edits nests 65 levels deep"),
    (["{g}", "frobnicate the moon", "--out", "{o}"], "frobnicate"),
    (["{g}", "remove the dragon", "--out", "{o}"], "dragon"),
    (["{g}", "--out", "{o}"], "give one of: an instruction"),
    (["{g}", "make the circle blue", "--undo", "--out", "{o}"], "got an instruction and --undo"),
    (["{g}", "make the circle blue"], "give --out OUT.png"),
    (["{g}", "make the circle blue", "--method", "layout", "--out", "{o}"], "--method: only for a picture"),
    (["{g}", "make the circle blue", "--out", "{jpg}"], "must end in .png"),
    (["{plain}", "--undo", "--scene", "{scene}", "--out", "{o}"], "--undo steps back through a picture's own"),
    (["{g}", "--show-history", "--undo"], "--show-history prints the rounds"),
])
def test_mistakes_are_one_sentence_with_exit_code_2(bad_files, drawn, args, words):
    names = {"g": drawn, "plain": bad_files / "plain.png", "hostile": bad_files / "hostile.png",
             "bad": bad_files / "bad-edits.json", "deep": bad_files / "deep-edits.json", "o": bad_files / "o.png",
             "jpg": bad_files / "o.jpg", "scene": bad_files / "scene.json"}
    result = run("edit", *(arg.format(**names) for arg in args))
    assert result.exit_code == 2, result.output
    assert words in result.output and result.output.count("error:") == 1 and "Traceback" not in result.output
    assert "\x1b[31m" not in result.output and not (bad_files / "o.png").exists()


def test_an_ambiguous_instruction_names_the_candidates(folder):
    path = generated(folder, "circles", two(right="a red circle"), 2)
    result = run("edit", path, "make the circle blue", "--out", folder / "o.png")
    assert result.exit_code == 2 and "'the circle' could be 2 regions: r1 'a red circle' (left)" in result.output
