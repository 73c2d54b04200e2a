# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import math
import os
from pathlib import Path

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
import torch
from matplotlib.figure import Figure
from pyproj import CRS
from torchgeo.datasets import DatasetNotFoundError, IntersectionDataset, UnionDataset
from torchgeo.datasets.utils import Sample

from torchgeo_sar_damage.datasets.gem import FEATURE_NAMES, GEMExposure
from torchgeo_sar_damage.datasets.utils import extract
from torchgeo_sar_damage.errors import ArgumentError, InputFileError

ROOT = Path(__file__).parents[1] / 'data' / 'gem'
ADMIN = ROOT / 'admin.gpkg'
GROUPS = ('gem_material_', 'gem_llrs_', 'gem_storeys_', 'gem_code_')
UTM = CRS.from_epsg(32637)


def box_area_km2(xmin: float, ymin: float, xmax: float, ymax: float) -> float:
    area, _ = pyproj.Geod(ellps='WGS84').geometry_area_perimeter(
        shapely.box(xmin, ymin, xmax, ymax)
    )
    return abs(area) / 1e6


def window(x: float, y: float, half: float = 0.01) -> tuple[slice, slice]:
    return slice(x - half, x + half, half / 10), slice(y - half, y + half, half / 10)


def vector(**values: float) -> np.ndarray:
    out = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    for name, value in values.items():
        out[FEATURE_NAMES.index(f'gem_{name}')] = value
    return out


MISSING = vector(missing=1)


@pytest.fixture(scope='module')
def adm1() -> GEMExposure:
    return GEMExposure(ROOT / 'adm1', admin=ADMIN)


def test_feature_names(adm1: GEMExposure) -> None:
    assert adm1.feature_names == FEATURE_NAMES
    assert len(FEATURE_NAMES) == 25
    assert len(set(FEATURE_NAMES)) == 25
    assert FEATURE_NAMES[-1] == 'gem_missing'


def test_hand_computed_adm1(adm1: GEMExposure) -> None:
    # TR-46: Res 3.0 x RC infilled frame CDM H:6 + 1.0 x adobe wall DNO H:1,
    # Com 4 x RC moment frame CDL HBET:7-9 (midpoint 8): 8 buildings.
    units = adm1.units
    assert list(units.index) == ['TR-27', 'TR-46']
    assert units.loc['TR-46', 'name'] == 'KAHRAMANMARAŞ'
    assert units.loc['TR-27', 'name'] == 'GAZİANTEP'
    assert units.loc['TR-46', 'buildings'] == 8
    expected = {
        'material_rc': 7 / 8,
        'material_adobe': 1 / 8,
        'llrs_lfinf': 3 / 8,
        'llrs_lfm': 4 / 8,
        'llrs_lwal': 1 / 8,
        'storeys_1_3': 1 / 8,
        'storeys_4_7': 3 / 8,
        'storeys_8_plus': 4 / 8,
        'code_pre': 1 / 8,
        'code_cdl': 4 / 8,
        'code_cdm_plus': 3 / 8,
        'mean_storeys': (3 * 6 + 1 * 1 + 4 * 8) / 8,
        'log10_buildings_per_km2': math.log10(1 + 8 / box_area_km2(36, 37.5, 37, 38)),
        'log10_buildings': math.log10(9),
    }
    row = units.loc['TR-46', list(FEATURE_NAMES)].to_numpy(dtype=float)
    np.testing.assert_allclose(row, vector(**expected), rtol=1e-5, atol=1e-7)
    assert units.loc['TR-46', 'area_km2'] == pytest.approx(
        box_area_km2(36, 37.5, 37, 38), rel=1e-3
    )

    # TR-27: 5.0 RC frame CDL H:2, 5.0 unknown material CDL H:UNK, 2 steel braced
    # frame CDM H:1; mean storeys over the 7 buildings of known height.
    expected = {
        'material_rc': 5 / 12,
        'material_unk': 5 / 12,
        'material_steel': 2 / 12,
        'llrs_lfm': 5 / 12,
        'llrs_lfbr': 2 / 12,
        'llrs_other_unk': 5 / 12,
        'storeys_1_3': 7 / 12,
        'storeys_unknown': 5 / 12,
        'code_cdl': 10 / 12,
        'code_cdm_plus': 2 / 12,
        'mean_storeys': (5 * 2 + 2 * 1) / 7,
        'log10_buildings_per_km2': math.log10(1 + 12 / box_area_km2(36, 37, 37, 37.5)),
        'log10_buildings': math.log10(13),
    }
    row = units.loc['TR-27', list(FEATURE_NAMES)].to_numpy(dtype=float)
    np.testing.assert_allclose(row, vector(**expected), rtol=1e-5, atol=1e-7)


