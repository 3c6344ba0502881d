"""Six English forms the offline planner reads at the grammar level (issue 15).

Each form is tested with phrasings of its own (other nouns, colours, counts and word order than
the forms suite of ``bench plan``), in both layouts where the layout matters; the suite itself is
checked at 100% at the end.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from typer.testing import CliRunner

from scenecraft.cli import plan as _plan_commands  # noqa: F401  (registers the commands)
from scenecraft.cli.app import app
from scenecraft.evaluation.plan_bench import run_plan_bench
from scenecraft.evaluation.plan_forms import FORM_CAUSES, FORMS_SUITE, score_form
from scenecraft.planning import PlanReadError, plan_offline
from scenecraft.planning.grammar import parse_prompt
from scenecraft.planning.lexicon import PAIR_NOUNS, pluralize, singularize
from scenecraft.scene import Box, Scene, scene_json_schema

LAYOUTS = ("boxes", "split")


def shown(scene: Scene) -> list[str]:
    """Sorted prompts of the regions that show an object (a split's filler cells left out)."""
    fillers = {"empty background", scene.background_prompt}
    return sorted(r.prompt for r in scene.regions if r.prompt not in fillers)


def centres(scene: Scene, prompt: str) -> list[tuple[float, float]]:
    rects = [scene.region_rect(r) for r in scene.regions if r.prompt == prompt]
    return [((x0 + x1) / 2, (y0 + y1) / 2) for x0, y0, x1, y1 in rects]


def negatives(scene: Scene) -> set[str]:
    return {part.strip() for part in scene.negative_prompt.split(",") if part.strip()}


# ----------------------------------------------------------------- 1. exclusivity
@pytest.mark.parametrize("prompt, expected", [
    ("a purple kite by itself", ["a purple kite"]),
    ("only two brown horses", ["a brown horse"] * 2),
    ("one white swan alone on a lake", ["a white swan"]),
    ("exactly three pink roses and nothing else", ["a pink rose"] * 3),
    ("a lonely bench and nothing more", ["a lonely bench"]),
    ("just a green bottle, nothing else in the picture", ["a green bottle"]),
    ("two owls all by themselves", ["an owl"] * 2),
    ("a red kettle on its own, and that's all", ["a red kettle"]),
])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_exclusivity_names_no_extra_object(prompt, expected, layout):
    scene = plan_offline(prompt, layout=layout)
    assert shown(scene) == sorted(expected)
    assert not {"itself", "nothing", "else", "more", "alone", "exactly"} & set(" ".join(shown(scene)).split())


def test_exclusivity_keeps_the_count_and_position():
    scene = plan_offline("nothing but a blue ball on the left")
    (x, _), = centres(scene, "a blue ball")
    assert x < 0.5 and shown(scene) == ["a blue ball"]
    assert parse_prompt("exactly two cats").entities[0].explicit_count
    scene = plan_offline("a single fox and no other animals")
    assert shown(scene) == ["a fox"] and negatives(scene) == {"other animals"}


# ----------------------------------------------------------------- 2. a counted category before its list
@pytest.mark.parametrize("prompt, expected", [
    ("six things: a cup, a fork, a knife, a plate, a bowl and a spoon",
     ["a cup", "a fork", "a knife", "a plate", "a bowl", "a spoon"]),
    ("two toys: a red car and a yellow duck", ["a red car", "a yellow duck"]),
    ("three birds: a crow, a robin and a sparrow", ["a crow", "a robin", "a sparrow"]),
    ("four animals, two cats and two dogs", ["a cat", "a cat", "a dog", "a dog"]),
    ("two shapes (a circle and a square)", ["a circle", "a square"]),
    ("a bowl, a cup and a spoon - three objects", ["a bowl", "a cup", "a spoon"]),
    ("the animals are a lion and a zebra", ["a lion", "a zebra"]),
    ("three yellow things: a banana, a lemon and a duck", ["a yellow banana", "a yellow lemon", "a yellow duck"]),
])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_count_names_the_list(prompt, expected, layout):
    scene = plan_offline(prompt, layout=layout)
    assert shown(scene) == sorted(expected)
    assert scene.notes == ()


@pytest.mark.parametrize("prompt, expected, words", [
    ("four fruits: an apple and a pear", ["an apple", "a pear"], "'four fruits' is followed by a list of 2"),
    ("two pets: a cat, a dog and a hamster", ["a cat", "a dog", "a hamster"], "list of 3"),
    ("a cow and a pig: three animals", ["a cow", "a pig"], "'three animals' sums up a list of 2"),
])
def test_a_count_that_disagrees_with_its_list_is_noted_and_the_list_wins(prompt, expected, words):
    scene = plan_offline(prompt)
    assert shown(scene) == sorted(expected)
    assert any(words in note for note in scene.notes), scene.notes


def test_the_list_inherits_the_categorys_relations_and_arrangement():
    scene = plan_offline("three fruits on a plate: an apple, a pear and a plum")
    assert shown(scene) == ["a pear", "a plate", "a plum", "an apple"]
    (_, plate_y), = centres(scene, "a plate")
    assert all(centres(scene, fruit)[0][1] < plate_y for fruit in ("an apple", "a pear", "a plum"))
    scene = plan_offline("three animals in a row: a cat, a dog and a horse", layout="split")
    xs = [centres(scene, a)[0][0] for a in ("a cat", "a dog", "a horse")]
    assert xs == sorted(xs) and len(set(xs)) == 3
    scene = plan_offline("two shapes on the right: a circle and a square")
    assert all(centres(scene, s)[0][0] > 0.5 for s in ("a circle", "a square"))


def test_a_comma_after_an_ordinary_noun_is_still_a_list_of_more_objects():
    assert shown(plan_offline("two dogs, a cat and a bird")) == ["a bird", "a cat", "a dog", "a dog"]
    assert shown(plan_offline("a shelf: a book and a cup")) == ["a book", "a cup", "a shelf"]


# ----------------------------------------------------------------- 3. attributes after the noun
@pytest.mark.parametrize("prompt, expected", [
    ("five pencils, all yellow", ["a yellow pencil"] * 5),
    ("two vases, both tall", ["a tall vase"] * 2),
    ("three mugs, every one of them white", ["a white mug"] * 3),
    ("a pair of boots, both red", ["a red boot"] * 2),
    ("two big boxes, both green", ["a big green box"] * 2),
    ("four kites, each one orange", ["an orange kite"] * 4),
    ("two cups, blue", ["a blue cup"] * 2),
    ("six eggs, two brown and the others white", ["a brown egg"] * 2 + ["a white egg"] * 4),
    ("three hats: a red one, a blue one and a green one", ["a red hat", "a blue hat", "a green hat"]),
    ("three squares, one green", ["a green square", "a square", "a square"]),
    ("four balls, one red, one blue and the rest pink", ["a red ball", "a blue ball", "a pink ball", "a pink ball"]),
])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_attributes_after_the_noun_distribute_over_its_instances(prompt, expected, layout):
    assert shown(plan_offline(prompt, layout=layout)) == sorted(expected)


def test_shared_attributes_keep_the_relations_that_follow():
    scene = plan_offline("two frogs, all green, on a leaf")
    assert shown(scene) == ["a green frog", "a green frog", "a leaf"]
    (_, leaf_y), = centres(scene, "a leaf")
    assert all(y < leaf_y for _, y in centres(scene, "a green frog"))


@pytest.mark.parametrize("prompt, words", [
    ("two dogs, three black", "three black"),
    ("two circles, one red, one blue and one green", "one green"),
    ("both blue", "both blue"),
    ("all black, three birds", "all black"),
])
def test_attributes_that_describe_no_named_object_are_an_error_naming_them(prompt, words):
    with pytest.raises(PlanReadError) as caught:
        plan_offline(prompt)
    assert caught.value.words == words and f"'{words}'" in str(caught.value)


# ----------------------------------------------------------------- 4. "no X, just Y"
@pytest.mark.parametrize("prompt, expected, excluded", [
    ("no horses, only a cow", ["a cow"], {"horses"}),
    ("not one bird, only a cloud", ["a cloud"], {"bird"}),
    ("without trees; just a house and a fence", ["a house", "a fence"], {"trees"}),
    ("no cups or plates, only a teapot", ["a teapot"], {"cups", "plates"}),
    ("no green cars, just a red one", ["a red car"], {"green cars"}),
    ("a cat and no dog, just a mouse", ["a cat", "a mouse"], {"dog"}),
    ("no chairs: only two stools", ["a stool", "a stool"], {"chairs"}),
    ("there are no boats, merely a yellow buoy", ["a yellow buoy"], {"boats"}),
    ("a bicycle rather than a car", ["a bicycle"], {"car"}),
])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_no_x_just_y_draws_y_and_excludes_x(prompt, expected, excluded, layout):
    scene = plan_offline(prompt, layout=layout)
    assert shown(scene) == sorted(expected)
    assert negatives(scene) == excluded
    assert not any(word in (scene.base_prompt or "") for word in excluded)


def test_the_same_object_asked_for_and_excluded_is_an_error():
    with pytest.raises(PlanReadError, match="excludes 'cats'"):
        plan_offline("no cats, only cats")
    assert shown(plan_offline("not one cat but two cats")) == ["a cat", "a cat"]  # a count, not the object


# ----------------------------------------------------------------- 5. relations a split must keep
@pytest.mark.parametrize("prompt, relations", [
    ("a cup above a plate, and a spoon to the right of both",
     [("a cup", "y", "a plate"), ("a plate", "x", "a spoon"), ("a cup", "x", "a spoon")]),
    ("a hat above a coat, and a bag to the left of them",
     [("a hat", "y", "a coat"), ("a bag", "x", "a hat"), ("a bag", "x", "a coat")]),
    ("a moon over a house and a tree to the right of them",
     [("a moon", "y", "a house"), ("a house", "x", "a tree"), ("a moon", "x", "a tree")]),
    ("a red square below a blue circle, with a green triangle to the left of both",
     [("a blue circle", "y", "a red square"), ("a green triangle", "x", "a red square"),
      ("a green triangle", "x", "a blue circle")]),
])
def test_a_split_keeps_every_stated_relation(prompt, relations):
    for layout in LAYOUTS:
        scene = plan_offline(prompt, layout=layout)
        assert (scene.split is not None) == (layout == "split") and scene.notes == ()
        for first, axis, second in relations:
            k = 0 if axis == "x" else 1
            for a in centres(scene, first):
                for b in centres(scene, second):
                    assert a[k] < b[k], (prompt, layout, first, second)


@pytest.mark.parametrize("prompt, where", [
    ("a red circle in the top left corner", (0, 0)), ("a cat at the bottom", (None, 1)),
    ("a bird at the top and a fish on the right", None),
])
def test_a_split_keeps_positions_with_filler_cells_and_rows(prompt, where):
    scene = plan_offline(prompt, layout="split")
    assert scene.split is not None and scene.notes == ()
    if where is None:
        (_, bird_y), (fish_x, _) = centres(scene, "a bird")[0], centres(scene, "a fish")[0]
        assert bird_y < 0.5 < fish_x
        return
    (x, y), = [c for r in scene.regions if r.prompt != "empty background" for c in centres(scene, r.prompt)]
    for value, side in zip((x, y), where):
        assert side is None or (value < 0.5 if side == 0 else value > 0.5)


@pytest.mark.parametrize("prompt, inner, outer", [
    ("a bird in a cage", "a bird", "a cage"),
    ("a red ball inside a blue box, next to a chair", "a red ball", "a blue box"),
])
def test_a_relation_no_split_can_hold_falls_back_to_boxes_and_says_so(prompt, inner, outer):
    scene = plan_offline(prompt, layout="split")
    assert scene.split is None and all(isinstance(r.geometry, Box) for r in scene.regions)
    assert any("layout 'split' cannot keep" in n and f"'{inner}' inside '{outer}'" in n for n in scene.notes)
    (x0, y0, x1, y1), = [scene.region_rect(r) for r in scene.regions if r.prompt == inner]
    (ox0, oy0, ox1, oy1), = [scene.region_rect(r) for r in scene.regions if r.prompt == outer]
    assert ox0 <= x0 < x1 <= ox1 and oy0 <= y0 < y1 <= oy1


# ----------------------------------------------------------------- 6. nouns plural in form
@pytest.mark.parametrize("prompt, expected", [
    ("a pair of jeans", ["a pair of jeans"]),
    ("jeans and a shirt", ["a pair of jeans", "a shirt"]),
    ("two pliers", ["a pair of pliers"] * 2),
    ("a pair of red tongs", ["a pair of red tongs"]),
    ("headphones on a desk", ["a pair of headphones", "a desk"]),
    ("four pairs of goggles", ["a pair of goggles"] * 4),
    ("black leggings beside white tights", ["a pair of black leggings", "a pair of white tights"]),
    ("some clothes on a chair", ["clothes", "a chair"]),
    ("three wine glasses", ["a wine glass"] * 3),
])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_nouns_plural_in_form_are_one_object_each(prompt, expected, layout):
    scene = plan_offline(prompt, layout=layout)
    assert shown(scene) == sorted(expected)
    assert not any(w in " ".join(shown(scene)).split() for w in ("scissor", "jean", "plier", "tong", "headphone"))


def test_plural_nouns_in_the_lexicon_and_in_labels():
    for word in PAIR_NOUNS:
        assert singularize(word) == word and pluralize(word) == word
    assert parse_prompt("three pairs of scissors").entities[0].label == "three pairs of scissors"
    assert plan_offline("two pairs of trousers").base_prompt == "two pairs of trousers"
    scene = plan_offline("no scissors, only a knife")
    assert shown(scene) == ["a knife"] and negatives(scene) == {"scissors"}


def test_bare_glasses_are_eyewear_and_the_reading_is_noted():
    scene = plan_offline("glasses on a book")
    assert shown(scene) == ["a book", "a pair of glasses"]
    assert any("'glasses' read as eyeglasses" in n for n in scene.notes)
    assert plan_offline("a pair of glasses").notes == ()
    assert shown(plan_offline("two glasses of milk")) == ["a glass of milk"] * 2


# ----------------------------------------------------------------- notes in the scene, the suite, the bench
def test_notes_are_json_in_the_schema_and_optional():
    scene = plan_offline("two fruits: an apple, a banana and a pear")
    data = json.loads(scene.to_json())
    assert data["notes"] == list(scene.notes) and len(scene.notes) == 1
    jsonschema.validate(data, scene_json_schema())
    assert Scene.from_json(scene.to_json()) == scene
    plain = plan_offline("a cat")
    assert "notes" not in plain.to_dict() and Scene.from_dict(plain.to_dict()).notes == ()
    with pytest.raises(ValueError, match="notes"):
        Scene(prompt="p", notes="not a list")  # type: ignore[arg-type]


def test_every_cause_has_several_phrasings_in_the_suite():
    causes = [spec.cause for _, spec in FORMS_SUITE]
    assert set(causes) == set(FORM_CAUSES) and min(causes.count(c) for c in FORM_CAUSES) >= 8
    assert len({prompt for prompt, _ in FORMS_SUITE}) == len(FORMS_SUITE)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_forms_suite_scores_100_percent(layout):
    for prompt, spec in FORMS_SUITE:
        ok, reason = score_form(spec, plan_offline(prompt, layout=spec.layout or layout))
        assert ok, (prompt, layout, reason)


def test_score_form_fails_wrong_plans():
    spec = dict(FORMS_SUITE)["a lamp on top of a table, and a chair to the right of both"]
    one_row = Scene.from_split("p", "1,1,1", ["a lamp", "a table", "a chair"])
    assert score_form(spec, one_row) == (False, "'a lamp' is not above 'a table'")
    spec = dict(FORMS_SUITE)["no cats, only a dog"]
    assert not score_form(spec, plan_offline("a dog"))[0]  # the cats are not excluded
    assert not score_form(dict(FORMS_SUITE)["a pair of scissors"], plan_offline("two cats"))[0]


def test_bench_reports_the_forms_suite_below_lmd():
    result = run_plan_bench("offline", limit=2)
    assert result.overall == 1.0 and result.forms == dict.fromkeys(FORM_CAUSES, (2, 2))
    assert "forms overall 100.0%" in result.lines() and result.to_dict()["forms"]["overall"] == 100.0
    runner = CliRunner()
    output = runner.invoke(app, ["bench", "plan", "--layout", "split"]).output
    assert "overall 100.0%" in output and "forms overall 100.0%" in output
    assert f"split-relations     {sum(s.cause == 'split-relations' for _, s in FORMS_SUITE)}/" in output
