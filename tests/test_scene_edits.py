"""Edits as data (issue 14, part 1): region ids, every edit operation and its diff, undo, the history, hostile JSON."""

import json
import subprocess
import sys
from dataclasses import replace

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scenecraft.scene import Box, Cell, LoraRef, Mask, Region, Scene, SceneError, SceneLimits, scene_json_schema
from scenecraft.scene.edits import (
    MAX_EDITS,
    AddRegion,
    ChangeAttribute,
    EditHistory,
    EditRound,
    MoveRegion,
    RemoveRegion,
    ReplacePrompt,
    ResizeRegion,
    SetCount,
    SwapRegions,
    Undo,
    apply_edits,
    cells_to_boxes,
    describe_regions,
    diff_scenes,
    edit_from_dict,
    edit_mask,
    edits_between,
    edits_from_json,
    edits_from_list,
    edits_to_json,
    free_box,
    matching_regions,
    typical_size,
)


def two_shapes(**kwargs):
    return Scene(prompt="a red circle left of a blue square", regions=[
        Region("a red circle", Box(0.1, 0.3, 0.4, 0.6)), Region("a blue square", Box(0.6, 0.3, 0.9, 0.6))], **kwargs)


def boxes(scene):
    return [r.geometry.as_list() for r in scene.regions]


def approx_box(values):
    return pytest.approx(values, abs=1e-6)


# ----------------------------------------------------------------- region ids
def test_ids_round_trip_and_are_written_first_only_where_given():
    scene = Scene(prompt="p", regions=[Region("a cat", Box(0, 0, .5, .5), id="cat"),
                                       Region("a dog", Box(.5, .5, 1, 1))])
    data = scene.to_dict()
    assert list(data["regions"][0]) == ["id", "prompt", "box"] and "id" not in data["regions"][1]
    assert Scene.from_json(scene.to_json()) == scene and Scene.from_dict(data).regions[0].id == "cat"
    jsonschema.validate(data, scene_json_schema())


def test_old_json_without_ids_loads_and_round_trips_byte_for_byte():
    text = ('{"version": 1, "prompt": "p", "base_prompt": null, "base_ratio": 0.3, "background_prompt": null, '
            '"negative_prompt": "", "width": 512, "height": 512, "split": null, "regions": [{"prompt": "a", '
            '"box": [0.0, 0.0, 0.5, 1.0], "negative_prompt": "b"}, {"prompt": "c", "box": [0.5, 0.0, 1.0, 1.0]}]}')
    scene = Scene.from_json(text)
    assert [r.id for r in scene.regions] == [None, None]
    assert scene.to_json(indent=None) == text
    split = Scene.from_split("p", "1,1", ["a", "b"])
    assert Scene.from_json(split.to_json()) == split and all("id" not in r for r in split.to_dict()["regions"])


def test_with_ids_is_deterministic_keeps_given_ids_and_never_collides():
    scene = Scene(prompt="p", regions=[Region("a", Box(0, 0, .2, .2)), Region("b", Box(.2, .2, .4, .4), id="r1"),
                                       Region("c", Box(.4, .4, .6, .6)), Region("d", Box(.6, .6, .8, .8), id="r3")])
    named = scene.with_ids()
    assert [r.id for r in named.regions] == ["r2", "r1", "r4", "r3"]
    assert named.with_ids() is named and scene.with_ids() == named
    assert [r.prompt for r in named.regions] == ["a", "b", "c", "d"] and boxes(named) == boxes(scene)
    assert Scene(prompt="p").with_ids() == Scene(prompt="p")
    assert named.region_index("r4") == 2
    with pytest.raises(SceneError, match=r"no region has the id 'r9'; the scene's ids are \['r2', 'r1', 'r4', 'r3'\]"):
        named.region_index("r9")
    with pytest.raises(SceneError, match=r"it has none: Scene.with_ids\(\)"):
        scene.regions and Scene(prompt="p", regions=[Region("a", Cell(0))], split="1").region_index("r1")


def test_duplicate_ids_are_a_scene_error():
    regions = [Region("a", Box(0, 0, .5, .5), id="x"), Region("b", Box(.5, .5, 1, 1), id="x")]
    with pytest.raises(SceneError, match=r"regions\[1\] has the id 'x' of regions\[0\]; each region's id must be "
                                         "unique"):
        Scene(prompt="p", regions=regions)
    data = {"prompt": "p", "regions": [{"id": "x", "prompt": "a", "cell": 0}, {"id": "x", "prompt": "b", "cell": 1}],
            "split": "1,1"}
    with pytest.raises(SceneError, match="must be unique"):
        Scene.from_dict(data)


@pytest.mark.parametrize("bad", ["", " r1", "r 1", "r1\n", "-r1", "é", "r" * 65, 1, True, ["r1"], "r1\u202e"])
def test_bad_ids_are_refused_by_the_scene_and_the_schema(bad):
    with pytest.raises(SceneError, match="a region's id must be 1 to 64 ASCII letters"):
        Region("a", Box(0, 0, 1, 1), id=bad)
    data = {"prompt": "p", "regions": [{"id": bad, "prompt": "a", "box": [0, 0, 1, 1]}]}
    with pytest.raises(SceneError, match=r"regions\[0\]: a region's id"):
        Scene.from_dict(data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, scene_json_schema())