def test_groups_sum_to_one(adm1: GEMExposure) -> None:
    for prefix in GROUPS:
        columns = [c for c in FEATURE_NAMES if c.startswith(prefix)]
        np.testing.assert_allclose(adm1.units[columns].sum(axis=1), 1.0)


def test_summary_files_are_ignored(adm1: GEMExposure) -> None:
    assert len(adm1.units) == 2  # Exposure_Summary_Adm1.csv is not an exposure file


def test_getitem(adm1: GEMExposure) -> None:
    x, y = window(36.25, 37.75)
    sample = adm1[x, y]
    assert set(sample) == {'tabular', 'bounds', 'transform'}
    assert sample['tabular'].dtype == torch.float32
    assert sample['tabular'].shape == (25,)
    expected = adm1.units.loc['TR-46', list(FEATURE_NAMES)].to_numpy(np.float32)
    np.testing.assert_array_equal(sample['tabular'].numpy(), expected)
    torch.testing.assert_close(sample['bounds'], adm1._slice_to_tensor((x, y)))
    assert sample['transform'][2] == pytest.approx(x.start)
    assert sample['transform'][5] == pytest.approx(y.stop)


def test_getitem_centre_outside_units(adm1: GEMExposure) -> None:
    # the window overlaps TR-46 but its centre (37.05 E) lies east of every unit
    sample = adm1[36.9:37.2:0.01, 37.7:37.8:0.01]
    np.testing.assert_array_equal(sample['tabular'].numpy(), MISSING)


def test_getitem_outside(adm1: GEMExposure) -> None:
    with pytest.raises(IndexError, match='not found'):
        adm1[40.0:40.1:0.01, 37.7:37.8:0.01]


def test_len(adm1: GEMExposure) -> None:
    assert len(adm1) == 2


def test_transforms() -> None:
    def double(sample: Sample) -> Sample:
        sample['tabular'] = sample['tabular'] * 2
        return sample

    ds = GEMExposure(ROOT / 'adm1', admin=ADMIN, transforms=double)
    x, y = window(36.25, 37.75)
    assert ds[x, y]['tabular'][0] == pytest.approx(2 * 7 / 8)


def test_deepest_id_level() -> None:
    ds = GEMExposure(ROOT / 'adm2', admin=ADMIN)
    assert sorted(ds.units.index) == ['TR-27-01', 'TR-27-02', 'TR-46-01', 'TR-46-02']
    assert len(ds) == 4
    assert ds.units.loc['TR-27-02', 'buildings'] == 0
    assert ds.units.loc['TR-27-02', 'gem_missing'] == 1
    assert ds.units.loc['TR-46-01', 'name'] == 'Türkoğlu'
    west = ds[window(36.25, 37.75)]['tabular'].numpy()
    east = ds[window(36.75, 37.75)]['tabular'].numpy()
    assert west[FEATURE_NAMES.index('gem_material_rc')] == 1
    assert west[FEATURE_NAMES.index('gem_storeys_4_7')] == 1
    assert east[FEATURE_NAMES.index('gem_material_urm')] == 1
    assert east[FEATURE_NAMES.index('gem_code_pre')] == 1
    # TR-27-02 has polygons but no exposure rows: missing, not zeros alone
    south_east = ds[window(36.75, 37.25)]['tabular'].numpy()
    np.testing.assert_array_equal(south_east, MISSING)


