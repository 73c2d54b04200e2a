# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""North-up raster grids shared by the simulator's renderers and writers."""

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid in a projected CRS.

    Attributes:
        transform: affine transform of the top-left pixel corner (rasterio convention).
        width: number of columns.
        height: number of rows.
        crs: the grid's CRS as a string understood by rasterio and pyproj.
    """

    transform: Affine
    width: int
    height: int
    crs: str = 'EPSG:32637'

    @classmethod
    def from_bounds(
        cls,
        left: float,
        bottom: float,
        right: float,
        top: float,
        pixel_m: float,
        crs: str = 'EPSG:32637',
    ) -> 'Grid':
        """Create the grid of square pixels that covers the given bounds.

        The origin is snapped to a multiple of ``pixel_m`` so that grids of the same
        resolution over neighbouring areas line up.

        Args:
            left: west bound in CRS units.
            bottom: south bound.
            right: east bound.
            top: north bound.
            pixel_m: pixel size in CRS units (metres).
            crs: the CRS.

        Returns:
            The grid.
        """
        x0 = math.floor(left / pixel_m) * pixel_m
        y0 = math.ceil(top / pixel_m) * pixel_m
        width = math.ceil((right - x0) / pixel_m)
        height = math.ceil((y0 - bottom) / pixel_m)
        return cls(Affine(pixel_m, 0, x0, 0, -pixel_m, y0), width, height, crs)

    @property
    def pixel_m(self) -> float:
        """Pixel size in CRS units."""
        return float(self.transform.a)

    @property
    def shape(self) -> tuple[int, int]:
        """Array shape (rows, columns)."""
        return self.height, self.width

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Bounds (left, bottom, right, top) in CRS units."""
        left, top = self.transform.c, self.transform.f
        return (
            left,
            top - self.height * self.pixel_m,
            left + self.width * self.pixel_m,
            top,
        )

    def resample(self, pixel_m: float) -> 'Grid':
        """Return a grid with the same origin and extent at another pixel size."""
        left, bottom, right, top = self.bounds
        return Grid.from_bounds(left, bottom, right, top, pixel_m, self.crs)

    def window(self, row: int, col: int, height: int, width: int) -> 'Grid':
        """Return the sub-grid of a window of this grid's pixels.

        The window's pixels are exactly this grid's pixels ``[row:row + height,
        col:col + width]`` (same pixel size and CRS; the origin moves by whole
        pixels), so rasters rendered on it line up with slices of full-grid rasters.

        Args:
            row: first row of the window (may lie outside the grid).
            col: first column.
            height: number of rows, positive.
            width: number of columns, positive.

        Returns:
            The sub-grid.

        Raises:
            ValueError: if the window is empty.
        """
        if height <= 0 or width <= 0:
            raise ValueError(f'window of {height} x {width} pixels is empty')
        t = self.transform
        transform = Affine(t.a, 0, t.c + col * t.a, 0, t.e, t.f + row * t.e)
        return Grid(transform, width, height, self.crs)

    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the CRS coordinates of the pixel centres.

        Returns:
            Two 1-D arrays: x of every column, y of every row.
        """
        x = self.transform.c + (np.arange(self.width) + 0.5) * self.pixel_m
        y = self.transform.f - (np.arange(self.height) + 0.5) * self.pixel_m
        return x, y


def zoom_rows(
    small: np.ndarray, factor: int, row: int, rows: int, width: int
) -> np.ndarray:
    """Rows ``row:row + rows`` (first ``width`` columns) of ``zoom(small, factor)``.

    Bilinear interpolation with the coordinates of ``scipy.ndimage.zoom(order=1)``
    (output index ``i`` samples input coordinate ``i (n - 1) / (n·factor - 1)``),
    computed for a band of rows only, so that a smooth field can be upsampled to a
    large grid band by band. Values agree with ``zoom`` to rounding (about 1e-15).

    Args:
        small: the coarse 2-D field (float64).
        factor: the integer zoom factor.
        row: first output row.
        rows: number of output rows.
        width: number of output columns (at most ``small.shape[1] * factor``).

    Returns:
        float64 array of shape ``(rows, width)``.
    """
    n_rows, n_cols = small.shape
    y = np.arange(row, row + rows) * ((n_rows - 1) / (n_rows * factor - 1))
    i0 = np.floor(y).astype(np.intp)
    t = (y - i0)[:, None]
    i1 = np.minimum(i0 + 1, n_rows - 1)
    lines = small[i0] * (1 - t) + small[i1] * t
    x = np.arange(width) * ((n_cols - 1) / (n_cols * factor - 1))
    j0 = np.floor(x).astype(np.intp)
    u = x - j0
    j1 = np.minimum(j0 + 1, n_cols - 1)
    return np.asarray(lines[:, j0] * (1 - u) + lines[:, j1] * u)
