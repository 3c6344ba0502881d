"""MultiDiffusion's building blocks: windows that cover every edge, and the closed-form fusion."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scenecraft.generation.multidiffusion import View, fuse_views, window_views


@settings(max_examples=200, deadline=None)
@given(height=st.integers(1, 300), width=st.integers(1, 600), window=st.integers(8, 128), data=st.data())
def test_windows_cover_every_latent_pixel_and_stay_inside(height, width, window, data):
    stride = data.draw(st.integers(max(1, window // 4), window))
    views = window_views(height, width, window=window, stride=stride)
    covered = torch.zeros(height, width, dtype=torch.int32)
    for view in views:
        assert 0 <= view.top and view.top + view.height <= height
        assert 0 <= view.left and view.left + view.width <= width
        assert view.height == min(window, height) and view.width == min(window, width)
        rows, cols = view.slices()
        covered[rows, cols] += 1
    assert covered.min() >= 1  # the right and bottom edges included, for any size
    assert len(set(views)) == len(views)


@pytest.mark.parametrize("factor", [4, 8])
def test_a_panorama_whose_stride_misses_the_edge_still_gets_an_edge_window(factor):
    # 2050 px wide: the reference layout's last window ends short of the right edge.
    views = window_views(512 // factor, 2050 // factor, window=512 // factor, stride=8)
    assert max(v.left + v.width for v in views) == 2050 // factor
    assert window_views(64, 64, window=64, stride=8) == [View(0, 0, 64, 64)]


def test_bad_window_arguments():
    with pytest.raises(ValueError, match="stride"):
        window_views(64, 256, window=64, stride=65)
    with pytest.raises(ValueError, match="window"):
        window_views(64, 256, window=0, stride=8)


def test_fusion_is_the_per_pixel_weighted_mean():
    generator = torch.Generator().manual_seed(0)
    full = torch.randn(2, 4, 16, 40, generator=generator)
    views = window_views(16, 40, window=16, stride=6)
    same = [full[..., v.slices()[0], v.slices()[1]] for v in views]
    assert torch.allclose(fuse_views(full.shape, views, same), full)  # agreeing views give the latent back
    a, b = View(0, 0, 1, 2), View(0, 1, 1, 2)
    fused = fuse_views((1, 1, 1, 3), [a, b], [torch.tensor([[[[1.0, 2.0]]]]), torch.tensor([[[[4.0, 8.0]]]])],
                       weights=[torch.tensor([[[[1.0, 1.0]]]]), torch.tensor([[[[3.0, 1.0]]]])])
    assert torch.allclose(fused, torch.tensor([[[[1.0, (2.0 + 12.0) / 4, 8.0]]]]))
    uncovered = fuse_views((1, 1, 1, 3), [a], [torch.ones(1, 1, 1, 2)], weights=[torch.zeros(1, 1, 1, 2)])
    assert torch.equal(uncovered, torch.zeros(1, 1, 1, 3))
