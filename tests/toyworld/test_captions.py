import numpy as np
import pytest

from scenecraft.toyworld.captions import caption, phrase, single_object_prompts, vocabulary
from scenecraft.toyworld.render import COLORS, SHAPES, ShapeObject


def test_phrase_articles():
    assert phrase("red", "circle") == "a red circle"
    assert phrase("orange", "square") == "an orange square"
    with pytest.raises(ValueError, match="unknown colour"):
        phrase("teal", "circle")


def test_two_object_caption_order_is_random():
    objs = [ShapeObject("red", "circle", (0, 0, 10, 10)), ShapeObject("blue", "square", (20, 0, 30, 10))]
    assert caption(objs) == "a red circle and a blue square"
    seen = {caption(objs, np.random.default_rng(i)) for i in range(20)}
    assert seen == {"a red circle and a blue square", "a blue square and a red circle"}


def test_single_object_prompts_cover_all_pairs():
    p = single_object_prompts()
    assert len(p) == len(COLORS) * len(SHAPES) == len(set(p))


def test_every_word_is_one_clip_token():
    from scenecraft.toyworld.train import load_tokenizer

    tok = load_tokenizer(16)
    for w in vocabulary():
        assert len(tok(w, add_special_tokens=False).input_ids) == 1, w
    assert tok.model_max_length == 16
    ids = tok("a red circle and a blue square").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and len(ids) == 9
