"""Hostile input to the scene layer (issue 12, causes 2 and 3): numbers and JSON beyond range, split
ratios, masks, LoRA references (issue 9). Every bad input is a SceneError naming the field and the
limit, in bounded time and memory; never OverflowError, RecursionError, TypeError or MemoryError.
11,900 generated cases.
"""

import json
import math
import string
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scenecraft.planning.errors import PlanParseError
from scenecraft.planning.readers import read_json_scene
from scenecraft.scene import (
    DEFAULT_LIMITS, LORA_MAX_PATH_CHARS, Box, Cell, LoraRef, Mask, Region, Scene, SceneError, SceneLimits, SplitRatio,
    SplitRatioError, format_split, load_json, parse_split,
)

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def fuzz(examples):
    """``examples`` cases, no deadline (the CPU is shared), slow generation allowed."""
    return settings(max_examples=examples, deadline=None, suppress_health_check=_SLOW_OK)
NINES_400 = "9" * 400


def _scene_text(**fields):
    return json.dumps({"prompt": "p", **fields})


def _check_accepted(scene):
    """An accepted scene survives a JSON round trip and has finite weights summing to one; its LoRA
    references are strings and finite scales within the limits."""
    assert Scene.from_json(scene.to_json()) == scene
    for region in scene.regions:
        assert len(region.lora) <= DEFAULT_LIMITS.max_loras_per_region
        assert len({ref.path for ref in region.lora}) == len(region.lora)
        for ref in region.lora:
            assert isinstance(ref.path, str) and 0 < len(ref.path) <= LORA_MAX_PATH_CHARS and ref.path.strip()
            assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in ref.path)
            assert type(ref.scale) is float and -10 <= ref.scale <= 10
    weights, rest = scene.weights(4, 6)
    assert np.isfinite(weights).all() and np.isfinite(rest).all()
    np.testing.assert_allclose(weights.sum(0) + rest, 1.0, atol=1e-9)


# ----------------------------------------------------------------- cause 2: numbers beyond range
@pytest.mark.parametrize("digits", [400, 5000])
@pytest.mark.parametrize("template", [
    '{{"prompt": "p", "width": {n}}}',
    '{{"prompt": "p", "base_ratio": {n}}}',
    '{{"prompt": "p", "base_ratio": 0.{n}}}',
    '{{"prompt": "p", "regions": [{{"prompt": "a", "box": [0, 0, {n}, 1]}}]}}',
    '{{"prompt": "p", "split": "1,1", "regions": [{{"prompt": "a", "cell": {n}}}, {{"prompt": "b", "cell": 1}}]}}',
    '{{"prompt": "p", "regions": [{{"prompt": "a", "mask": {{"width": {n}, "height": 1, "rle": [{n}]}}}}]}}',
    '{{"prompt": "p", "version": {n}}}',
])
def test_huge_integers_in_a_scene_file_are_scene_errors_naming_the_digit_limit(template, digits):
    with pytest.raises(SceneError, match=r"has [\d,]+ digits, more than the 100 allowed "
                                         r"\(SceneLimits.max_number_digits; pass limits=SceneLimits"):
        Scene.from_json(template.format(n="9" * digits))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_non_finite_numbers_are_refused(literal):
    with pytest.raises(SceneError, match="finite"):
        Scene.from_json(f'{{"prompt": "p", "base_ratio": {literal}}}')


def test_a_raised_digit_limit_still_gives_field_errors_not_overflow():
    limits = SceneLimits(max_number_digits=10_000)
    with pytest.raises(SceneError, match="width is <an integer of about 1,"):
        Scene.from_json(_scene_text()[:-1] + ', "width": ' + "9" * 1000 + "}", limits=limits)
    with pytest.raises(SceneError, match="more digits than Python converts"):
        Scene.from_json(_scene_text()[:-1] + ', "width": ' + "9" * 5000 + "}", limits=limits)
    with pytest.raises(SceneError, match=r"box x1 must lie in \[0, 1\].*an integer of about 400 digits"):
        Scene.from_json('{"prompt": "p", "regions": [{"prompt": "a", "box": [0, 0, %s, 1]}]}' % NINES_400,
                        limits=limits)
    with pytest.raises(SceneError, match="too large for a float"):
        Scene.from_json('{"prompt": "p", "base_ratio": %s.5}' % NINES_400, limits=limits)


