# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from torchgeo_sar_damage.errors import ArgumentError
from torchgeo_sar_damage.simulation.cities import CITIES
from torchgeo_sar_damage.simulation.exposure import (
    COLUMNS,
    DISTRICT_COLUMNS,
    LEVEL_COLUMNS,
    OCCUPANCY_FILES,
    PROVINCE_COLUMNS,
    admin_units,
    exposure_tables,
    write_exposure_csv,
)
from torchgeo_sar_damage.simulation.scene import Scene, generate_scene
from torchgeo_sar_damage.taxonomy import parse_taxonomy

# gem/global_exposure_model, Europe/Turkey/Exposure_Res_Turkey_Adm1.csv header.
PROVINCE_HEADER = (
    'ID_0,NAME_0,ID_1,NAME_1,SETTLEMENT,OCCUPANCY,TAXONOMY,BUILDINGS,'
    'TOTAL_REPL_COST_USD,COST_STRUCTURAL_USD,COST_NONSTRUCTURAL_USD,COST_CONTENTS_USD,'
    'TOTAL_AREA_SQM,OCCUPANTS_PER_ASSET,OCCUPANTS_PER_ASSET_DAY,'
    'OCCUPANTS_PER_ASSET_NIGHT,OCCUPANTS_PER_ASSET_TRANSIT'
)
# the same with ID_2 and NAME_2, as in GEM's finer files (the districts, level 2).
GEM_HEADER = PROVINCE_HEADER.replace('NAME_1,', 'NAME_1,ID_2,NAME_2,')


INDUSTRIAL = ('CR+PC/LFM+CDL+DUL/H:1/IND', 'S/LFM+CDM+DUM/H:2/IND')


@pytest.fixture(scope='module')
def scene() -> Scene:
    scene = generate_scene(CITIES['kahramanmaras'], 1200, np.random.default_rng(0))
    # generated towns hold no industrial buildings (see test_scene.py): make some
    b = scene.buildings.copy()
    rows = np.arange(0, len(b), 20)
    b.loc[rows, 'taxonomy'] = [INDUSTRIAL[k % 2] for k in range(len(rows))]
    b.loc[rows, 'storeys'] = [1 + k % 2 for k in range(len(rows))]
    b.loc[rows, 'occupancy'] = 'IND'
    scene.buildings = b
    return scene


@pytest.fixture
def written(scene: Scene, tmp_path: Path) -> dict[str, Path]:
    """The district files (level 2)."""
    tables = exposure_tables(scene.buildings, scene.districts, level=2)
    paths = {}
    for key, table in tables.items():
        path = tmp_path / f'Exposure_{key}_Turkey_Adm2.csv'
        write_exposure_csv(path, table, key)
        paths[key] = path
    return paths


def test_tables_aggregate_buildings(scene: Scene) -> None:
    b = scene.buildings
    tables = exposure_tables(b, scene.districts, level=2)
    assert set(tables) == set(OCCUPANCY_FILES) == {'Res', 'Com', 'Ind'}
    for key, table in tables.items():
        assert tuple(table.columns) == COLUMNS
        assert len(table) > 0, key
        assert (table['OCCUPANCY'] == key).all()
        assert not table.duplicated(['ID_2', 'TAXONOMY']).any()
        assert list(table['ID_2']) == sorted(table['ID_2'])
        occupancy = {parse_taxonomy(t).occupancy for t in table['TAXONOMY']}
        assert occupancy <= set(OCCUPANCY_FILES[key])
    allrows = pd.concat(tables.values())
    assert allrows['BUILDINGS'].sum() == len(b)
    per_district = allrows.groupby('ID_2')['BUILDINGS'].sum()
    pd.testing.assert_series_equal(
        per_district.sort_index(),
        b['ID_2'].value_counts().sort_index(),
        check_names=False,
    )
    per_taxonomy = allrows.groupby('TAXONOMY')['BUILDINGS'].sum()
    assert per_taxonomy.to_dict() == b['taxonomy'].value_counts().to_dict()
    floor_area = b.geometry.area.to_numpy() * b['storeys'].to_numpy()
    assert allrows['TOTAL_AREA_SQM'].sum() == pytest.approx(floor_area.sum(), rel=1e-9)
    # names come from the districts
    names = scene.districts.set_index('ID_2')['NAME_2']
    assert (allrows['NAME_2'] == allrows['ID_2'].map(names)).all()
    costs = allrows[
        ['COST_STRUCTURAL_USD', 'COST_NONSTRUCTURAL_USD', 'COST_CONTENTS_USD']
    ]
    np.testing.assert_allclose(costs.sum(axis=1), allrows['TOTAL_REPL_COST_USD'])
    assert (allrows['TOTAL_REPL_COST_USD'] > 0).all()


