"""The web UI's edit box and edit history through its core functions and handlers (no browser): edit, undo bit for
bit, the history table, the PNG's history, the server's limits, mistakes in the status line."""

import numpy as np
import pytest
from PIL import Image

from scenecraft.edit_session import read_record
from scenecraft.imagefile import read_history, read_metadata
from scenecraft.scene import Box, Region, Scene
from scenecraft.ui.core import (SharedPipeline, UIError, UILimits, edit_image, edit_rows, render, start_editing,
                                undo_image)

LIMITS = UILimits.for_native_size(64)


@pytest.fixture(scope="module")
def toy_pipe():
    from scenecraft.generation import load_pipeline

    return load_pipeline("toyworld")


@pytest.fixture
def shared(toy_pipe):
    return SharedPipeline(toy_pipe, "toyworld")


def two_boxes() -> Scene:
    return Scene("a red circle to the left of a blue square",
                 (Region("a red circle", Box(0.0625, 0.21875, 0.4375, 0.78125)),
                  Region("a blue square", Box(0.5625, 0.21875, 0.9375, 0.78125))), width=64, height=64)


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_edit_then_undo_through_the_core_gives_the_generated_image_back(shared, tmp_path):
    rendered = render(shared, two_boxes(), "regional", 4, 5, None, tmp_path, LIMITS)
    state = start_editing(rendered)
    assert edit_rows(state) == [[0, "(generated)", "a red circle to the left of a blue square", 4]]
    state, edited = edit_image(shared, state, "make the circle green", tmp_path, LIMITS)
    assert edited.round == 1 and edited.changes == ("r1 'a red circle' -> 'a green circle'",) and edited.exact
    assert [r["instruction"] for r in read_history(edited.path)["history"]["rounds"]] == [None,
                                                                                           "make the circle green"]
    state, second = edit_image(shared, state, "move the square to the bottom", tmp_path, LIMITS)
    assert second.exact and not any("replayed" in n for n in second.notes)  # the session is kept: no replay
    rows = edit_rows(state)
    assert [row[:2] for row in rows] == [[0, "(generated)"], [1, "make the circle green"],
                                         [2, "move the square to the bottom"]]
    assert "moved to" in rows[2][2] and read_record(second.path).round == 2  # the download carries the history

    state, back = undo_image(shared, state, tmp_path, LIMITS)
    assert back.undone and back.exact and back.round == 1
    np.testing.assert_array_equal(pixels(back.path), pixels(edited.path))
    state, start = edit_image(shared, state, "undo", tmp_path, LIMITS)  # the instruction "undo" undoes too
    assert start.round == 0 and start.exact
    np.testing.assert_array_equal(pixels(start.path), pixels(rendered.path))
    assert read_metadata(start.path).scene == read_metadata(rendered.path).scene
    with pytest.raises(UIError, match="nothing to undo"):
        undo_image(shared, state, tmp_path, LIMITS)


def test_edits_are_held_to_the_servers_limits(shared, tmp_path):
    rendered = render(shared, two_boxes(), "regional", 1, 2, None, tmp_path, LIMITS)
    state = start_editing(rendered)
    with pytest.raises(UIError, match="describe the edit first"):
        edit_image(shared, state, "  ", tmp_path, LIMITS)
    with pytest.raises(UIError, match="--max-prompt-chars"):
        edit_image(shared, state, "make the circle " + "very " * 300 + "blue", tmp_path, LIMITS)
    with pytest.raises(UIError, match="generate an image first"):
        edit_image(shared, None, "make the circle blue", tmp_path, LIMITS)
    small = UILimits(max_side=128, max_regions=2)
    with pytest.raises(ValueError, match="more than the 2 allowed"):
        edit_image(shared, state, "add a yellow star", tmp_path, small)


def test_the_handlers_put_edit_mistakes_in_the_status_and_wire_generate_to_the_edit_box(toy_pipe, tmp_path):
    from scenecraft.ui import build_app

    handlers = build_app(toy_pipe, out_dir=tmp_path).scenecraft
    quiet = lambda *a, **k: None  # noqa: E731 (a progress that shows nothing)
    *_, status = handlers.edit("make the circle blue", None, [], quiet)
    assert status == "error: generate an image first; then describe an edit of it"
    result, _, entries, _, state, rows, status = handlers.generate(two_boxes().to_json(), "regional", 2, 3, 3.0, [],
                                                                   quiet)
    assert status.startswith("seed 2") and rows[0][:2] == [0, "(generated)"]
    *_, status = handlers.edit("frobnicate the moon", state, entries, quiet)
    assert status.startswith("error: ") and "frobnicate" in status
    result, _, entries, _, state, rows, status = handlers.edit("remove the square", state, entries, quiet)
    assert status.startswith("round 1: removed r2 'a blue square'") and len(rows) == 2 and len(entries) == 2
    assert entries[0][1].startswith("round 1 · edit remove the square")
    _, _, entries, _, state, rows, status = handlers.undo(state, entries, quiet)
    assert "undid 'remove the square': round 0" in status and "bit for bit" in status and len(rows) == 1
