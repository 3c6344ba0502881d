"""Instructions to edits (issue 14, part 2): the offline forms, ambiguity and unknown instructions, plan_edit
over rounds, and LLM edit replies (edits or a whole scene, hostile ones) over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenecraft.planning import (
    EDIT_FORMS,
    EditPlan,
    InstructionError,
    PlanError,
    PlanValidationError,
    parse_instruction,
    plan_edit,
)
from scenecraft.planning.instructions import NeedsBoxes, is_undo
from scenecraft.planning.llm import read_edit_reply
from scenecraft.planning.templates import build_edit_messages, edit_schema
from scenecraft.scene import Box, LoraRef, Region, Scene
from scenecraft.scene.edits import (
    ChangeAttribute,
    EditHistory,
    MoveRegion,
    RemoveRegion,
    ReplacePrompt,
    ResizeRegion,
    SetCount,
    SwapRegions,
    Undo,
    apply_edits,
)

SHAPES = Scene(prompt="a red circle left of a blue square", regions=[
    Region("a red circle", Box(0.1, 0.3, 0.4, 0.6)), Region("a blue square", Box(0.6, 0.3, 0.9, 0.6)),
    Region("a green triangle", Box(0.4, 0.0, 0.6, 0.2))])
TWINS = Scene(prompt="two red circles and a dog", regions=[
    Region("a red circle", Box(0.05, 0.3, 0.3, 0.55)), Region("a red circle", Box(0.6, 0.3, 0.85, 0.55)),
    Region("a dog, golden retriever", Box(0.35, 0.65, 0.6, 0.9))])
PETS = Scene(prompt="a dog to the left of a cat in a park", background_prompt="a park", regions=[
    Region("a dog", Box(0.05, 0.4, 0.4, 0.8)), Region("a cat", Box(0.6, 0.45, 0.9, 0.8))])


def edits(instruction, scene=SHAPES, **kwargs):
    return parse_instruction(instruction, scene, **kwargs)


def centre(box):
    return ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)


# ----------------------------------------------------------------- each form
@pytest.mark.parametrize("instruction, expected", [
    ("make the circle blue", [ChangeAttribute("r1", "colour", "blue")]),
    ("Please make the circle blue.", [ChangeAttribute("r1", "colour", "blue")]),
    ("paint the triangle red", [ChangeAttribute("r3", "colour", "red")]),
    ("change the red circle to a green one", [ChangeAttribute("r1", "colour", "green")]),
    ("change the red circle to green", [ChangeAttribute("r1", "colour", "green")]),
    ("change the colour of the square to light green", [ChangeAttribute("r2", "colour", "light green")]),
    ("the circle should be purple", [ChangeAttribute("r1", "colour", "purple")]),
    ("make the circle a wooden one", [ChangeAttribute("r1", "material", "wooden")]),
    ("make the square bigger", [ResizeRegion("r2", scale=1.25)]),
    ("make the square smaller", [ResizeRegion("r2", scale=0.8)]),
    ("make the triangle twice as big", [ResizeRegion("r3", scale=2.0)]),
    ("make the square 3 times bigger", [ResizeRegion("r2", scale=3.0)]),
    ("make the square much smaller", [ResizeRegion("r2", scale=round(0.8 ** 1.6, 6))]),
    ("enlarge the circle", [ResizeRegion("r1", scale=1.25)]),
    ("shrink the square", [ResizeRegion("r2", scale=0.8)]),
    ("make the circle blue and bigger", [ChangeAttribute("r1", "colour", "blue"), ResizeRegion("r1", scale=1.25)]),
    ("move the circle to the left of the square", [MoveRegion("r1", relation="left_of", of="r2")]),
    ("move the circle below the square", [MoveRegion("r1", relation="below", of="r2")]),
    ("put the square above the circle", [MoveRegion("r2", relation="above", of="r1")]),
    ("move the square to the left", [MoveRegion("r2", place="left")]),
    ("move the circle to the left", [MoveRegion("r1", dx=-0.2)]),  # already on the left: a step further
    ("move the circle to the top right", [MoveRegion("r1", place="top-right")]),
    ("move the circle to the top-right corner", [MoveRegion("r1", place="top-right")]),
    ("put the circle in the middle", [MoveRegion("r1", place="center")]),
    ("move the circle up a bit", [MoveRegion("r1", dy=-0.1)]),
    ("move the square right", [MoveRegion("r2", dx=0.2)]),
    ("move the circle a little to the right", [MoveRegion("r1", dx=0.1)]),
    ("remove the triangle", [RemoveRegion("r3")]),
    ("delete the blue square", [RemoveRegion("r2")]),
    ("get rid of the triangle", [RemoveRegion("r3")]),
    ("remove r2", [RemoveRegion("r2")]),
    ("remove everything", [RemoveRegion("r1"), RemoveRegion("r2"), RemoveRegion("r3")]),
    ("replace the square with a cat", [ReplacePrompt("r2", "a cat")]),
    ("replace the blue square by an apple", [ReplacePrompt("r2", "an apple")]),
    ("turn the square into a dog", [ReplacePrompt("r2", "a dog")]),
    ("make the square a cat", [ReplacePrompt("r2", "a cat")]),
    ("swap the square for a cat", [ReplacePrompt("r2", "a cat")]),
    ("swap the circle and the square", [SwapRegions("r1", "r2")]),
    ("switch the circle with the triangle", [SwapRegions("r1", "r3")]),
    ("swap the positions of the triangle and the square", [SwapRegions("r3", "r2")]),
    ("make it three circles", [SetCount("circle", 3)]),
    ("there should be four squares", [SetCount("square", 4)]),
    ("there should be no squares", [SetCount("square", 0)]),
    ("i want two red stars", [SetCount("red star", 2, prompt="a red star")]),
    ("change the number of circles to 5", [SetCount("circle", 5)]),
    ("undo", [Undo()]),
    ("Undo that, please", [Undo()]),
    ("make the circle blue and move the square to the left",
     [ChangeAttribute("r1", "colour", "blue"), MoveRegion("r2", place="left")]),
    ("remove the triangle, then swap the circle and the square", [RemoveRegion("r3"), SwapRegions("r1", "r2")]),
])
def test_each_instruction_form_maps_to_its_edits(instruction, expected):
    assert list(edits(instruction)) == expected
    if expected != [Undo()]:
        apply_edits(SHAPES, expected)  # and they apply


@pytest.mark.parametrize("instruction, expected", [
    ("make the left circle blue", [ChangeAttribute("r1", "colour", "blue")]),
    ("make the circle on the right blue", [ChangeAttribute("r2", "colour", "blue")]),
    ("make the rightmost circle blue", [ChangeAttribute("r2", "colour", "blue")]),
    ("make the circles green", [ChangeAttribute("r1", "colour", "green"), ChangeAttribute("r2", "colour", "green")]),
    ("remove the circles", [RemoveRegion("r1"), RemoveRegion("r2")]),
    ("remove both circles", [RemoveRegion("r1"), RemoveRegion("r2")]),
    ("remove a circle", [SetCount("circle", 1)]),
    ("remove the left circle and the dog", [RemoveRegion("r1"), RemoveRegion("r3")]),
    ("make the dog a cat", [ReplacePrompt("r3", "a cat")]),
    ("change the circles to squares", [ReplacePrompt("r1", "a square"), ReplacePrompt("r2", "a square")]),
    ("make it three circles", [SetCount("circle", 3)]),
    ("move the circles to the top", [MoveRegion("r1", dy=-0.175), MoveRegion("r2", dy=-0.175)]),
])
def test_several_objects_of_a_kind_are_told_apart_by_place_or_taken_together(instruction, expected):
    assert list(edits(instruction, TWINS)) == expected


def test_add_places_new_objects_in_free_space_where_asked():
    scene = SHAPES.with_ids()
    two = edits("add two birds")
    assert [(e.op, e.prompt, e.id) for e in two] == [("add", "a bird", "r4"), ("add", "a bird", "r5")]
    after = apply_edits(scene, two).scene
    boxes = [r.geometry for r in after.regions]
    for k, a in enumerate(boxes):  # the new birds overlap nothing
        for b in boxes[k + 1:]:
            if k >= 3 or boxes.index(b) >= 3:
                assert min(a.x1, b.x1) <= max(a.x0, b.x0) + 1e-9 or min(a.y1, b.y1) <= max(a.y0, b.y0) + 1e-9
    (star,) = edits("add a yellow star on the right")
    assert star.prompt == "a yellow star" and centre(star.box)[0] > 0.5
    (top_left,) = edits("add a cat in the top left corner")
    assert centre(top_left.box)[0] < 0.5 and centre(top_left.box)[1] < 0.5
    (left_of,) = edits("add a cat to the left of the square", PETS.with_ids().__class__(
        prompt="p", regions=[Region("a blue square", Box(0.55, 0.3, 0.85, 0.6))]))
    assert left_of.box.x1 <= 0.55 - 0.02 + 1e-9 and 0.3 <= centre(left_of.box)[1] <= 0.6
    above = edits("add a bird above the cat", PETS)
    assert above[0].box.y1 <= 0.45 - 0.02 + 1e-9 and 0.6 <= centre(above[0].box)[0] <= 0.9
    (another,) = edits("add another circle", TWINS)
    assert another.prompt == "a red circle" and abs((another.box.x1 - another.box.x0) - 0.25) < 1e-6
    pair = edits("add a cat and a dog")
    assert [e.prompt for e in pair] == ["a cat", "a dog"]
    assert edits("put a cat on the left")[0].prompt == "a cat"
    assert edits("add two birds") == two  # deterministic


def test_later_clauses_and_rounds_see_what_earlier_ones_did():
    assert [e.op for e in edits("add a star and make it yellow")] == ["add", "change_attribute"]
    added = edits("add a star and make it yellow")
    assert added[1] == ChangeAttribute(added[0].id, "colour", "yellow")
    history = EditHistory.start(SHAPES)
    plan_edit("add a star on the right", history=history).commit(history)
    assert edits("make it bigger", history.scene, history=history) == (ResizeRegion("r4", scale=1.25),)
    assert edits("move it to the top", history.scene, history=history)[0].id == "r4"


def test_ambiguous_objects_name_the_candidates():
    with pytest.raises(InstructionError) as caught:
        edits("make the circle blue", TWINS)
    message = str(caught.value)
    assert caught.value.candidates == ("r1", "r2")
    assert "'the circle' could be 2 regions: r1 'a red circle' (left), r2 'a red circle' (right)" in message
    assert "say which one" in message and "'the left circle'" in message
    with pytest.raises(InstructionError, match="'the circle' could be 2 regions") as caught:
        edits("move the circle to the left", TWINS)
    with pytest.raises(InstructionError, match="'the two circles' names 2 regions but 1 match"):
        edits("remove the two circles", SHAPES)
    with pytest.raises(InstructionError, match="'it' could mean any of r1 'a red circle'"):
        edits("make it blue")
    with pytest.raises(InstructionError, match="a swap exchanges two objects"):
        edits("swap the circles and the dog", TWINS)


@pytest.mark.parametrize("instruction, message", [
    ("fly the circle to the moon", r"cannot read the instruction 'fly the circle to the moon': 'fly the circle to the "
                                   r"moon' does not start with a verb it knows \('fly'\)\. The offline planner knows: "
                                   r"make the X <colour>"),
    ("make the hexagon blue", r"no region matches 'the hexagon'; the scene has r1 'a red circle' \(left\), r2 'a blue "
                              r"square' \(right\), r3 'a green triangle' \(top\)"),
    ("move the circle", r"it did not understand where to move 'the circle'.*Pass llm=\.\.\. \(--llm\) for anything "
                        "else"),
    ("swap the circle", "a swap names two objects"),
    ("replace the square", "say what to put in its place"),
    ("add a", "'a' names no object to add"),
    ("make it", "it did not understand 'make it'"),
    ("", "the instruction is empty"),
    ("x" * 2001, "at most 2000 are allowed"),
    ("undo and remove the circle", "'undo' must be an instruction of its own"),
    ("make it 300 circles", r"300 regions of 'circle' would make 302, more than the 256 allowed"),
    ("make it 99999999 circles", "far past what a scene can hold"),
    ("swap the circle and the circle", r"are the same region \(r1\)"),
    ("move the circle to the left of the circle", "cannot move 'the circle' left of itself"),
    ("add a bird above the triangle", "there is no room next to 'the triangle' for a new object"),
    ("replace the square with two cats", "is 2 objects; replace one object with one"),
    ("remove three circles", "cannot remove 3 of 'circle': the scene has 1"),
])
def test_unknown_and_impossible_instructions_say_what_was_not_understood(instruction, message):
    with pytest.raises(InstructionError, match=message):
        edits(instruction)
    with pytest.raises(PlanError):
        plan_edit(instruction, SHAPES)


def test_the_error_lists_every_form_it_knows():
    with pytest.raises(InstructionError) as caught:
        edits("sing the circle a song")
    assert all(form in str(caught.value) for form in EDIT_FORMS)
    assert is_undo("go back") and is_undo("Undo.") and not is_undo("undo the circle") and not is_undo(3)
    with pytest.raises(InstructionError, match="must be a string"):
        edits(None)


# ----------------------------------------------------------------- plan_edit
def test_plan_edit_rounds_commit_and_undo_give_back_the_same_scene():
    history = EditHistory.start(SHAPES, seed=5)
    start = history.to_json()
    for instruction in ("make the circle blue", "add two birds", "move the square below the circle",
                        "make it three circles"):
        plan = plan_edit(instruction, history=history)
        assert isinstance(plan, EditPlan) and plan.source == "offline" and not plan.is_undo
        assert plan.scene == apply_edits(history.scene, plan.edits, taken=history.ids_seen()).scene
        assert plan.diff.after == plan.scene
        plan.commit(history, seed=9)
    assert len(history.rounds) == 5 and history.rounds[-1].seed == 9
    assert history.rounds[1].instruction == "make the circle blue"
    scenes = [r.scene for r in history.rounds]
    for expected in reversed(scenes[:-1]):
        plan = plan_edit("undo", history=history)
        assert plan.is_undo and plan.scene == expected and plan.scene.to_json() == expected.to_json()
        plan.commit(history)
    assert history.scene == SHAPES and history.to_json() == start
    with pytest.raises(PlanError, match="nothing to undo: the history holds only the first scene"):
        plan_edit("undo", history=history)
    with pytest.raises(PlanError, match="nothing to undo: pass the edit history"):
        plan_edit("undo", SHAPES)
    with pytest.raises(PlanError, match="needs the current scene"):
        plan_edit("make the circle blue")


def test_plan_edit_names_the_diff_and_where_pixels_may_change():
    plan = plan_edit("make the circle blue", SHAPES)
    assert plan.diff.changed == {"r1": ("prompt",)} and plan.diff.unchanged == ("r2", "r3")
    assert plan.diff.edit_boxes() == (Box(0.1, 0.3, 0.4, 0.6),) and plan.scene.prompt == "a blue circle left of a " \
                                                                                         "blue square"
    assert plan.diff.edit_mask(10, 10).sum() == 3 * 3  # columns 1-3, rows 3-5


def test_a_split_scene_is_planned_on_boxes_when_regions_must_move():
    split = Scene.from_split("a cat and a dog", "1,1", ["a cat", "a dog"])
    assert plan_edit("make the cat black", split).scene.split == "1,1"
    with pytest.raises(NeedsBoxes, match="changes the regions of a split scene"):
        parse_instruction("remove the cat", split)
    plan = plan_edit("remove the cat", split)
    assert plan.scene.split is None and [r.id for r in plan.scene.regions] == ["r2"]
    assert plan.diff.removed == ("r1",) and plan.diff.unchanged == ("r2",)
    assert "converted to boxes" in plan.notes[0] and plan.base.split is None


def test_ids_of_removed_regions_are_not_given_again():
    history = EditHistory.start(SHAPES)
    plan_edit("remove the triangle", history=history).commit(history)
    plan = plan_edit("add a star", history=history)
    assert [e.id for e in plan.edits] == ["r4"]


def test_offline_edit_planning_is_fast_and_imports_no_torch():
    start = time.perf_counter()
    for _ in range(20):
        plan_edit("add two birds on the right and make the circle blue", SHAPES)
    assert (time.perf_counter() - start) / 20 < 0.05
    code = ("import sys; from scenecraft.planning import plan_edit; from scenecraft.scene import Box, Region, Scene; "
            "plan_edit('add a bird and make it blue', Scene(prompt='p', regions=[Region('a cat', Box(0, 0, .5, .5))]));"
            " assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


_WORDS = ["make", "the", "circle", "square", "blue", "bigger", "move", "to", "left", "of", "add", "two", "birds",
          "remove", "replace", "with", "a", "cat", "swap", "and", "it", "three", "there", "should", "be", "undo",
          "on", "right", "top", "above", "below", "smaller", "twice", "as", "big", "red", "one", "change", "into",
          ",", ".", "all", "circles", "r1", "r9", "999", "0", "no", "next", "corner", "bit", "up", "dog", "é", "then"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=9), st.sampled_from([SHAPES, TWINS, PETS]))
def test_any_word_salad_gives_edits_that_apply_or_a_plan_error(words, scene):
    try:
        plan = plan_edit(" ".join(words), scene)
    except PlanError:
        return
    assert plan.is_undo or plan.scene == apply_edits(plan.base, plan.edits).scene


# ----------------------------------------------------------------- LLM edits over HTTP
def llm(server):
    return f"openai:test-model@{server.url}"


def plan_llm(server, instruction, scene=SHAPES, **kwargs):
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("transport_retries", 0)
    return plan_edit(instruction, scene, llm=llm(server), **kwargs)


EDITS_REPLY = "Making the circle blue.\n" + json.dumps(
    {"edits": [{"op": "change_attribute", "id": "r1", "attribute": "colour", "value": "blue"},
               {"op": "add", "prompt": "a bird, flying", "box": [0.7, 0.05, 0.85, 0.2]}]})


def test_an_llm_reply_with_edits_is_validated_and_applied(replay_server):
    replay_server.script = [("reply", EDITS_REPLY)]
    plan = plan_llm(replay_server, "make the circle blue and add a bird")
    assert plan.source == "llm" and [e.op for e in plan.edits] == ["change_attribute", "add"]
    assert [r.prompt for r in plan.scene.regions] == ["a blue circle", "a blue square", "a green triangle",
                                                      "a bird, flying"]
    assert plan.diff.added == ("r4",) and plan.diff.changed == {"r1": ("prompt",)}
    _, body = replay_server.requests[0]
    assert body["response_format"]["json_schema"]["schema"]["title"] == "scenecraft edit"
    last = body["messages"][-1]["content"]
    assert last.startswith("Scene: {") and last.endswith("Instruction: make the circle blue and add a bird")
    shown = json.loads(last[len("Scene: "):last.index("\nInstruction:")])
    assert [r["id"] for r in shown["regions"]] == ["r1", "r2", "r3"]


def test_an_llm_reply_with_a_whole_scene_is_validated(replay_server):
    scene = Scene(prompt="a cat and a dog", regions=[
        Region("a cat", Box(0.1, 0.3, 0.4, 0.7), lora=[LoraRef("/home/me/cat.safetensors")]),
        Region("a dog", Box(0.6, 0.3, 0.9, 0.7))])
    history = EditHistory.start(scene)
    plan_edit("remove the dog", history=history).commit(history)  # r2 is gone: no new region may be r2
    reply = json.dumps({"scene": {"prompt": "a cat on the right and a ball", "regions": [
        {"id": "r1", "prompt": "a cat", "box": [0.6, 0.3, 0.9, 0.7], "lora": [{"path": "/etc/evil.safetensors"}]},
        {"id": "r7", "prompt": "a red ball", "box": [100, 300, 200, 400]}]}})
    replay_server.script = [("reply", reply)]
    plan = plan_llm(replay_server, "put the cat on the right and add a ball on the left", None, history=history)
    assert plan.source == "llm-scene"
    cat, ball = plan.scene.regions
    assert cat.id == "r1" and cat.lora == (LoraRef("/home/me/cat.safetensors"),)  # the user's, not the LLM's
    assert ball.id == "r3" and ball.geometry == Box(0.1953, 0.5859, 0.3906, 0.7812)  # pixels read as pixels
    assert plan.scene.prompt == "a cat on the right and a ball"
    assert [e.op for e in plan.edits] == ["move", "add"]
    assert apply_edits(history.scene, plan.edits, taken=history.ids_seen()).scene.regions == plan.scene.regions
    messages = replay_server.requests[0][1]["messages"]
    assert "cat.safetensors" not in json.dumps(messages)  # LoRA paths are the user's files: never sent
    assert any(m["content"].endswith("Instruction: remove the dog") for m in messages)  # the conversation so far
    plan.commit(history)
    assert history.scene == plan.scene


def test_undo_is_never_sent_to_an_llm(replay_server):
    history = EditHistory.start(SHAPES)
    plan_edit("remove the triangle", history=history).commit(history)
    plan = plan_llm(replay_server, "undo", history=history)
    assert plan.is_undo and plan.scene == SHAPES and replay_server.requests == []


HOSTILE = [
    ("not json at all", "holds no JSON object"),
    ('{"edits": [{"op": "remove", "id": "r1"}', "not closed"),
    ('{"edits": [{"op": "explode", "id": "r1"}]}', "unknown edit op 'explode'"),
    ('{"edits": [{"op": "remove", "id": "r9"}]}', "no region has the id 'r9'"),
    ('{"edits": [{"op": "move", "id": "r1", "to": [0.5, 0.5, 1.7, 0.9]}]}', r"must lie in \[0, 1\]"),
    ('{"edits": [{"op": "move", "id": "r1", "dx": ' + "9" * 5000 + "}]}", "digits"),
    ('{"edits": ' + "[" * 80 + "]" * 80 + "}", "nests"),
    ('{"edits": []}', "holds no edits"),
    ('{"edits": [{"op": "replace", "id": "r1", "prompt": "a red circle"}]}', "changes nothing"),
    ('{"edits": [{"op": "undo"}, {"op": "remove", "id": "r1"}]}', "undo must be the only edit"),
    ('{"edits": "remove r1"}', "edits must be a list"),
    ('{"scene": {"regions": [{"id": "r1", "prompt": "a", "box": [0, 0, 0.5, 0.5]}, {"id": "r1", "prompt": "b", '
     '"box": [0.5, 0.5, 1, 1]}]}}', "each region's id must be unique"),
    ('{"scene": {"regions": "everything"}}', "needs a list of 'regions'"),
    ('{"scene": [1, 2]}', "'scene' must be an object"),
    ('{"answer": 42}', "neither 'edits' nor 'scene'"),
    ('[1, 2, 3]', "holds no JSON object"),
    ("x" * 60_000, "more than the 50000 allowed"),
]


@pytest.mark.parametrize("reply, message", HOSTILE)
def test_hostile_llm_replies_give_clear_errors(replay_server, reply, message):
    replay_server.script = [("reply", reply)]
    with pytest.raises(PlanValidationError, match=message) as caught:
        plan_llm(replay_server, "change something", retries=1)
    assert "gave no valid edit in 2 attempt(s)" in str(caught.value) and len(replay_server.requests) == 2
    retry = replay_server.requests[1][1]["messages"]
    assert retry[-1]["role"] == "user" and "rejected" in retry[-1]["content"]


@pytest.mark.parametrize("reply, message", HOSTILE)
def test_hostile_replies_read_directly_raise_plan_errors_only(reply, message):
    with pytest.raises(PlanError, match=message):
        read_edit_reply(reply, SHAPES.with_ids())


def test_a_bad_first_reply_is_sent_back_once_then_a_good_one_is_taken(replay_server):
    replay_server.script = [("reply", '{"edits": [{"op": "remove", "id": "r9"}]}'), ("reply", EDITS_REPLY)]
    plan = plan_llm(replay_server, "make the circle blue and add a bird")
    assert plan.source == "llm" and len(replay_server.requests) == 2
    assert "no region has the id 'r9'" in replay_server.requests[1][1]["messages"][-1]["content"]


def test_llm_edits_on_a_split_scene_are_planned_on_boxes(replay_server):
    split = Scene.from_split("a cat and a dog", "1,1", ["a cat", "a dog"])
    replay_server.script = [("reply", '{"edits": [{"op": "remove", "id": "r2"}]}')]
    plan = plan_llm(replay_server, "remove the dog", split)
    assert plan.scene.split is None and [r.prompt for r in plan.scene.regions] == ["a cat"]
    assert "converted to boxes" in plan.notes[0]


def test_edit_messages_show_the_last_rounds_and_the_schema_takes_every_example():
    import jsonschema

    history = EditHistory.start(SHAPES)
    for instruction in ("remove the triangle", "make the circle blue", "move the square to the left",
                        "add a star", "make the square bigger", "make the circle smaller"):
        plan_edit(instruction, history=history).commit(history)
    messages = build_edit_messages("make the star red", history.scene.with_ids(), history.rounds)
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert users[-1].endswith("Instruction: make the star red") and len(users) == 3 + 4 + 1  # examples, 4 rounds
    assert users[-2].endswith("Instruction: make the circle smaller") and "remove the triangle" not in "".join(users)
    assert json.loads(messages[-2]["content"]) == {"edits": [{"op": "resize", "id": "r1", "scale": 0.8}]}
    schema = edit_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for message in messages:
        if message["role"] == "assistant":
            jsonschema.validate(json.loads(message["content"]), schema)


@pytest.mark.parametrize("kind, env", [("anthropic", "ANTHROPIC_API_KEY"), ("gemini", "GEMINI_API_KEY")])
def test_edits_over_anthropic_and_gemini(replay_server, monkeypatch, kind, env):
    monkeypatch.setenv(env, "sk-test-SECRET-0123456789")
    replay_server.script = [("reply", EDITS_REPLY)]
    plan = plan_edit("make the circle blue and add a bird", SHAPES, llm=f"{kind}:test-model@{replay_server.root}",
                     timeout=2.0, transport_retries=0)
    assert plan.source == "llm" and plan.diff.added == ("r4",)
    _, body = replay_server.requests[0]
    system = body["system"] if kind == "anthropic" else body["systemInstruction"]["parts"][0]["text"]
    assert "You edit the layout of a picture" in system


def test_a_superscript_digit_is_no_count_for_either_planner():
    from scenecraft.planning import plan_scene

    assert [r.prompt for r in plan_scene("² cats").regions] == ["a ² cat", "a ² cat"]  # was int("²"): ValueError
    with pytest.raises(InstructionError):
        plan_edit("make it ² circles", SHAPES)
