# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import math

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pytest
import shapely
from affine import Affine
from shapely.geometry.base import BaseGeometry

from torchgeo_sar_damage.simulation import sar
from torchgeo_sar_damage.simulation.grid import Grid
from torchgeo_sar_damage.simulation.sar import (
    CLUTTER_SIGMA0_DB,
    LandCover,
    SARGeometry,
    SARImage,
    Scatterers,
    building_scatterers,
    render_sigma0,
    render_sigma0_tiles,
    tile_margin_px,
)

PIXEL_M = 0.5
X0, Y0 = 500000.0, 4160000.0
NESZ_DB = -25.0
# One building, 30 m wide in range (east-west), from 60 to 90 m east of the origin and
# 15 to 45 m south of it; the grid is 140 m x 60 m.
WEST_M, EAST_M = 60.0, 90.0
NORTH_M, SOUTH_M = 15.0, 45.0
PROFILE_ROWS = slice(40, 80)  # rows well inside the building's azimuth extent


def make_grid(width: int = 280, height: int = 120) -> Grid:
    return Grid(Affine(PIXEL_M, 0, X0, 0, -PIXEL_M, Y0), width, height)


def one_building(
    height_m: float, grade: int = 0, rotation_deg: float = 0.0
) -> gpd.GeoDataFrame:
    footprint = shapely.box(X0 + WEST_M, Y0 - SOUTH_M, X0 + EAST_M, Y0 - NORTH_M)
    footprint = shapely.affinity.rotate(footprint, rotation_deg)
    return gpd.GeoDataFrame(
        {'height_m': [height_m], 'grade': [grade]},
        geometry=[footprint],
        crs='EPSG:32637',
    )


def no_buildings() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {'height_m': np.array([], dtype=float), 'grade': np.array([], dtype=int)},
        geometry=gpd.GeoSeries([], crs='EPSG:32637'),
        crs='EPSG:32637',
    )


def grass(grid: Grid) -> npt.NDArray[np.uint8]:
    return np.full(grid.shape, LandCover.GRASS, dtype=np.uint8)


def render(
    geometry: SARGeometry,
    buildings: gpd.GeoDataFrame,
    seed: int = 0,
    grid: Grid | None = None,
    **kwargs: float,
) -> SARImage:
    grid = grid or make_grid()
    kwargs.setdefault('nesz_db', NESZ_DB)
    return render_sigma0(
        grid, geometry, buildings, grass(grid), np.random.default_rng(seed), **kwargs
    )