def test_good_ids_are_taken():
    for good in ("r1", "cat", "Dog_2", "a.b:c-d", "9", "x" * 64):
        assert Region("a", Box(0, 0, 1, 1), id=good).id == good
        jsonschema.validate({"prompt": "p", "regions": [{"id": good, "prompt": "a", "box": [0, 0, 1, 1]}]},
                            scene_json_schema())


# ----------------------------------------------------------------- each operation and its diff
def test_add_gives_the_next_id_and_its_box_is_the_edit_box():
    result = apply_edits(two_shapes(), [AddRegion("a yellow star", [0.4, 0.0, 0.6, 0.2])])
    star = result.scene.regions[-1]
    assert star.id == "r3" and star.prompt == "a yellow star" and star.geometry == Box(0.4, 0.0, 0.6, 0.2)
    assert result.diff.added == ("r3",) and result.diff.removed == () and result.diff.changed == {}
    assert result.diff.unchanged == ("r1", "r2")
    assert result.diff.edit_boxes() == (Box(0.4, 0.0, 0.6, 0.2),)
    assert result.scene.prompt == "a red circle, a blue square and a yellow star"
    named = apply_edits(two_shapes(), [AddRegion("a star", Box(0, 0, .2, .2), id="star", negative_prompt="moon")])
    assert named.scene.regions[-1] == Region("a star", Box(0, 0, .2, .2), negative_prompt="moon", id="star")


@pytest.mark.parametrize("box, message", [
    ([0.8, 0.1, 1.2, 0.3], r"add: box: box x1 must lie in \[0, 1\].*it is not clipped"),
    ([-0.1, 0.1, 0.3, 0.3], r"box x0 must lie in \[0, 1\]"),
    ([0.5, 0.1, 0.3, 0.3], "is empty"),
    ([0.1, 0.1, 0.11, 0.3], "has a side under 0.03125 of the canvas"),
    ([0.1, 0.1, 0.3], r"must be a box \[x0, y0, x1, y1\]"),
    ("left", r"must be a box"),
])
def test_a_box_an_edit_writes_off_the_canvas_is_refused_not_clipped(box, message):
    with pytest.raises(SceneError, match=message):
        AddRegion("a star", box)
    with pytest.raises(SceneError, match=message.replace("add: box", "move: to")):
        MoveRegion("r1", to=box)


def test_remove_and_its_edit_box():
    result = apply_edits(two_shapes(), [RemoveRegion("r1")])
    assert [r.id for r in result.scene.regions] == ["r2"] and result.diff.removed == ("r1",)
    assert result.diff.edit_boxes() == (Box(0.1, 0.3, 0.4, 0.6),) and result.scene.prompt == "a blue square"
    with pytest.raises(SceneError, match=r"edit 1 \(remove\): no region has the id 'r7'; the scene's ids are "
                                         r"\['r1', 'r2'\]"):
        apply_edits(two_shapes(), [RemoveRegion("r7")])


def test_move_to_a_box_by_an_offset_and_to_a_place():
    scene = two_shapes()
    moved = apply_edits(scene, [MoveRegion("r1", to=[0.0, 0.0, 0.2, 0.2])])
    assert boxes(moved.scene)[0] == [0.0, 0.0, 0.2, 0.2] and moved.diff.changed == {"r1": ("moved", "resized")}
    assert moved.diff.edit_boxes() == (Box(0.1, 0.3, 0.4, 0.6), Box(0.0, 0.0, 0.2, 0.2))
    by = apply_edits(scene, [MoveRegion("r1", dx=0.1, dy=-0.2)])
    assert boxes(by.scene)[0] == approx_box([0.2, 0.1, 0.5, 0.4]) and by.diff.changed == {"r1": ("moved",)}
    # computed boxes keep their size and are shifted back onto the canvas
    assert boxes(apply_edits(scene, [MoveRegion("r2", dx=0.5)]).scene)[1] == approx_box([0.7, 0.3, 1.0, 0.6])
    assert boxes(apply_edits(scene, [MoveRegion("r1", dy=-1)]).scene)[0] == approx_box([0.1, 0.0, 0.4, 0.3])
    assert boxes(apply_edits(scene, [MoveRegion("r1", place="right")]).scene)[0] == approx_box([0.6, 0.3, 0.9, 0.6])
    assert boxes(apply_edits(scene, [MoveRegion("r1", place="top-right")]).scene)[0] == approx_box(
        [0.6, 0.1, 0.9, 0.4])
    assert boxes(apply_edits(scene, [MoveRegion("r2", place="bottom")]).scene)[1] == approx_box([0.6, 0.6, 0.9, 0.9])
    assert boxes(apply_edits(scene, [MoveRegion("r1", place="center")]).scene)[0] == approx_box(
        [0.35, 0.35, 0.65, 0.65])


def test_move_next_to_another_region_with_a_gap_and_shrinking_where_room_is_short():
    scene = two_shapes()
    below = apply_edits(scene, [MoveRegion("r1", relation="below", of="r2")])
    assert boxes(below.scene)[0] == approx_box([0.6, 0.62, 0.9, 0.92])  # 0.02 under it, centred on it
    above = apply_edits(scene, [MoveRegion("r1", relation="above", of="r2")])  # 0.28 free: shrunk, aspect kept
    assert boxes(above.scene)[0] == approx_box([0.61, 0.0, 0.89, 0.28])
    assert above.diff.changed == {"r1": ("moved", "resized")}
    right = apply_edits(scene, [MoveRegion("r2", relation="right_of", of="r1")])
    assert boxes(right.scene)[1] == approx_box([0.42, 0.3, 0.72, 0.6])
    with pytest.raises(SceneError, match=r"edit 1 \(move\): there is no room left of 'r1' for 'r2': 0.080 of the "
                                         r"canvas is free there and 'r2' needs 0.150 \(at half its size\)"):
        apply_edits(scene, [MoveRegion("r2", relation="left_of", of="r1")])
    with pytest.raises(SceneError, match="a region cannot move left of itself"):
        MoveRegion("r1", relation="left_of", of="r1")
    with pytest.raises(SceneError, match="no region has the id 'r5'"):
        apply_edits(scene, [MoveRegion("r1", relation="above", of="r5")])


