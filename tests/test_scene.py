import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenecraft.scene import Box, Cell, Mask, Region, Scene, SceneError, parse_split, resample_mask, scene_json_schema

GRIDS = [(1, 1), (8, 8), (9, 17), (5, 9), (3, 5), (64, 64)]


def test_count_mismatch_says_how_many_regions_and_prompts():
    with pytest.raises(SceneError, match=r"split '1,1,1;1,1,1' has 4 regions but 3 region prompts were given"):
        Scene.from_split("p", "1,1,1;1,1,1", ["a", "b", "c"])


def test_rpg_break_prompt_with_base():
    scene = Scene.from_rpg_prompt("a cat and a dog BREAK a cat BREAK a dog", "1,1", use_base=True)
    assert scene.base_prompt == "a cat and a dog"
    assert [r.prompt for r in scene.regions] == ["a cat", "a dog"]


def test_rpg_break_count_that_does_not_match_the_split_is_an_error():
    # RPG crashed (or silently dropped prompts) when the BREAK count did not match the regions.
    with pytest.raises(SceneError, match="has 3 regions but 2 region prompts"):
        Scene.from_rpg_prompt("a cat BREAK a dog", "1,1,1")


@pytest.mark.parametrize("split", ["1", "1,1", "1,2,1", "1,1;2,1,1", "1,1,1;1,1,1", "2,1,3;1,1;1,4,1,1"])
@pytest.mark.parametrize("grid", GRIDS)
def test_split_weights_sum_to_one_everywhere(split, grid):
    count = parse_split(split).num_regions
    scene = Scene.from_split("p", split, [f"r{i}" for i in range(count)])
    weights, rest = scene.weights(*grid)
    assert weights.shape == (count, *grid)
    np.testing.assert_allclose(weights.sum(0), 1.0, atol=1e-12)
    assert (rest == 0).all()
    assert (weights >= 0).all()


boxes = st.tuples(*(st.floats(0, 1) for _ in range(4))).filter(lambda b: b[0] + 1e-3 < b[2] and b[1] + 1e-3 < b[3])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.9), st.floats(0, 0.9), st.floats(0.01, 1), st.floats(0.01, 1)), min_size=1, max_size=6),
       st.sampled_from(GRIDS))
def test_box_weights_and_background_sum_to_one(raw_boxes, grid):
    regions = [Region(f"r{i}", Box(x, y, min(1.0, x + w), min(1.0, y + h))) for i, (x, y, w, h) in enumerate(raw_boxes)]
    scene = Scene(prompt="p", regions=regions)
    weights, rest = scene.weights(*grid)
    np.testing.assert_allclose(weights.sum(0) + rest, 1.0, atol=1e-9)
    assert (weights >= 0).all() and (rest >= 0).all()


def test_uncovered_area_belongs_to_the_background():
    scene = Scene(prompt="p", regions=[Region("cat", Box(0, 0, 0.5, 0.5))])
    weights, rest = scene.weights(4, 4)
    assert weights[0, :2, :2].tolist() == [[1, 1], [1, 1]]
    assert rest[:2, :2].sum() == 0 and (rest[2:, :] == 1).all() and (rest[:, 2:] == 1).all()


def test_overlapping_boxes_share_the_overlap():
    scene = Scene(prompt="p", regions=[Region("a", Box(0, 0, 1, 1)), Region("b", Box(0, 0, 0.5, 1))])
    weights, rest = scene.weights(2, 2)
    np.testing.assert_allclose(weights[0], [[0.5, 1], [0.5, 1]])
    np.testing.assert_allclose(weights[1], [[0.5, 0], [0.5, 0]])
    assert (rest == 0).all()


def test_partial_cells_get_their_covered_fraction():
    scene = Scene(prompt="p", regions=[Region("a", Box(0, 0, 0.25, 1))])
    weights, rest = scene.weights(1, 2)
    np.testing.assert_allclose(weights[0], [[0.5, 0.0]])
    np.testing.assert_allclose(rest, [[0.5, 1.0]])


