#!/usr/bin/env python3

# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Write tiny files in the layout of GEM's Global Exposure Model.

The header and value conventions are those of ``gem/global_exposure_model``
``Europe/Turkey/Exposure_{Res,Com,Ind}_Turkey_Adm1.csv`` (UTF-8, comma-separated,
float counts in Res, integer counts in Com/Ind, Turkish letters in the names); the
finer and coordinate files add the ``ID_2``/``NAME_2`` and ``ASSET_ID``, ``LONGITUDE``,
``LATITUDE`` columns that GEM's README defines. The polygons are four boxes in
EPSG:4326: two provinces (TR-46 Kahramanmaraş north, TR-27 Gaziantep south), each split
into a west and an east district at 36.5° E.
"""

import csv
import os
import shutil
from collections.abc import Sequence

import geopandas as gpd
import shapely

HERE = os.path.dirname(os.path.abspath(__file__))

#: Header of the published files, in GEM's order.
COLUMNS = (
    'ID_0',
    'NAME_0',
    'ID_1',
    'NAME_1',
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
ADM2_COLUMNS = (*COLUMNS[:4], 'ID_2', 'NAME_2', *COLUMNS[4:])
POINT_COLUMNS = ('ASSET_ID', 'LONGITUDE', 'LATITUDE', *COLUMNS)

KM = ('TUR', 'Turkey', 'TR-46', 'KAHRAMANMARAŞ')
GA = ('TUR', 'Turkey', 'TR-27', 'GAZİANTEP')

#: Residential rows: floats everywhere, as GEM writes them.
RES = [
    (*KM, 'Total', 'Res', 'CR/LFINF(MUR+CL)+CDM+DUM/H:6/RES', '3.0'),
    (*KM, 'Total', 'Res', 'MUR+ADO/LWAL+DNO/H:1/RES', '1.0'),
    (*GA, 'Total', 'Res', 'CR/LFM+CDL+DUL/H:2/RES', '5.0'),
    (*GA, 'Total', 'Res', 'UNK+CDL+DUL/H:UNK/RES', '5.0'),
]
#: Commercial rows: integer counts and costs, float occupants.
COM = [
    (*KM, 'Total', 'Com', 'CR/LFM+CDL+DUL/HBET:7-9/COM', '4'),
    (*GA, 'Total', 'Com', 'S/LFBR+CDM+DUM/H:1/MIX3', '2'),
]
#: District rows: TR-27-02 has none.
ADM2 = [
    (
        *KM,
        'TR-46-01',
        'Türkoğlu',
        'Total',
        'Res',
        'CR/LFINF(MUR+CL)+CDM+DUM/H:4/RES',
        '2.0',
    ),
    (*KM, 'TR-46-02', 'Pazarcık', 'Total', 'Res', 'MUR+CLBRS/LWAL+DNO/H:2/RES', '3.0'),
    (*GA, 'TR-27-01', 'Nurdağı', 'Total', 'Res', 'W/LWAL+CDL+DUL/H:1/RES', '1.0'),
]
#: Assets with coordinates (two share a location).
POINTS = [
    ('A1', '36.25', '37.75', *KM, 'Total', 'Res', 'CR/LFM+CDM+DUM/H:3/RES', '2.0'),
    ('A2', '36.25', '37.75', *KM, 'Total', 'Res', 'MUR+STRUB/LWAL+DNO/H:1/RES', '2.0'),
    (
        'A3',
        '36.75',
        '37.75',
        *KM,
        'Total',
        'Res',
        'CR/LFINF(MUR+CBH)+CDL+DUL/H:5/RES',
        '4.0',
    ),
    ('A4', '36.25', '37.25', *GA, 'Total', 'Ind', 'S/LFM+CDM+DUM/H:2/IND', '1.0'),
]

#: District boxes (lon_min, lat_min, lon_max, lat_max).
DISTRICTS = [
    (*KM, 'TR-46-01', 'Türkoğlu', (36.0, 37.5, 36.5, 38.0)),
    (*KM, 'TR-46-02', 'Pazarcık', (36.5, 37.5, 37.0, 38.0)),
    (*GA, 'TR-27-01', 'Nurdağı', (36.0, 37.0, 36.5, 37.5)),
    (*GA, 'TR-27-02', 'İslahiye', (36.5, 37.0, 37.0, 37.5)),
]


def _costs(buildings: str) -> tuple[str, ...]:
    """Plausible cost, area and occupant columns in the count's own number style."""
    count = float(buildings)
    if '.' in buildings:
        values = [count * v for v in (90000, 27000, 40500, 22500, 240, 7, 3, 6, 3)]
        return tuple(f'{v:.1f}' for v in values)
    ints = [int(count * v) for v in (53000, 13000, 18500, 21500, 120, 0)]
    return (*map(str, ints), f'{count * 4:.1f}', f'{count:.1f}', f'{count:.1f}')