def test_python_values_beyond_range_are_scene_errors():
    with pytest.raises(SceneError, match="an integer of about 5,000 digits"):
        Box(10 ** 5000, 0, 1, 1)
    with pytest.raises(SceneError, match="finite"):
        Box(float("nan"), 0, 1, 1)
    with pytest.raises(SceneError, match="covers <an integer of about 5,000 digits> pixels"):
        Mask(2, 2, (10 ** 5000,))
    with pytest.raises(SceneError, match="base_ratio"):
        Scene(prompt="p", base_ratio=10 ** 400)


@pytest.mark.parametrize("opening, closing", [("[", "]"), ('{"a":', "}")])
def test_deep_nesting_is_refused_by_a_linear_scan(opening, closing):
    text = opening * 100_000 + "1" + closing * 100_000
    with pytest.raises(SceneError, match=r"nests 65 levels deep at line 1 column \d+, more than the 64 allowed "
                                         r"\(SceneLimits.max_json_depth"):
        Scene.from_json(text)


def test_deep_nesting_past_a_raised_limit_is_still_a_scene_error():
    with pytest.raises(SceneError, match="max_json_depth"):
        Scene.from_json("[" * 100_000 + "]" * 100_000, limits=SceneLimits(max_json_depth=10 ** 6))


def test_brackets_inside_strings_do_not_count_as_nesting():
    prompt = '[{"\\"[[[' * 200
    scene = Scene.from_json(json.dumps({"prompt": prompt}))
    assert scene.prompt == prompt


def test_json_text_beyond_the_size_limit_is_refused_before_parsing():
    with pytest.raises(SceneError, match="scene has 5,000,001 characters, more than the 5,000,000 allowed"):
        Scene.from_json(" " * 5_000_001)
    with pytest.raises(SceneError, match="max_json_chars"):
        Scene.from_json(_scene_text(), limits=SceneLimits(max_json_chars=5))


def test_bytes_and_other_types():
    assert Scene.from_json(_scene_text().encode()).prompt == "p"
    with pytest.raises(SceneError, match="not UTF-8"):
        Scene.from_json(b"\xff{}")
    with pytest.raises(SceneError, match="must be JSON text"):
        Scene.from_json(12)


# ----------------------------------------------------------------- cause 4's sizes, as limits of the scene
@pytest.mark.parametrize("fields, message", [
    ({"width": 100_000}, r"width is 100000, more than the 16,384 pixels per side allowed \(SceneLimits.max_side"),
    ({"height": 16_385}, "height is 16385, more than the 16,384"),
    ({"width": 16384, "height": 8192}, r"16384x8192 is 134,217,728 pixels, more than the 67,108,864 pixels allowed"),
    ({"regions": [{"prompt": "a", "box": [0, 0, 1, 1]}] * 10_000},
     r"regions has 10,000 entries, more than the 256 allowed \(SceneLimits.max_regions"),
    ({"prompt": "p" * 1_000_000}, r"prompt has 1,000,000 characters, more than the 10,000 allowed"),
    ({"negative_prompt": "n" * 10_001}, "negative_prompt has 10,001 characters"),
    ({"regions": [{"prompt": "a" * 10_001, "box": [0, 0, 1, 1]}]}, r"regions\[0\] prompt has 10,001 characters"),
    ({"notes": ["n"] * 65}, "notes has 65 entries, more than the 64 allowed"),
    ({"regions": [{"prompt": "a", "mask": {"width": 100_000, "height": 100_000, "rle": [10 ** 10]}}]},
     r"regions\[0\]: mask is 100000x100000 pixels, more than the 67,108,864 pixels allowed "
     r"\(SceneLimits.max_mask_pixels"),
])
def test_sizes_beyond_the_limits_are_refused_with_the_knob_named(fields, message):
    with pytest.raises(SceneError, match=message):
        Scene.from_json(_scene_text(**fields))