def range_profile(
    image: SARImage, geometry: SARGeometry
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Median over azimuth rows of mean sigma0 along range, from near to far range.

    Returns the ground range coordinate (m, increasing away from the sensor, zero at
    the grid origin) of every column centre, and the profile (linear).
    """
    east, north = geometry.range_unit_vector
    assert abs(north) < 1e-12  # the tests use east-west range directions only
    x = (np.arange(image.mean_sigma0.shape[1]) + 0.5) * PIXEL_M
    profile = np.median(image.mean_sigma0[PROFILE_ROWS].astype(np.float64), axis=0)
    r = x * np.sign(east)
    order = np.argsort(r)
    return r[order], profile[order]


def measure(image: SARImage, geometry: SARGeometry) -> tuple[float, float, float]:
    """Measure the near edge of the bright band and the dark band on a profile.

    Returns:
        range of the near edge of the first pixel brighter than the ground in front
        of the building (start of the layover), and the near and far edges of the
        run of pixels at the noise floor (dark band).
    """
    r, profile = range_profile(image, geometry)
    ground_db = 10 * np.log10(np.median(profile[:20]))
    bright = np.flatnonzero(10 * np.log10(profile) > ground_db + 1.5)
    dark = np.flatnonzero(profile <= 10 ** (NESZ_DB / 10) * 1.001)
    assert len(dark) > 0
    np.testing.assert_array_equal(np.diff(dark), 1)  # one contiguous run
    half = PIXEL_M / 2
    return r[bright[0]] - half, r[dark[0]] - half, r[dark[-1]] + half


def footprint_range(geometry: SARGeometry) -> tuple[float, float]:
    """Range of the sensor-facing and the far edge of the building."""
    if geometry.range_unit_vector[0] < 0:  # looking west: sensor in the east
        return -EAST_M, -WEST_M
    return WEST_M, EAST_M


class TestSARGeometry:
    def test_look_azimuth(self) -> None:
        assert SARGeometry(35, 190).look_azimuth_deg == pytest.approx(280)
        assert SARGeometry(35, 350).look_azimuth_deg == pytest.approx(80)
        assert SARGeometry(35, 10, 'LEFT').look_azimuth_deg == pytest.approx(280)
        assert SARGeometry(35, 45, 'LEFT').look_azimuth_deg == pytest.approx(315)

    def test_range_unit_vector(self) -> None:
        east, north = SARGeometry(35, 180).range_unit_vector
        assert east == pytest.approx(-1)
        assert north == pytest.approx(0, abs=1e-12)
        east, north = SARGeometry(35, 180, 'LEFT').range_unit_vector
        assert east == pytest.approx(1)
        east, north = SARGeometry(35, 90).range_unit_vector  # looks south
        assert (east, north) == pytest.approx((0, -1), abs=1e-12)

    def test_layover_shadow(self) -> None:
        # Reference table, section 5: h = 15 m at 35 deg gives L 21.4 m and S 10.5 m.
        geometry = SARGeometry(35, 190)
        assert geometry.layover_m(15) == pytest.approx(21.42, abs=0.01)
        assert geometry.shadow_m(15) == pytest.approx(10.50, abs=0.01)
        geometry = SARGeometry(45, 190)
        assert geometry.layover_m(24) == pytest.approx(24)
        assert geometry.shadow_m(24) == pytest.approx(24)

    @pytest.mark.parametrize('look_side', ['right', 'BOTH', ''])
    def test_invalid_look_side(self, look_side: str) -> None:
        with pytest.raises(ValueError, match='look_side'):
            SARGeometry(35, 190, look_side)

    @pytest.mark.parametrize('incidence_deg', [0, 90, -10])
    def test_invalid_incidence(self, incidence_deg: float) -> None:
        with pytest.raises(ValueError, match='incidence_deg'):
            SARGeometry(incidence_deg, 190)


def test_clutter_table() -> None:
    assert set(CLUTTER_SIGMA0_DB) == set(LandCover)
    levels = CLUTTER_SIGMA0_DB
    assert levels[LandCover.WATER] <= -25
    assert -22 <= levels[LandCover.ROAD] <= -15
    assert -16 <= levels[LandCover.BARE_SOIL] <= -10
    assert -14 <= levels[LandCover.GRASS] <= -9
    assert -11 <= levels[LandCover.TREES] <= -7
    assert (
        levels[LandCover.WATER]
        < levels[LandCover.ROAD]
        < levels[LandCover.PAVED]
        < levels[LandCover.BARE_SOIL]
        < levels[LandCover.GRASS]
        < levels[LandCover.TREES]
    )


def test_mean_level_of_homogeneous_scene() -> None:
    grid = make_grid(256, 256)
    for cover in (LandCover.ROAD, LandCover.TREES):
        landcover = np.full(grid.shape, cover, dtype=np.uint8)
        image = render_sigma0(
            grid,
            SARGeometry(35, 190),
            no_buildings(),
            landcover,
            np.random.default_rng(3),
            nesz_db=-20,
        )
        expected = 10 ** (CLUTTER_SIGMA0_DB[cover] / 10) + 10 ** (-20 / 10)
        assert image.mean_sigma0.mean() == pytest.approx(expected, rel=0.02)
        assert image.mean_sigma0.min() >= 10 ** (-20 / 10)
        # Mild texture: about 1.5 dB of spread, not flat and not speckle-like.
        spread_db = np.std(10 * np.log10(image.mean_sigma0 - 10 ** (-20 / 10)))
        assert 1.0 < spread_db < 2.0


@pytest.mark.parametrize(
    ('height_m', 'incidence_deg', 'heading_deg', 'look_side'),
    [
        (15.0, 35.0, 180.0, 'RIGHT'),  # sensor in the east, looking west
        (24.0, 45.0, 180.0, 'RIGHT'),
        (15.0, 35.0, 180.0, 'LEFT'),  # sensor in the west, looking east
        (9.0, 30.0, 0.0, 'RIGHT'),  # looking east
    ],
)
def test_layover_and_shadow_extent(
    height_m: float, incidence_deg: float, heading_deg: float, look_side: str
) -> None:
    geometry = SARGeometry(incidence_deg, heading_deg, look_side)
    layover_m = geometry.layover_m(height_m)
    shadow_m = geometry.shadow_m(height_m)
    assert layover_m < EAST_M - WEST_M  # dark band: [far - L, far + S]
    image = render(geometry, one_building(height_m))
    near, far = footprint_range(geometry)
    layover_start, dark_start, dark_end = measure(image, geometry)
    assert layover_start == pytest.approx(near - layover_m, abs=PIXEL_M)
    assert dark_start == pytest.approx(far - layover_m, abs=PIXEL_M)
    assert dark_end == pytest.approx(far + shadow_m, abs=PIXEL_M)
    # Dark band length h / (sin cos): shadow h tan θ plus layover h / tan θ.
    theta = math.radians(incidence_deg)
    length = height_m / (math.sin(theta) * math.cos(theta))
    assert dark_end - dark_start == pytest.approx(length, abs=2 * PIXEL_M)
    # The layover band is 3-8 dB above the ground in front of it (on average).
    r, profile = range_profile(image, geometry)
    band = (r > near - layover_m + 1) & (r < near - 1)
    ground = r < near - layover_m - 2
    contrast_db = 10 * np.log10(profile[band].mean() / profile[ground].mean())
    assert 2.5 < contrast_db < 10


def test_layover_side_mirrors_with_look_side() -> None:
    right = SARGeometry(35, 180, 'RIGHT')
    left = SARGeometry(35, 180, 'LEFT')
    images = [render(g, one_building(15.0)) for g in (right, left)]
    x = (np.arange(make_grid().width) + 0.5) * PIXEL_M
    columns = [x[img.layover.any(axis=0)] for img in images if img.layover is not None]
    shadows = [x[img.shadow.any(axis=0)] for img in images if img.shadow is not None]
    assert len(columns) == len(shadows) == 2
    # Right-looking from a southbound track looks west: layover east of the building.
    assert columns[0].min() > EAST_M
    assert columns[0].max() < EAST_M + right.layover_m(15) + PIXEL_M
    assert shadows[0].max() < WEST_M
    # Left-looking looks east: the same band on the west side.
    assert columns[1].max() < WEST_M
    assert columns[1].min() > WEST_M - left.layover_m(15) - PIXEL_M
    assert shadows[1].min() > EAST_M
    assert len(columns[0]) == len(columns[1])


def edge_pixels_db(image: SARImage, x_m: float) -> npt.NDArray[np.float64]:
    """Brightest of the two pixels that straddle a north-south edge, per row (dB)."""
    col = round(x_m / PIXEL_M)
    pair = image.mean_sigma0[PROFILE_ROWS, col - 1 : col + 1].astype(np.float64)
    return 10 * np.log10(pair.max(axis=1))


class TestDoubleBounce:
    geometry = SARGeometry(45, 180)  # looks west: the east wall faces the sensor

    def test_intact_has_line_at_wall_foot(self) -> None:
        image = render(self.geometry, one_building(24.0, grade=0))
        assert image.double_bounce is not None
        x = (np.arange(image.mean_sigma0.shape[1]) + 0.5) * PIXEL_M
        columns = x[image.double_bounce.any(axis=0)]
        # At the true wall foot (not displaced), 1-2 pixels wide.
        assert 1 <= len(columns) <= 2
        assert np.abs(columns - EAST_M).max() <= PIXEL_M
        line_db = edge_pixels_db(image, EAST_M)
        assert (line_db > 4.0).mean() > 0.95
        # Nothing of the kind elsewhere along the range profile.
        r, profile = range_profile(image, self.geometry)
        elsewhere = np.abs(r + EAST_M) > 1.0
        assert 10 * np.log10(profile[elsewhere]).max() < 0.0
        # The wall facing away from the sensor has no double bounce.
        assert (edge_pixels_db(image, WEST_M) < -15).all()

    def test_collapsed_has_no_line(self) -> None:
        intact = render(self.geometry, one_building(24.0, grade=0), seed=5)
        rubble = render(self.geometry, one_building(24.0, grade=5), seed=5)
        assert rubble.double_bounce is not None
        assert not rubble.double_bounce.any()
        assert (edge_pixels_db(rubble, EAST_M) > 4.0).mean() < 0.25
        assert (
            np.median(edge_pixels_db(rubble, EAST_M))
            < np.median(edge_pixels_db(intact, EAST_M)) - 5
        )

    def test_partial_collapse_breaks_line(self) -> None:
        col = round(EAST_M / PIXEL_M)
        coverage = []
        for grade, seed in [(0, 0)] + [(4, seed) for seed in range(6)]:
            image = render(self.geometry, one_building(24.0, grade=grade), seed=seed)
            assert image.double_bounce is not None
            edge = image.double_bounce[:, col - 1 : col + 1].any(axis=1)
            coverage.append(int(edge.sum()))
        assert coverage[0] == 60  # the whole 30 m edge
        # Grade 4: only fragments of the standing part's wall foot remain.
        assert np.mean(coverage[1:]) < 0.6 * coverage[0]
        assert max(coverage[1:]) < coverage[0]
        assert sum(c > 0 for c in coverage[1:]) >= 3

    def test_wall_orientation(self) -> None:
        levels = []
        for rotation_deg in (0.0, 10.0):
            image = render(self.geometry, one_building(24.0, 0, rotation_deg), seed=1)
            assert image.double_bounce is not None
            levels.append(np.median(image.mean_sigma0[image.double_bounce]))
        # Ferro et al. 2011: the dihedral return drops quickly with the wall angle.
        assert 10 * np.log10(levels[0] / levels[1]) > 8
        for rotation_deg in (25.0, 45.0):
            image = render(self.geometry, one_building(24.0, 0, rotation_deg))
            assert image.double_bounce is not None
            assert not image.double_bounce.any()

    def test_collapse_shrinks_layover_and_shadow(self) -> None:
        height_m = 24.0
        layover_m = self.geometry.layover_m(height_m)
        shadow_m = self.geometry.shadow_m(height_m)
        near, far = footprint_range(self.geometry)
        for seed in range(3):
            image = render(self.geometry, one_building(height_m, grade=5), seed=seed)
            layover_start, dark_start, dark_end = measure(image, self.geometry)
            # Rubble piles are 1/4 to 1/3 of the height; spilled debris up to 4 m.
            assert near - layover_start < max(layover_m / 3, 4.0) + PIXEL_M
            assert dark_end - far < shadow_m / 3 + PIXEL_M
            assert dark_end - far > shadow_m / 4 - PIXEL_M
            assert far - dark_start < layover_m / 3 + PIXEL_M
            assert far - dark_start > layover_m / 4 - PIXEL_M


class TestSpeckle:
    grid = make_grid(256, 256)

    def ratio(
        self, looks: float, correlation_px: float = 2.0
    ) -> npt.NDArray[np.float64]:
        image = render(
            SARGeometry(35, 190),
            no_buildings(),
            seed=11,
            grid=self.grid,
            looks=looks,
            speckle_correlation_px=correlation_px,
        )
        assert image.sigma0.dtype == image.mean_sigma0.dtype == np.float32
        assert image.sigma0.shape == self.grid.shape
        return (image.sigma0 / image.mean_sigma0).astype(np.float64)

    @pytest.mark.parametrize('looks', [1.0, 4.0, 2.5])
    def test_mean_and_cv(self, looks: float) -> None:
        ratio = self.ratio(looks)
        assert ratio.mean() == pytest.approx(1.0, abs=0.03)
        cv = ratio.std() / ratio.mean()
        assert cv == pytest.approx(1 / math.sqrt(looks), rel=0.1)

    def test_single_look_is_exponential(self) -> None:
        ratio = self.ratio(1.0)
        for threshold in (0.5, 1.0, 3.0):
            assert (ratio > threshold).mean() == pytest.approx(
                math.exp(-threshold), rel=0.1
            )

    @staticmethod
    def correlation(ratio: npt.NDArray[np.float64], lag: int) -> float:
        a, b = ratio[:, :-lag].ravel(), ratio[:, lag:].ravel()
        return float(np.corrcoef(a, b)[0, 1])

    def test_spatial_correlation(self) -> None:
        ratio = self.ratio(1.0, correlation_px=2.0)
        assert self.correlation(ratio, 1) > 0.4
        assert abs(self.correlation(ratio, 10)) < 0.05
        # Along rows as in columns (isotropic impulse response).
        assert self.correlation(ratio.T.copy(), 1) > 0.4
        white = self.ratio(1.0, correlation_px=0.0)
        assert abs(self.correlation(white, 1)) < 0.05


def city_block() -> gpd.GeoDataFrame:
    """Buildings of every damage grade: rotated, L-shaped, with a courtyard, split."""
    rng = np.random.default_rng(7)
    polygons: list[BaseGeometry] = []
    for i in range(12):
        x, y = X0 + 10 + 22 * (i % 6), Y0 - 15 - 28 * (i // 6)
        box = shapely.box(x, y - 10, x + 14, y)
        polygons.append(shapely.affinity.rotate(box, rng.uniform(0, 90)))
    x, y = X0 + 76, Y0 - 15
    polygons[3] = shapely.box(x, y - 10, x + 14, y) - shapely.box(
        x + 7, y - 5, x + 14, y
    )
    polygons[4] = shapely.union(
        polygons[4], shapely.box(X0 + 120, Y0 - 50, X0 + 126, Y0 - 45)
    )
    x, y = X0 + 54, Y0 - 43
    polygons[8] = shapely.box(x, y - 14, x + 16, y) - shapely.box(
        x + 5, y - 9, x + 11, y - 5
    )
    return gpd.GeoDataFrame(
        {'height_m': rng.uniform(3, 30, 12), 'grade': np.arange(12) % 6},
        geometry=polygons,
        crs='EPSG:32637',
    )


def test_determinism() -> None:
    geometry = SARGeometry(35, 190)
    buildings = city_block()
    first = render(geometry, buildings, seed=42)
    again = render(geometry, buildings, seed=42)
    other = render(geometry, buildings, seed=43)
    np.testing.assert_array_equal(first.sigma0, again.sigma0)
    np.testing.assert_array_equal(first.mean_sigma0, again.mean_sigma0)
    assert not np.array_equal(first.sigma0, other.sigma0)
    assert not np.array_equal(first.mean_sigma0, other.mean_sigma0)
    assert np.isfinite(first.sigma0).all()
    assert (first.mean_sigma0 >= 10 ** (NESZ_DB / 10) * 0.999).all()


@pytest.mark.parametrize(
    ('change', 'match'),
    [
        ({'landcover': np.zeros((10, 10), dtype=np.uint8)}, 'shape'),
        ({'landcover': np.full((120, 280), 9, dtype=np.uint8)}, 'LandCover'),
        ({'looks': 0.0}, 'looks'),
        ({'buildings': one_building(10).to_crs('EPSG:4326')}, 'reproject'),
        ({'buildings': one_building(10).drop(columns='grade')}, 'grade'),
        ({'buildings': one_building(10, grade=6)}, 'EMS-98'),
        ({'buildings': one_building(float('nan'))}, 'height_m'),
        ({'buildings': one_building(-3.0)}, 'height_m'),
    ],
)
def test_invalid_arguments(change: dict[str, object], match: str) -> None:
    grid = make_grid()
    arguments: dict[str, object] = {
        'grid': grid,
        'geometry': SARGeometry(35, 190),
        'buildings': one_building(10),
        'landcover': grass(grid),
        'rng': np.random.default_rng(0),
    }
    arguments.update(change)
    with pytest.raises(ValueError, match=match):
        render_sigma0(**arguments)  # type: ignore[arg-type]


def test_flat_building_has_no_walls() -> None:
    image = render(SARGeometry(35, 180), one_building(0.0))
    assert image.layover is not None
    assert not image.layover.any()
    assert image.shadow is not None
    assert not image.shadow.any()
    assert image.double_bounce is not None
    assert not image.double_bounce.any()
    # The roof sits on the footprint: no dark pixel at all.
    assert (image.mean_sigma0 > 10 ** (NESZ_DB / 10) * 1.01).all()


def small_town(grades: tuple[int, ...] = (0, 1, 2, 3, 4, 5)) -> gpd.GeoDataFrame:
    """Thirty buildings of the given grades over a 140 m x 60 m grid, some on seams."""
    rng = np.random.default_rng(11)
    polygons: list[BaseGeometry] = []
    for i in range(30):
        x, y = X0 + 4 + 13.5 * (i % 10), Y0 - 4 - 18 * (i // 10)
        box = shapely.box(x, y - 9, x + 9, y)
        polygons.append(shapely.affinity.rotate(box, rng.uniform(0, 90)))
    return gpd.GeoDataFrame(
        {
            'height_m': rng.uniform(3, 25, 30),
            'grade': [grades[i % len(grades)] for i in range(30)],
        },
        geometry=polygons,
        crs='EPSG:32637',
    )


def mixed_cover(grid: Grid) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(5)
    return rng.integers(0, 7, grid.shape).astype(np.uint8)


def assemble(
    tiles: list[tuple[int, int, SARImage]], grid: Grid
) -> dict[str, np.ndarray]:
    """Paste tiles into full-grid arrays, checking that they cover the grid once."""
    names = ('sigma0', 'mean_sigma0', 'layover', 'shadow', 'double_bounce')
    out: dict[str, np.ndarray] = {}
    covered = np.zeros(grid.shape, dtype=int)
    for row, col, image in tiles:
        for name in names:
            value = getattr(image, name)
            assert value is not None
            if name not in out:
                out[name] = np.zeros(grid.shape, dtype=value.dtype)
            h, w = value.shape
            out[name][row : row + h, col : col + w] = value
        h, w = image.sigma0.shape
        covered[row : row + h, col : col + w] += 1
    assert (covered == 1).all()
    return out


class TestTiles:
    geometry = SARGeometry(35, 190)

    @pytest.fixture
    def no_texture(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Textures of 0 dB: mean sigma0 is then a function of the scatterers only."""
        for name in ('_CLUTTER_TEXTURE_DB', '_ROOF_TEXTURE_DB', '_DEBRIS_TEXTURE_DB'):
            monkeypatch.setattr(sar, name, 0.0)

    def tiles(
        self, grid: Grid, scatterers: Scatterers, tile_px: int, seed: int = 2
    ) -> dict[str, np.ndarray]:
        tiles = list(
            render_sigma0_tiles(
                grid,
                scatterers,
                mixed_cover(grid),
                np.random.default_rng(seed),
                tile_px=tile_px,
                nesz_db=NESZ_DB,
            )
        )
        assert len(tiles) == math.ceil(grid.height / tile_px) * math.ceil(
            grid.width / tile_px
        )
        return assemble(tiles, grid)

    @pytest.mark.usefixtures('no_texture')
    def test_building_returns_cross_seams_unchanged(self) -> None:
        grid = make_grid()
        scatterers = building_scatterers(
            self.geometry, small_town(), np.random.default_rng(1), pixel_m=PIXEL_M
        )
        whole = self.tiles(grid, scatterers, tile_px=1000)
        tiled = self.tiles(grid, scatterers, tile_px=50)  # 3 x 6 tiles
        for name in ('mean_sigma0', 'layover', 'shadow', 'double_bounce'):
            np.testing.assert_array_equal(tiled[name], whole[name], err_msg=name)
        # buildings do straddle the seams
        seams = tiled['layover'][:, 49:51] | tiled['layover'][49:51, :].T[:120]
        assert seams.any()
        assert tiled['shadow'].any()
        assert tiled['double_bounce'].any()
        # speckle is drawn per tile, but with the same statistics
        assert not np.array_equal(tiled['sigma0'], whole['sigma0'])
        ratio = tiled['sigma0'] / tiled['mean_sigma0']
        assert ratio.mean() == pytest.approx(1.0, abs=0.05)

    def test_masks_match_whole_grid_rendering(self) -> None:
        # grades 0-3: building geometry has nothing random, so render_sigma0 and a
        # tiled rendering of other draws have the same masks pixel for pixel
        grid = make_grid()
        town = small_town(grades=(0, 1, 2, 3))
        whole = render_sigma0(
            grid,
            self.geometry,
            town,
            mixed_cover(grid),
            np.random.default_rng(0),
            nesz_db=NESZ_DB,
        )
        scatterers = building_scatterers(
            self.geometry, town, np.random.default_rng(1), pixel_m=PIXEL_M
        )
        tiled = self.tiles(grid, scatterers, tile_px=40)
        for name in ('layover', 'shadow', 'double_bounce'):
            np.testing.assert_array_equal(
                tiled[name], getattr(whole, name), err_msg=name
            )
        # other draws, same statistics: speckle of mean 1 and mean -2.5 dB
        # (exponential law), mean levels within the spread of the building draws
        pairs = [
            (tiled['sigma0'], tiled['mean_sigma0']),
            (whole.sigma0, whole.mean_sigma0),
        ]
        for sigma0, mean in pairs:
            speckle = sigma0 / mean
            assert speckle.mean() == pytest.approx(1.0, abs=0.05)
            assert np.mean(10 * np.log10(speckle)) == pytest.approx(-2.51, abs=0.15)
        tiled_db = np.mean(10 * np.log10(tiled['mean_sigma0']))
        whole_db = np.mean(10 * np.log10(whole.mean_sigma0))
        assert tiled_db == pytest.approx(whole_db, abs=0.6)

    def test_same_seed_same_tiles(self) -> None:
        grid = make_grid()
        scatterers = building_scatterers(
            self.geometry, small_town(), np.random.default_rng(1), pixel_m=PIXEL_M
        )
        first = self.tiles(grid, scatterers, tile_px=64, seed=4)
        again = self.tiles(grid, scatterers, tile_px=64, seed=4)
        other = self.tiles(grid, scatterers, tile_px=64, seed=5)
        np.testing.assert_array_equal(first['sigma0'], again['sigma0'])
        assert not np.array_equal(first['sigma0'], other['sigma0'])

    def test_speckle_is_correlated_up_to_tile_edges(self) -> None:
        # the margin rendered around each tile gives its edge pixels the same
        # neighbour correlation as its inner pixels, and no wrap-around: a tile's
        # first and last columns are not neighbours
        grid = make_grid(400, 400)
        scatterers = building_scatterers(
            self.geometry, no_buildings(), np.random.default_rng(1), pixel_m=PIXEL_M
        )
        tiled = self.tiles(grid, scatterers, tile_px=100)
        speckle = tiled['sigma0'] / tiled['mean_sigma0']

        def correlation(a: np.ndarray, b: np.ndarray) -> float:
            return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

        edge = [c for c in range(1, 399) if c % 100 in (1, 98)]
        inner = [c for c in range(1, 399) if c % 100 in (40, 60)]
        at_edges = correlation(speckle[:, edge], speckle[:, [c - 1 for c in edge]])
        inside = correlation(speckle[:, inner], speckle[:, [c - 1 for c in inner]])
        assert inside > 0.3
        assert at_edges == pytest.approx(inside, abs=0.06)
        first = [c for c in range(400) if c % 100 == 0]
        wrapped = correlation(speckle[:, first], speckle[:, [c + 99 for c in first]])
        assert abs(wrapped) < 0.05

    def test_margin_covers_the_speckle_filter(self) -> None:
        for width in (0.0, 2.0, 6.0):
            sigma = width / (2 * math.sqrt(math.log(2)))
            assert tile_margin_px(width) > int(4 * sigma + 0.5)

    @pytest.mark.parametrize(
        ('change', 'match'),
        [
            ({'landcover': np.zeros((10, 10), dtype=np.uint8)}, 'shape'),
            ({'landcover': np.full((120, 280), 9, dtype=np.uint8)}, 'LandCover'),
            ({'tile_px': 0}, 'tile_px'),
            ({'looks': 0.0}, 'looks'),
        ],
    )
    def test_invalid_arguments(self, change: dict[str, object], match: str) -> None:
        grid = make_grid()
        arguments: dict[str, object] = {
            'grid': grid,
            'scatterers': building_scatterers(
                self.geometry, one_building(10), np.random.default_rng(0), pixel_m=0.5
            ),
            'landcover': grass(grid),
            'rng': np.random.default_rng(0),
            'tile_px': 64,
        }
        arguments.update(change)
        with pytest.raises(ValueError, match=match):
            next(render_sigma0_tiles(**arguments))  # type: ignore[arg-type]

    def test_buildings_are_checked(self) -> None:
        with pytest.raises(ValueError, match='EMS-98'):
            building_scatterers(
                self.geometry,
                one_building(10, grade=7),
                np.random.default_rng(0),
                pixel_m=0.5,
            )
