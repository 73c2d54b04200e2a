# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import numpy as np
import pandas as pd
import pytest
from rasterio import features

from torchgeo_sar_damage.simulation.cities import CITIES
from torchgeo_sar_damage.simulation.dsm import render_dsm
from torchgeo_sar_damage.simulation.grid import Grid
from torchgeo_sar_damage.simulation.sar import LandCover
from torchgeo_sar_damage.simulation.scene import Scene, generate_scene, landcover


@pytest.fixture(scope='module')
def scene() -> Scene:
    return generate_scene(CITIES['islahiye'], 250, np.random.default_rng(0))


@pytest.fixture(scope='module')
def cover(scene: Scene) -> tuple[np.ndarray, Grid]:
    grid = scene.grid(2.0)
    return landcover(scene, grid, np.random.default_rng(0)), grid


def _render(
    scene: Scene, cover: tuple[np.ndarray, Grid], seed: int = 0, noise_m: float = 0.5
) -> tuple[np.ndarray, Grid]:
    grid = scene.grid(1.0)
    lc, lc_grid = cover
    dsm = render_dsm(
        scene, grid, lc, lc_grid, np.random.default_rng(seed), noise_m=noise_m
    )
    return dsm, grid


def test_dsm_is_finite_float32(scene: Scene, cover: tuple[np.ndarray, Grid]) -> None:
    dsm, grid = _render(scene, cover)
    assert dsm.dtype == np.float32
    assert dsm.shape == grid.shape
    assert np.isfinite(dsm).all()
    # terrain around the town's elevation, buildings at most a few tens of metres
    assert abs(np.median(dsm) - scene.elevation_m) < 15
    assert dsm.max() < scene.elevation_m + 30 + scene.buildings['height_m'].max()


def test_buildings_stand_on_terrain(
    scene: Scene, cover: tuple[np.ndarray, Grid]
) -> None:
    dsm, grid = _render(scene, cover)
    b = scene.buildings
    lc, lc_grid = cover
    ids = features.rasterize(
        ((g, i + 1) for i, g in enumerate(b.geometry)),
        out_shape=grid.shape,
        transform=grid.transform,
        dtype='int32',
    )
    # a ring 3-8 m around each footprint, on open ground without trees, gives the
    # terrain under the building
    ring_geoms = b.geometry.buffer(8.0).difference(b.geometry.buffer(3.0))
    rings = features.rasterize(
        ((g, i + 1) for i, g in enumerate(ring_geoms)),
        out_shape=grid.shape,
        transform=grid.transform,
        dtype='int32',
    )
    lc_fine = lc.repeat(2, axis=0).repeat(2, axis=1)[: grid.height, : grid.width]
    assert lc_grid.transform.c == grid.transform.c
    assert lc_grid.transform.f == grid.transform.f
    ground = (rings > 0) & (ids == 0) & (lc_fine != LandCover.TREES)
    roof = pd.Series(dsm[ids > 0]).groupby(ids[ids > 0]).median()
    terrain = pd.Series(dsm[ground]).groupby(rings[ground]).median()
    both = roof.index.intersection(terrain.index)
    assert len(both) > 0.9 * len(b)
    residual = roof[both] - terrain[both] - b['height_m'].to_numpy()[both - 1]
    assert abs(residual.median()) < 1.0
    assert np.mean(np.abs(residual) < 2.0) > 0.9


def test_trees_raise_the_surface(scene: Scene, cover: tuple[np.ndarray, Grid]) -> None:
    lc, lc_grid = cover
    trees = lc == LandCover.TREES
    assert trees.sum() > 200
    with_trees, grid = _render(scene, cover, seed=3)
    bare = np.where(trees, np.uint8(LandCover.GRASS), lc)
    without_trees, _ = _render(scene, (bare, lc_grid), seed=3)
    # same draws: the surfaces differ only by the canopy, over tree pixels
    canopy = with_trees - without_trees
    tree_fine = trees.repeat(2, axis=0).repeat(2, axis=1)[: grid.height, : grid.width]
    buildings = features.rasterize(
        scene.buildings.geometry, out_shape=grid.shape, transform=grid.transform
    ).astype(bool)
    raised = canopy[tree_fine & ~buildings]
    assert raised.size > 0
    assert 5.0 - 1e-3 <= raised.min()
    assert raised.max() <= 10.0 + 1e-3
    np.testing.assert_allclose(canopy[~tree_fine | buildings], 0.0, atol=1e-3)


def test_dsm_is_deterministic(scene: Scene, cover: tuple[np.ndarray, Grid]) -> None:
    first, _ = _render(scene, cover, seed=5)
    np.testing.assert_array_equal(first, _render(scene, cover, seed=5)[0])
    other, _ = _render(scene, cover, seed=6)
    assert not np.array_equal(first, other)


def test_noise_level(scene: Scene, cover: tuple[np.ndarray, Grid]) -> None:
    noisy, _ = _render(scene, cover, seed=7, noise_m=0.5)
    clean, _ = _render(scene, cover, seed=7, noise_m=0.0)
    assert np.std(noisy - clean) == pytest.approx(0.5, rel=0.05)


def test_low_memory_gives_the_same_dsm(
    scene: Scene, cover: tuple[np.ndarray, Grid]
) -> None:
    dsm, grid = _render(scene, cover, seed=3)
    lc, lc_grid = cover
    banded = render_dsm(
        scene, grid, lc, lc_grid, np.random.default_rng(3), low_memory=True
    )
    assert banded.dtype == np.float32
    assert grid.height > 256  # several bands
    np.testing.assert_allclose(banded, dsm, rtol=0, atol=1e-4)
    assert np.mean(banded == dsm) > 0.999