def test_limits_are_checked_for_python_scenes_too_and_can_be_raised():
    with pytest.raises(SceneError, match="max_side"):
        Scene(prompt="p", width=20_000)
    big = SceneLimits(max_side=32_768, max_pixels=2 ** 30)
    scene = Scene(prompt="p", width=20_000, limits=big)
    assert scene.with_size(30_000, 512).width == 30_000  # with_size keeps the scene's limits
    assert Scene.from_json(scene.to_json(), limits=big) == scene
    with pytest.raises(SceneError, match="max_mask_pixels"):
        Scene(prompt="p", regions=[Region("a", Mask(5000, 5000, (25_000_000,)))],
              limits=SceneLimits(max_mask_pixels=1_000_000))
    with pytest.raises(SceneError, match="max_regions"):
        Scene.from_split("p", "1,1,1", ["a", "b", "c"], limits=SceneLimits(max_regions=2))


def test_scene_limits_themselves_are_checked():
    assert DEFAULT_LIMITS == SceneLimits()
    with pytest.raises(SceneError, match="SceneLimits.max_side must be a positive integer, got 0"):
        SceneLimits(max_side=0)
    with pytest.raises(SceneError, match="limits must be a SceneLimits"):
        Scene(prompt="p", limits={"max_side": 10})


def test_odd_keys_and_element_types_from_python_dicts():
    with pytest.raises(SceneError, match=r"unknown scene field\(s\) \[1\]"):
        Scene.from_dict({"prompt": "p", 1: 2})
    with pytest.raises(SceneError, match=r"unknown region field"):
        Scene.from_dict({"prompt": "p", "regions": [{"prompt": "a", "box": [0, 0, 1, 1], 2: 0, "x": 1}]})
    with pytest.raises(SceneError, match="regions must be a list of Region"):
        Scene(prompt="p", regions=5)
    with pytest.raises(SceneError, match=r"regions\[0\] must be a Region"):
        Scene(prompt="p", regions=["a cat"])
    with pytest.raises(SceneError, match="mask rle must be a list"):
        Scene.from_dict({"prompt": "p", "regions": [{"prompt": "a", "mask": {"width": 1, "height": 1, "rle": 5}}]})


# ----------------------------------------------------------------- issue 9: LoRA references
def _lora_scene(lora):
    return {"prompt": "p", "regions": [{"prompt": "a", "box": [0, 0, 1, 1], "lora": lora}]}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_non_finite_lora_scales_in_json_are_refused(literal):
    with pytest.raises(SceneError, match="finite"):
        Scene.from_json('{"prompt": "p", "regions": [{"prompt": "a", "box": [0, 0, 1, 1], '
                        f'"lora": [{{"path": "a", "scale": {literal}}}]}}]}}')


@pytest.mark.parametrize("scale, message", [
    (math.nan, "must be a finite number, got nan"), (math.inf, "finite number, got inf"),
    (-math.inf, "finite number, got -inf"), (True, "finite number, got True"), (False, "finite number, got False"),
    (None, "finite number, got None"), ("1.0", "finite number, got '1.0'"), ([1], r"finite number, got \[1\]"),
    ({"value": 1}, "finite number"),
    pytest.param(10 ** 400, r"must lie in \[-10, 10\], got <an integer of about 400 digits>", id="10**400"),
    pytest.param(-(10 ** 5000), "an integer of about 5,000 digits", id="minus-10**5000"),
    (1e308, r"must lie in \[-10, 10\]"),
    (np.float64("nan"), "finite number"),
])
def test_hostile_lora_scales_are_scene_errors(scale, message):
    with pytest.raises(SceneError, match=message):
        LoraRef("a", scale)
    with pytest.raises(SceneError, match=r"regions\[0\]: lora\[0\]: a LoRA scale .*" + message):
        Scene.from_dict(_lora_scene([{"path": "a", "scale": scale}]))


