# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import math
import os
import re
import warnings
from pathlib import Path

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import pytest
import rasterio
import torch
from matplotlib.figure import Figure
from pyproj import CRS
from rasterio.transform import from_origin
from shapely import box
from torchgeo.datasets import (
    DatasetNotFoundError,
    IntersectionDataset,
    RasterDataset,
    UnionDataset,
)
from torchgeo.datasets.utils import GeoSlice

from torchgeo_sar_damage.datasets.labels import DamageLabels
from torchgeo_sar_damage.datasets.osm import (
    OSMBuildings,
    parse_height_m,
    parse_levels,
    parse_osm_id,
)
from torchgeo_sar_damage.errors import InputFileError

ROOT = Path(__file__).parents[1] / 'data' / 'osm'
GPKG = ROOT / 'hotosm_tur_buildings_polygons.gpkg'
GEOJSON = ROOT / 'overpass_buildings.geojson'
SHP = ROOT / 'gis_osm_buildings_a_free_1.shp'
LABELS = Path(__file__).parents[1] / 'data' / 'labels' / 'ems'
X0, Y0 = 299000.0, 4116800.0
UTM = CRS.from_epsg(32637)


def window(cx: float, cy: float, size: float = 32, res: float = 1) -> GeoSlice:
    """Query of a window centred on (cx, cy) metres from the test origin."""
    half = size / 2
    return (
        slice(X0 + cx - half, X0 + cx + half, res),
        slice(Y0 + cy - half, Y0 + cy + half, res),
    )


def rendered(fig: Figure, column: int, row: int) -> tuple[float, float, float]:
    """RGB (0-1) of a drawn figure at pixel (column, row) of its first image."""
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())  # type: ignore[attr-defined]
    x, y = fig.axes[0].transData.transform((column, row))
    r, g, b, _ = image[image.shape[0] - 1 - int(y), int(x)] / 255.0
    return float(r), float(g), float(b)


def load(path: Path, **kwargs: object) -> OSMBuildings:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        return OSMBuildings(path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope='module')
def dataset() -> OSMBuildings:
    return load(GPKG, crs=UTM)


@pytest.fixture
def raster(tmp_path: Path) -> RasterDataset:
    path = tmp_path / 'sar.tif'
    with rasterio.open(
        path,
        'w',
        driver='GTiff',
        width=200,
        height=100,
        count=1,
        dtype='float32',
        crs='EPSG:32637',
        transform=from_origin(X0 - 50, Y0 + 50, 1, 1),
    ) as dst:
        dst.write(np.ones((1, 100, 200), dtype=np.float32))
    return RasterDataset(tmp_path, res=1)