@pytest.mark.parametrize("kwargs, message", [
    ({}, r"exactly one of 'to', 'dx'/'dy', 'place' or 'relation' \+ 'of', got none"),
    ({"dx": 0.1, "place": "left"}, r"got \['dx/dy', 'place'\]"),
    ({"dx": 1.5}, r"move: dx must lie in \[-1, 1\], got 1.5"),
    ({"dy": float("nan")}, "move: dy must be a finite number"),
    ({"dx": 10 ** 400}, "must lie in"),
    ({"dx": "0.1"}, "finite number"),
    ({"place": "upstairs"}, "place must be one of"),
    ({"place": ["left"]}, "place must be one of"),
    ({"relation": "near", "of": "r2"}, "relation must be one of"),
    ({"relation": "above"}, "needs 'of'"),
    ({"of": "r2"}, "relation must be one of"),
])
def test_bad_moves_name_the_problem(kwargs, message):
    with pytest.raises(SceneError, match=message):
        MoveRegion("r1", **kwargs)


def test_resize_by_a_factor_about_the_centre_stops_at_the_canvas_and_refuses_slivers():
    scene = two_shapes()
    bigger = apply_edits(scene, [ResizeRegion("r1", scale=1.5)])
    assert boxes(bigger.scene)[0] == approx_box([0.025, 0.225, 0.475, 0.675])
    assert bigger.diff.changed == {"r1": ("resized",)}  # about its centre: not moved
    assert bigger.diff.edit_boxes() == (Box(0.1, 0.3, 0.4, 0.6), Box(*boxes(bigger.scene)[0]))
    edge = apply_edits(scene, [ResizeRegion("r2", scale=2)])  # 0.6 wide, centred at 0.75: shifted onto the canvas
    assert boxes(edge.scene)[1] == approx_box([0.4, 0.15, 1.0, 0.75])
    huge = apply_edits(scene, [ResizeRegion("r1", scale=10)])
    assert boxes(huge.scene)[0] == [0.0, 0.0, 1.0, 1.0]
    assert boxes(apply_edits(scene, [ResizeRegion("r1", to=[0.1, 0.1, 0.2, 0.2])]).scene)[0] == [0.1, 0.1, 0.2, 0.2]
    with pytest.raises(SceneError, match=r"'r1' resized by 0.05 would be 0.015 x 0.015 of the canvas, under the "
                                         "smallest side 0.03125"):
        apply_edits(scene, [ResizeRegion("r1", scale=0.05)])
    for bad in (0, -1, 11, float("inf"), None):
        with pytest.raises(SceneError, match="resize"):
            ResizeRegion("r1", scale=bad)
    with pytest.raises(SceneError, match="exactly one of 'scale'"):
        ResizeRegion("r1", scale=2, to=[0, 0, 1, 1])


def test_replace_changes_the_prompt_and_the_scene_prompt_follows():
    result = apply_edits(two_shapes(base_prompt="a red circle left of a blue square, flat colours"),
                         [ReplacePrompt("r1", "a green apple", negative_prompt="worm")])
    assert result.scene.regions[0] == Region("a green apple", Box(0.1, 0.3, 0.4, 0.6), negative_prompt="worm", id="r1")
    assert result.scene.prompt == "a green apple left of a blue square"
    assert result.scene.base_prompt == "a green apple left of a blue square, flat colours"
    assert result.diff.changed == {"r1": ("prompt", "negative_prompt")}
    assert result.diff.scene_fields == ("prompt", "base_prompt")
    assert result.diff.edit_boxes() == (Box(0.1, 0.3, 0.4, 0.6),)
    same = apply_edits(two_shapes(), [ReplacePrompt("r1", "a red circle")])
    assert same.diff.empty and same.scene == two_shapes().with_ids()


@pytest.mark.parametrize("prompt, attribute, value, old, expected", [
    ("a red circle", "colour", "blue", None, "a blue circle"),
    ("a red circle", "color", "blue", None, "a blue circle"),
    ("an orange circle", "colour", "blue", None, "a blue circle"),
    ("a red circle", "colour", "orange", None, "an orange circle"),
    ("a light blue circle", "colour", "red", None, "a red circle"),
    ("a circle", "colour", "green", None, "a green circle"),
    ("an apple", "colour", "red", None, "a red apple"),
    ("a big circle", "colour", "green", None, "a big green circle"),
    ("circle", "colour", "green", None, "green circle"),
    ("A red and white ball", "colour", "white", "red", "A white and white ball"),
    ("a red and white ball", "colour", "black", "white", "a red and black ball"),
    ("a small red ball", "size", "huge", None, "a huge red ball"),
    ("a red ball", "size", "small", None, "a small red ball"),
    ("a big red chair", "material", "wooden", None, "a big red wooden chair"),
    ("a metal chair", "material", "wooden", None, "a wooden chair"),
    ("a red cat, fluffy, sitting", "colour", "dark grey", None, "a dark grey cat, fluffy, sitting"),
])
def test_change_attribute_rewrites_one_word(prompt, attribute, value, old, expected):
    scene = Scene(prompt=prompt, regions=[Region(prompt, Box(0.2, 0.2, 0.6, 0.6))])
    result = apply_edits(scene, [ChangeAttribute("r1", attribute, value, old=old)])
    assert result.scene.regions[0].prompt == expected
    assert result.scene.prompt == expected and result.diff.changed == {"r1": ("prompt",)}