def test_falls_back_to_coarser_level() -> None:
    # a layer without ID_2: the Adm2 rows are pooled per ID_1, districts dissolved
    admin = gpd.read_file(ADMIN).drop(columns=['ID_2', 'NAME_2'])
    ds = GEMExposure(ROOT / 'adm2', admin=admin)
    assert sorted(ds.units.index) == ['TR-27', 'TR-46']
    row = ds.units.loc['TR-46']
    assert row['buildings'] == 5
    assert row['gem_material_rc'] == pytest.approx(2 / 5)
    assert row['gem_material_urm'] == pytest.approx(3 / 5)
    assert row['area_km2'] == pytest.approx(box_area_km2(36, 37.5, 37, 38), rel=1e-3)


def test_coordinates_with_admin() -> None:
    ds = GEMExposure(ROOT / 'points', admin=ADMIN)
    assert sorted(ds.units.index) == ['TR-27-01', 'TR-27-02', 'TR-46-01', 'TR-46-02']
    assert ds.units['gem_missing'].tolist() == [0, 0, 0, 1]
    assert ds.units.loc['TR-46-01', 'gem_material_rc'] == pytest.approx(0.5)
    assert ds.units.loc['TR-46-01', 'gem_material_urm'] == pytest.approx(0.5)
    assert ds.units.loc['TR-46-02', 'gem_llrs_lfinf'] == 1
    assert ds.units.loc['TR-27-01', 'gem_material_steel'] == 1


def test_coordinates_without_admin() -> None:
    ds = GEMExposure(ROOT / 'points')
    assert len(ds) == 3  # three distinct asset locations
    assert ds.crs == CRS.from_epsg(4326)
    cells = shapely.union_all(ds.units.geometry.to_numpy())
    # cells tile the points' bounding box grown by half the nearest spacing (0.25 deg)
    assert cells.equals(shapely.box(36.0, 37.0, 37.0, 38.0).normalize()) or (
        cells.symmetric_difference(shapely.box(36.0, 37.0, 37.0, 38.0)).area < 1e-9
    )
    sample = ds[window(36.2, 37.8)]['tabular'].numpy()
    assert sample[FEATURE_NAMES.index('gem_material_rc')] == pytest.approx(0.5)
    assert sample[FEATURE_NAMES.index('gem_material_urm')] == pytest.approx(0.5)
    assert sample[FEATURE_NAMES.index('gem_mean_storeys')] == pytest.approx(2.0)


def test_coordinates_with_uncoded_polygons() -> None:
    admin = gpd.read_file(ADMIN)[['geometry']]
    ds = GEMExposure(ROOT / 'points', admin=admin)
    assert list(ds.units.index) == ['0', '1', '2', '3']  # one unit per polygon
    assert ds.units['buildings'].tolist() == [4, 4, 1, 0]


def test_numeric_codes(tmp_path: Path) -> None:
    path = tmp_path / 'Exposure_Res_Atlantis_Adm1.csv'
    path.write_text(
        'ID_0,ID_1,TAXONOMY,BUILDINGS\n'
        'ATL,1,CR/LFM/H:2/RES,3\n'
        'ATL,2,CR/LFM+CDH/H:2/RES,1\n',
        'utf-8',
    )
    admin = gpd.GeoDataFrame(
        {'ID_1': [1.0, 2.0]},
        geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)],
        crs='EPSG:4326',
    )
    ds = GEMExposure(path, admin=admin)
    assert list(ds.units.index) == ['1', '2']
    assert ds.units.loc['1', 'gem_code_unknown'] == 1  # no code level given
    assert ds.units.loc['2', 'gem_code_cdm_plus'] == 1


