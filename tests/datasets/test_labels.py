# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

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
from torchgeo_sar_damage.datasets.osm import OSMBuildings
from torchgeo_sar_damage.errors import ArgumentError, InputFileError

ROOT = Path(__file__).parents[1] / 'data' / 'labels'
NAME = 'EMSR648_AOI16_GRA_PRODUCT_builtUpA_r1_v1'
EMS = ROOT / 'ems' / f'{NAME}.json'
EMS_SHP = ROOT / 'ems_shp' / f'{NAME}.shp'
UNKNOWN = ROOT / 'unknown' / 'EMSR648_AOI04_GRA_PRODUCT_builtUpA_r1_v1.json'
HOT = ROOT / 'hot' / 'hotosm_tur_buildings_polygons_geojson.geojson'
OSM = Path(__file__).parents[1] / 'data' / 'osm'
X0, Y0 = 299000.0, 4116800.0
UTM = CRS.from_epsg(32637)
GRADES = [
    'Destroyed',
    'Damaged',
    'Possibly damaged',
    'No visible damage',
    'Not Analysed',
    'Not Applicable',
]


def window(cx: float, cy: float = 4, size: float = 16, res: float = 1) -> GeoSlice:
    half = size / 2
    return (
        slice(X0 + cx - half, X0 + cx + half, res),
        slice(Y0 + cy - half, Y0 + cy + half, res),
    )


def centre(i: int) -> GeoSlice:
    """Window centred on square ``i`` (x = 12 i .. 12 i + 8)."""
    return window(12 * i + 4)


def rendered(fig: Figure, x: float, y: float) -> tuple[float, float, float]:
    """RGB (0-1) of a drawn figure at map coordinates (x, y) of its first axes."""
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())  # type: ignore[attr-defined]
    column, row = fig.axes[0].transData.transform((x, y))
    r, g, b, _ = image[image.shape[0] - 1 - int(row), int(column)] / 255.0
    return float(r), float(g), float(b)


def labels_at_squares(ds: DamageLabels, n: int) -> list[int]:
    return [int(ds[centre(i)]['label']) for i in range(n)]


@pytest.fixture(scope='module')
def dataset() -> DamageLabels:
    return DamageLabels(EMS, crs=UTM)


@pytest.fixture
def raster(tmp_path: Path) -> RasterDataset:
    path = tmp_path / 'sar.tif'
    with rasterio.open(
        path,
        'w',
        driver='GTiff',
        width=120,
        height=40,
        count=1,
        dtype='float32',
        crs='EPSG:32637',
        transform=from_origin(X0 - 20, Y0 + 20, 1, 1),
    ) as dst:
        dst.write(np.ones((1, 40, 120), dtype=np.float32))
    return RasterDataset(tmp_path, res=1)


