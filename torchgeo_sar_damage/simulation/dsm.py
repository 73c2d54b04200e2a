# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Pre-event digital surface model: terrain, buildings and trees.

A DSM such as a photogrammetric or TanDEM-X-derived product at 1-2 m records the top
of whatever stood before the earthquake: smooth terrain (the town's elevation, a gentle
regional slope of up to 2 % and undulations of a few metres), every building at its
pre-event height (so the DSM shows vulnerability through height, never the damage),
tree canopies 5-10 m high on orchard and tree cover, and measurement noise of
0.5 m standard deviation [guess, typical of VHR stereo DSMs].
"""

import numpy as np
from rasterio import features
from scipy.ndimage import gaussian_filter, zoom

from .grid import Grid, zoom_rows
from .sar import LandCover
from .scene import Scene


def render_dsm(
    scene: Scene,
    grid: Grid,
    landcover: np.ndarray,
    landcover_grid: Grid,
    rng: np.random.Generator,
    *,
    noise_m: float = 0.5,
    low_memory: bool = False,
) -> np.ndarray:
    """Render the pre-event DSM of a scene.

    Args:
        scene: the scene (buildings with ``height_m``).
        grid: DSM grid (1-2 m).
        landcover: surface classes on ``landcover_grid`` (for tree canopies).
        landcover_grid: grid of ``landcover``.
        rng: random generator.
        noise_m: standard deviation of the measurement noise.
        low_memory: interpolate the terrain undulation band by band
            (:func:`~.grid.zoom_rows`) instead of holding it whole in float64, for
            grids of a hundred megapixels and more; elevations then agree with the
            default to float rounding.

    Returns:
        float32 elevations in metres above the ellipsoid-free datum of the scene.
    """
    rows, cols = grid.shape
    # Row and column coordinates broadcast instead of full grids: the same values
    # element by element, a fraction of the memory (so are the banded loops below).
    xx = np.arange(cols, dtype=np.float32)[None, :]
    yy = np.arange(rows, dtype=np.float32)[:, None]
    slope = rng.uniform(-0.02, 0.02, 2) * grid.pixel_m
    coarse = max(1, round(200 / grid.pixel_m))
    small = gaussian_filter(
        rng.standard_normal((rows // coarse + 3, cols // coarse + 3)), 1.0
    )
    undulation: np.ndarray | None = None
    if not low_memory:
        undulation = zoom(small, coarse, order=1)[:rows, :cols]
        undulation *= 3.0
    plane_x = scene.elevation_m + slope[0] * (xx - cols / 2)
    plane_y = slope[1] * (yy - rows / 2)

    # trees: nearest-neighbour resampling of the land cover to the DSM grid
    x, y = grid.xy()
    col_idx = np.clip(
        ((x - landcover_grid.transform.c) / landcover_grid.pixel_m).astype(int),
        0,
        landcover_grid.width - 1,
    )
    row_idx = np.clip(
        ((landcover_grid.transform.f - y) / landcover_grid.pixel_m).astype(int),
        0,
        landcover_grid.height - 1,
    )
    trees = landcover[np.ix_(row_idx, col_idx)] == LandCover.TREES
    canopy = np.empty(grid.shape, dtype=np.float32)
    for r0, r1 in _bands(rows):
        canopy[r0:r1] = rng.uniform(5.0, 10.0, (r1 - r0, cols))
    gaussian_filter(canopy, 2.0, output=canopy)

    order = np.argsort(scene.buildings['height_m'].to_numpy(), kind='stable')
    shapes = [
        (scene.buildings.geometry.iloc[i], float(scene.buildings['height_m'].iloc[i]))
        for i in order
    ]
    heights = features.rasterize(
        shapes,
        out_shape=grid.shape,
        transform=grid.transform,
        fill=0.0,
        dtype='float32',
        all_touched=False,
    )
    dsm = np.empty(grid.shape, dtype=np.float32)
    for r0, r1 in _bands(rows):
        h = heights[r0:r1]
        above = np.where(h > 0, h, np.where(trees[r0:r1], canopy[r0:r1], 0.0))
        if undulation is None:
            band = zoom_rows(small, coarse, r0, r1 - r0, cols) * 3.0
        else:
            band = undulation[r0:r1]
        terrain = plane_x + plane_y[r0:r1] + band
        noise = rng.normal(0.0, noise_m, (r1 - r0, cols))
        dsm[r0:r1] = terrain + above + noise
    return dsm


def _bands(rows: int, size: int = 256) -> list[tuple[int, int]]:
    """Consecutive row ranges of at most ``size`` rows covering ``rows`` rows."""
    return [(r, min(rows, r + size)) for r in range(0, rows, size)]