def test_change_attribute_mistakes():
    with pytest.raises(SceneError, match=r"attribute must be one of \['colour', 'size', 'material'\], got 'mood'"):
        ChangeAttribute("r1", "mood", "happy")
    with pytest.raises(SceneError, match="value must be a word or two"):
        ChangeAttribute("r1", "colour", "<b>red</b>")
    with pytest.raises(SceneError, match=r"edit 1 \(change_attribute\): region 'r1' \('a red circle'\) has no word "
                                         "'green' to change"):
        apply_edits(two_shapes(), [ChangeAttribute("r1", "colour", "blue", old="green")])


def test_swap_exchanges_centres_of_boxes_and_cells_of_a_split():
    scene = Scene(prompt="p", regions=[Region("a small cat", Box(0.0, 0.0, 0.2, 0.2)),
                                       Region("a big dog", Box(0.4, 0.4, 1.0, 1.0))])
    result = apply_edits(scene, [SwapRegions("r1", "r2")])
    assert boxes(result.scene) == [approx_box([0.6, 0.6, 0.8, 0.8]), approx_box([0.0, 0.0, 0.6, 0.6])]
    assert result.diff.changed == {"r1": ("moved",), "r2": ("moved",)}
    split = Scene.from_split("a cat and a dog", "1,1", ["a cat", "a dog"])
    swapped = apply_edits(split, [SwapRegions("r2", "r1")]).scene
    assert [(r.id, r.geometry) for r in swapped.regions] == [("r1", Cell(1)), ("r2", Cell(0))]
    mixed = Scene(prompt="p", regions=[Region("a", Box(0, 0, .5, .5)), Region("b", Mask.from_array(np.eye(4)))])
    with pytest.raises(SceneError, match=r"regions 'r1' \(box\) and 'r2' \(mask\) cannot swap places"):
        apply_edits(mixed, [SwapRegions("r1", "r2")])
    with pytest.raises(SceneError, match="swap needs two different regions, got 'r1' twice"):
        SwapRegions("r1", "r1")


def test_set_count_adds_copies_in_free_space_and_removes_the_last():
    scene = Scene(prompt="a red circle and a blue square", regions=[
        Region("a red circle", Box(0.1, 0.1, 0.3, 0.3), negative_prompt="square", lora=[LoraRef("x.safetensors")]),
        Region("a blue square", Box(0.6, 0.6, 0.9, 0.9))])
    three = apply_edits(scene, [SetCount("circle", 3)])
    new = three.scene.regions[2:]
    assert [r.id for r in new] == ["r3", "r4"] and three.diff.added == ("r3", "r4")
    assert all(r.prompt == "a red circle" and r.negative_prompt == "square" and r.lora == (LoraRef("x.safetensors"),)
               for r in new)
    rects = boxes(three.scene)
    for k, a in enumerate(rects):  # same size as the first circle, nothing overlaps
        for b in rects[k + 1:]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])
    assert all(abs((r[2] - r[0]) - 0.2) < 1e-6 and abs((r[3] - r[1]) - 0.2) < 1e-6 for r in rects[2:])
    assert three.scene.prompt == "three red circles and a blue square"
    assert apply_edits(scene, [SetCount("circle", 3)]) == three  # deterministic
    back = apply_edits(three.scene, [SetCount("circle", 1)])
    assert [r.id for r in back.scene.regions] == ["r1", "r2"] and back.diff.removed == ("r3", "r4")
    none = apply_edits(scene, [SetCount("red circle", 0)])
    assert [r.id for r in none.scene.regions] == ["r2"]
    stars = apply_edits(scene, [SetCount("star", 2, prompt="a yellow star")]).scene.regions[2:]
    assert [r.prompt for r in stars] == ["a yellow star"] * 2
    assert [r.prompt for r in apply_edits(scene, [SetCount("bird", 1)]).scene.regions[2:]] == ["a bird"]
    assert apply_edits(scene, [SetCount("blue circle", 0)]).diff.empty


def test_set_count_limits_and_mistakes():
    with pytest.raises(SceneError, match="count must be a whole number >= 0, got -1"):
        SetCount("circle", -1)
    for bad in (2.0, "3", True, None):
        with pytest.raises(SceneError, match="count must be a whole number"):
            SetCount("circle", bad)
    with pytest.raises(SceneError, match="more than any scene holds"):
        SetCount("circle", 10 ** 100)
    with pytest.raises(SceneError, match=r"edit 1 \(set_count\): 300 regions of 'circle' would make 301, more than "
                                         r"the 256 allowed \(SceneLimits.max_regions"):
        apply_edits(two_shapes(), [SetCount("circle", 300)])
    roomy = two_shapes(limits=SceneLimits(max_regions=400))
    assert len(apply_edits(roomy, [SetCount("circle", 300)]).scene.regions) == 301
    for bad in ("", "a, b", "x" * 0, "<circle>", 3):
        with pytest.raises(SceneError, match="kind must be the words naming the regions"):
            SetCount(bad, 2)


