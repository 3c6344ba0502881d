"""Editing a picture round by round (``scenecraft.edit_session``): the history in the PNG, exact replays, undo,
foreign pictures, hostile records. Pictures are drawn by the shipped toy-world model at 64 px and few steps;
images are compared bit for bit only within this process and one load path."""

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from scenecraft.edit_session import (
    EditSessionError, RoundRender, describe_changes, history_lines, open_picture, pixel_hash, plan_round,
    read_record, render_round, save_picture, start_record, undo_round,
)
from scenecraft.imagefile import HISTORY_KEY, MAX_TEXT_BYTES, PngReadError, read_history, read_metadata
from scenecraft.scene import Box, Region, Scene, SceneError

STEPS = 6
LEFT, RIGHT = (0.05, 0.25, 0.45, 0.75), (0.55, 0.25, 0.95, 0.75)


@pytest.fixture(scope="module")
def toy():
    from scenecraft.generation import load_pipeline

    return load_pipeline("toyworld")


def two(left="a red circle", right="a blue square"):
    regions = [Region(p, Box(*b)) for p, b in ((left, LEFT), (right, RIGHT)) if p is not None]
    return Scene(prompt=" and ".join(r.prompt for r in regions), width=64, height=64, regions=regions)


def draw(pipe, path, scene, *, method="regional", seed=3, steps=STEPS):
    """A PNG as ``scenecraft generate`` writes it (the same functions)."""
    from scenecraft.cli.generate import method_config
    from scenecraft.generation.methods import generate
    from scenecraft.imagefile import image_metadata, save_png

    config = method_config(method, "toyworld", [], steps=steps, seed=seed, num_images=1)
    result = generate(pipe, scene, config, method=method)
    save_png(result.images[0], path, result.scene, *image_metadata(result, 0, "toyworld"))
    return path


def pixels(path_or_image):
    image = Image.open(path_or_image) if not isinstance(path_or_image, Image.Image) else path_or_image
    return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def drawn(toy, tmp_path_factory):
    return draw(toy, tmp_path_factory.mktemp("drawn") / "g.png", two())


# ----------------------------------------------------------------------------------------------- exactness
def test_edit_chains_and_undo_gives_the_same_scene_and_pixels_bit_for_bit(toy, drawn, tmp_path):
    first = read_record(drawn)
    assert first.round == 0 and first.record.replayable and first.notes == ()
    one = render_round(toy, first, plan_round(first, "make the circle green"))
    assert one.exact and one.renders == 2 and any("replayed round 0 (1 render)" in n for n in one.notes)
    save_picture(one.session, tmp_path / "e1.png")

    again = read_record(tmp_path / "e1.png")  # a new reader: nothing kept in memory, so the rounds replay
    two_ = render_round(toy, again, plan_round(again, "remove the square"))
    assert two_.exact and two_.renders == 3
    save_picture(two_.session, tmp_path / "e2.png")
    stored = read_history(tmp_path / "e2.png")
    rounds = stored["history"]["rounds"]
    assert [r["instruction"] for r in rounds] == [None, "make the circle green", "remove the square"]
    assert [r["edits"] for r in rounds[1:]] == [
        [{"op": "change_attribute", "id": "r1", "attribute": "colour", "value": "green"}],
        [{"op": "remove", "id": "r2"}]]
    assert [r["seed"] for r in rounds] == [3, 3, 3] and len(stored["renders"]) == 3
    assert read_metadata(tmp_path / "e2.png").scene == two_.session.scene  # `scenecraft show` reads the scene

    back = undo_round(toy, read_record(tmp_path / "e2.png"))
    assert back.exact and back.renders == 2
    np.testing.assert_array_equal(pixels(back.session.picture), pixels(tmp_path / "e1.png"))
    assert back.session.scene == again.scene and back.session.record.to_dict() == again.record.to_dict()
    save_picture(back.session, tmp_path / "u1.png")
    for name in ("scene", "parameters", "generation"):
        assert getattr(read_metadata(tmp_path / "u1.png"), name) == getattr(read_metadata(tmp_path / "e1.png"), name)

    start = undo_round(toy, back.session)  # its results are kept: no drawing at all
    assert start.exact and start.renders == 0
    np.testing.assert_array_equal(pixels(start.session.picture), pixels(drawn))
    save_picture(start.session, tmp_path / "u0.png")
    assert read_metadata(tmp_path / "u0.png").generation == read_metadata(drawn).generation  # as generate wrote it
    assert read_metadata(tmp_path / "u0.png").scene == read_metadata(drawn).scene
    with pytest.raises(EditSessionError, match="nothing to undo: this picture is round 0"):
        undo_round(toy, start.session)