@pytest.mark.parametrize("path, message", [
    ("a\x00b.safetensors", r"must not hold control or format characters, got 'a\\x00b.safetensors' \(U\+0000 at 1\)"),
    ("a\nb", r"control or format characters.*U\+000A"), ("\x1b[31mred", "U\\+001B"), ("a\x7f", "U\\+007F"),
    ("a\x85", "U\\+0085"), ("a\u2028b", "U\\+2028"),
    ("evil\u202egnp.safetensors", "U\\+202E"), ("a\u200bb", "U\\+200B"), ("\ud800.safetensors", "U\\+D800"),
    ("", "non-empty string, got ''"), ("\t ", "non-empty string"), (None, "non-empty string, got None"),
    (b"a.safetensors", "non-empty string, got b'a.safetensors'"), (7, "non-empty string, got 7"),
    (["a"], r"non-empty string, got \['a'\]"), ({"path": "a"}, "non-empty string"), (True, "non-empty string"),
    pytest.param("x" * 4097, "a LoRA path has 4,097 characters, more than the 4,096 allowed", id="4097-chars"),
    pytest.param("x" * 5_000_000, "a LoRA path has 5,000,000 characters", id="5M-chars"),
])
def test_hostile_lora_paths_are_scene_errors(path, message):
    with pytest.raises(SceneError, match=message):
        LoraRef(path)
    with pytest.raises(SceneError, match=r"regions\[0\]: lora\[0\]: "):
        Scene.from_dict(_lora_scene([{"path": path}]))


def test_lora_paths_that_are_odd_but_not_control_characters_are_kept():
    for path in ("a b.safetensors", "a\u00a0b", "\u07fb", "\ue000", "C:\\loras\\x.safetensors", "../../x",
                 "ü/ß/日本.safetensors", "x" * 4096):
        scene = Scene.from_dict(_lora_scene([{"path": path}]))
        assert scene.regions[0].lora == (LoraRef(path),)
        _check_accepted(scene)


@pytest.mark.parametrize("lora, message", [
    ([{"path": "a", "scale": 1, "weight": 2}], r"lora\[0\]: unknown lora field\(s\) \['weight'\]"),
    ([{"path": "a", 1: 2, None: 3}], r"unknown lora field\(s\) \[1, None\]"),
    ([{"path": "a", **{f"k{i}": i for i in range(50)}}], r"unknown lora field\(s\) \[.*, \.\.\.\]"),
    ([{"path": {"path": {"path": "a"}}}], "non-empty string"),
    ([[[[{"path": "a"}]]]], r"lora\[0\]: must be an object"),
    ([{"path": "a"}, [None]], r"lora\[1\]: must be an object .*got list"),
    ([None], "must be an object"), ([{}], "needs a 'path'"), ({"0": {"path": "a"}}, "lora must be a list"),
    ("[{\"path\": \"a\"}]", "lora must be a list .*got str"), (3.5, "got float"), (True, "got bool"),
    ([{"path": "a"}] * 1_000_000, (r"lora has 1,000,000 entries, more than the 8 allowed "
                                   r"\(SceneLimits.max_loras_per_region; pass limits=SceneLimits")),
    ([{"path": f"l{i}"} for i in range(9)], "lora has 9 entries"),
    ([{"path": "a"}, {"path": "b"}, {"path": "a", "scale": -1}], r"lora\[2\] repeats the path 'a'"),
])
def test_hostile_lora_lists_are_scene_errors(lora, message):
    with pytest.raises(SceneError, match=message):
        Scene.from_dict(_lora_scene(lora))


