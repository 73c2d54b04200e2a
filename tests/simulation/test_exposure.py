# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from torchgeo_sar_damage.simulation.cities import CITIES
from torchgeo_sar_damage.simulation.exposure import (
    COLUMNS,
    OCCUPANCY_FILES,
    exposure_tables,
    write_exposure_csv,
)
from torchgeo_sar_damage.simulation.scene import Scene, generate_scene
from torchgeo_sar_damage.taxonomy import parse_taxonomy

# gem/global_exposure_model, Europe/Turkey/Exposure_Res_Turkey_Adm1.csv header, with
# ID_2 and NAME_2 as in GEM's finer files.
GEM_HEADER = (
    'ID_0,NAME_0,ID_1,NAME_1,ID_2,NAME_2,SETTLEMENT,OCCUPANCY,TAXONOMY,BUILDINGS,'
    'TOTAL_REPL_COST_USD,COST_STRUCTURAL_USD,COST_NONSTRUCTURAL_USD,COST_CONTENTS_USD,'
    'TOTAL_AREA_SQM,OCCUPANTS_PER_ASSET,OCCUPANTS_PER_ASSET_DAY,'
    'OCCUPANTS_PER_ASSET_NIGHT,OCCUPANTS_PER_ASSET_TRANSIT'
)


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
    tables = exposure_tables(scene.buildings, scene.districts)
    paths = {}
    for key, table in tables.items():
        path = tmp_path / f'Exposure_{key}_Turkey_Adm2.csv'
        write_exposure_csv(path, table, key)
        paths[key] = path
    return paths


def test_tables_aggregate_buildings(scene: Scene) -> None:
    b = scene.buildings
    tables = exposure_tables(b, scene.districts)
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
    tables = exposure_tables(residential, scene.districts)
    assert tables['Ind'].empty
    assert tables['Com'].empty
    path = tmp_path / 'Exposure_Ind_Turkey_Adm2.csv'
    write_exposure_csv(path, tables['Ind'], 'Ind')
    assert path.read_text(encoding='utf-8') == GEM_HEADER + '\n'


def test_csv_round_trip(scene: Scene, written: dict[str, Path]) -> None:
    tables = exposure_tables(scene.buildings, scene.districts)
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