def test_a_picture_changed_after_it_was_written_is_edited_over_its_pixels(toy, drawn, tmp_path):
    session = read_record(drawn)
    one = render_round(toy, session, plan_round(session, "remove the square"))
    changed = pixels(one.session.picture).copy()
    changed[0, 0] = (changed[0, 0].astype(int) + 7) % 256
    one.session.picture = Image.fromarray(changed)
    save_picture(one.session, tmp_path / "changed.png")
    later = read_record(tmp_path / "changed.png")
    out = render_round(toy, later, plan_round(later, "make the circle green"))
    assert not out.exact and out.renders == 1 and "not the ones its history recorded" in out.notes[0]
    assert "drawn over the picture's pixels" in out.notes[0] and out.session.record.renders[-1].over == "pixels"
    assert tuple(pixels(out.session.picture)[0, 0]) == tuple(changed[0, 0])  # outside the mask: pasted back


def test_layout_reuses_the_kept_box_and_keeps_the_outside(toy, tmp_path):
    from scenecraft.generation.editing import pixel_change

    path = draw(toy, tmp_path / "layout.png", two(), method="layout", seed=0, steps=3)
    session = read_record(path)
    plan = plan_round(session, "make the square green")
    out = render_round(toy, session, plan)
    assert out.exact and (out.result.box_hits, out.result.box_misses) == (1, 1)  # the circle's pass is reused
    mask = plan.diff.edit_mask(64, 64).astype(np.float32)
    change = pixel_change(session.picture, out.session.picture, mask)
    assert change["outside_max"] == 0 and change["inside_mean"] > 1
    assert describe_changes(session.scene, out.session.scene) == ["r2 'a blue square' -> 'a green square'"]


def test_a_foreign_picture_edits_with_its_scene_and_keeps_what_lies_outside(toy, tmp_path):
    from scenecraft.cli.generate import method_config
    from scenecraft.generation.editing import pixel_change
    from scenecraft.toyworld.captions import phrase
    from scenecraft.toyworld.render import render_scene as draw_toy

    world = draw_toy([("red", "circle"), ("blue", "square")], seed=2)
    Image.fromarray(world.image).save(tmp_path / "foreign.png")  # a plain PNG: no metadata
    boxes = [tuple(v / 64 for v in (max(x0 - 2, 0), max(y0 - 2, 0), min(x1 + 2, 64), min(y1 + 2, 64)))
             for x0, y0, x1, y1 in (o.bbox for o in world.objects)]
    scene = Scene("a red circle and a blue square", [Region(phrase(o.color, o.shape), Box(*b))
                                                     for o, b in zip(world.objects, boxes)], width=64, height=64)
    with pytest.raises(EditSessionError, match="carries no scenecraft scene: give the scene it shows"):
        read_record(tmp_path / "foreign.png")
    # whether the edit is applied is test_cli_edit's (LMD at 8 steps); here the plumbing, on RPG at 4
    config = method_config("regional", "toyworld", [], steps=4, num_images=1)
    session = open_picture(tmp_path / "foreign.png", scene=scene, method="regional", model="toyworld", config=config,
                           seed=0)
    assert session.record.origin == "picture" and not session.record.replayable
    plan = plan_round(session, "make the square green")
    out = render_round(toy, session, plan)
    assert not out.exact and "round 0 is a picture scenecraft did not draw" in out.notes[0]
    mask = plan.diff.edit_mask(64, 64).astype(np.float32)
    change = pixel_change(world.image, out.session.picture, mask)
    assert change["outside_max"] <= 1 and change["inside_mean"] > 1  # pasted back outside; drawn again inside
    save_picture(out.session, tmp_path / "foreign-1.png")
    reread = read_record(tmp_path / "foreign-1.png")
    assert reread.record.origin == "picture" and read_metadata(tmp_path / "foreign-1.png").generation["edit"] == {
        "round": 1, "history": HISTORY_KEY, "origin": "picture"}
    back = undo_round(toy, reread)
    assert not back.exact and "first picture was not drawn by scenecraft" in back.notes[0]
    assert pixel_change(world.image, back.session.picture, mask)["outside_max"] <= 1
    assert back.session.scene == scene


# ----------------------------------------------------------------------------------------------- the record
def fake_record(rounds=2, prompt="a red circle"):
    picture = Image.new("RGB", (64, 64), (10, 20, 30))
    generation = {"method": "regional", "model": "toyworld", "seed": 5, "scheduler": "DDIMScheduler",
                  "config": {"num_inference_steps": 4, "guidance_scale": 3.0, "seed": 5, "num_images": 1}}
    record = start_record(two(left=prompt), picture, generation=generation)
    for index in range(rounds - 1):
        scene = two(left=f"{prompt} number {index}")
        record = record.with_round(f"change {index}", (), scene, 5 + index, RoundRender(pixel_hash(picture), "replay"))
    return record, picture