def test_admin_without_polygons() -> None:
    points = gpd.GeoDataFrame(
        {'ID_1': ['TR-46']}, geometry=[shapely.Point(36.5, 37.7)], crs='EPSG:4326'
    )
    with pytest.raises(ArgumentError, match='no polygons'):
        GEMExposure(ROOT / 'adm1', admin=points)


def test_lone_location_gets_a_cell(tmp_path: Path) -> None:
    lines = (ROOT / 'points' / 'Exposure_Res_Turkey.csv').read_text('utf-8')
    path = tmp_path / 'Exposure_Res_Turkey.csv'
    path.write_text('\n'.join(lines.splitlines()[:2]) + '\n', 'utf-8')
    ds = GEMExposure(path)
    minx, _, maxx, _ = ds.units.total_bounds
    assert maxx - minx == pytest.approx(30 / 3600)
    assert (minx + maxx) / 2 == pytest.approx(36.25)


def buildings(crs: CRS | str = 'EPSG:4326') -> gpd.GeoDataFrame:
    footprints = [
        shapely.box(36.700, 37.200, 36.701, 37.201),  # TR-27
        shapely.box(40.000, 37.700, 40.001, 37.701),  # outside every unit
        shapely.box(36.250, 37.750, 36.251, 37.751),  # TR-46
        None,  # no geometry
        shapely.box(36.400, 37.600, 36.401, 37.601),  # TR-46
    ]
    frame = gpd.GeoDataFrame(
        {'osm_id': [5, 9, 1, 7, 3]},
        index=pd.Index([50, 90, 10, 70, 30], name='fid'),
        geometry=footprints,
        crs='EPSG:4326',
    )
    return frame.to_crs(crs)


def test_features_table(adm1: GEMExposure) -> None:
    table = adm1.features(buildings())
    assert list(table.index) == [50, 90, 10, 70, 30]
    assert table.index.name == 'fid'
    assert list(table.columns) == list(FEATURE_NAMES)
    tr46 = adm1.units.loc['TR-46', list(FEATURE_NAMES)].to_numpy(np.float32)
    tr27 = adm1.units.loc['TR-27', list(FEATURE_NAMES)].to_numpy(np.float32)
    np.testing.assert_array_equal(table.loc[50], tr27)
    np.testing.assert_array_equal(table.loc[10], tr46)
    np.testing.assert_array_equal(table.loc[30], tr46)
    np.testing.assert_array_equal(table.loc[90], MISSING)
    np.testing.assert_array_equal(table.loc[70], MISSING)
    assert table['gem_missing'].tolist() == [
        1 if i in (90, 70) else 0 for i in table.index
    ]


def test_features_any_crs(adm1: GEMExposure) -> None:
    geographic = adm1.features(buildings())
    projected = adm1.features(buildings(UTM))
    pd.testing.assert_frame_equal(geographic, projected)
    series = adm1.features(buildings(UTM).geometry)
    pd.testing.assert_frame_equal(geographic, series)


def test_features_bad_arguments(adm1: GEMExposure) -> None:
    with pytest.raises(ArgumentError, match='GeoDataFrame'):
        adm1.features(pd.DataFrame({'x': [1]}))
    no_crs = gpd.GeoDataFrame(geometry=[shapely.Point(36.2, 37.7)])
    with pytest.raises(ArgumentError, match='no CRS'):
        adm1.features(no_crs)


def queries() -> list[tuple[slice, slice]]:
    out = [window(36.25, 37.75), window(36.75, 37.25), window(36.5, 37.5)]
    out.append((slice(36.9, 37.2, 0.01), slice(37.7, 37.8, 0.01)))  # centre outside
    out += [
        window(x, y, 0.05) for x in np.linspace(36.05, 36.95, 4) for y in (37.1, 37.9)
    ]
    return out


