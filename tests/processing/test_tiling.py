"""Window planning for tiled inference: coverage, edge alignment, ownership, value checks."""

from __future__ import annotations

import pytest
import torch

from eomt.processing.tiling import check_tiling, plan_windows


def test_windows_step_by_the_overlap_and_the_last_one_ends_at_the_edge():
    plan = plan_windows(150, 200, 64, 0.25)  # stride round(64 * 0.75) = 48
    assert plan.rows == [(0, 64), (48, 112), (86, 150)]
    assert plan.cols == [(0, 64), (48, 112), (96, 160), (136, 200)]
    assert len(plan.windows) == 12 and all(w.hw == (64, 64) for w in plan.windows)
    assert [w.index for w in plan.windows] == list(range(12))
    assert plan_windows(128, 128, 64, 0.0).rows == [(0, 64), (64, 128)]  # no overlap: windows abut


def test_a_side_no_longer_than_the_tile_is_one_window():
    plan = plan_windows(50, 300, 64, 0.5)
    assert plan.rows == [(0, 50)] and plan.cols[0] == (0, 64) and plan.cols[-1] == (236, 300)
    assert [(w.top, w.left, w.bottom, w.right) for w in plan_windows(40, 30, 64).windows] == [(0, 0, 40, 30)]


@pytest.mark.parametrize("size,tile,overlap", [(150, 64, 0.25), (1000, 100, 0.8), (97, 16, 0.0), (300, 64, 0.5)])
def test_every_pixel_is_covered_and_owned_by_a_window_covering_it_most_centrally(size, tile, overlap):
    plan = plan_windows(size, size, tile, overlap)
    owner = plan.owner(0, 0, size, size)
    covered = torch.zeros(size, size, dtype=torch.long)
    for window in plan.windows:
        covered[window.top:window.bottom, window.left:window.right] += 1
        top, left, bottom, right = plan.owned(window)
        assert bool((owner[top:bottom, left:right] == window.index).all())
        assert window.top <= top and bottom <= window.bottom and window.left <= left and right <= window.right
    assert bool((covered > 0).all())
    owned_area = sum((b - t) * (r - left) for t, left, b, r in map(plan.owned, plan.windows))
    assert owned_area == size * size
    # a pixel at the middle of an interior window's overlap-free core is its own
    rows = plan.rows
    if len(rows) >= 3:
        middle = (rows[1][0] + rows[1][1]) // 2
        assert int(plan.row_owner[middle]) == 1


@pytest.mark.parametrize("tile,overlap,message", [
    (0, 0.25, "tile must be a whole number"), (-5, 0.25, "tile must be a whole number"),
    (64.0, 0.25, "tile must be a whole number"), (True, 0.25, "tile must be a whole number"),
    (8, 0.25, "smaller than the model's patch size 16"), (64, 0.9, "overlap must be a fraction in [0, 0.9)"),
    (64, -0.1, "overlap must be a fraction"), (64, float("nan"), "overlap must be a fraction"),
])
def test_bad_values_are_value_errors_naming_them(tile, overlap, message):
    with pytest.raises(ValueError) as error:
        check_tiling(tile, overlap, patch_size=16)
    assert message in str(error.value)