def test_the_history_round_trips_through_the_png(tmp_path):
    from scenecraft.edit_session import EditSession

    record, picture = fake_record(3)
    save_picture(EditSession(record, picture), tmp_path / "h.png")
    again = read_record(tmp_path / "h.png")
    assert again.record.to_dict() == record.to_dict() and again.record.history.to_json() == record.history.to_json()
    assert again.scene == record.scene and again.round == 2
    metadata = read_metadata(tmp_path / "h.png")  # the other chunks, as generate writes them
    assert metadata.scene == record.scene and "Steps: 4" in metadata.parameters
    assert metadata.generation["edit"]["round"] == 2 and metadata.generation["seed"] == 6
    assert history_lines(again.record)[0].startswith("round 0: 'a red circle and a blue square' (drawn by scenecraft")


def test_the_history_stays_inside_one_png_text_chunk_by_dropping_the_oldest_rounds(tmp_path):
    from scenecraft.edit_session import EditSession

    record, picture = fake_record(1)
    for index in range(8):  # scenes of ~180 kB each
        big = Scene("big", [Region(f"{index} " + "x" * 9000, Box(i / 20, 0, (i + 1) / 20, 1)) for i in range(20)],
                    width=64, height=64)
        record = record.with_round(f"round {index}", (), big, 1, RoundRender(pixel_hash(picture), "pixels"))
    assert record.dropped > 0 and record.size() <= MAX_TEXT_BYTES and not record.replayable
    save_picture(EditSession(record, picture), tmp_path / "big.png")
    again = read_record(tmp_path / "big.png").record
    assert again.dropped == record.dropped and again.round == record.round
    while again.history.can_undo:
        again = again.undone()
    with pytest.raises(EditSessionError, match="were dropped"):
        again.undone()


def png_with_history(path, text, *, compressed=True):
    base, picture = fake_record(1)
    from scenecraft.edit_session import png_metadata

    scene, parameters, generation, _ = png_metadata(base)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("scenecraft.scene", scene.to_json(indent=None))
    info.add_itxt("parameters", parameters)
    info.add_itxt("scenecraft.generation", json.dumps(generation))
    if text is not None:
        info.add_itxt(HISTORY_KEY, text, zip=compressed)
    picture.save(path, pnginfo=info)
    return path


def good_history():
    return fake_record(2)[0].to_dict()


def changed(**fields):
    return json.dumps(good_history() | fields)


@pytest.mark.parametrize("text, words", [
    ("[1, 2]", "is not a JSON object"),
    ("{bad", "is not valid JSON"),
    ("[" * 200 + "]" * 200, "nests 65 levels deep"),
    ('{"version": 1e999}', "too large for a float"),
    ('{"version": NaN}', "NaN"),
    ('{"version": ' + "9" * 500 + "}", "digits"),
    (changed(version=2), "version 2 is not supported"),
    (changed(evil=1), "unknown field(s) ['evil']"),
    (changed(renders=[]), "0 render(s) for 2 round(s)"),
    (changed(method=["regional"]), "method must be a non-empty string"),
    (changed(origin="mars"), "origin must be one of"),
    (changed(config={"seed": 1}), "config cannot hold 'seed'"),
    (changed(config="steps=5"), "config must be an object"),
    (changed(dropped=-1), "dropped must be a whole number"),
    (changed(history={"rounds": "x"}), "history: 'rounds' must be a list"),
    (changed(history={"rounds": []}), "a history needs at least one round"),
])
def test_hostile_history_chunks_are_one_sentence(tmp_path, text, words):
    path = png_with_history(tmp_path / "hostile.png", text)
    with pytest.raises((PngReadError, SceneError)) as error:
        read_record(path)
    assert words in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("change, words", [
    (lambda h: h["renders"][1].update(pixels="md5:00"), "renders[1]: a round's pixels must be"),
    (lambda h: h["renders"][1].update(dilate=10**6), "a round's dilate must be a whole number in [0, 16]"),
    (lambda h: h["renders"][1].update(over="magic"), "a round's 'over' must be null or one of"),
    (lambda h: h["renders"][1].pop("over"), "'over' (how the round was blended) is null only for the"),
    (lambda h: h["history"]["rounds"][1].update(seed=None), "round 1 has no seed"),
    (lambda h: h["history"]["rounds"][1].update(seed=2**40), "seed must be null or a whole number"),
    (lambda h: h["history"]["rounds"][1]["scene"].update(width=128), "round 1's scene is 128x64"),
    (lambda h: h["history"]["rounds"][1].update(edits=[{"op": "explode"}]), "unknown edit op 'explode'"),
    (lambda h: h["history"]["rounds"][1].update(edits=[{"op": "undo"}]), "cannot hold an undo"),
    (lambda h: h["history"]["rounds"][1]["scene"].update(width=10**9), "width"),
])
def test_hostile_fields_inside_a_history_name_what_is_wrong(tmp_path, change, words):
    history = good_history()
    change(history)
    path = png_with_history(tmp_path / "hostile.png", json.dumps(history))
    with pytest.raises(PngReadError) as error:
        read_record(path)
    assert words in str(error.value) and "is not valid" in str(error.value)