def test_csv_layout(scene: Scene, written: dict[str, Path]) -> None:
    total = 0
    area = 0.0
    names: set[str] = set()
    for key, path in written.items():
        raw = path.read_bytes()
        assert not raw.startswith(b'\xef\xbb\xbf')
        assert b'\r' not in raw
        text = raw.decode('utf-8')
        lines = text.split('\n')
        assert lines[0] == GEM_HEADER
        assert lines[-1] == ''
        rows = list(csv.DictReader(lines[1:-1], fieldnames=COLUMNS))
        assert len(rows) > 0
        count_pattern = r'\d+\.0' if key == 'Res' else r'\d+'
        for row in rows:
            assert re.fullmatch(count_pattern, row['BUILDINGS']), row['BUILDINGS']
            assert row['OCCUPANCY'] == key
            assert row['SETTLEMENT'] == 'Total'
            assert re.fullmatch(r'\d+\.\d', row['OCCUPANTS_PER_ASSET_NIGHT'])
        total += sum(int(float(r['BUILDINGS'])) for r in rows)
        area += sum(float(r['TOTAL_AREA_SQM']) for r in rows)
        # Turkish letters survive, in the province and in the district names
        assert 'NAME_1' in lines[0]
        assert 'KAHRAMANMARAŞ' in text
        assert all(r['NAME_1'] == 'KAHRAMANMARAŞ' for r in rows)
        assert all(r['NAME_2'].startswith('Kahramanmaraş ') for r in rows)
        names |= {r['NAME_2'] for r in rows}
    assert total == len(scene.buildings)
    # 'Kahramanmaraş Doğu', 'Kahramanmaraş Güney', 'Kahramanmaraş Batı'... intact
    assert names == set(scene.districts['NAME_2'])
    assert {'Kahramanmaraş Doğu', 'Kahramanmaraş Güney', 'Kahramanmaraş Batı'} <= names
    b = scene.buildings
    floor_area = float(np.sum(b.geometry.area.to_numpy() * b['storeys'].to_numpy()))
    assert area == pytest.approx(floor_area, abs=len(b))


def test_empty_table_writes_header_only(scene: Scene, tmp_path: Path) -> None:
    residential = scene.buildings[scene.buildings['taxonomy'].str.endswith('/RES')]
    for level, header in ((1, PROVINCE_HEADER), (2, GEM_HEADER)):
        tables = exposure_tables(residential, scene.districts, level=level)
        assert tables['Ind'].empty
        assert tables['Com'].empty
        path = tmp_path / f'Exposure_Ind_Turkey_Adm{level}.csv'
        write_exposure_csv(path, tables['Ind'], 'Ind')
        assert path.read_text(encoding='utf-8') == header + '\n'


def test_csv_round_trip(scene: Scene, written: dict[str, Path]) -> None:
    tables = exposure_tables(scene.buildings, scene.districts, level=2)
    for key, path in written.items():
        frame = pd.read_csv(path, encoding='utf-8')
        expected = tables[key].reset_index(drop=True)
        assert list(frame.columns) == list(COLUMNS)
        assert list(frame['TAXONOMY']) == list(expected['TAXONOMY'])
        np.testing.assert_array_equal(frame['BUILDINGS'], expected['BUILDINGS'])
        np.testing.assert_allclose(
            frame['TOTAL_AREA_SQM'], expected['TOTAL_AREA_SQM'], atol=0.51
        )
        assert list(frame['NAME_2']) == list(expected['NAME_2'])


# -- provinces (level 1, the default: GEM's Türkiye files) --------------------------


@pytest.fixture(scope='module')
def two_provinces(scene: Scene) -> Scene:
    """The scene with its northern and eastern districts moved to another province."""
    districts = scene.districts.copy()
    moved = districts['ID_2'].isin(districts['ID_2'].iloc[1:3])
    districts.loc[moved, 'ID_1'] = 'TR-01'
    districts.loc[moved, 'NAME_1'] = 'ADANA'
    return dataclasses.replace(scene, districts=districts)


def test_columns_per_level() -> None:
    assert COLUMNS == DISTRICT_COLUMNS == LEVEL_COLUMNS[2]
    assert LEVEL_COLUMNS[1] == PROVINCE_COLUMNS == tuple(PROVINCE_HEADER.split(','))
    assert DISTRICT_COLUMNS == tuple(GEM_HEADER.split(','))