class TestOSMBuildings:
    def test_getitem_mask(self, dataset: OSMBuildings) -> None:
        sample = dataset[window(5, 5)]
        footprint = sample['footprint']
        assert footprint.shape == (1, 32, 32)
        assert footprint.dtype == torch.uint8
        # window x = -11..21, y = -11..21: column = x + 11, row = 21 - y
        expected = torch.zeros(32, 32, dtype=torch.uint8)
        expected[11:21, 11:21] = 2  # 1001, (0, 0)-(10, 10): the target
        expected[15:21, 23:31] = 1  # 1002, (12, 0)-(20, 6)
        expected[0:7, 11:19] = 1  # 1003, (0, 14)-(8, 22), cut at y = 21
        assert torch.equal(footprint[0], expected)
        assert sample['building_id'].dtype == torch.int64
        assert int(sample['building_id']) == 1001
        assert sample['tabular'].dtype == torch.float32
        assert torch.allclose(
            sample['tabular'], torch.tensor([math.log1p(100.0), 3.0, 0.0]), atol=1e-4
        )
        assert torch.allclose(
            sample['bounds'][:6],
            torch.tensor([X0 - 11, X0 + 21, 1, Y0 - 11, Y0 + 21, 1]),
        )

    def test_tabular(self, dataset: OSMBuildings) -> None:
        assert dataset.feature_names == (
            'log1p_area_m2',
            'storeys_tagged',
            'storeys_missing',
        )
        untagged = dataset[window(16, 3)]
        assert int(untagged['building_id']) == 1002
        assert torch.allclose(
            untagged['tabular'], torch.tensor([math.log1p(48.0), 0.0, 1.0]), atol=1e-4
        )
        several = dataset[window(4, 18)]  # building:levels=2;3 -> 2
        assert int(several['building_id']) == 1003
        assert float(several['tabular'][1]) == 2.0
        ell = dataset[window(32, 2)]
        assert int(ell['building_id']) == 1004
        assert torch.allclose(
            ell['tabular'], torch.tensor([math.log1p(64.0), 5.0, 0.0]), atol=1e-4
        )

    def test_buildings_table(self, dataset: OSMBuildings) -> None:
        table = dataset.buildings
        assert list(table.columns) == [
            'building_id',
            'storeys_tagged',
            'height_tagged_m',
            'area_m2',
            'city',
            'geometry',
        ]
        assert set(table['city']) == {'osm'}  # the folder of the file
        assert table['building_id'].dtype == np.int64
        assert table['building_id'].tolist() == [1001, 1002, 1003, 1004]
        np.testing.assert_allclose(table['area_m2'], [100, 48, 64, 64], rtol=1e-6)
        np.testing.assert_array_equal(table['storeys_tagged'], [3, np.nan, 2, 5])
        np.testing.assert_allclose(
            table['height_tagged_m'], [9, 12, np.nan, 12.192], rtol=1e-9
        )
        assert table.crs == UTM

    def test_area_in_geographic_crs(self) -> None:
        ds = load(GPKG)
        assert ds.crs.to_epsg() == 4326
        assert ds.res == (1e-5, 1e-5)
        np.testing.assert_allclose(
            ds.buildings['area_m2'], [100, 48, 64, 64], rtol=1e-4
        )

    def test_target_nearest_centroid(self, dataset: OSMBuildings) -> None:
        # centre in the gap between 1001 (centroid 5, 5) and 1002 (centroid 16, 3)
        sample = dataset[window(11, 3)]
        assert int(sample['building_id']) == 1002
        assert (sample['footprint'] == 2).sum() == 48

    def test_no_building(self, dataset: OSMBuildings) -> None:
        sample = dataset[window(25, 18, size=2)]
        assert int(sample['building_id']) == -1
        assert not sample['footprint'].any()
        assert torch.equal(sample['tabular'], torch.tensor([0.0, 0.0, 1.0]))

    def test_resolution(self, dataset: OSMBuildings) -> None:
        sample = dataset[window(5, 5, size=32, res=0.5)]
        assert sample['footprint'].shape == (1, 64, 64)
        assert int((sample['footprint'] == 2).sum()) == 400

    def test_out_of_bounds(self, dataset: OSMBuildings) -> None:
        with pytest.raises(IndexError, match='not found in dataset'):
            dataset[window(1000, 1000)]

    def test_len(self, dataset: OSMBuildings) -> None:
        assert len(dataset) == 1
        assert len(load(ROOT)) == 3

    def test_extract(self, dataset: OSMBuildings) -> None:
        queries = [window(5, 5), window(16, 3), window(11, 3), window(32, 2, res=0.5)]
        for sample, query in zip(dataset.extract(queries), queries, strict=True):
            expected = dataset[query]
            assert sample.keys() == expected.keys()
            for key in sample:
                assert torch.equal(sample[key], expected[key]), key

    def test_extract_outside_raises(self, dataset: OSMBuildings) -> None:
        bounds = dataset.bounds
        samples = dataset.extract([window(5, 5), window(1000, 1000)])
        next(samples)
        with pytest.raises(
            IndexError, match=re.escape('index: (slice(299984.0, 300016.0, 1)')
        ):
            next(samples)  # the message names the query
        assert dataset.bounds == bounds

    def test_geojson_overpass_ids(self) -> None:
        ds = load(GEOJSON, crs=UTM)
        assert ds.buildings['building_id'].tolist() == [1001, 1002, 1003, 1004]

    @pytest.mark.parametrize('path', [GPKG, GEOJSON])
    def test_dropped_geometries_warning(self, path: Path) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            ds = OSMBuildings(path)
        dropped = [w for w in caught if 'dropped' in str(w.message)]
        assert len(dropped) == 1
        message = str(dropped[0].message)
        assert str(path) in message
        assert 'dropped 4 of 8 geometries' in message
        for reason in ('1 empty', '1 not a polygon', '1 zero area', '1 invalid'):
            assert reason in message
        assert len(ds.buildings) == 4

    def test_shapefile_truncated_columns(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter('error', UserWarning)
            ds = OSMBuildings(SHP)
        np.testing.assert_array_equal(ds.buildings['storeys_tagged'], [3, np.nan, 2, 5])

    def test_wrong_crs(self, dataset: OSMBuildings) -> None:
        utm = load(SHP)
        assert utm.crs == dataset.crs
        for query in [window(5, 5), window(11, 3), window(33, 6, res=0.25)]:
            a, b = dataset[query], utm[query]
            assert torch.equal(a['footprint'], b['footprint'])
            assert torch.equal(a['building_id'], b['building_id'])
            assert torch.allclose(a['tabular'], b['tabular'])

    def test_crs_setter(self) -> None:
        ds = load(SHP)
        before = ds[window(5, 5)]
        ds.crs = CRS.from_epsg(4326)
        assert ds.buildings.crs.to_epsg() == 4326
        assert ds.index.crs.to_epsg() == 4326
        ds.crs = UTM
        after = ds[window(5, 5)]
        assert torch.equal(before['footprint'], after['footprint'])

    def test_and_labels(self, dataset: OSMBuildings) -> None:
        both = dataset & DamageLabels(LABELS)
        assert isinstance(both, IntersectionDataset)
        sample = both[window(4, 4, size=8)]
        assert int(sample['building_id']) == 1001
        assert int(sample['label']) == 1  # Destroyed
        assert sample['tabular'].shape == (3,)

    def test_and_raster(self, dataset: OSMBuildings, raster: RasterDataset) -> None:
        both = dataset & raster
        sample = both[window(5, 5)]
        assert sample['image'].shape == (1, 32, 32)
        assert sample['footprint'].shape == (1, 32, 32)

    def test_or(self, dataset: OSMBuildings, raster: RasterDataset) -> None:
        assert isinstance(dataset | raster, UnionDataset)
        either = dataset | DamageLabels(LABELS)
        sample = either[window(5, 5)]
        assert {'footprint', 'label', 'building_id'} <= sample.keys()

    def test_transforms(self) -> None:
        def flag(sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            sample['flag'] = torch.tensor(1)
            return sample

        ds = load(SHP, transforms=flag)
        assert 'flag' in ds[window(5, 5)]
        assert 'flag' in next(iter(ds.extract([window(5, 5)])))

    def test_plot(self, dataset: OSMBuildings) -> None:
        # window(5, 5): target 1001 at rows/columns 11-20, neighbour 1002 at rows
        # 15-20, columns 23-30 (see test_getitem_mask)
        fig = dataset.plot(dataset[window(5, 5)], suptitle='test')
        ax = fig.axes[0]
        assert ax.get_title() == 'building 1001\n100 m², 3 storeys'
        assert fig.get_suptitle() == 'test'
        r, g, b = rendered(fig, column=15, row=15)
        assert r > 0.6, (r, g, b)  # target red
        assert max(g, b) < 0.3, (r, g, b)
        r, g, b = rendered(fig, column=27, row=18)
        assert max(r, g, b) - min(r, g, b) < 0.02 < r < 0.95, (r, g, b)  # grey
        assert min(rendered(fig, column=5, row=25)) > 0.95  # no building: white
        plt.close(fig)
        untagged = dataset.plot(dataset[window(16, 3)])
        assert untagged.axes[0].get_title() == 'building 1002\n48 m², ? storeys'
        plt.close(untagged)
        fig = dataset.plot(dataset[window(25, 18, size=2)], show_titles=False)
        assert fig.axes[0].get_title() == ''
        plt.close(fig)

    def test_missing(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError, match='Dataset not found'):
            OSMBuildings(tmp_path)

    def test_unreadable(self, tmp_path: Path) -> None:
        path = tmp_path / 'hotosm_tur_buildings_polygons.gpkg'
        path.write_bytes(b'not a geopackage')
        with pytest.raises(InputFileError, match='cannot be read') as err:
            OSMBuildings(path)
        assert str(path) in str(err.value)

    def test_no_crs(self, tmp_path: Path) -> None:
        frame = gpd.GeoDataFrame({'osm_id': [1]}, geometry=[box(0, 0, 1, 1)])
        path = tmp_path / 'buildings.shp'
        frame.to_file(path)
        with pytest.raises(InputFileError, match='no coordinate reference system'):
            OSMBuildings(path)

    def test_bad_layer(self) -> None:
        with pytest.raises(InputFileError, match='cannot be read'):
            OSMBuildings(GPKG, layer='nope')

    def test_no_id_column(self, tmp_path: Path) -> None:
        frame = gpd.read_file(SHP).drop(columns='osm_id')
        path = tmp_path / 'buildings.geojson'
        frame.to_file(path, driver='GeoJSON')
        ds = OSMBuildings(path)
        assert ds.buildings['building_id'].tolist() == [0, 1, 2, 3]
        assert os.path.basename(ds.files[0]) == 'buildings.geojson'


@pytest.mark.parametrize(
    ('value', 'metres'),
    [
        ('12', 12.0),
        ('12 m', 12.0),
        ('12.5m', 12.5),
        ('7,5', 7.5),
        ("40'", 12.192),
        ('40\'6"', 12.3444),
        ('10 ft', 3.048),
        (9, 9.0),
        ('tall', math.nan),
        (None, math.nan),
        (math.nan, math.nan),
    ],
)
def test_parse_height(value: object, metres: float) -> None:
    assert parse_height_m(value) == pytest.approx(metres, nan_ok=True)


@pytest.mark.parametrize(
    ('value', 'storeys'),
    [
        ('3', 3.0),
        ('3.5', 3.5),
        ('2;3', 2.0),
        ('3 floors', 3.0),
        (4, 4.0),
        ('x', math.nan),
    ],
)
def test_parse_levels(value: object, storeys: float) -> None:
    assert parse_levels(value) == pytest.approx(storeys, nan_ok=True)


@pytest.mark.parametrize(
    ('value', 'number'),
    [
        (123, 123.0),
        ('way/123', 123.0),
        ('w123', 123.0),
        ('', math.nan),
        (None, math.nan),
    ],
)
def test_parse_osm_id(value: object, number: float) -> None:
    assert parse_osm_id(value) == pytest.approx(number, nan_ok=True)


def test_gdal_osm_driver_ids(tmp_path: Path) -> None:
    # GDAL's OSM driver fills osm_id for relations and osm_way_id for closed ways
    frame = gpd.read_file(SHP)
    frame['osm_way_id'] = ['11', None, '13', None]
    frame['osm_id'] = [None, '22', None, '24']
    path = tmp_path / 'multipolygons_buildings.gpkg'
    frame.to_file(path)
    ds = OSMBuildings(path)
    assert ds.buildings['building_id'].tolist() == [11, 22, 13, 24]
