import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenecraft.scene import (
    Box,
    Cell,
    LoraRef,
    Mask,
    Region,
    Scene,
    SceneError,
    SceneLimits,
    parse_split,
    resample_mask,
    scene_json_schema,
)

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
        Scene(prompt="a cat in a painted room", regions=[
            Region("a cat", Box(0.1, 0.2, 0.5, 0.9),
                   lora=(LoraRef("loras/cat.safetensors", 0.8), LoraRef("org/style"))),
            Region("a room", Box(0.5, 0.0, 1.0, 1.0), lora=(LoraRef("/abs/ölgemälde.safetensors", -1.5),)),
            Region("a lamp", Box(0.0, 0.0, 0.1, 0.1))]),
        Scene(prompt="p", split="1,1", regions=[Region("left", Cell(0), lora=[LoraRef("l.safetensors", 10)]),
                                                Region("right", Cell(1))]),
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


# ----------------------------------------------------------------- per-region LoRA references (issue 9)
def test_lora_round_trips_and_is_written_only_where_given():
    scene = _example_scenes()[-2]
    data = scene.to_dict()
    assert data["regions"][0]["lora"] == [{"path": "loras/cat.safetensors", "scale": 0.8},
                                          {"path": "org/style", "scale": 1.0}]
    assert data["regions"][1]["lora"] == [{"path": "/abs/ölgemälde.safetensors", "scale": -1.5}]
    assert "lora" not in data["regions"][2]
    assert list(data["regions"][0]) == ["prompt", "box", "lora"]
    assert Scene.from_dict(data) == scene and Scene.from_json(scene.to_json()) == scene
    assert Scene.from_json(scene.to_json()).regions[0].lora[1] == LoraRef("org/style", 1.0)


def test_scenes_without_lora_keep_their_json_byte_for_byte():
    text = ('{"version": 1, "prompt": "p", "base_prompt": null, "base_ratio": 0.3, "background_prompt": null, '
            '"negative_prompt": "", "width": 512, "height": 512, "split": null, "regions": [{"prompt": "a", '
            '"box": [0.0, 0.0, 1.0, 1.0], "negative_prompt": "b"}]}')
    assert Scene.from_json(text).to_json(indent=None) == text
    empty = Scene.from_dict({"prompt": "p", "regions": [{"prompt": "a", "box": [0, 0, 1, 1], "lora": []}]})
    assert empty.regions[0].lora == () and "lora" not in empty.to_dict()["regions"][0]
    assert empty == Scene(prompt="p", regions=[Region("a", Box(0, 0, 1, 1))])


def test_lora_defaults_normalisation_equality_and_hash():
    assert LoraRef("a").scale == 1.0 and isinstance(LoraRef("a", 2).scale, float)
    assert Region("a", Cell(0)).lora == ()
    listed = Region("a", Box(0, 0, 1, 1), lora=[LoraRef("x", 0.5)])
    tupled = Region("a", Box(0, 0, 1, 1), lora=(LoraRef("x", 0.5),))
    assert listed.lora == tupled.lora == (LoraRef("x", 0.5),) and listed == tupled
    assert hash(listed) == hash(tupled) and hash(LoraRef("x", 0.5)) == hash(LoraRef("x", 0.5))
    assert listed != Region("a", Box(0, 0, 1, 1), lora=[LoraRef("x", 0.6)])
    assert listed != Region("a", Box(0, 0, 1, 1))
    order = [LoraRef("x"), LoraRef("y")]
    assert Region("a", Cell(0), lora=order) != Region("a", Cell(0), lora=order[::-1])  # the order is kept
    scene = Scene(prompt="p", regions=[listed])
    assert {scene: 1}[Scene(prompt="p", regions=[tupled])] == 1


def test_lora_scale_is_read_from_json_with_the_default_and_integers():
    lora = [{"path": "a"}, {"path": "b", "scale": -2}, {"scale": 0, "path": "c"}]
    data = {"prompt": "p", "regions": [{"prompt": "a", "box": [0, 0, 1, 1], "lora": lora}]}
    assert Scene.from_dict(data).regions[0].lora == (LoraRef("a", 1.0), LoraRef("b", -2.0), LoraRef("c", 0.0))


def test_schema_validates_lora_and_refuses_what_from_dict_refuses():
    schema = scene_json_schema()
    for scene in _example_scenes()[-2:]:
        jsonschema.validate(scene.to_dict(), schema)
    region = {"prompt": "a", "box": [0, 0, 1, 1]}
    for lora in ([{"path": ""}], [{"scale": 1}], [{"path": "a", "scale": 11}], [{"path": "a", "x": 1}], {"path": "a"},
                 ["a"], [{"path": "a", "scale": "1"}], [{"path": "a" * 4097}]):
        data = {"prompt": "p", "regions": [{**region, "lora": lora}]}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(data, schema)
        with pytest.raises(SceneError, match=r"regions\[0\]: lora"):
            Scene.from_dict(data)


