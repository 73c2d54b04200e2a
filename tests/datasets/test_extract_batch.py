# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Union reads and batched extraction give exactly what window-by-window reading gives.

City-scale prediction reads windows block by block (one GDAL read and one
rasterisation per block of neighbouring windows) and builds whole batches at once;
these tests compare every value with the per-window path on real files.
"""

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.enums
import rasterio.transform
import shapely
import torch
from shapely.geometry import box
from torchgeo.datasets import GeoDataset
from torchgeo.datasets.utils import GeoSlice

from torchgeo_sar_damage.datasets import (
    DSM,
    COSMOSkyMed,
    GEMExposure,
    OSMBuildings,
    _raster,
    collate_buildings,
    extract,
    extract_batch,
    merge_batches,
)
from torchgeo_sar_damage.datasets.dsm import _height_statistics, height_statistics
from torchgeo_sar_damage.datasets.utils import WINDOW_KEYS
from torchgeo_sar_damage.samplers import BuildingSampler

DSM_ROOT = Path(__file__).parents[1] / 'data' / 'dsm'


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and values (NaN where NaN, sign bits included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        nan = torch.isnan(a)
        return bool(
            torch.equal(nan, torch.isnan(b))
            and torch.equal(a[~nan], b[~nan])
            and torch.equal(torch.signbit(a[~nan]), torch.signbit(b[~nan]))
        )
    return torch.equal(a, b)


def _reference(
    dataset: GeoDataset, queries: Sequence[GeoSlice]
) -> dict[str, torch.Tensor]:
    batch = collate_buildings(list(extract(dataset, queries)))
    return {k: v for k, v in batch.items() if k not in WINDOW_KEYS}


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert _same(got[key], value), key


def _count_reads(
    dataset: _raster.WindowedRasterDataset, monkeypatch: pytest.MonkeyPatch
) -> list[int]:
    """Count the dataset's GDAL reads: the returned list's one item is the count."""
    calls = [0]
    read_raw = dataset._read_raw

    def counting(path: str, x: slice, y: slice) -> np.ndarray:
        calls[0] += 1
        return np.asarray(read_raw(path, x, y))

    monkeypatch.setattr(dataset, '_read_raw', counting)
    return calls


def _town(scene: Path, manifest: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    files = manifest['cities']['kahramanmaras']['files']
    return scene / 'kahramanmaras', files


@pytest.fixture(scope='module')
def town(
    tiny_scene: Path, tiny_manifest: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    return _town(tiny_scene, tiny_manifest)


def _queries(sar: COSMOSkyMed, buildings: gpd.GeoDataFrame) -> list[GeoSlice]:
    """Every building's window, plus unsnapped, half-outside and far-apart ones."""
    queries: list[GeoSlice] = list(BuildingSampler(sar, buildings, size=16.0))
    left, bottom, right, top = sar.index.total_bounds
    rng = np.random.default_rng(0)
    for _ in range(40):  # sub-pixel phases: resampled reads
        x = rng.uniform(left, right - 16)
        y = rng.uniform(bottom + 16, top)
        queries.append((slice(x, x + 16, 1.0), slice(y - 16, y, 1.0)))
    for i in range(12):  # close together, same phase, resampled to 1.5 m
        x, y = left + 103.3 + 3 * i, top - 100.7 - 1.5 * i
        queries.append((slice(x, x + 15, 1.5), slice(y - 15, y, 1.5)))
    queries.append((slice(left - 8, left + 8, 1.0), slice(top - 8, top + 8, 1.0)))
    queries.append(
        (slice(right - 8, right + 8, 1.0), slice(bottom - 8, bottom + 8, 1.0))
    )
    return queries