def test_matching_regions_and_free_box():
    scene = Scene(prompt="p", regions=[Region("a red circle", Box(0, 0, .2, .2)),
                                       Region("Two Circles, blue", Box(.2, .2, .4, .4)),
                                       Region("a circular table", Box(.5, .5, .7, .7))])
    assert matching_regions(scene, "circle") == [0, 1]
    assert matching_regions(scene, "red circle") == [0] and matching_regions(scene, "blue circle") == [1]
    assert matching_regions(scene, "table") == [2] and matching_regions(scene, "") == []
    box = free_box([(0, 0, 1, 0.5)], (0.2, 0.2))
    assert box.y0 >= 0.5 - 1e-9 and box.as_list() == approx_box([box.x0, box.y0, box.x0 + 0.2, box.y0 + 0.2])
    right = free_box([], (0.2, 0.2), zone=(2 / 3, 0, 1, 1))
    assert (right.x0 + right.x1) / 2 >= 2 / 3 - 1e-9
    assert free_box([], (3, 3)).as_list() == [0.0, 0.0, 1.0, 1.0]


def test_split_scenes_keep_their_grid_and_masks_stay_put():
    split = Scene.from_split("a cat and a dog", "1,1", ["a cat", "a dog"])
    assert apply_edits(split, [ReplacePrompt("r2", "a wolf")]).scene.regions[1].prompt == "a wolf"
    for edit, action in ((MoveRegion("r1", dx=0.1), "moved"), (ResizeRegion("r1", scale=2), "resized")):
        with pytest.raises(SceneError, match=rf"region 'r1' is cell 0 of the split '1,1': a split scene's cells "
                                             rf"cannot be {action}.*cells_to_boxes"):
            apply_edits(split, [edit])
    for edit, action in ((AddRegion("a", [0, 0, .5, .5]), "added"), (RemoveRegion("r1"), "removed"),
                         (SetCount("cat", 2), "added or removed")):
        with pytest.raises(SceneError, match=f"the scene is a split '1,1'.*cannot be {action}"):
            apply_edits(split, [edit])
    as_boxes = cells_to_boxes(split)
    assert as_boxes.split is None and boxes(as_boxes) == [[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]]
    assert diff_scenes(split, as_boxes).empty and cells_to_boxes(as_boxes) is as_boxes
    assert len(apply_edits(as_boxes, [AddRegion("a bird", [0.4, 0.0, 0.6, 0.2])]).scene.regions) == 3
    masked = Scene(prompt="p", regions=[Region("a blob", Mask.from_array(np.eye(8)))])
    with pytest.raises(SceneError, match="region 'r1' is a mask: a mask cannot be moved"):
        apply_edits(masked, [MoveRegion("r1", dx=0.1)])
    assert diff_scenes(masked, apply_edits(masked, [ReplacePrompt("r1", "a cloud")]).scene).edit_boxes() == (
        Box(0, 0, 1, 1),)


def test_edits_apply_in_order_and_name_the_failing_one():
    result = apply_edits(two_shapes(), [AddRegion("a star", [0.4, 0.0, 0.6, 0.2], id="star"),
                                        MoveRegion("star", place="bottom"), RemoveRegion("r2")])
    assert [r.id for r in result.scene.regions] == ["r1", "star"]
    assert result.diff.added == ("star",) and result.diff.removed == ("r2",)
    assert boxes(result.scene)[1] == approx_box([0.4, 0.65, 0.6, 0.85])
    with pytest.raises(SceneError, match=r"edit 2 \(remove\): no region has the id 'r2'"):
        apply_edits(two_shapes(), [RemoveRegion("r2"), RemoveRegion("r2")])
    with pytest.raises(SceneError, match=r"edit 1 \(undo\): undo steps back through an EditHistory"):
        apply_edits(two_shapes(), [Undo()])
    with pytest.raises(SceneError, match=r"edits\[0\] must be an edit operation .* got dict"):
        apply_edits(two_shapes(), [{"op": "remove", "id": "r1"}])
    with pytest.raises(SceneError, match="more than the 64 allowed"):
        apply_edits(two_shapes(), [RemoveRegion("r1")] * (MAX_EDITS + 1))
    with pytest.raises(SceneError, match="edits must be a list"):
        apply_edits(two_shapes(), "remove r1")


def test_diff_between_scenes_and_the_edit_mask():
    scene = two_shapes()
    result = apply_edits(scene, [MoveRegion("r1", to=[0.0, 0.0, 0.25, 0.25]), ReplacePrompt("r2", "a blue cube")])
    diff = result.diff
    assert diff.changed == {"r1": ("moved", "resized"), "r2": ("prompt",)} and diff.unchanged == ()
    assert diff_scenes(scene, result.scene).to_dict() == diff.to_dict()
    mask = edit_mask(diff, 8, 8)
    assert mask.dtype == bool and mask.shape == (8, 8)
    expected = np.zeros((8, 8), dtype=bool)
    expected[0:2, 0:2] = True  # the new box of r1
    expected[2:5, 0:4] = True  # its old box: rows 2.4..4.8, columns 0.8..3.2, every pixel it touches
    expected[2:5, 4:8] = True  # r2, whose prompt changed
    assert (mask == expected).all()
    assert diff.edit_mask(8, 8, margin=1.0).all() and not diff_scenes(scene, scene).edit_mask(4, 4).any()
    assert edit_mask(diff, 1, 3).tolist() == [[True, True, True]]
    for bad in ((0, 8), (8, -1), (8, 2.5), (10 ** 9, 1)):
        with pytest.raises(SceneError, match="edit_mask"):
            edit_mask(diff, *bad)
    json.dumps(diff.to_dict())


