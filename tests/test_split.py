import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenecraft.scene import SplitRatio, SplitRatioError, format_split, parse_split


def test_one_row_of_columns_without_semicolon():
    split = parse_split("1,2,1")
    assert split.num_regions == 3
    assert split.cells() == [(0.0, 0.0, 0.25, 1.0), (0.25, 0.0, 0.75, 1.0), (0.75, 0.0, 1.0, 1.0)]


def test_first_number_of_each_group_is_the_row_height():
    split = parse_split("1,1;2,1,1")
    assert split.num_regions == 3
    top, left, right = split.cells()
    assert top == pytest.approx((0.0, 0.0, 1.0, 1 / 3))
    assert left == pytest.approx((0.0, 1 / 3, 0.5, 1.0))
    assert right == pytest.approx((0.5, 1 / 3, 1.0, 1.0))


def test_rpg_four_region_example():
    split = parse_split("1,1,1;1,1,1")
    assert split.num_regions == 4
    np.testing.assert_allclose(split.cells(), [(0, 0, 0.5, 0.5), (0.5, 0, 1, 0.5), (0, 0.5, 0.5, 1), (0.5, 0.5, 1, 1)])


def test_group_with_one_number_is_a_full_width_row():
    np.testing.assert_allclose(parse_split("1;3").cells(), [(0, 0, 1, 0.25), (0, 0.25, 1, 1)])


def test_decimals_and_spaces():
    np.testing.assert_allclose(parse_split(" 0.5 , 1.5 ").cells(), [(0, 0, 0.25, 1), (0.25, 0, 1, 1)])


@pytest.mark.parametrize(
    "text, position",
    [("1,1;2,x,1", 6), ("1,,1", 2), ("1;;1", 2), ("1,1;", 4), ("-1", 0), ("1,0", 2), ("1 1", 2), ("", 0), ("1,1x", 3)],
)
def test_errors_point_at_the_bad_character(text, position):
    with pytest.raises(SplitRatioError) as info:
        parse_split(text)
    assert info.value.position == position
    assert repr(text) in str(info.value)
    assert "^" in str(info.value)


def test_non_string_is_a_type_error():
    with pytest.raises(TypeError):
        parse_split(["1", "1"])


ratios = st.integers(min_value=1, max_value=9).map(float) | st.sampled_from([0.5, 1.5, 2.25])
rows = st.tuples(ratios, st.lists(ratios, min_size=1, max_size=4).map(tuple))


@settings(max_examples=300, deadline=None)
@given(st.lists(rows, min_size=2, max_size=4))
def test_multi_row_splits_round_trip(row_list):
    split = SplitRatio(tuple(row_list))
    assert parse_split(format_split(split)) == split


@settings(max_examples=300, deadline=None)
@given(st.lists(ratios, min_size=1, max_size=6))
def test_single_row_splits_round_trip(columns):
    split = SplitRatio(((1.0, tuple(columns)),))
    assert parse_split(format_split(split)) == split


@settings(max_examples=300, deadline=None)
@given(st.lists(rows, min_size=1, max_size=4))
def test_cells_tile_the_canvas(row_list):
    cells = SplitRatio(tuple(row_list)).cells()
    assert sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in cells) == pytest.approx(1.0)
    assert all(0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 for x0, y0, x1, y1 in cells)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="0123456789.,; -x", max_size=20))
def test_any_text_parses_or_raises_split_ratio_error(text):
    try:
        split = parse_split(text)
    except SplitRatioError as error:
        assert 0 <= error.position <= len(text)
    else:
        assert split.num_regions >= 1