class TestUnionReads:
    @pytest.mark.parametrize('kind', ['sar_hdf5', 'sar_geotiff', 'dsm'])
    def test_union_equals_window_by_window(
        self,
        town: tuple[Path, dict[str, Any]],
        kind: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        folder, files = town
        path = folder / files[kind]
        dataset: Any = COSMOSkyMed(path) if kind != 'dsm' else DSM(path)
        sar = COSMOSkyMed(folder / files['sar_geotiff'])
        buildings = gpd.read_file(folder / files['osm'])
        queries = _queries(sar, buildings)
        calls = _count_reads(dataset, monkeypatch)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)  # windows outside
            union = [d for _, d in dataset._windows(queries)]
        union_calls = calls[0]
        monkeypatch.setattr(_raster, 'UNION_SPARSITY', 0)  # every window on its own
        calls[0] = 0
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            alone = [d for _, d in dataset._windows(queries)]
        assert calls[0] == len(queries)
        assert union_calls < len(queries) / 3  # the union path was taken
        assert len(union) == len(alone)
        for a, b in zip(union, alone, strict=True):
            assert _same(torch.from_numpy(a), torch.from_numpy(b))

    def test_resampled_dsm_at_half_metre(
        self, town: tuple[Path, dict[str, Any]]
    ) -> None:
        folder, files = town
        dsm = DSM(folder / files['dsm'], res=0.5)  # 1 m file read at 0.5 m
        sar = COSMOSkyMed(folder / files['sar_geotiff'], res=0.5)
        buildings = gpd.read_file(folder / files['osm'])
        queries = list(BuildingSampler(sar, buildings, size=16.0))
        got = extract_batch(dsm, queries)
        want = _reference(dsm, queries)
        _assert_same(got, want)
        assert got['dsm'].shape[-2:] == (32, 32)

    def test_dtm(self) -> None:
        dataset = DSM(DSM_ROOT / 'dsm', dtm=DSM_ROOT / 'dtm')
        left, _, _, top = dataset.index.total_bounds
        xres, yres = dataset.res
        queries: list[GeoSlice] = [
            (
                slice(left + i * xres, left + (i + 8) * xres, xres),
                slice(top - (j + 8) * yres, top - j * yres, yres),
            )
            for i in range(0, 20, 3)
            for j in range(0, 20, 4)
        ]
        _assert_same(extract_batch(dataset, queries), _reference(dataset, queries))


class TestExtractBatch:
    def test_fused_inputs(self, town: tuple[Path, dict[str, Any]]) -> None:
        folder, files = town
        sar = COSMOSkyMed(folder / files['sar_hdf5'], units='db')
        dsm = DSM(folder / files['dsm'])
        gem = GEMExposure(
            [folder / f for f in files['gem']], admin=folder / files['admin']
        )
        osm = OSMBuildings(folder / files['osm'], crs=sar.crs, res=sar.res)
        base = sar & dsm & gem
        queries = list(BuildingSampler(base, osm.buildings, size=24.0))
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)  # windows off the swath
            got = merge_batches(
                [extract_batch(base, queries), extract_batch(osm, queries)]
            )
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            want = {
                **_reference(base, queries),
                **{k: v for k, v in _reference(osm, queries).items() if k != 'tabular'},
            }
        want['tabular'] = torch.cat(
            [_reference(base, queries)['tabular'], _reference(osm, queries)['tabular']],
            dim=1,
        )
        _assert_same(got, want)
        assert set(got) == {'image', 'dsm', 'footprint', 'building_id', 'tabular'}
        n = len(queries)
        assert got['tabular'].shape == (n, 3 + len(gem.feature_names) + 3)
        assert (got['footprint'] == 2).flatten(1).any(1).all()  # every target drawn

    def test_gem(self, town: tuple[Path, dict[str, Any]]) -> None:
        folder, files = town
        gem = GEMExposure(
            [folder / f for f in files['gem']], admin=folder / files['admin']
        )
        left, bottom, right, _ = gem.index.total_bounds
        xs = np.linspace(left, right - 10, 30)
        queries: list[GeoSlice] = [
            (slice(x, x + 10, 1.0), slice(bottom, bottom + 10, 1.0)) for x in xs
        ]
        _assert_same(extract_batch(gem, queries), _reference(gem, queries))
        with pytest.raises(IndexError, match='not found'):
            extract_batch(gem, [(slice(0.0, 1.0, 1.0), slice(0.0, 1.0, 1.0))])

    def test_transforms_fall_back(self, town: tuple[Path, dict[str, Any]]) -> None:
        folder, files = town

        def double(sample: dict[str, Any]) -> dict[str, Any]:
            sample['image'] = sample['image'] * 2
            return sample

        sar = COSMOSkyMed(folder / files['sar_geotiff'], transforms=double)
        plain = COSMOSkyMed(folder / files['sar_geotiff'])
        buildings = gpd.read_file(folder / files['osm'])
        queries = list(BuildingSampler(plain, buildings, size=16.0))[:20]
        got = extract_batch(sar, queries)
        assert _same(got['image'], 2 * extract_batch(plain, queries)['image'])

    def test_errors(self, town: tuple[Path, dict[str, Any]]) -> None:
        folder, files = town
        sar = COSMOSkyMed(folder / files['sar_geotiff'])
        osm = OSMBuildings(folder / files['osm'], crs=sar.crs)
        c = osm.buildings.geometry.iloc[0].representative_point()
        small = (slice(c.x - 4, c.x + 4, 1.0), slice(c.y - 4, c.y + 4, 1.0))
        large = (slice(c.x - 8, c.x + 8, 1.0), slice(c.y - 8, c.y + 8, 1.0))
        with pytest.raises(ValueError, match='empty'):
            extract_batch(sar, [])
        with pytest.raises(ValueError, match="'image'"):
            extract_batch(sar, [small, large])
        with pytest.raises(ValueError, match="'footprint'"):
            extract_batch(osm, [small, large])
        with pytest.raises(IndexError, match='not found'):
            extract_batch(osm, [(slice(0.0, 8.0, 1.0), slice(0.0, 8.0, 1.0))])
        with pytest.raises(ValueError, match="both produce 'image'"):
            merge_batches([extract_batch(sar, [small]), extract_batch(sar, [small])])


