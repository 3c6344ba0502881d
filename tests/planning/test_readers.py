"""Readers of LMD / RPG / JSON replies: real recorded replies, damaged replies, and fuzzing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scenecraft.planning import PlanError, PlanParseError, read_json_scene, read_lmd, read_rpg
from scenecraft.planning.llm import read_reply
from scenecraft.planning.readers import MAX_REPLY_CHARS
from scenecraft.scene import Box, Scene

FIXTURES = Path(__file__).parent / "fixtures"

GPT4 = json.loads((FIXTURES / "cache_lmd_v0.1_gpt-4.json").read_text())


def test_every_recorded_gpt4_reply_reads():
    replies = [(prompt, reply) for prompt, answers in GPT4.items() for reply in answers]
    assert len(replies) == 400
    for prompt, reply in replies:
        scene = read_lmd(reply, prompt=prompt)
        assert scene.prompt == prompt and all(isinstance(r.geometry, Box) for r in scene.regions)
    scene = read_lmd(GPT4["A realistic photo of a scene with a green car and a blue bottle"][0])
    assert [r.prompt for r in scene.regions] == ["a green car", "a blue bottle"]
    assert scene.regions[0].geometry.as_list() == pytest.approx([50 / 512, 200 / 512, 250 / 512, 350 / 512])
    assert scene.background_prompt == "A realistic scene" and scene.negative_prompt == ""
    scene = read_lmd(GPT4["A realistic photo of a scene without backpacks"][0])
    assert scene.regions == () and scene.negative_prompt == "backpacks"


def test_lmd_variants():
    text = ("Reasoning: the cat goes left.\nObjects: [(\"a cat's toy\", [0, 0, 100, 80.5]), ('a dog', (300, 200, 400, 400))]\n"
            "Background prompt: a garden\nNegative prompt: None")
    scene = read_lmd(text, prompt="p", width=768, height=512)
    assert [r.prompt for r in scene.regions] == ["a cat's toy", "a dog"]
    assert scene.regions[1].geometry.as_list() == pytest.approx([300 / 512, 200 / 512, 1.0, 1.0])  # clipped
    assert scene.negative_prompt == "" and (scene.width, scene.height) == (768, 512)
    tiny = read_lmd("[('a bee', [100, 100, 2, 2])]").regions[0].geometry
    assert tiny.x1 - tiny.x0 == pytest.approx(1 / 16)  # grown to the minimum side
    full = read_lmd("[('a meadow', [0, 0, 512, 512]), ('a cow', [10, 10, 50, 50])]")
    assert [r.prompt for r in full.regions] == ["a cow"] and full.background_prompt == "a meadow"


@pytest.mark.parametrize("text, reason", [
    ("[('a cat', [1, 2, 3, 4]), ('a dog', [5, 6,", "truncated"),
    ("[('a cat', [1, 2, 3])]\nBackground prompt: x", "4 numbers"),
    ("[('a cat', [1, 2, 0, 4])]", "empty box"),
    ("[('', [1, 2, 3, 4])]", "non-empty name"),
    ("[('a cat', [1, 2, 3, 4])] trailing\nBackground prompt: x", "unexpected text"),
    ("[__import__('os').system('x')]", "expected a list"),
    ("[('a cat, [1, 2, 3, 4])]", "not closed"),
    ("[[[[[[1]]]]]]", "nesting"),
    ("[('a cat', [900, 900, 10, 10])]", "outside"),
    ("x" * (MAX_REPLY_CHARS + 1), "characters"),
])
def test_lmd_errors_name_the_problem(text, reason):
    with pytest.raises(PlanParseError, match=reason):
        read_lmd(text)


def test_rpg_reader():
    text = ("Let me think: the sky is on top.\nFinal split ratio: 1,1;2,1,1\n"
            "Regional Prompt: a blue sky with clouds BREAK a red house BREAK a green tree")
    scene = read_rpg(text, prompt="a house and a tree under the sky")
    assert scene.split == "1,1;2,1,1"
    assert [r.prompt for r in scene.regions] == ["a blue sky with clouds", "a red house", "a green tree"]
    based = read_rpg("Final split ratio: 1,1\nRegional Prompt: two animals BREAK a cat BREAK a dog")
    assert based.base_prompt == "two animals" and len(based.regions) == 2
    for bad, reason in [("Regional Prompt: a BREAK b", "Final split ratio"),
                        ("Final split ratio: 1,1\n", "Regional Prompt"),
                        ("Final split ratio: 1,x\nRegional Prompt: a BREAK b", "expected a number"),
                        ("Final split ratio: 1,1,1\nRegional Prompt: a BREAK b BREAK c BREAK d BREAK e", "regions"),
                        ("Final split ratio: 1,1\nRegional Prompt: a BREAK  BREAK b", "empty")]:
        with pytest.raises(PlanParseError, match=reason):
            read_rpg(bad)


def test_json_reader_takes_the_last_object_after_reasoning_and_fences():
    scene = Scene.from_split("p", "1,1", ["a cat", "a dog"])
    text = 'I think {"draft": 1} is wrong.\n```json\n' + scene.to_json() + "\n```"
    assert read_json_scene(text) == scene
    with pytest.raises(PlanParseError, match="not closed"):
        read_json_scene(scene.to_json()[:-5])
    with pytest.raises(PlanParseError, match="no JSON object"):
        read_json_scene("no json here")
    with pytest.raises(PlanParseError, match="regions"):
        read_json_scene('{"prompt": "p", "regions": 3}')


def test_read_reply_repairs_boxes():
    text = json.dumps({"regions": [{"prompt": "a cat", "box": [300, 100, 100, 300]},
                                   {"prompt": "a field", "box": [0, 0, 1, 1]},
                                   {"prompt": "a dog", "box": [-0.2, 0.5, 0.3, 1.4]}]})
    scene = read_reply(text, prompt="p", width=512, height=512)
    assert [r.prompt for r in scene.regions] == ["a cat", "a dog"]
    assert scene.regions[0].geometry.as_list() == pytest.approx([100 / 512, 100 / 512, 300 / 512, 300 / 512], abs=1e-4)
    assert scene.regions[1].geometry.as_list() == pytest.approx([0.0, 0.5, 0.3, 1.0])
    assert scene.background_prompt == "a field"


def _check_reader(reader, text):
    try:
        scene = reader(text)
    except PlanError as error:  # PlanParseError, or PlanValidationError for a box off the canvas
        assert str(error)  # the clear error, nothing else
        return
    assert isinstance(scene, Scene)


_ALPHABET = st.sampled_from(list("[](),'\"\\ \n0123456789.-+eE:abcBREAKObjectsBackgroundNegativepromptFinalsplitratio{}"))
_LMD_ATOMS = st.sampled_from(["[", "]", "(", ")", ",", "'a cat'", '"a dog"', "'", "1", "-5", "512", "1e309", "0",
                              "3.5", "Objects: ", "\nBackground prompt: ", "\nNegative prompt: ", "None", " ", "x"])
_RPG_ATOMS = st.sampled_from(["Final split ratio: ", "Regional Prompt: ", "BREAK", "1", ",", ";", "0", "2.5", " ",
                              "\n", "a cat", ".", "-1", "x"])
_FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.one_of(st.text(_ALPHABET, max_size=120), st.lists(_LMD_ATOMS, max_size=40).map("".join)))
def test_fuzz_lmd_reader(text):
    _check_reader(read_lmd, text)


@_FUZZ
@given(st.one_of(st.text(_ALPHABET, max_size=120), st.lists(_RPG_ATOMS, max_size=40).map("".join)))
def test_fuzz_rpg_reader(text):
    _check_reader(read_rpg, text)


_JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 600), st.floats(allow_nan=False, allow_infinity=False),
              st.sampled_from(["a cat", "", "1,1", "1;x", "boxes"])),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.sampled_from(["prompt", "box", "cell", "mask", "split", "regions",
                                                             "width", "height", "rle", "negative_prompt",
                                                             "background_prompt", "base_ratio", "version", "x"]),
                                            inner, max_size=6)),
    max_leaves=25)


@_FUZZ
@given(st.one_of(_JSON_VALUES.map(json.dumps), st.text(_ALPHABET, max_size=80)))
def test_fuzz_json_reply_reader(text):
    _check_reader(lambda t: read_reply(t, prompt="p", width=512, height=512), text)


@pytest.mark.parametrize("box", [[], [0.1, 0.2], ["a", "b", "c", "d"], [0, 0, float("inf"), 1], [True, 0, 1, 1], "0,0,1,1"])
def test_read_reply_names_malformed_boxes_instead_of_crashing(box):
    # Found by the fuzzer in CI: an empty box list reached an index error in the repair step.
    text = json.dumps({"prompt": "p", "regions": [{"prompt": "a cat", "box": box}]})
    # Infinity is refused by the JSON reader itself, before any box is looked at.
    with pytest.raises(PlanError, match="Infinity .* not allowed" if "Infinity" in text else "box"):
        read_reply(text, prompt="p", width=512, height=512)


@pytest.mark.parametrize("text", ['{"regions": ' + "[" * 5_000 + "]" * 5_000 + "}",
                                  '{"regions": [{"prompt": "a cat", "box": [0, 0, 1' + "0" * 400 + ', 1]}]}',
                                  '{"regions": [{"prompt": "a cat", "box": [0, 0, 1' + "9" * 5000 + ', 1]}]}',
                                  '{"width": NaN}'])
def test_read_reply_bounds_depth_and_digits(text):
    with pytest.raises(PlanParseError, match="nests|digits|not allowed"):
        read_reply(text, prompt="p", width=512, height=512)


def test_hostile_plan_cache_entries_are_misses(tmp_path):
    from scenecraft.planning.cache import PlanCache

    cache = PlanCache(tmp_path)
    key = {"prompt": "p"}
    for text in ("[" * 100_000, '{"key": {"prompt": "p"}, "scene": {"width": 1' + "0" * 5000 + "}}", "[]", "\xff"):
        cache.path(key).write_text(text, encoding="utf-8", errors="surrogateescape")
        assert cache.get(key) is None