def test_extract_equals_getitem(adm1: GEMExposure) -> None:
    windows = queries()
    fast = list(adm1.extract(windows))
    assert len(fast) == len(windows)
    for query, sample in zip(windows, fast, strict=True):
        slow = adm1[query]
        assert set(slow) == set(sample)
        for key in slow:
            torch.testing.assert_close(sample[key], slow[key], rtol=0, atol=0)
    via_protocol = list(extract(adm1, windows))
    torch.testing.assert_close(via_protocol[1]['tabular'], fast[1]['tabular'])


def test_extract_outside(adm1: GEMExposure) -> None:
    samples = adm1.extract([window(36.25, 37.75), window(40, 37.75)])
    next(samples)
    with pytest.raises(IndexError):
        next(samples)


def test_crs_argument_and_setter() -> None:
    ds = GEMExposure(ROOT / 'adm1', admin=ADMIN, crs=UTM)
    assert ds.crs == UTM
    assert ds.res == (1.0, 1.0)
    x, y = pyproj.Transformer.from_crs(4326, UTM, always_xy=True).transform(
        36.25, 37.75
    )
    tabular = ds[x - 50 : x + 50 : 1, y - 50 : y + 50 : 1]['tabular']
    assert tabular[0] == pytest.approx(7 / 8)
    # TorchGeo changes the CRS of a combined dataset through the setter
    ds.crs = CRS.from_epsg(4326)
    assert ds[window(36.25, 37.75)]['tabular'][0] == pytest.approx(7 / 8)


def test_and(adm1: GEMExposure) -> None:
    fine = GEMExposure(ROOT / 'adm2', admin=ADMIN)
    both = adm1 & fine
    assert isinstance(both, IntersectionDataset)
    query = window(36.25, 37.75)
    sample = both[query]
    assert sample['tabular'].shape == (50,)
    torch.testing.assert_close(sample['tabular'][:25], adm1[query]['tabular'])
    torch.testing.assert_close(sample['tabular'][25:], fine[query]['tabular'])
    fast = next(extract(both, [query]))
    torch.testing.assert_close(fast['tabular'], sample['tabular'])


def test_or(adm1: GEMExposure) -> None:
    points = GEMExposure(ROOT / 'points')
    either = adm1 | points
    assert isinstance(either, UnionDataset)
    assert len(either) == len(adm1) + len(points)
    sample = either[window(36.25, 37.75)]
    assert sample['tabular'].shape == (25,)


def test_plot(adm1: GEMExposure) -> None:
    sample = adm1[window(36.25, 37.75)]
    fig = adm1.plot(sample, suptitle='Test')
    assert isinstance(fig, Figure)
    plt.close(fig)
    missing = adm1[36.9:37.2:0.01, 37.7:37.8:0.01]
    plt.close(adm1.plot(missing, show_titles=False))
    merged = {'tabular': torch.cat([sample['tabular'], sample['tabular']])}
    plt.close(adm1.plot(merged))
    plt.close(adm1.plot_units('gem_material_rc'))
    with pytest.raises(ArgumentError, match='unknown feature'):
        adm1.plot_units('nope')


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match='Dataset not found'):
        GEMExposure(tmp_path, admin=ADMIN)
    summary = tmp_path / 'Exposure_Summary_Adm1.csv'
    summary.write_text('ID_0,NAME_0,ID_1,NAME_1,OCCUPANCY,BUILDINGS\n', 'utf-8')
    with pytest.raises(DatasetNotFoundError):
        GEMExposure(tmp_path, admin=ADMIN)


def test_admin_required() -> None:
    with pytest.raises(ArgumentError, match='no LONGITUDE/LATITUDE') as info:
        GEMExposure(ROOT / 'adm1')
    assert 'admin=' in str(info.value)
    assert 'GADM' in str(info.value)
    assert 'Exposure_' in str(info.value)


def test_admin_missing_file(tmp_path: Path) -> None:
    path = tmp_path / 'boundaries.gpkg'
    with pytest.raises(InputFileError, match='does not exist') as info:
        GEMExposure(ROOT / 'adm1', admin=path)
    assert info.value.path == os.fspath(path)