def test_describe_regions():
    regions = [Region("a red circle", Box(0, 0, .2, .2)), Region("A red circle", Box(.3, 0, .5, .2)),
               Region("a blue box", Box(0, .5, .2, .7)), Region("a blue box", Box(.3, .5, .5, .7)),
               Region("a cat, ginger, curled up", Box(.6, .6, .9, .9)), Region("a cat, ginger, curled up", Cell(0))]
    assert describe_regions(regions) == ("two red circles, two blue boxes, a cat, ginger, curled up and a cat, "
                                         "ginger, curled up")
    assert describe_regions([]) == "" and describe_regions(regions[:1]) == "a red circle"


# ----------------------------------------------------------------- JSON forms
ALL_EDITS = [
    AddRegion("a yellow star", Box(0.4, 0.0, 0.6, 0.2)),
    AddRegion("a star", [0, 0, .5, .5], id="s", negative_prompt="x"),
    RemoveRegion("r1"), MoveRegion("r1", to=[0.1, 0.1, 0.3, 0.3]), MoveRegion("r1", dx=0.1), MoveRegion("r1", dy=-1),
    MoveRegion("r1", place="top-left"), MoveRegion("r1", relation="below", of="r2"), ResizeRegion("r1", scale=1.25),
    ResizeRegion("r1", to=[0, 0, 1, 1]), ReplacePrompt("r2", "a cat"),
    ReplacePrompt("r2", "a cat", negative_prompt="d"),
    ChangeAttribute("r1", "color", "blue"), ChangeAttribute("r1", "size", "big", old="small"), SwapRegions("r1", "r2"),
    SetCount("circle", 3), SetCount("red circle", 0, prompt="a red circle"), Undo(),
]


def test_every_edit_round_trips_through_json():
    text = edits_to_json(ALL_EDITS)
    assert edits_from_json(text) == tuple(ALL_EDITS)
    assert edits_from_json(json.dumps({"edits": json.loads(text)})) == tuple(ALL_EDITS)
    assert json.loads(text)[0] == {"op": "add", "prompt": "a yellow star", "box": [0.4, 0.0, 0.6, 0.2]}
    assert MoveRegion("r1", dx=0.1).to_dict() == {"op": "move", "id": "r1", "dx": 0.1}
    assert ChangeAttribute("r1", "color", "Blue").to_dict() == {"op": "change_attribute", "id": "r1",
                                                                  "attribute": "colour", "value": "blue"}
    assert Undo().to_dict() == {"op": "undo"} and edit_from_dict({"op": "move", "id": "r1", "dx": 0}) == MoveRegion(
        "r1", dx=0.0)


@pytest.mark.parametrize("data, message", [
    ({"op": "teleport", "id": "r1"}, r"unknown edit op 'teleport'; the ops are \['add', 'remove', 'move'"),
    ({"id": "r1"}, "unknown edit op None"),
    ({"op": ["move"]}, "unknown edit op"),
    ([], "an edit must be an object"),
    ({"op": "remove"}, r"op 'remove' needs \['id'\]"),
    ({"op": "remove", "id": "r1", "force": True}, r"unknown field\(s\) \['force'\] for op 'remove'"),
    ({"op": "move", "id": "r1", "to": [0, 0, 2, 1]}, r"must lie in \[0, 1\]"),
    ({"op": "add", "prompt": "", "box": [0, 0, 1, 1]}, "add: prompt must be a non-empty string"),
    ({"op": "add", "prompt": "x" * 10_001, "box": [0, 0, 1, 1]}, "more than the 10,000 allowed"),
    ({"op": "swap", "a": "r1", "b": 2}, "swap: b must be 1 to 64"),
    ({"op": "set_count", "kind": "circle", "count": 1e300}, "count must be a whole number"),
])
def test_bad_edit_json_names_the_problem(data, message):
    with pytest.raises(SceneError, match=message):
        edit_from_dict(data)


def test_bad_edit_json_text():
    with pytest.raises(SceneError, match=r"edits\[1\]: op 'remove' needs"):
        edits_from_json('[{"op": "undo"}, {"op": "remove"}]')
    with pytest.raises(SceneError, match="edits nests 65 levels deep"):
        edits_from_json("[" * 65 + "]" * 65)
    with pytest.raises(SceneError, match="has 400 digits"):
        edits_from_json('[{"op": "move", "id": "r1", "dx": ' + "9" * 400 + "}]")
    with pytest.raises(SceneError, match="edits must be a list"):
        edits_from_json('{"op": "undo"}')
    with pytest.raises(SceneError, match="not valid JSON"):
        edits_from_json("[{op: undo}]")
    with pytest.raises(SceneError, match="more than the 64 allowed"):
        edits_from_json(json.dumps([{"op": "undo"}] * 65))


# ----------------------------------------------------------------- history and undo
def test_edit_then_undo_gives_back_the_same_scene_and_json():
    scene = two_shapes()
    history = EditHistory.start(scene, seed=7, instruction="a red circle left of a blue square")
    before = history.to_json()
    for edit in ALL_EDITS[:-1]:
        try:
            result = history.apply([edit], instruction=f"do {edit.op}")
        except SceneError:
            continue
        assert history.scene == result.scene and len(history.rounds) == 2
        undone = history.undo()
        assert undone == scene and undone.to_json() == scene.to_json() and history.to_json() == before


