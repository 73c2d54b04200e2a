# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""GEM exposure tables aggregated per administrative unit, in GEM's own layout.

GEM's global exposure model (``gem/global_exposure_model``, v2023.1) publishes one CSV
per occupancy (``Exposure_Res_...``, ``Exposure_Com_...``, ``Exposure_Ind_...``), one row
per administrative unit and taxonomy with the number of buildings, replacement costs,
floor area and occupants. The Türkiye files are aggregated per province (``ID_1``);
the simulator writes the same columns one level finer (``ID_2, NAME_2`` for its
districts), as GEM's finer files do, and keeps GEM's number formats: floats for the
Res file's counts (``26.0``), integers for Com and Ind counts, costs, area and
occupants, floats for the day/night/transit occupants.

Rows are aggregated from the simulated buildings themselves (before the earthquake),
so the exposure is consistent with the scene. Replacement costs per square metre and
occupant densities are [guess] round values for Türkiye.
"""

import csv
import os

import geopandas as gpd
import pandas as pd

from ..taxonomy import parse_taxonomy

#: GEM exposure columns, district level.
COLUMNS = (
    'ID_0',
    'NAME_0',
    'ID_1',
    'NAME_1',
    'ID_2',
    'NAME_2',
    'SETTLEMENT',
    'OCCUPANCY',
    'TAXONOMY',
    'BUILDINGS',
    'TOTAL_REPL_COST_USD',
    'COST_STRUCTURAL_USD',
    'COST_NONSTRUCTURAL_USD',
    'COST_CONTENTS_USD',
    'TOTAL_AREA_SQM',
    'OCCUPANTS_PER_ASSET',
    'OCCUPANTS_PER_ASSET_DAY',
    'OCCUPANTS_PER_ASSET_NIGHT',
    'OCCUPANTS_PER_ASSET_TRANSIT',
)

#: Which taxonomy occupancy codes go to which file.
OCCUPANCY_FILES = {
    'Res': ('RES',),
    'Com': ('COM', 'MIX1', 'MIX2', 'MIX3'),
    'Ind': ('IND',),
}

_COST_PER_SQM = {
    'RC': 400.0,
    'URM': 260.0,
    'ADOBE': 150.0,
    'STEEL': 450.0,
    'PRECAST': 350.0,
}
_SQM_PER_OCCUPANT = {'Res': 35.0, 'Com': 25.0, 'Ind': 80.0}
_DAY_NIGHT_TRANSIT = {
    'Res': (0.45, 0.9, 0.5),
    'Com': (0.9, 0.1, 0.5),
    'Ind': (0.9, 0.2, 0.4),
}


def exposure_tables(
    buildings: gpd.GeoDataFrame, districts: gpd.GeoDataFrame
) -> dict[str, pd.DataFrame]:
    """Aggregate buildings into GEM exposure rows per district, taxonomy and occupancy.

    Args:
        buildings: buildings with ``taxonomy``, ``storeys``, ``ID_2`` and footprints.
        districts: administrative units with ``ID_0 ... NAME_2``.

    Returns:
        One table per occupancy file (``Res``, ``Com``, ``Ind``), columns
        :data:`COLUMNS`, sorted by ``ID_2`` and ``TAXONOMY``.
    """
    frame = pd.DataFrame(
        {
            'ID_2': buildings['ID_2'].to_numpy(),
            'TAXONOMY': buildings['taxonomy'].to_numpy(),
            'area': buildings.geometry.area.to_numpy()
            * buildings['storeys'].to_numpy(),
        }
    )
    taxa = frame['TAXONOMY'].map(parse_taxonomy)
    occ = taxa.map(lambda t: t.occupancy or 'RES')
    macro = taxa.map(lambda t: t.macro_class)
    frame['cost'] = frame['area'] * macro.map(lambda m: _COST_PER_SQM.get(m, 350.0))
    names = districts.drop(columns='geometry').set_index('ID_2')
    tables = {}
    for key, codes in OCCUPANCY_FILES.items():
        sub = frame[occ.isin(codes)]
        grouped = (
            sub.groupby(['ID_2', 'TAXONOMY'], sort=True)
            .agg(
                BUILDINGS=('area', 'size'),
                TOTAL_AREA_SQM=('area', 'sum'),
                TOTAL_REPL_COST_USD=('cost', 'sum'),
            )
            .reset_index()
        )
        for col in ('ID_0', 'NAME_0', 'ID_1', 'NAME_1', 'NAME_2'):
            grouped[col] = grouped['ID_2'].map(names[col])
        grouped['SETTLEMENT'] = 'Total'
        grouped['OCCUPANCY'] = key
        total = grouped['TOTAL_REPL_COST_USD']
        grouped['COST_STRUCTURAL_USD'] = 0.3 * total
        grouped['COST_NONSTRUCTURAL_USD'] = 0.5 * total
        grouped['COST_CONTENTS_USD'] = 0.2 * total
        occupants = grouped['TOTAL_AREA_SQM'] / _SQM_PER_OCCUPANT[key]
        day, night, transit = _DAY_NIGHT_TRANSIT[key]
        grouped['OCCUPANTS_PER_ASSET'] = occupants
        grouped['OCCUPANTS_PER_ASSET_DAY'] = occupants * day
        grouped['OCCUPANTS_PER_ASSET_NIGHT'] = occupants * night
        grouped['OCCUPANTS_PER_ASSET_TRANSIT'] = occupants * transit
        tables[key] = grouped[list(COLUMNS)]
    return tables


def _fmt(value: object, column: str, integer_counts: bool) -> str:
    if isinstance(value, str):
        return value
    number = float(value)  # type: ignore[arg-type]
    if column in (
        'OCCUPANTS_PER_ASSET_DAY',
        'OCCUPANTS_PER_ASSET_NIGHT',
        'OCCUPANTS_PER_ASSET_TRANSIT',
    ):
        return f'{round(number, 1):.1f}'
    if integer_counts:
        return str(round(number))
    return f'{round(number, 1):.1f}'


def write_exposure_csv(
    path: str | os.PathLike[str], table: pd.DataFrame, occupancy: str
) -> None:
    """Write one GEM exposure CSV (UTF-8, no BOM, LF line ends, comma-separated).

    Args:
        path: output file.
        table: rows from :func:`exposure_tables`.
        occupancy: ``Res`` (float counts) or ``Com``/``Ind`` (integer counts).
    """
    integer_counts = occupancy != 'Res'
    with open(path, 'w', encoding='utf-8', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(COLUMNS)
        for row in table.itertuples(index=False):
            writer.writerow([_fmt(v, c, integer_counts) for v, c in zip(row, COLUMNS)])