def test_admin_unreadable(tmp_path: Path) -> None:
    path = tmp_path / 'boundaries.gpkg'
    path.write_text('not a geopackage', 'utf-8')
    with pytest.raises(InputFileError, match='cannot be read'):
        GEMExposure(ROOT / 'adm1', admin=path)


def test_admin_without_codes() -> None:
    admin = gpd.read_file(ADMIN).rename(
        columns={'ID_0': 'iso', 'ID_1': 'province', 'ID_2': 'district'}
    )
    with pytest.raises(ArgumentError, match='shares no ID_n code column'):
        GEMExposure(ROOT / 'adm1', admin=admin)
    ds = GEMExposure(ROOT / 'adm1', admin=admin, id_columns={'ID_1': 'province'})
    assert sorted(ds.units.index) == ['TR-27', 'TR-46']
    with pytest.raises(ArgumentError, match='not a column'):
        GEMExposure(ROOT / 'adm1', admin=admin, id_columns={'ID_1': 'nope'})
    with pytest.raises(ArgumentError, match='not a GEM code column'):
        GEMExposure(ROOT / 'adm1', admin=admin, id_columns={'code': 'province'})


def test_admin_without_crs() -> None:
    admin = gpd.read_file(ADMIN)
    admin = gpd.GeoDataFrame(
        admin.drop(columns='geometry'), geometry=admin.geometry.to_numpy()
    )
    with pytest.raises(ArgumentError, match='no CRS'):
        GEMExposure(ROOT / 'adm1', admin=admin)


def test_unmatched_codes_warn() -> None:
    admin = gpd.read_file(ADMIN)
    admin = admin[admin['ID_1'] == 'TR-46']
    with pytest.warns(UserWarning, match='absent from') as record:
        ds = GEMExposure(ROOT / 'adm1', admin=admin)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert (
        'Exposure_Com_Turkey_Adm1.csv: 1 of 2 rows have an ID_1 code absent'
        in messages[0]
    )
    assert 'Exposure_Res_Turkey_Adm1.csv: 2 of 4 rows' in messages[1]
    assert all('(TR-27...)' in m for m in messages)
    assert list(ds.units.index) == ['TR-46']


@pytest.mark.parametrize(
    ('folder', 'file', 'problem'),
    [
        ('missing_column', 'Exposure_Res_Turkey_Adm1.csv', 'has no BUILDINGS column'),
        (
            'semicolon',
            'Exposure_Res_Turkey_Adm1.csv',
            'not comma-separated.*semicolons',
        ),
        (
            'non_numeric',
            'Exposure_Com_Turkey_Adm1.csv',
            "line 3, column BUILDINGS: 'twelve' is not a number",
        ),
        (
            'bad_taxonomy',
            'Exposure_Res_Turkey_Adm1.csv',
            r"line 3, column TAXONOMY: .*'CR/LFINF\(MUR\+CL/H:2/RES'.*not closed",
        ),
    ],
)
def test_broken_files(folder: str, file: str, problem: str) -> None:
    with pytest.raises(InputFileError, match=problem) as info:
        GEMExposure(ROOT / 'broken' / folder, admin=ADMIN)
    assert info.value.path == os.fspath(ROOT / 'broken' / folder / file)
    assert file in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    text = (ROOT / 'adm1' / 'Exposure_Res_Turkey_Adm1.csv').read_text('utf-8')
    path = tmp_path / 'Exposure_Res_Turkey_Adm1.csv'
    path.write_bytes(text.encode('cp1254'))  # Windows Turkish code page
    with pytest.raises(InputFileError, match='not UTF-8'):
        GEMExposure(path, admin=ADMIN)