@pytest.fixture
def terraces(tmp_path: Path) -> OSMBuildings:
    """Row houses sharing walls, an overlapping pair, an L shape and loners."""
    shapes = [
        box(100 + 10 * i, 100, 110 + 10 * i, 112) for i in range(6)
    ]  # shared walls
    shapes += [box(200, 100, 215, 115), box(210, 105, 225, 120)]  # overlapping
    shapes.append(
        shapely.Polygon(
            [(300, 100), (330, 100), (330, 104), (304, 104), (304, 130), (300, 130)]
        )
    )  # L: its centroid is outside it
    shapes += [
        box(400 + 37 * i, 300 + 23 * i, 409 + 37 * i, 311 + 23 * i) for i in range(8)
    ]
    frame = gpd.GeoDataFrame(
        {'osm_id': np.arange(1, len(shapes) + 1), 'building:levels': [2] * len(shapes)},
        geometry=shapes,
        crs='EPSG:32637',
    )
    path = tmp_path / 'terrace_buildings.gpkg'
    frame.to_file(path)
    return OSMBuildings(path)


class TestFootprints:
    def test_shared_walls_and_overlaps(self, terraces: OSMBuildings) -> None:
        table = terraces.buildings
        queries: list[tuple[slice, slice]] = []
        for res in (1.0, 0.5, 0.7):
            for geom in table.geometry:
                c = geom.representative_point()
                queries.append(
                    (slice(c.x - 12, c.x + 12, res), slice(c.y - 12, c.y + 12, res))
                )
        # an empty window and one whose centre misses every footprint
        queries.append((slice(600.0, 624.0, 1.0), slice(100.0, 124.0, 1.0)))
        queries.append((slice(295.0, 319.0, 1.0), slice(110.0, 134.0, 1.0)))
        for res in (1.0, 0.5, 0.7):
            chosen = [q for q in queries if q[0].step == res]
            got = extract_batch(terraces, chosen)
            _assert_same(got, _reference(terraces, chosen))
        ids = extract_batch(terraces, queries[-2:])['building_id']
        assert ids[0] == -1
        assert ids[1] > 0

    def test_tangled_targets_keep_their_own_pixels(
        self, terraces: OSMBuildings
    ) -> None:
        geoms = terraces.buildings.geometry
        queries: list[GeoSlice] = []
        for geom in geoms[:6]:  # shared walls: every pixel of a house is its own
            c = geom.centroid
            queries.append(
                (slice(c.x - 15, c.x + 15, 1.0), slice(c.y - 15, c.y + 15, 1.0))
            )
        got = extract_batch(terraces, queries)['footprint'][:, 0]
        for mask, geom in zip(got, geoms[:6], strict=True):
            assert int((mask == 2).sum()) == round(geom.area)  # 10 x 12 m at 1 m
            assert int((mask == 1).sum()) > 0

    def test_sparse_windows_read_one_by_one(self, terraces: OSMBuildings) -> None:
        geoms = terraces.buildings.geometry
        queries: list[GeoSlice] = [
            (
                slice(g.centroid.x - 4, g.centroid.x + 4, 1.0),
                slice(g.centroid.y - 4, g.centroid.y + 4, 1.0),
            )
            for g in geoms[-8:]
        ]
        _assert_same(extract_batch(terraces, queries), _reference(terraces, queries))