def test_a_huge_lora_list_in_json_is_refused_by_count_not_built():
    text = json.dumps(_lora_scene([{"path": "a"}] * 200_000))
    with pytest.raises(SceneError, match="lora has 200,000 entries.*max_loras_per_region"):
        Scene.from_json(text)
    with pytest.raises(SceneError, match="max_loras_per_region"):
        Scene(prompt="p", regions=[Region("a", Box(0, 0, 1, 1), lora=[LoraRef(f"l{i}") for i in range(10_000)])])
    with pytest.raises(SceneError, match="SceneLimits.max_loras_per_region must be a positive integer, got 0"):
        SceneLimits(max_loras_per_region=0)


def test_python_regions_refuse_lora_values_that_are_not_loraref_tuples():
    for value, message in ((None, "got NoneType"), ("a", "got str"), ({"path": "a"}, "got dict"),
                           (iter([LoraRef("a")]), "got list_iterator"), (LoraRef("a"), "got LoraRef")):
        with pytest.raises(SceneError, match="a region's lora must be a list of LoraRef, " + message):
            Region("a", Box(0, 0, 1, 1), lora=value)
    for value in ([("a", 1.0)], [{"path": "a"}], ["a"], [None]):
        with pytest.raises(SceneError, match=r"a region's lora\[0\] must be a LoraRef"):
            Region("a", Box(0, 0, 1, 1), lora=value)


# ----------------------------------------------------------------- cause 2 and 3: split ratios
def test_a_split_ratio_of_400_nines_is_refused_not_infinity():
    with pytest.raises(SplitRatioError, match=r"a ratio of 400 digits is more than the 100 allowed") as info:
        parse_split(f"{NINES_400},1")
    assert info.value.position == 0
    text = _scene_text(split=f"1,{NINES_400}", regions=[{"prompt": "a", "cell": 0}, {"prompt": "b", "cell": 1}])
    with pytest.raises(SceneError, match="max_number_digits"):
        Scene.from_json(text)


def test_a_ratio_that_rounds_past_the_digit_limit_is_refused():
    # 100 nines read as the float 1e100, which takes 101 digits to write back.
    with pytest.raises(SplitRatioError, match="rounds to a float that takes 101 digits"):
        parse_split("9" * 100 + ",1")
    assert parse_split("9" * 99 + ",1").num_regions == 2


@pytest.mark.parametrize("text, position, reason", [
    ("0,1", 0, "greater than zero"), ("1,0.000", 2, "greater than zero"), ("-1,1", 0, "expected a number"),
    ("1,1e5", 3, "expected ','"), ("inf", 0, "expected a number"), ("nan,1", 0, "expected a number"),
    ("\u0663,1", 0, "expected a number"), ("1," * 300 + "1", 512, "301 regions are more than the 256 allowed"),
])
def test_split_ratios_are_finite_positive_plain_decimals(text, position, reason):
    with pytest.raises(SplitRatioError, match=reason) as info:
        parse_split(text)
    assert info.value.position == position


def test_split_errors_are_scene_errors_and_long_splits_are_shown_in_part():
    assert issubclass(SplitRatioError, SceneError)
    with pytest.raises(SceneError):
        Scene.from_json(_scene_text(split="1,x", regions=[{"prompt": "a", "cell": 0}]))
    error = pytest.raises(SplitRatioError, parse_split, "1," * 100_000 + "x").value
    assert len(str(error)) < 600 and error.position == 200_000 and error.text.endswith("x")
    assert str(error).splitlines()[-1].strip() == "^"


@pytest.mark.parametrize("value", [2, 2.5, ["1", "1"], {"a": 1}, True])
def test_a_non_string_split_in_a_scene_file_is_a_scene_error(value):
    text = _scene_text(split=value, regions=[{"prompt": "a", "cell": 0}, {"prompt": "b", "cell": 1}])
    with pytest.raises(SceneError, match="split must be a split-ratio string"):
        Scene.from_json(text)


@pytest.mark.parametrize("text, canonical", [
    ("0.00001,1", "0.00001,1"), ("1e-05", None), ("0.1,0.2;0.3", "0.1,0.2;0.3,1"),
    ("10000000000000000,1", "10000000000000000,1"), ("1.50,2.", "1.5,2"), (".5,.25", "0.5,0.25"),
])
def test_format_split_writes_plain_decimals_that_parse_back(text, canonical):
    if canonical is None:
        with pytest.raises(SplitRatioError):
            parse_split(text)
        return
    split = parse_split(text)
    assert format_split(split) == canonical and "e" not in canonical
    assert parse_split(format_split(split)) == split


