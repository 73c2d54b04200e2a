# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""GEM exposure tables aggregated per administrative unit, in GEM's own layout.

GEM's global exposure model (``gem/global_exposure_model``, v2023.1) publishes one CSV
per occupancy (``Exposure_Res_...``, ``Exposure_Com_...``, ``Exposure_Ind_...``), one row
per administrative unit and taxonomy with the number of buildings, replacement costs,
floor area and occupants. The Türkiye files are aggregated per province (``ID_1``,
``Exposure_Res_Turkey_Adm1.csv``), and so is the simulator's exposure by default
(``level=1``, :data:`PROVINCE_COLUMNS`): a user of the real data has no finer
exposure. On request (``level=2``, :data:`DISTRICT_COLUMNS`) it writes the same columns
one level finer, ``ID_2, NAME_2`` for its districts, as GEM's finer files of other
countries do. Either way it keeps GEM's number formats: floats for the Res file's
counts (``26.0``), integers for Com and Ind counts, costs, area and occupants, floats
for the day/night/transit occupants.

Rows are aggregated from the simulated buildings themselves (before the earthquake),
so the exposure is consistent with the scene: the province rows are the sums of the
district rows. A simulated province holds only its simulated town: its polygon is the
union of the town's districts (the scene's extent) and its rows count the town's
buildings, not the real province's. Replacement costs per square metre and occupant
densities are [guess] round values for Türkiye.
"""

import csv
import os

import geopandas as gpd
import pandas as pd

from ..errors import ArgumentError
from ..taxonomy import parse_taxonomy

#: GEM's administrative columns, country to district (``ID_n``, ``NAME_n``).
_ADMIN_COLUMNS = ('ID_0', 'NAME_0', 'ID_1', 'NAME_1', 'ID_2', 'NAME_2')

#: GEM's columns after the administrative ones.
_ASSET_COLUMNS = (
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

#: GEM exposure columns, province level (``ID_1``), as GEM publishes Türkiye.
PROVINCE_COLUMNS = (*_ADMIN_COLUMNS[:4], *_ASSET_COLUMNS)

#: GEM exposure columns, district level (``ID_2``).
DISTRICT_COLUMNS = (*_ADMIN_COLUMNS, *_ASSET_COLUMNS)

#: GEM exposure columns, district level (the same as :data:`DISTRICT_COLUMNS`).
COLUMNS = DISTRICT_COLUMNS

#: Exposure columns per administrative level (1: provinces, 2: districts).
LEVEL_COLUMNS = {1: PROVINCE_COLUMNS, 2: DISTRICT_COLUMNS}

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


def _check_level(level: int) -> None:
    """Refuse an administrative level other than 1 (provinces) or 2 (districts)."""
    if isinstance(level, bool) or level not in LEVEL_COLUMNS:
        raise ArgumentError(
            f'GEM level must be 1 (provinces, as GEM publishes Türkiye) or 2 '
            f'(districts), not {level!r}'
        )


def admin_units(districts: gpd.GeoDataFrame, level: int = 1) -> gpd.GeoDataFrame:
    """The polygons of the administrative units that the exposure rows refer to.

    Args:
        districts: the scene's districts, columns ``ID_0 ... NAME_2`` and geometry.
        level: 1 for provinces (the districts dissolved by ``ID_1``, columns
            ``ID_0, NAME_0, ID_1, NAME_1``), 2 for the districts themselves.

    Returns:
        One polygon per unit, sorted by code at level 1.

    Raises:
        ArgumentError: if ``level`` is not 1 or 2.
    """
    _check_level(level)
    columns = list(_ADMIN_COLUMNS[: 2 * (level + 1)])
    if level == 2:
        return districts[[*columns, 'geometry']]
    provinces = districts[[*columns, 'geometry']].dissolve(
        by='ID_1', aggfunc='first', sort=True
    )
    return provinces.reset_index()[[*columns, 'geometry']]


def exposure_tables(
    buildings: gpd.GeoDataFrame, districts: gpd.GeoDataFrame, level: int = 1
) -> dict[str, pd.DataFrame]:
    """Aggregate buildings into GEM exposure rows per unit, taxonomy and occupancy.

    Args:
        buildings: buildings with ``taxonomy``, ``storeys``, ``ID_2`` and footprints.
        districts: the districts the buildings' ``ID_2`` refer to, with
            ``ID_0 ... NAME_2`` (they also give each district's province).
        level: 1 for one row set per province (``ID_1``), as GEM publishes Türkiye;
            2 for one per district (``ID_2``).

    Returns:
        One table per occupancy file (``Res``, ``Com``, ``Ind``), columns
        :data:`LEVEL_COLUMNS` ``[level]``, sorted by ``ID_<level>`` and ``TAXONOMY``.

    Raises:
        ArgumentError: if ``level`` is not 1 or 2.
    """
    _check_level(level)
    columns = LEVEL_COLUMNS[level]
    code = f'ID_{level}'
    admin = districts.drop(columns='geometry')
    unit = buildings['ID_2']
    if code != 'ID_2':  # the province of each building's district
        unit = unit.map(admin.set_index('ID_2')[code])
    frame = pd.DataFrame(
        {
            code: unit.to_numpy(),
            'TAXONOMY': buildings['taxonomy'].to_numpy(),
            'area': buildings.geometry.area.to_numpy()
            * buildings['storeys'].to_numpy(),
        }
    )
    taxa = frame['TAXONOMY'].map(parse_taxonomy)
    occ = taxa.map(lambda t: t.occupancy or 'RES')
    macro = taxa.map(lambda t: t.macro_class)
    frame['cost'] = frame['area'] * macro.map(lambda m: _COST_PER_SQM.get(m, 350.0))
    names = admin.drop_duplicates(code).set_index(code)
    tables = {}
    for key, codes in OCCUPANCY_FILES.items():
        sub = frame[occ.isin(codes)]
        grouped = (
            sub.groupby([code, 'TAXONOMY'], sort=True)
            .agg(
                BUILDINGS=('area', 'size'),
                TOTAL_AREA_SQM=('area', 'sum'),
                TOTAL_REPL_COST_USD=('cost', 'sum'),
            )
            .reset_index()
        )
        for col in _ADMIN_COLUMNS[: 2 * (level + 1)]:
            if col != code:
                grouped[col] = grouped[code].map(names[col])
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
        tables[key] = grouped[list(columns)]
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
        table: rows from :func:`exposure_tables` (either level; its columns are
            written in order).
        occupancy: ``Res`` (float counts) or ``Com``/``Ind`` (integer counts).

    Raises:
        ArgumentError: if the table's columns are not those of a level
            (:data:`LEVEL_COLUMNS`).
    """
    columns = tuple(table.columns)
    if columns not in LEVEL_COLUMNS.values():
        raise ArgumentError(
            f'{os.fspath(path)}: the table has columns {", ".join(columns)}; GEM '
            'exposure files have PROVINCE_COLUMNS or DISTRICT_COLUMNS, make it '
            'with exposure_tables'
        )
    integer_counts = occupancy != 'Res'
    with open(path, 'w', encoding='utf-8', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(columns)
        for row in table.itertuples(index=False):
            writer.writerow([_fmt(v, c, integer_counts) for v, c in zip(row, columns)])