def write_csv(
    path: str, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]], sep: str = ','
) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8', newline='') as f:
        writer = csv.writer(f, delimiter=sep, lineterminator='\n')
        writer.writerow(columns)
        for row in rows:
            count = row[-1] if row[-1].replace('.', '', 1).isdigit() else '2'
            values = (*row, *_costs(count))
            writer.writerow(values[: len(columns)])


def main() -> None:
    for name in ('adm1', 'adm2', 'points', 'broken'):
        shutil.rmtree(os.path.join(HERE, name), ignore_errors=True)

    write_csv(os.path.join(HERE, 'adm1', 'Exposure_Res_Turkey_Adm1.csv'), COLUMNS, RES)
    write_csv(os.path.join(HERE, 'adm1', 'Exposure_Com_Turkey_Adm1.csv'), COLUMNS, COM)
    # A summary file sits beside the exposure files in GEM's folders; it is not read.
    with open(
        os.path.join(HERE, 'adm1', 'Exposure_Summary_Adm1.csv'), 'w', encoding='utf-8'
    ) as f:
        f.write('ID_0,NAME_0,ID_1,NAME_1,OCCUPANCY,BUILDINGS\n')
        f.write('TUR,Turkey,TR-46,KAHRAMANMARAŞ,Res,4.0\n')
    write_csv(
        os.path.join(HERE, 'adm2', 'Exposure_Res_Turkey_Adm2.csv'), ADM2_COLUMNS, ADM2
    )
    write_csv(
        os.path.join(HERE, 'points', 'Exposure_Res_Turkey.csv'), POINT_COLUMNS, POINTS
    )

    broken = os.path.join(HERE, 'broken')
    without = tuple(c for c in COLUMNS if c != 'BUILDINGS')
    rows = [(*r[:7], *_costs(r[7])) for r in RES]
    os.makedirs(os.path.join(broken, 'missing_column'))
    with open(
        os.path.join(broken, 'missing_column', 'Exposure_Res_Turkey_Adm1.csv'),
        'w',
        encoding='utf-8',
        newline='',
    ) as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(without)
        writer.writerows(r[: len(without)] for r in rows)
    write_csv(
        os.path.join(broken, 'semicolon', 'Exposure_Res_Turkey_Adm1.csv'),
        COLUMNS,
        RES,
        sep=';',
    )
    write_csv(
        os.path.join(broken, 'non_numeric', 'Exposure_Com_Turkey_Adm1.csv'),
        COLUMNS,
        [COM[0], (*COM[1][:-1], 'twelve')],
    )
    bad_taxonomy = [RES[0], (*RES[1][:6], 'CR/LFINF(MUR+CL/H:2/RES', '1.0')]
    write_csv(
        os.path.join(broken, 'bad_taxonomy', 'Exposure_Res_Turkey_Adm1.csv'),
        COLUMNS,
        bad_taxonomy,
    )

    admin = gpd.GeoDataFrame(
        {
            'ID_0': [d[0] for d in DISTRICTS],
            'NAME_0': [d[1] for d in DISTRICTS],
            'ID_1': [d[2] for d in DISTRICTS],
            'NAME_1': [d[3] for d in DISTRICTS],
            'ID_2': [d[4] for d in DISTRICTS],
            'NAME_2': [d[5] for d in DISTRICTS],
        },
        geometry=[shapely.box(*d[6]) for d in DISTRICTS],
        crs='EPSG:4326',
    )
    path = os.path.join(HERE, 'admin.gpkg')
    if os.path.exists(path):
        os.remove(path)
    admin.to_file(path, layer='admin', driver='GPKG')


if __name__ == '__main__':
    main()