def test_a_scene_split_of_tiny_ratios_round_trips_through_json():
    scene = Scene.from_split("p", "0.00001,1", ["a", "b"])
    assert scene.split == "0.00001,1"
    _check_accepted(scene)
    assert format_split(SplitRatio(((1.0, (1e-05, 1e16, 1 / 3)),))) == "0.00001,10000000000000000,0.3333333333333333"


@pytest.mark.parametrize("rows", [
    ((1.0, (math.inf,)),), ((1.0, (math.nan, 1.0)),), ((0.0, (1.0,)),), ((1.0, (-1.0,)),), ((1.0, ()),), (),
    ((1.0, (1e308, 1e308)),), ((1e308, (1.0,)), (1e308, (1.0,))), ((1.0, (True,)),), ((1.0, (10 ** 400,)),),
])
def test_split_ratio_objects_refuse_values_that_would_make_nan_weights(rows):
    with pytest.raises(SceneError):
        SplitRatio(rows)


# ----------------------------------------------------------------- the LLM reply reader shares the JSON limits
@pytest.mark.parametrize("reply, message", [
    ('{"prompt": "p", "width": %s}' % ("9" * 5000), "max_number_digits"),
    ("{" + '"a": [' * 1000 + "]" * 1000 + "}", "max_json_depth"),
    ('{"prompt": "p", "base_ratio": NaN}', "NaN"),
    ('{"prompt": "p", "split": 2, "regions": [{"prompt": "a", "cell": 0}]}', "split must be"),
])
def test_json_replies_beyond_range_are_plan_parse_errors(reply, message):
    with pytest.raises(PlanParseError, match=message):
        read_json_scene(reply)


# ----------------------------------------------------------------- fuzz: Scene.from_json
json_atoms = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
              | st.sampled_from([10 ** 120, -(10 ** 400), 1e308, 5e-324, "1,1", "1;2,1,1", "0.5,0.5"]))
json_values = st.recursive(json_atoms, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=5), max_leaves=20)
JSON_CHARS = '{}[]",:0123456789.-+eE \\ntrufalsNIinfy' + "\u00e9\u2028\x00"


@fuzz(2800)
@given(st.text(alphabet=JSON_CHARS, max_size=60) | st.text(max_size=30))
def test_any_text_is_a_scene_or_a_scene_error(text):
    try:
        scene = Scene.from_json(text)
    except SceneError:
        return
    _check_accepted(scene)


def _mostly(valid, hostile=json_atoms):
    """``valid`` seven times in eight, else a hostile value."""
    return st.integers(0, 7).flatmap(lambda k: hostile if k == 0 else valid)


def _loras():
    """A region's ``lora`` list: mostly ``{path, scale}`` objects, sometimes hostile paths, scales, keys or lists."""
    path = _mostly(st.sampled_from(["a.safetensors", "org/style", "/abs/ölgemälde.safetensors", "b"]),
                   st.text(max_size=6) | json_atoms | st.sampled_from(["a\x00b", "a\nb", "\ud800", "x" * 4097, " "]))
    scale = _mostly(st.floats(-10, 10), json_atoms | st.floats() | st.sampled_from([10.000001, -11, 10 ** 400]))
    entry = _mostly(st.fixed_dictionaries({"path": path}, optional={"scale": scale}),
                    json_values | st.fixed_dictionaries({"path": path, "extra": json_atoms}))
    return _mostly(st.lists(entry, max_size=4), json_values | st.lists(entry, min_size=8, max_size=10))