def test_history_rounds_seeds_and_undo_through_apply():
    history = EditHistory.start(two_shapes(), seed=3)
    history.apply([ChangeAttribute("r1", "colour", "blue")], instruction="make the circle blue")
    history.apply([RemoveRegion("r2")], instruction="remove the square", seed=4)
    assert [r.instruction for r in history.rounds] == [None, "make the circle blue", "remove the square"]
    assert [r.seed for r in history.rounds] == [3, 3, 4] and history.seed == 4
    assert [r.prompt for r in history.scene.regions] == ["a blue circle"]
    result = history.apply([Undo()])
    assert result.scene == history.scene == history.rounds[1].scene and result.diff.added == ("r2",)
    with pytest.raises(SceneError, match="undo must be the only edit of its round"):
        history.apply([Undo(), RemoveRegion("r1")])
    history.undo()
    assert history.scene == two_shapes() and not history.can_undo
    with pytest.raises(SceneError, match="nothing to undo: the history holds only the scene editing started from"):
        history.undo()


def test_ids_are_never_given_again_within_a_history():
    history = EditHistory.start(two_shapes())
    history.apply([RemoveRegion("r2")])
    history.apply([AddRegion("a star", [0.5, 0.5, 0.7, 0.7])])
    assert [r.id for r in history.scene.regions] == ["r1", "r3"]


def test_history_json_round_trip_and_bounds():
    history = EditHistory.start(two_shapes(), seed=1, max_rounds=3)
    for k in range(5):
        history.apply([MoveRegion("r1", dx=0.01)], instruction=f"nudge {k}", seed=k)
    assert len(history.rounds) == 3 and [r.instruction for r in history.rounds] == ["nudge 2", "nudge 3", "nudge 4"]
    text = history.to_json()
    again = EditHistory.from_json(text)
    assert again == history and again.to_json() == text and again.max_rounds == 3
    history.undo()
    history.undo()
    with pytest.raises(SceneError, match="nothing to undo"):
        history.undo()
    data = json.loads(text)
    with pytest.raises(SceneError, match="the history has 4 rounds, more than its max_rounds 3"):
        EditHistory.from_dict({**data, "rounds": data["rounds"] + data["rounds"][:1]})
    with pytest.raises(SceneError, match="more than the 256 allowed"):
        EditHistory.from_dict({"rounds": [data["rounds"][0]] * 257, "max_rounds": 256})
    for bad, message in ((1, "max_rounds must be a whole number in"), (10 ** 50, "max_rounds"), ("3", "max_rounds")):
        with pytest.raises(SceneError, match=message):
            EditHistory.from_dict({**data, "max_rounds": bad})
    with pytest.raises(SceneError, match="a history needs at least one round"):
        EditHistory.from_dict({"rounds": []})
    with pytest.raises(SceneError, match=r"rounds\[0\]: a round's seed must be null or a whole number"):
        EditHistory.from_dict({"rounds": [{**data["rounds"][0], "seed": 2 ** 32}]})
    with pytest.raises(SceneError, match=r"rounds\[0\]: a round of the history cannot hold an undo"):
        EditHistory.from_dict({"rounds": [{**data["rounds"][0], "edits": [{"op": "undo"}]}]})
    with pytest.raises(SceneError, match=r"unknown round field\(s\) \['image'\]"):
        EditHistory.from_dict({"rounds": [{**data["rounds"][0], "image": "..."}]})
    with pytest.raises(SceneError, match=r"rounds\[0\]: regions\[0\]"):
        EditHistory.from_dict({"rounds": [{"scene": {"prompt": "p", "regions": [{"prompt": "a"}]}}]})
    with pytest.raises(SceneError, match="edit history version 2"):
        EditHistory.from_dict({**data, "version": 2})
    with pytest.raises(SceneError, match="an edit history must be a JSON object"):
        EditHistory.from_json("[]")
    with pytest.raises(SceneError, match="max_rounds must be"):
        EditHistory.start(two_shapes(), max_rounds=MAX_EDITS * 100)
    with pytest.raises(SceneError, match=r"max_chars must be a whole number in \[10000, 5000000\]"):
        EditHistory.start(two_shapes(), max_chars=100)
    EditRound(None, (), two_shapes())
    with pytest.raises(SceneError, match="a round's scene must be a Scene"):
        EditRound(None, (), two_shapes().to_dict())