@pytest.mark.parametrize(
    ('header', 'row', 'problem'),
    [
        (
            'ID_0,TAXONOMY,BUILDINGS',
            'TUR,CR/LFM/H:1,-2',
            'line 2, column BUILDINGS: negative',
        ),
        ('ID_0,TAXONOMY,BUILDINGS', 'TUR,CR/LFM/H:1,', "line 2, column BUILDINGS: ''"),
        ('NAME_0,TAXONOMY,BUILDINGS', 'Turkey,CR/LFM/H:1,1', 'neither ID_n codes'),
        ('LONGITUDE,TAXONOMY,BUILDINGS', '36,CR/LFM/H:1,1', 'LATITUDE'),
        ('LONGITUDE,LATITUDE,TAXONOMY,BUILDINGS', '360,37,CR/LFM/H:1,1', 'outside'),
        ('ID_0,ID_1,TAXONOMY,BUILDINGS', 'TUR,,CR/LFM/H:1,1', 'ID_1: empty code'),
        ('ID_0,TAXONOMY,BUILDINGS', 'TUR,CR/LFM/H:1,1,7', 'well-formed'),
        ('ID_0,TAXONOMY,BUILDINGS', 'TUR,CR/LFM/H:1,1\nTUR,CR/LFM/H:1,1,7', 'line 3'),
    ],
)
def test_malformed_rows(tmp_path: Path, header: str, row: str, problem: str) -> None:
    path = tmp_path / 'Exposure_Res_Turkey_Adm1.csv'
    path.write_text(f'{header}\n{row}\n{row}\n', 'utf-8')
    with pytest.raises(InputFileError, match=problem):
        GEMExposure(path, admin=ADMIN)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / 'Exposure_Res_Turkey_Adm1.csv'
    path.write_text('', 'utf-8')
    with pytest.raises(InputFileError, match='is empty'):
        GEMExposure(path, admin=ADMIN)


# --------------------------------------------------------------- real GEM files

GEM_EXPOSURE_DIR = os.environ.get('GEM_EXPOSURE_DIR')


def province_boxes() -> gpd.GeoDataFrame:
    """81 synthetic 1-degree boxes coded TR-01..TR-81 (a stand-in for real borders)."""
    codes = [f'TR-{i:02d}' for i in range(1, 82)]
    boxes = [
        shapely.box(26 + i % 9, 36 + i // 9, 27 + i % 9, 37 + i // 9) for i in range(81)
    ]
    return gpd.GeoDataFrame({'ID_1': codes}, geometry=boxes, crs='EPSG:4326')


@pytest.mark.skipif(
    GEM_EXPOSURE_DIR is None,
    reason="set GEM_EXPOSURE_DIR to the folder holding GEM's Europe/Turkey "
    'Exposure_{Res,Com,Ind}_Turkey_Adm1.csv (github.com/gem/global_exposure_model)',
)
def test_real_turkey_files() -> None:
    assert GEM_EXPOSURE_DIR is not None
    root = Path(GEM_EXPOSURE_DIR)
    admin = province_boxes()
    residential = GEMExposure(root / 'Exposure_Res_Turkey_Adm1.csv', admin=admin)
    assert len(residential) == 81
    assert residential.units.loc['TR-46', 'buildings'] == 95929  # reference count
    assert residential.units.loc['TR-46', 'name'] == 'KAHRAMANMARAŞ'

    ds = GEMExposure(root, admin=admin)  # Res, Com and Ind; summaries ignored
    assert len(ds) == 81
    assert ds.units.loc['TR-46', 'buildings'] == 95929 + 10698 + 2350
    for prefix in GROUPS:
        columns = [c for c in FEATURE_NAMES if c.startswith(prefix)]
        np.testing.assert_allclose(ds.units[columns].sum(axis=1), 1.0, rtol=1e-9)
    assert (ds.units['gem_missing'] == 0).all()
    centre = admin.geometry[45].centroid  # TR-46
    tabular = ds[window(centre.x, centre.y)]['tabular'].numpy()
    row = ds.units.loc['TR-46', list(FEATURE_NAMES)].to_numpy(np.float32)
    np.testing.assert_array_equal(tabular, row)