def _regions():
    box = _mostly(st.tuples(st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0.5, 1), st.floats(0.5, 1)).map(list),
                  st.lists(st.floats(0, 1) | json_atoms, min_size=3, max_size=5))
    side = _mostly(st.integers(1, 4), st.integers(-1, 0) | json_atoms)
    mask = st.tuples(side, side).flatmap(lambda size: st.fixed_dictionaries({
        "width": st.just(size[0]), "height": st.just(size[1]),
        "rle": _mostly(st.just([size[0] * size[1]]) if all(isinstance(v, int) for v in size) else json_atoms,
                       st.lists(st.integers(-1, 16), max_size=5) | json_atoms)}))
    geometry = st.one_of(st.fixed_dictionaries({"box": box}), st.fixed_dictionaries({"mask": mask}),
                         st.fixed_dictionaries({}, optional={"box": box, "cell": st.integers(-1, 4) | json_atoms,
                                                             "mask": mask, "extra": json_atoms}))
    region = st.tuples(_mostly(st.sampled_from(["a cat", "a dog", "", " "])), geometry,
                       st.fixed_dictionaries({}, optional={"negative_prompt": _mostly(st.text(max_size=5)),
                                                           "lora": _loras()}))
    return st.lists(region.map(lambda r: {"prompt": r[0], **r[1], **r[2]}), max_size=4)


def _split_regions():
    """A split and one cell region per region (sometimes a hostile split or cell list)."""
    ratio = st.floats(min_value=1e-6, max_value=1e6).map(lambda x: format(x, "f").rstrip("0").rstrip(".") or "1")
    columns = st.lists(ratio, min_size=1, max_size=3).map(",".join)
    split = st.lists(columns, min_size=1, max_size=3).map(";".join)

    def cells(text):
        count = parse_split(text).num_regions if all(c in "0123456789.,;" for c in text) else 1
        return st.permutations([{"prompt": f"r{i}", "cell": i} for i in range(count)])
    return _mostly(split, json_atoms).flatmap(lambda text: st.tuples(st.just(text), _mostly(
        cells(text) if isinstance(text, str) and text and text[0].isdigit() else st.just([]), _regions())))


def _scene_fields():
    geometry = _mostly(st.tuples(st.just(None), _regions()), _split_regions())
    fields = st.fixed_dictionaries({"prompt": _mostly(st.text(max_size=10))}, optional={
        "version": _mostly(st.just(1)), "width": _mostly(st.integers(1, 2048), st.integers(-8, 20_000) | json_atoms),
        "height": _mostly(st.integers(1, 2048), st.integers(-8, 20_000) | json_atoms),
        "base_ratio": _mostly(st.floats(0, 1)), "base_prompt": _mostly(st.text(max_size=5) | st.none()),
        "background_prompt": _mostly(st.text(max_size=5) | st.none()),
        "negative_prompt": _mostly(st.text(max_size=5)), "notes": _mostly(st.lists(st.text(max_size=5)), json_values),
    })
    return st.tuples(fields, geometry).map(lambda pair: {**pair[0], "regions": pair[1][1]}
                                           | ({"split": pair[1][0]} if pair[1][0] is not None else {}))


@fuzz(1400)
@given(_scene_fields())
def test_any_scene_shaped_dict_is_a_scene_or_a_scene_error(data):
    try:
        scene = Scene.from_dict(data)
    except SceneError:
        return
    _check_accepted(scene)


@fuzz(1300)
@given(json_values)
def test_any_json_value_is_a_scene_or_a_scene_error_both_as_dict_and_as_text(value):
    for read in (Scene.from_dict, lambda v: Scene.from_json(json.dumps(v))):
        try:
            scene = read(value)
        except SceneError:
            continue
        _check_accepted(scene)


@fuzz(800)
@given(_loras() | json_values)
def test_any_lora_value_is_a_scene_or_a_scene_error(lora):
    data = _lora_scene(lora)
    for read in (Scene.from_dict, lambda v: Scene.from_json(json.dumps(v))):
        try:
            scene = read(data)
        except SceneError:
            continue
        _check_accepted(scene)