def test_provinces_by_default(scene: Scene) -> None:
    b = scene.buildings
    tables = exposure_tables(b, scene.districts)
    for key, table in tables.items():
        assert tuple(table.columns) == PROVINCE_COLUMNS
        assert 'ID_2' not in table.columns
        assert set(table['ID_1']) == {'TR-46'}
        assert (table['NAME_1'] == 'KAHRAMANMARAŞ').all()
        assert (table['OCCUPANCY'] == key).all()
        assert table['TAXONOMY'].is_unique
        assert list(table['TAXONOMY']) == sorted(table['TAXONOMY'])
    assert sum(t['BUILDINGS'].sum() for t in tables.values()) == len(b)


def test_provinces_sum_the_districts(two_provinces: Scene) -> None:
    """Province rows are the district rows summed per province and taxonomy."""
    b, districts = two_provinces.buildings, two_provinces.districts
    provinces = pd.concat(exposure_tables(b, districts, level=1).values())
    finer = pd.concat(exposure_tables(b, districts, level=2).values())
    assert set(provinces['ID_1']) == {'TR-46', 'TR-01'}
    assert not provinces.duplicated(['ID_1', 'TAXONOMY']).any()
    names = provinces.groupby('ID_1')['NAME_1'].unique().map(list).to_dict()
    assert names == {'TR-01': ['ADANA'], 'TR-46': ['KAHRAMANMARAŞ']}
    summed = finer.groupby(['ID_1', 'TAXONOMY', 'OCCUPANCY'])[
        ['BUILDINGS', 'TOTAL_AREA_SQM', 'TOTAL_REPL_COST_USD', 'OCCUPANTS_PER_ASSET']
    ].sum()
    ours = provinces.set_index(['ID_1', 'TAXONOMY', 'OCCUPANCY'])[summed.columns]
    pd.testing.assert_frame_equal(
        ours.sort_index(), summed.sort_index(), check_dtype=False, rtol=1e-12
    )
    # and per taxonomy over the whole scene, the buildings themselves
    per_taxonomy = provinces.groupby('TAXONOMY')['BUILDINGS'].sum()
    assert per_taxonomy.to_dict() == b['taxonomy'].value_counts().to_dict()


def test_province_csv_layout(scene: Scene, tmp_path: Path) -> None:
    total = 0
    for key, table in exposure_tables(scene.buildings, scene.districts).items():
        path = tmp_path / f'Exposure_{key}_Turkey_Adm1.csv'
        write_exposure_csv(path, table, key)
        lines = path.read_text(encoding='utf-8').split('\n')
        assert lines[0] == PROVINCE_HEADER
        rows = list(csv.DictReader(lines[1:-1], fieldnames=PROVINCE_COLUMNS))
        count_pattern = r'\d+\.0' if key == 'Res' else r'\d+'
        for row in rows:
            assert row['ID_1'] == 'TR-46'
            assert row['NAME_1'] == 'KAHRAMANMARAŞ'
            assert re.fullmatch(count_pattern, row['BUILDINGS']), row['BUILDINGS']
        total += sum(int(float(r['BUILDINGS'])) for r in rows)
    assert total == len(scene.buildings)


def test_admin_units(two_provinces: Scene) -> None:
    districts = two_provinces.districts
    provinces = admin_units(districts)
    assert list(provinces.columns) == ['ID_0', 'NAME_0', 'ID_1', 'NAME_1', 'geometry']
    assert list(provinces['ID_1']) == ['TR-01', 'TR-46']
    assert list(provinces['NAME_1']) == ['ADANA', 'KAHRAMANMARAŞ']
    assert provinces.crs == districts.crs
    for code, geometry in zip(provinces['ID_1'], provinces.geometry, strict=True):
        union = districts[districts['ID_1'] == code].geometry.union_all()
        assert geometry.symmetric_difference(union).area < 1e-6
    assert provinces.geometry.area.sum() == pytest.approx(
        districts.geometry.area.sum(), rel=1e-9
    )
    same = admin_units(districts, level=2)
    assert list(same.columns) == [*DISTRICT_COLUMNS[:6], 'geometry']
    assert same.geometry.equals(districts.geometry)


@pytest.mark.parametrize('level', [0, 3, True, '1'])
def test_bad_level(scene: Scene, level: object) -> None:
    with pytest.raises(ArgumentError, match=r'1 \(provinces.*2 \(districts'):
        exposure_tables(scene.buildings, scene.districts, level=level)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match='GEM level'):
        admin_units(scene.districts, level=level)  # type: ignore[arg-type]


def test_write_refuses_other_columns(scene: Scene, tmp_path: Path) -> None:
    table = exposure_tables(scene.buildings, scene.districts)['Res']
    path = tmp_path / 'Exposure_Res_Turkey_Adm1.csv'
    with pytest.raises(ArgumentError, match='PROVINCE_COLUMNS or DISTRICT_COLUMNS'):
        write_exposure_csv(path, table.drop(columns='NAME_1'), 'Res')
    assert not path.exists()
