import numpy as np
import pytest

from scenecraft.toyworld.render import random_scene, render_scene
from scenecraft.toyworld.score import absent, count, matches_exactly, relation, score_image


def _blur(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32)
    p = np.pad(f, ((1, 1), (1, 1), (0, 0)), mode="edge")
    out = sum(p[dy:dy + img.shape[0], dx:dx + img.shape[1]] for dy in range(3) for dx in range(3)) / 9.0
    return out


def test_scorer_is_at_least_99_percent_on_ground_truth():
    n, ok = 500, 0
    for i in range(n):
        s = random_scene(np.random.default_rng(100_000 + i))
        ok += matches_exactly(score_image(s.image), s.objects)
    assert ok / n >= 0.99, ok


def test_scorer_tolerates_blur_and_noise():
    n, ok = 150, 0
    rng = np.random.default_rng(5)
    for i in range(n):
        s = random_scene(np.random.default_rng(200_000 + i))
        img = np.clip(_blur(s.image) + rng.normal(0, 8, s.image.shape), 0, 255).astype(np.uint8)
        ok += matches_exactly(score_image(img), s.objects)
    assert ok / n >= 0.95, ok


def test_positions_and_bboxes():
    s = random_scene(np.random.default_rng(11), n_objects=2)
    det = score_image(s.image)
    for o in s.objects:
        d = [d for d in det if (d.color, d.shape) == (o.color, o.shape)]
        assert d and max(abs(a - b) for a, b in zip(d[0].bbox, o.bbox)) <= 1


def test_tiny_specks_are_ignored():
    img = np.full((64, 64, 3), 230, np.uint8)
    img[10:13, 10:13] = (220, 0, 0)  # 9 px speck
    img[40:42, 50:53] = (0, 64, 255)
    assert score_image(img) == []


def test_predicates():
    s = render_scene([("red", "circle"), ("blue", "square"), ("red", "circle")], seed=4)
    det = score_image(s.image)
    assert count(det, "red", "circle") == 2 and count(det, shape="square") == 1
    assert absent(det, "green") and not absent(det, "blue", "square")
    red = [o for o in s.objects if o.color == "red"]
    blue = [o for o in s.objects if o.color == "blue"][0]
    expect_left = any(r.center[0] < blue.center[0] for r in red)
    assert relation(det, ("red", "circle"), "left", ("blue", "square")) == expect_left
    with pytest.raises(ValueError, match="unknown relation"):
        relation(det, ("red", "circle"), "near", ("blue", "square"))