@fuzz(500)
@given(st.text(alphabet='{}[]",:0123456789.e-', min_size=1, max_size=400), st.integers(1, 8), st.integers(1, 8))
def test_load_json_within_small_limits_gives_a_value_or_a_scene_error(text, depth, digits):
    try:
        load_json(text, limits=SceneLimits(max_json_depth=depth, max_number_digits=digits))
    except SceneError:
        pass


# ----------------------------------------------------------------- fuzz: the split grammar
@fuzz(2600)
@given(st.text(alphabet="0123456789.,; -+eE\t\u0663xX" + string.punctuation, max_size=40) | st.text(max_size=20))
def test_any_split_text_parses_or_is_a_split_ratio_error(text):
    try:
        split = parse_split(text)
    except SplitRatioError as error:
        assert 0 <= error.position <= len(text) and isinstance(error, SceneError)
        return
    assert 1 <= split.num_regions <= DEFAULT_LIMITS.max_regions
    assert parse_split(format_split(split)) == split
    cells = split.cells()
    assert all(math.isfinite(v) for cell in cells for v in cell)


positive_floats = st.floats(min_value=5e-324, max_value=1e99, allow_nan=False, allow_infinity=False)


@fuzz(1000)
@given(st.lists(st.tuples(positive_floats, st.lists(positive_floats, min_size=1, max_size=4).map(tuple)),
                min_size=1, max_size=4))
def test_every_valid_split_round_trips_in_plain_decimals(rows):
    split = SplitRatio(tuple(rows)) if len(rows) > 1 else SplitRatio(((1.0, rows[0][1]),))
    text = format_split(split)
    assert "e" not in text and "E" not in text
    limits = SceneLimits(max_number_digits=400)  # 5e-324 takes 324 digits to write
    assert parse_split(text, limits=limits) == split


# ----------------------------------------------------------------- fuzz: masks
@fuzz(1000)
@given(st.integers(-2, 12) | st.sampled_from([10 ** 6, 10 ** 400, True]),
       st.integers(-2, 12) | st.sampled_from([10 ** 6, 10 ** 400, 1.5]),
       st.lists(st.integers(-1, 40) | st.sampled_from([10 ** 12, 10 ** 400, 1.0, None]), max_size=8) | json_atoms)
def test_any_mask_is_valid_or_a_scene_error_and_never_allocates_past_the_limit(width, height, rle):
    data = {"prompt": "p", "regions": [{"prompt": "a", "mask": {"width": width, "height": height, "rle": rle}}]}
    try:
        scene = Scene.from_dict(data)
    except SceneError:
        return
    mask = scene.regions[0].geometry
    assert mask.width * mask.height <= DEFAULT_LIMITS.max_mask_pixels
    array = mask.to_array()
    np.testing.assert_array_equal(Mask.from_array(array).to_array(), array)
    _check_accepted(scene)


def _arrays(height, width):
    return st.lists(st.booleans(), min_size=height * width, max_size=height * width).map(
        lambda bits: np.array(bits, dtype=np.float64).reshape(height, width))


@fuzz(500)
@given(st.tuples(st.integers(1, 9), st.integers(1, 9)).flatmap(lambda size: _arrays(*size)))
def test_mask_rle_round_trips_any_array(array):
    mask = Mask.from_array(array)
    np.testing.assert_array_equal(mask.to_array(), array)
    assert Mask(mask.width, mask.height, list(mask.rle)) == mask
    assert Scene.from_json(Scene(prompt="p", regions=[Region("a", mask)]).to_json()).regions[0].geometry == mask


def test_cells_and_boxes_from_python_keep_their_checks():
    for args in ((10 ** 400, 0, 1, 1, 512, 512), (0, 0, 1, 1, 0, 512), ("a", 0, 1, 1, 512, 512)):
        with pytest.raises(SceneError, match="pixel box"):
            Box.from_pixels(*args)
    with pytest.raises(SceneError):
        Cell(True)
    with pytest.raises(SceneError, match="is empty"):
        Box(0.5, 0, 0.5, 1)