def test_height_statistics_batch() -> None:
    rng = np.random.default_rng(1)
    data = (rng.gamma(2.0, 4.0, size=(12, 1, 16, 16)) + 500).astype(np.float32)
    data[3, 0, :4] = np.nan  # partly nodata
    data[5] = np.nan  # all nodata
    data[7, 0, 8, 8] = np.nan  # one pixel of the centre
    got = height_statistics(data)
    want = np.stack([_height_statistics(d) for d in data])
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float32
    assert got[5].tolist() == [0.0, 0.0, 1.0]
    assert height_statistics(np.empty((2, 1, 0, 0), np.float32))[:, 2].tolist() == [
        1,
        1,
    ]


@pytest.mark.parametrize('resampling', ['nearest', 'bilinear', 'cubic'])
@pytest.mark.parametrize('factor', [1, 2, 3, 4])
def test_upsampled_windows(
    tmp_path: Path, resampling: str, factor: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 m DSM read at 1/factor m: unions where exact (1, 2, 4), windows for 3."""
    rng = np.random.default_rng(factor)
    path = tmp_path / 'dsm.tif'
    profile = {
        'driver': 'GTiff',
        'width': 120,
        'height': 100,
        'count': 1,
        'dtype': 'float32',
        'crs': 'EPSG:32637',
        'transform': rasterio.transform.from_origin(240150.0, 4010000.0, 1.0, 1.0),
        'nodata': -9999.0,
    }
    heights = rng.normal(500, 20, (100, 120)).astype(np.float32)
    heights[:5, :5] = -9999.0
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(heights, 1)
    step = 1.0 / factor
    dataset = DSM(path, res=step)
    chosen = getattr(rasterio.enums.Resampling, resampling)
    monkeypatch.setattr(DSM, 'resampling', property(lambda self: chosen))
    side = 8 * factor
    queries: list[GeoSlice] = []
    for _ in range(60):
        col = rng.integers(-4 * factor, 115 * factor)
        row = rng.integers(-4 * factor, 95 * factor)
        x, y = 240150.0 + col * step, 4010000.0 - row * step
        queries.append(
            (slice(x, x + side * step, step), slice(y - side * step, y, step))
        )
    calls = _count_reads(dataset, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        got = extract_batch(dataset, queries)
        union_calls = calls[0]
        monkeypatch.setattr(_raster, 'UNION_SPARSITY', 0)
        want = extract_batch(dataset, queries)
    _assert_same(got, want)
    if factor == 3:
        assert union_calls == len(queries)
    else:
        assert union_calls < len(queries) / 2


def test_nodata_windows_warn_once(town: tuple[Path, dict[str, Any]]) -> None:
    folder, files = town
    sar = COSMOSkyMed(folder / files['sar_geotiff'])
    left, _, _, top = sar.index.total_bounds
    corner: list[GeoSlice] = [
        (slice(left + i, left + i + 8, 1.0), slice(top - 8, top, 1.0)) for i in range(3)
    ]
    with pytest.warns(
        UserWarning, match='3 windows inside it hold only nodata'
    ) as seen:
        batch = extract_batch(sar, corner)
    assert len(seen) == 1
    assert torch.isnan(batch['image']).all()