@pytest.mark.parametrize("lora, message", [
    (5, r"regions\[0\]: lora must be a list of \{'path': \.\.\., 'scale': \.\.\.\} objects, got int"),
    ("a.safetensors", "lora must be a list"),
    ({"path": "a"}, "lora must be a list"),
    (None, "lora must be a list"),
    ([["a", 1]], r"regions\[0\]: lora\[0\]: must be an object"),
    ([{"path": "a"}, "b"], r"lora\[1\]: must be an object .*got str"),
    ([{"scale": 1}], r"lora\[0\]: needs a 'path'"),
    ([{"path": "a", "weight": 1}], r"lora\[0\]: unknown lora field\(s\) \['weight'\]; allowed: \['path', 'scale'\]"),
    ([{"path": ""}], "a LoRA path must be a non-empty string, got ''"),
    ([{"path": "   "}], "non-empty string"),
    ([{"path": 3}], "a LoRA path must be a non-empty string, got 3"),
    ([{"path": "a", "scale": "1"}], r"a LoRA scale must be a finite number, got '1'"),
    ([{"path": "a", "scale": 10.5}], r"a LoRA scale must lie in \[-10, 10\], got 10.5"),
    ([{"path": "a", "scale": -11}], r"must lie in \[-10, 10\]"),
    ([{"path": "a"}, {"path": "a", "scale": 0.5}], r"lora\[1\] repeats the path 'a'"),
    ([{"path": str(i)} for i in range(9)],
     r"regions\[0\]: lora has 9 entries, more than the 8 allowed \(SceneLimits.max_loras_per_region"),
])
def test_invalid_lora_entries_name_the_problem(lora, message):
    with pytest.raises(SceneError, match=message):
        Scene.from_dict({"prompt": "p", "regions": [{"prompt": "a", "box": [0, 0, 1, 1], "lora": lora}]})


def test_lora_limits_apply_to_python_scenes_and_can_be_raised():
    many = [LoraRef(f"l{i}.safetensors") for i in range(9)]
    region = Region("a", Box(0, 0, 1, 1), lora=many)  # a region alone knows no limits
    with pytest.raises(SceneError, match=r"regions\[0\] lora has 9 entries.*max_loras_per_region"):
        Scene(prompt="p", regions=[region])
    limits = SceneLimits(max_loras_per_region=16)
    scene = Scene(prompt="p", regions=[region], limits=limits)
    assert Scene.from_json(scene.to_json(), limits=limits) == scene
    with pytest.raises(SceneError, match="max_loras_per_region"):
        Scene.from_json(scene.to_json())
    one = SceneLimits(max_loras_per_region=1)
    assert Scene(prompt="p", split="1", regions=[Region("a", Cell(0), lora=[LoraRef("x")])], limits=one)
    with pytest.raises(SceneError, match=r"lora has 2 entries, more than the 1 allowed"):
        Scene(prompt="p", split="1", regions=[Region("a", Cell(0), lora=[LoraRef("x"), LoraRef("y")])], limits=one)


def test_python_regions_check_their_lora_values():
    with pytest.raises(SceneError, match="a region's lora must be a list of LoraRef, got str"):
        Region("a", Box(0, 0, 1, 1), lora="x.safetensors")
    with pytest.raises(SceneError, match=r"a region's lora\[0\] must be a LoraRef, got dict"):
        Region("a", Box(0, 0, 1, 1), lora=[{"path": "x"}])
    with pytest.raises(SceneError, match=r"lora\[1\] repeats the path 'x'"):
        Region("a", Box(0, 0, 1, 1), lora=[LoraRef("x"), LoraRef("x", 2)])
    with pytest.raises(SceneError, match="a LoRA scale must be a finite number"):
        LoraRef("x", None)


def test_the_llm_layout_schema_has_no_lora_and_llm_replies_lose_theirs():
    from scenecraft.planning.llm import read_reply
    from scenecraft.planning.templates import layout_schema

    for layout in ("boxes", "split"):
        assert "lora" not in layout_schema(layout)["properties"]["regions"]["items"]["properties"]
    reply = ('{"regions": [{"prompt": "a cat", "box": [0.1, 0.1, 0.5, 0.5], '
             '"lora": [{"path": "/etc/evil.bin", "scale": 1}]}], "split": null}')
    scene = read_reply(reply, prompt="a cat", width=512, height=512)
    assert [r.lora for r in scene.regions] == [()]