class TestDamageLabels:
    def test_getitem_binary(self, dataset: DamageLabels) -> None:
        sample = dataset[centre(0)]
        assert sample['label'].dtype == torch.int64
        assert sample['label'].shape == ()
        assert set(sample) == {'label', 'bounds', 'transform'}
        assert labels_at_squares(dataset, 6) == [1, 1, 0, 0, -1, -1]

    def test_between_buildings(self, dataset: DamageLabels) -> None:
        assert int(dataset[window(10)]['label']) == -1

    def test_four(self) -> None:
        ds = DamageLabels(EMS, crs=UTM, scheme='four')
        assert labels_at_squares(ds, 6) == [3, 2, 1, 0, -1, -1]

    def test_labels_table(self, dataset: DamageLabels) -> None:
        table = dataset.labels
        assert list(table.columns) == ['label', 'grade', 'source', 'geometry']
        assert table['grade'].tolist() == GRADES
        assert table['label'].tolist() == [1, 1, 0, 0, -1, -1]
        assert table['label'].dtype == np.int64
        assert set(table['source']) == {'ems'}
        assert table.crs == UTM

    def test_configurable_rule(self) -> None:
        dropped = DamageLabels(EMS, crs=UTM, negative=('No visible damage',))
        assert labels_at_squares(dropped, 6) == [1, 1, -1, 0, -1, -1]
        moved = DamageLabels(
            EMS, crs=UTM, positive=('Destroyed', 'Damaged', 'Possibly damaged')
        )
        assert labels_at_squares(moved, 4) == [1, 1, 1, 0]
        # Possibly damaged is negative by default; here it is neither
        strict = DamageLabels(
            EMS, crs=UTM, positive=('Destroyed',), negative=('No visible damage',)
        )
        assert labels_at_squares(strict, 4) == [1, -1, -1, 0]

    @pytest.mark.parametrize(
        ('kwargs', 'match'),
        [
            ({'scheme': 'five'}, "scheme='five' is not known"),
            (
                {'positive': ('Destroyed', 'Damaged'), 'negative': ('Damaged',)},
                'both positive and negative',
            ),
            ({'positive': ('Collapsed',)}, 'not damage grades'),
            ({'negative': ('Not Analysed',)}, 'not damage grades'),
            ({'positive': ()}, 'positive is empty'),
            ({'scheme': 'four', 'positive': ('Destroyed',)}, "scheme='binary' only"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, object], match: str) -> None:
        with pytest.raises(ArgumentError, match=match):
            DamageLabels(EMS, **kwargs)  # type: ignore[arg-type]

    def test_unknown_grade(self) -> None:
        with pytest.raises(InputFileError, match='Collapsed') as err:
            DamageLabels(UNKNOWN)
        assert str(UNKNOWN) in str(err.value)
        assert err.value.path == str(UNKNOWN)

    def test_missing_grade_field(self, tmp_path: Path) -> None:
        frame = gpd.read_file(EMS).drop(columns='damage_gra')
        path = tmp_path / f'{NAME}.json'
        frame.to_file(path, driver='GeoJSON')
        with pytest.raises(InputFileError, match="no 'damage_gra' field"):
            DamageLabels(path)

    def test_case_and_empty_values(self, tmp_path: Path) -> None:
        frame = gpd.read_file(EMS)
        frame['damage_gra'] = [' destroyed', 'DAMAGED', None, '', 'not analysed', 'x']
        frame = frame.iloc[:5]
        path = tmp_path / f'{NAME}.json'
        frame.to_file(path, driver='GeoJSON')
        ds = DamageLabels(path, crs=UTM)
        assert ds.labels['grade'].tolist()[:2] == ['Destroyed', 'Damaged']
        assert ds.labels['label'].tolist() == [1, 1, -1, -1, -1]

    def test_hot_tags(self) -> None:
        ds = DamageLabels(HOT, crs=UTM)
        assert set(ds.labels['source']) == {'osm'}
        assert labels_at_squares(ds, 4) == [1, 0, 1, 0]
        dated = DamageLabels(HOT, crs=UTM, damage_date='2023-02-06')
        assert labels_at_squares(dated, 4) == [1, 0, -1, 0]
        four = DamageLabels(HOT, crs=UTM, scheme='four')
        assert labels_at_squares(four, 4) == [3, 0, 3, 0]

    def test_hot_without_tag_is_skipped(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            with pytest.raises(DatasetNotFoundError):
                DamageLabels(OSM / 'hotosm_tur_buildings_polygons.gpkg')

    def test_directory(self) -> None:
        ds = DamageLabels([ROOT / 'ems', ROOT / 'hot'], crs=UTM)
        assert len(ds) == 2
        assert len(ds.labels) == 10

    def test_len(self, dataset: DamageLabels) -> None:
        assert len(dataset) == 1

    def test_building_labels(self, dataset: DamageLabels) -> None:
        local = [
            box(1, 1, 7, 7),  # inside square 0 (Destroyed)
            box(6, 0, 13, 8),  # 16 m² on square 0, 8 m² on square 1: largest wins
            box(11, 0, 18, 8),  # 1 m² gap side, 6 m wide on square 1 (Damaged)
            box(49, 1, 55, 7),  # square 4, Not Analysed
            box(200, 0, 210, 10),  # no polygon
            box(36, 0, 44, 8),  # square 3, No visible damage
        ]
        footprints = gpd.GeoDataFrame(
            geometry=[
                box(X0 + a, Y0 + b, X0 + c, Y0 + d)
                for a, b, c, d in (g.bounds for g in local)
            ],
            crs=UTM,
        ).to_crs('EPSG:4326')
        labels = dataset.building_labels(footprints)
        assert labels.dtype == np.int64
        assert labels.tolist() == [1, 1, 1, -1, -1, 0]
        assert dataset.labelled(footprints).tolist() == [
            True,
            True,
            True,
            False,
            False,
            True,
        ]
        assert dataset.building_labels(footprints.iloc[:0]).tolist() == []
        with pytest.raises(ArgumentError, match='no CRS'):
            dataset.building_labels(gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)]))

    def test_wrong_crs(self, dataset: DamageLabels) -> None:
        utm = DamageLabels(EMS_SHP)
        assert utm.crs == dataset.crs
        queries = [centre(i) for i in range(6)] + [window(10), window(30, res=0.5)]
        for query in queries:
            assert torch.equal(utm[query]['label'], dataset[query]['label'])
        assert utm.labels['label'].tolist() == dataset.labels['label'].tolist()

    def test_extract(self, dataset: DamageLabels) -> None:
        queries = [centre(i) for i in range(6)] + [window(10)]
        for sample, query in zip(dataset.extract(queries), queries, strict=True):
            expected = dataset[query]
            assert sample.keys() == expected.keys()
            for key in sample:
                assert torch.equal(sample[key], expected[key])

    def test_out_of_bounds(self, dataset: DamageLabels) -> None:
        with pytest.raises(IndexError, match='not found in dataset'):
            dataset[window(1000)]

    def test_and_osm(self, dataset: DamageLabels) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            osm = OSMBuildings(OSM / 'hotosm_tur_buildings_polygons.gpkg')
        both = dataset & osm
        assert isinstance(both, IntersectionDataset)
        sample = both[window(5, 5, size=8)]
        assert int(sample['label']) == 1
        assert int(sample['building_id']) == 1001

    def test_and_raster(self, dataset: DamageLabels, raster: RasterDataset) -> None:
        sample = (dataset & raster)[centre(1)]
        assert int(sample['label']) == 1
        assert sample['image'].shape == (1, 16, 16)

    def test_or(self, dataset: DamageLabels, raster: RasterDataset) -> None:
        either = dataset | raster
        assert isinstance(either, UnionDataset)
        assert int(either[centre(0)]['label']) == 1
        hot = DamageLabels(HOT)
        assert (dataset | hot)[centre(3)]['label'] == 0

    def test_plot(self, dataset: DamageLabels) -> None:
        # square 0 is Destroyed (label 1), square 3 No visible damage (label 0),
        # square 4 Not Analysed (unlabelled): red, green, grey; ground white
        fig = dataset.plot(dataset[centre(0)], suptitle='test')
        ax = fig.axes[0]
        assert ax.get_title() == 'label 1 (binary)'
        assert fig.get_suptitle() == 'test'
        assert ax.get_xlim() == (X0 - 4, X0 + 12)
        assert ax.get_ylim() == (Y0 - 4, Y0 + 12)
        r, g, b = rendered(fig, X0 + 2, Y0 + 2)  # inside square 0, off the '+'
        assert r > 0.5 > g, (r, g, b)  # red: damaged
        assert min(rendered(fig, X0 - 3, Y0 + 11)) > 0.95  # white ground
        plt.close(fig)
        fig = dataset.plot(dataset[centre(3)])
        assert fig.axes[0].get_title() == 'label 0 (binary)'
        r, g, b = rendered(fig, X0 + 38, Y0 + 2)
        assert g > 0.3 > r, (r, g, b)  # green: undamaged
        plt.close(fig)
        fig = dataset.plot(dataset[centre(4)])
        r, g, b = rendered(fig, X0 + 50, Y0 + 2)
        assert max(r, g, b) - min(r, g, b) < 0.02 < r < 0.95, (r, g, b)  # grey
        plt.close(fig)

        four = DamageLabels(EMS, crs=UTM, scheme='four')
        fig = four.plot(four[window(30, size=80)], show_titles=False)
        assert fig.axes[0].get_title() == ''
        # four grades, worst first: the redder (R - G), the worse
        redness = [
            float(np.subtract(*rendered(fig, X0 + 12 * i + 2, Y0 + 2)[:2]))
            for i in range(4)
        ]
        assert redness == sorted(redness, reverse=True), redness
        assert redness[0] > 0.3, redness
        assert redness[3] < -0.2, redness
        plt.close(fig)

    def test_missing(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError, match='Dataset not found'):
            DamageLabels(tmp_path)