def test_oversized_and_corrupt_history_chunks_are_refused_unread(tmp_path):
    bomb = png_with_history(tmp_path / "bomb.png", " " * (MAX_TEXT_BYTES + 10))  # ~1 kB compressed
    assert bomb.stat().st_size < 20_000
    with pytest.raises(PngReadError, match=f"the {HISTORY_KEY} text of .* is longer than 1,000,000 bytes"):
        read_record(bomb)
    raw = png_with_history(tmp_path / "plain.png", None).read_bytes()
    body = HISTORY_KEY.encode() + b"\0\1\0\0\0" + b"not zlib at all"
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    end = raw.rindex(b"IEND") - 4
    (tmp_path / "corrupt.png").write_bytes(raw[:end] + chunk + raw[end:])
    with pytest.raises(PngReadError, match=f"the {HISTORY_KEY} text of .* is corrupt"):
        read_record(tmp_path / "corrupt.png")


def test_a_picture_whose_size_is_not_its_scenes_is_refused(tmp_path):
    record, _ = fake_record(1)
    from scenecraft.edit_session import EditSession

    with pytest.raises(EditSessionError, match="is 32x64 pixels but its scene is 64x64"):
        EditSession(record, Image.new("RGB", (32, 64)))


# ----------------------------------------------------------------------------------------------- planning
def session_of_two():
    from scenecraft.edit_session import EditSession

    record, picture = fake_record(1)
    return EditSession(record, picture)


@pytest.mark.parametrize("edits, words", [
    ("[{", "edits is not valid JSON"),
    ('[{"op": "explode"}]', "unknown edit op 'explode'"),
    ('[{"op": "remove", "id": "r9"}]', "no region has the id 'r9'; the scene's ids are ['r1', 'r2']"),
    ('[{"op": "move", "id": "r1", "to": [0, 0, 2, 1]}]', "a box an edit writes must lie on the canvas"),
    ('[{"op": "resize", "id": "r1", "scale": 1e400}]', "too large for a float"),
    ('{"edits": ' + "[" * 100 + "]" * 100 + "}", "nests"),
    ('[{"op": "set_count", "kind": "circle", "count": 500}]', "regions"),
    ("[" + ",".join(['{"op": "remove", "id": "r1"}'] * 65) + "]", "more than the 64 allowed"),
])
def test_hostile_edit_json_is_one_sentence(edits, words):
    with pytest.raises(SceneError) as error:
        plan_round(session_of_two(), edits=edits)
    assert words in str(error.value)


def test_edits_as_data_plan_a_round_and_a_lone_undo_steps_back():
    session = session_of_two()
    plan = plan_round(session, edits='{"edits": [{"op": "remove", "id": "r2"}]}')
    assert [r.prompt for r in plan.scene.regions] == ["a red circle"] and plan.diff.removed == ("r2",)
    with pytest.raises(ValueError, match="nothing to undo"):
        plan_round(session, edits='[{"op": "undo"}]')
    with pytest.raises(EditSessionError, match="not both and not neither"):
        plan_round(session, "remove the square", edits="[]")


@pytest.mark.parametrize("instruction, words", [
    ("frobnicate the moon", "frobnicate"),
    ("remove the dragon", "dragon"),
    ("", "instruction"),
    ("undo", "nothing to undo"),
])
def test_instructions_the_planner_cannot_read_are_its_sentence(instruction, words):
    from scenecraft.planning import PlanError

    with pytest.raises(PlanError) as error:
        plan_round(session_of_two(), instruction)
    assert words in str(error.value)


def test_an_ambiguous_instruction_names_the_candidates():
    from scenecraft.edit_session import EditSession
    from scenecraft.planning import InstructionError

    record, picture = fake_record(1)
    record = record.with_round(None, (), two(right="a red circle"), 5, RoundRender(pixel_hash(picture), "pixels"))
    with pytest.raises(InstructionError, match="'the circle' could be 2 regions: r1 'a red circle'"):
        plan_round(EditSession(record, picture), "make the circle blue")


def test_an_edit_past_the_limits_is_refused():
    from scenecraft.scene import SceneLimits

    with pytest.raises(SceneError, match="more than the 2 allowed"):
        plan_round(session_of_two(), "add a yellow star", limits=SceneLimits(max_regions=2))
