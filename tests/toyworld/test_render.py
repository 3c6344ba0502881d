import numpy as np
import pytest

from scenecraft.toyworld.render import (COLORS, IMAGE_SIZE, MIN_GAP, SHAPES, SIZE_RANGE, ShapeObject, draw,
                                        random_scene, render_scene, shape_mask)


def test_random_scene_is_deterministic():
    a = random_scene(np.random.default_rng(7))
    b = random_scene(np.random.default_rng(7))
    assert np.array_equal(a.image, b.image)
    assert a.objects == b.objects
    c = random_scene(np.random.default_rng(8))
    assert not np.array_equal(a.image, c.image)


def test_scene_invariants():
    rng = np.random.default_rng(0)
    counts = set()
    for _ in range(200):
        s = random_scene(rng)
        assert s.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and s.image.dtype == np.uint8
        counts.add(len(s.objects))
        for o in s.objects:
            x0, y0, x1, y1 = o.bbox
            assert 0 <= x0 < x1 <= IMAGE_SIZE and 0 <= y0 < y1 <= IMAGE_SIZE
            assert SIZE_RANGE[0] <= o.size <= SIZE_RANGE[1]
            assert o.color in COLORS and o.shape in SHAPES
            # the object's colour is drawn inside its box
            assert (s.image[y0:y1, x0:x1] == COLORS[o.color]).all(-1).any()
        if len(s.objects) == 2:
            a, b = s.objects[0].bbox, s.objects[1].bbox
            apart = a[2] + MIN_GAP <= b[0] or b[2] + MIN_GAP <= a[0] or a[3] + MIN_GAP <= b[1] or b[3] + MIN_GAP <= a[1]
            assert apart
    assert counts == {1, 2}


def test_shape_fill_ratios_are_distinct():
    fill = {s: shape_mask(s, 40).mean() for s in SHAPES}
    assert fill["square"] == 1.0
    assert abs(fill["circle"] - np.pi / 4) < 0.02
    assert abs(fill["triangle"] - 0.5) < 0.03


def test_render_scene_accepts_many_objects():
    specs = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "circle")]
    s = render_scene(specs, seed=3)
    assert [(o.color, o.shape) for o in s.objects] == specs
    assert np.array_equal(s.image, render_scene(specs, seed=3).image)


def test_draw_rejects_unknown_colour_and_shape():
    with pytest.raises(ValueError, match="unknown colour"):
        draw([ShapeObject("teal", "circle", (0, 0, 10, 10))])
    with pytest.raises(ValueError, match="unknown shape"):
        shape_mask("star", 10)


def test_colours_are_far_apart():
    rgb = np.array(list(COLORS.values()), dtype=float)
    d = np.linalg.norm(rgb[:, None] - rgb[None], axis=2)
    assert d[~np.eye(len(rgb), dtype=bool)].min() > 100