# ----------------------------------------------------------------- hostile input
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=10 ** 30) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)
_IDS = st.sampled_from(["r1", "r2", "r3", "r9", "", "r 1", "x" * 70]) | _JSON
_BOXES = st.lists(st.floats(-0.5, 1.5) | st.integers(-2, 2), min_size=3, max_size=5) | _JSON
_VALUES = {
    "id": _IDS, "a": _IDS, "b": _IDS, "of": _IDS, "box": _BOXES, "to": _BOXES,
    "prompt": st.sampled_from(["a cat", "", "x" * 20_000]) | _JSON, "negative_prompt": st.text(max_size=8) | _JSON,
    "dx": st.floats(-2, 2) | _JSON, "dy": st.floats(allow_nan=True) | _JSON, "scale": st.floats(-1, 12) | _JSON,
    "place": st.sampled_from(["left", "top-right", "middle"]) | _JSON,
    "relation": st.sampled_from(["left_of", "below", "near"]) | _JSON,
    "attribute": st.sampled_from(["colour", "color", "size", "mood"]) | _JSON,
    "value": st.sampled_from(["blue", "dark green", "", "<b>"]) | _JSON, "old": st.sampled_from(["red", "x"]) | _JSON,
    "kind": st.sampled_from(["circle", "red circle", "a,b"]) | _JSON,
    "count": st.integers(-3, 40) | st.sampled_from([255, 256, 257, 10 ** 20]) | _JSON,
}
_EDIT_DICTS = st.builds(
    lambda op, extra: {"op": op, **extra},
    st.sampled_from(["add", "remove", "move", "resize", "replace", "change_attribute", "swap", "set_count", "undo",
                     "bogus"]) | _JSON,
    st.fixed_dictionaries({}, optional={**_VALUES, "junk": _JSON}))
_SCENES = [two_shapes(), Scene.from_split("p", "1,1", ["a cat", "a dog"]),
           Scene(prompt="p", regions=[Region("a blob", Mask.from_array(np.eye(4))), Region("a red circle",
                                                                                          Box(0, 0, .3, .3))])]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_EDIT_DICTS, min_size=1, max_size=4), st.sampled_from(range(len(_SCENES))))
def test_hostile_edit_dicts_give_scene_errors_only(items, which):
    try:
        edits = [edit_from_dict(item) for item in items]
    except SceneError:
        return
    try:
        result = apply_edits(_SCENES[which], edits)
    except SceneError:
        return
    assert isinstance(result.scene, Scene)
    assert Scene.from_json(result.scene.to_json()) == result.scene  # whatever applies is a valid scene
    assert edits_from_json(edits_to_json(edits)) == tuple(edits)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_hostile_json_values_as_edits_and_histories_give_scene_errors_only(value):
    for reader in (lambda v: edits_from_json(json.dumps(v)), lambda v: EditHistory.from_json(json.dumps(v)),
                   edit_from_dict, lambda v: EditHistory.from_dict({"rounds": [{"scene": v, "edits": v}]})):
        try:
            reader(value)
        except SceneError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60) | st.binary(max_size=60))
def test_hostile_text_as_edits_gives_scene_errors_only(text):
    for reader in (edits_from_json, EditHistory.from_json):
        try:
            reader(text)
        except SceneError:
            pass


# ----------------------------------------------------------------- helpers the planners use
def test_edits_between_two_scenes_replay_the_change():
    before = two_shapes().with_ids()
    after = Scene(prompt="p", regions=[Region("a red circle", Box(0.5, 0.5, 0.8, 0.8), id="r1"),
                                       Region("a yellow star", Box(0.0, 0.0, 0.2, 0.2), id="r3")])
    edits = edits_between(before, after)
    assert edits == (RemoveRegion("r2"), MoveRegion("r1", to=[0.5, 0.5, 0.8, 0.8]),
                     AddRegion("a yellow star", [0.0, 0.0, 0.2, 0.2], id="r3"))
    assert apply_edits(before, edits).scene.regions == after.regions
    assert edits_between(before, before) == ()
    renamed = Scene(prompt="p", regions=[replace(before.regions[0], prompt="a cat", negative_prompt="dog"),
                                         before.regions[1]])
    assert edits_between(before, renamed) == (ReplacePrompt("r1", "a cat", negative_prompt="dog"),)
    split = Scene.from_split("p", "1,1", ["a", "b"])
    assert edits_between(split, split) == () and edits_between(split, apply_edits(
        split, [SwapRegions("r1", "r2")]).scene) is None
    with_lora = Scene(prompt="p", regions=[replace(before.regions[0], lora=[LoraRef("x")]), before.regions[1]])
    assert edits_between(before, with_lora) is None


def test_typical_size_and_with_ids_taken():
    scene = Scene(prompt="p", regions=[Region("a", Box(0, 0, .2, .4)), Region("b", Box(0, 0, .4, .2)),
                                       Region("c", Box(0, 0, .6, .6))])
    assert typical_size(scene, [1]) == pytest.approx((0.4, 0.2))
    assert typical_size(scene) == pytest.approx((0.4, 0.4))
    assert typical_size(Scene(prompt="p")) == (0.25, 0.25)
    assert [r.id for r in scene.with_ids(taken={"r1", "r3"}).regions] == ["r2", "r4", "r5"]
    assert edits_from_list([{"op": "remove", "id": "r1"}]) == (RemoveRegion("r1"),)


def test_the_scene_layer_imports_no_torch():
    code = ("import sys; from scenecraft.scene.edits import apply_edits, SetCount; from scenecraft.scene import Box, "
            "Region, Scene; apply_edits(Scene(prompt='p', regions=[Region('a cat', Box(0, 0, .5, .5))]), "
            "[SetCount('cat', 3)]); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_history_json_stays_under_its_character_budget():
    long = Scene(prompt="p", regions=[Region("a cat, " + "very " * 400 + "fluffy", Box(0, 0, .5, .5))])
    history = EditHistory.start(long, max_chars=20_000)
    for k in range(12):
        history.apply([MoveRegion("r1", dx=0.01)], instruction=f"nudge {k}")
        assert len(history.to_json()) <= 20_000 or len(history.rounds) == 2
    assert 2 < len(history.rounds) < 12 and history.rounds[-1].instruction == "nudge 11"
    assert EditHistory.from_json(history.to_json()) == history