def test_mask_rle_round_trip_and_resampling_matches_the_box():
    array = np.zeros((16, 16))
    array[4:12, 0:8] = 1
    mask = Mask.from_array(array)
    np.testing.assert_array_equal(mask.to_array(), array)
    box = Scene(prompt="p", regions=[Region("a", Box(0, 0.25, 0.5, 0.75))])
    masked = Scene(prompt="p", regions=[Region("a", mask)])
    for grid in GRIDS:
        np.testing.assert_allclose(masked.weights(*grid)[0], box.weights(*grid)[0], atol=1e-12)


def test_mask_starting_inside_and_resample_mean_is_kept():
    array = np.array([[1, 1, 0], [0, 1, 1]])
    mask = Mask.from_array(array)
    assert mask.rle[0] == 0
    np.testing.assert_array_equal(mask.to_array(), array)
    big = np.random.default_rng(0).random((40, 30)) > 0.5
    assert resample_mask(big, 7, 11).mean() == pytest.approx(big.mean())


def test_bad_mask_rle_is_rejected():
    with pytest.raises(SceneError, match="covers 3 pixels"):
        Mask(2, 2, (1, 2))


def _example_scenes():
    return [
        Scene.from_split("a cat and a dog", "1,1;2,1,1", ["sky", "a cat", "a dog"], negative_prompt="blurry"),
        Scene(prompt="two cats", width=768, height=512, background_prompt="a park", base_ratio=0.0,
              regions=[Region("a cat", Box(0.1, 0.2, 0.4, 0.9), negative_prompt="dog"), Region("a cat", Box(0.6, 0.2, 0.9, 0.9))]),
        Scene(prompt="mask", regions=[Region("blob", Mask.from_array(np.eye(4)))]),
        Scene(prompt="just a prompt"),
    ]


@pytest.mark.parametrize("scene", _example_scenes())
def test_json_round_trip_and_schema(scene):
    data = json.loads(scene.to_json())
    jsonschema.validate(data, scene_json_schema())
    assert Scene.from_json(scene.to_json()) == scene


def test_published_schema_file_is_current():
    path = Path(__file__).parents[1] / "schema" / "scene.schema.json"
    assert json.loads(path.read_text()) == scene_json_schema()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"prompt": "p", "colour": 1}, "unknown scene field"),
        ({"prompt": "p", "regions": [{"prompt": "a", "box": [0, 0, 1]}]}, r"regions\[0\]: box must be"),
        ({"prompt": "p", "regions": [{"prompt": "a", "box": [0.5, 0, 0.2, 1]}]}, "is empty"),
        ({"prompt": "p", "regions": [{"prompt": "a", "box": [0, 0, 1.5, 1]}]}, r"must lie in \[0, 1\]"),
        ({"prompt": "p", "regions": [{"prompt": "a", "box": [0, 0, 1, 1], "cell": 0}]}, "exactly one of"),
        ({"prompt": "p", "regions": [{"prompt": "", "box": [0, 0, 1, 1]}]}, "non-empty"),
        ({"prompt": "p", "regions": [{"prompt": "a", "cell": 0}]}, "no split ratio"),
        ({"prompt": "p", "split": "1,1", "regions": [{"prompt": "a", "cell": 0}]}, "has 2 regions but 1"),
        ({"prompt": "p", "split": "1,1", "regions": [{"prompt": "a", "cell": 0}, {"prompt": "b", "cell": 0}]}, "cells"),
        ({"prompt": "p", "width": 0}, "positive integer"),
        ({"prompt": "p", "base_ratio": "high"}, "finite number"),
        ({"prompt": "p", "version": 7}, "version 7"),
        ([], "JSON object"),
    ],
)
def test_invalid_scenes_have_messages_that_name_the_problem(data, message):
    with pytest.raises(SceneError, match=message):
        Scene.from_dict(data)


def test_invalid_json_text():
    with pytest.raises(SceneError, match="not valid JSON"):
        Scene.from_json("{prompt:")


def test_box_from_lmd_pixels():
    assert Box.from_pixels(64, 128, 128, 256, 512, 512).as_list() == [0.125, 0.25, 0.375, 0.75]


def test_cell_index_must_be_an_integer():
    with pytest.raises(SceneError):
        Cell(-1)
