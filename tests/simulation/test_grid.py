# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import numpy as np
import pytest
import rasterio.features
import shapely

from torchgeo_sar_damage.simulation.grid import Grid


def test_window_is_a_slice_of_the_grid() -> None:
    grid = Grid.from_bounds(318000.3, 4160000.1, 318100, 4160060, 0.5)
    sub = grid.window(17, 30, 40, 55)
    assert sub.shape == (40, 55)
    assert sub.pixel_m == grid.pixel_m
    assert sub.crs == grid.crs
    x, y = grid.xy()
    sub_x, sub_y = sub.xy()
    np.testing.assert_allclose(sub_x, x[30:85], rtol=0, atol=1e-9)
    np.testing.assert_allclose(sub_y, y[17:57], rtol=0, atol=1e-9)
    # a raster burnt on the window is the slice of the one burnt on the grid
    polygon = shapely.Polygon([(318020, 4160010), (318070, 4160030), (318040, 4160055)])
    whole = rasterio.features.rasterize(
        [polygon], out_shape=grid.shape, transform=grid.transform
    )
    part = rasterio.features.rasterize(
        [polygon], out_shape=sub.shape, transform=sub.transform
    )
    np.testing.assert_array_equal(part, whole[17:57, 30:85])
    assert part.any()


def test_window_may_reach_outside() -> None:
    grid = Grid.from_bounds(0, 0, 10, 10, 1.0)
    assert grid.window(-2, -3, 14, 16).bounds == (-3.0, -2.0, 13.0, 12.0)
    with pytest.raises(ValueError, match='empty'):
        grid.window(0, 0, 0, 5)
