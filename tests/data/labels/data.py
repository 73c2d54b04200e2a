#!/usr/bin/env python3

# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Make tiny damage label files as Copernicus EMS and HOT deliver them.

* ``ems/EMSR648_AOI16_GRA_PRODUCT_builtUpA_r1_v1.json``: EMS grading built-up layer
  (GeoJSON, EPSG:4326) with the data-model fields ``obj_type``, ``name``, ``info``,
  ``damage_gra``, ``det_method``, ``notation``, ``or_src_id``, ``dmg_src_id`` and one
  building per ``damage_gra`` value, including Not Analysed and Not Applicable.
* ``ems_shp/EMSR648_AOI16_GRA_PRODUCT_builtUpA_r1_v1.shp``: the same layer as a
  Shapefile in UTM 37N (EPSG:32637), re-projected from the GeoJSON.
* ``unknown/EMSR648_AOI04_GRA_PRODUCT_builtUpA_r1_v1.json``: a layer with a value
  that is not an EMS grade (``Collapsed``, which third-party code uses).
* ``hot/hotosm_tur_buildings_polygons_geojson.geojson``: HOT buildings export with
  the ``destroyed:building`` and ``damage:date`` tags (EPSG:4326).

Buildings are 8 m squares every 12 m along a row, in metres east/north of
(299000, 4116800) in UTM 37N; square ``i`` spans x = 12 i .. 12 i + 8, y = 0 .. 8.
"""

import os

import geopandas as gpd
from shapely import box

X0, Y0 = 299000.0, 4116800.0
UTM = 'EPSG:32637'
GRADES = [
    'Destroyed',
    'Damaged',
    'Possibly damaged',
    'No visible damage',
    'Not Analysed',
    'Not Applicable',
]


def squares(n: int) -> list[object]:
    return [box(X0 + 12 * i, Y0, X0 + 12 * i + 8, Y0 + 8) for i in range(n)]


def write_geojson(frame: gpd.GeoDataFrame, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.remove(path)
    frame.to_file(path, driver='GeoJSON')


def ems(grades: list[str]) -> gpd.GeoDataFrame:
    n = len(grades)
    utm = gpd.GeoDataFrame(
        {
            'obj_type': ['11-Residential Buildings'] * n,
            'name': ['Unknown'] * n,
            'info': ['Not Applicable'] * n,
            'damage_gra': grades,
            'det_method': ['Photo-interpretation'] * n,
            'notation': ['Not Applicable'] * n,
            'or_src_id': [1] * n,
            'dmg_src_id': [2] * n,
        },
        geometry=squares(n),
        crs=UTM,
    )
    return utm.to_crs('EPSG:4326')


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    name = 'EMSR648_AOI16_GRA_PRODUCT_builtUpA_r1_v1'
    layer = ems(GRADES)
    write_geojson(layer, os.path.join(here, 'ems', f'{name}.json'))
    os.makedirs(os.path.join(here, 'ems_shp'), exist_ok=True)
    layer.to_crs(UTM).to_file(os.path.join(here, 'ems_shp', f'{name}.shp'))

    unknown = ems(['Destroyed', 'Collapsed', 'No visible damage'])
    write_geojson(
        unknown,
        os.path.join(here, 'unknown', 'EMSR648_AOI04_GRA_PRODUCT_builtUpA_r1_v1.json'),
    )

    hot = gpd.GeoDataFrame(
        {
            'osm_id': [3001, 3002, 3003, 3004],
            'building': ['yes', 'apartments', 'yes', 'house'],
            'destroyed:building': ['yes', None, 'yes', None],
            'damage:date': ['2023-02-06', None, '2023-03-01', None],
        },
        geometry=squares(4),
        crs=UTM,
    ).to_crs('EPSG:4326')
    write_geojson(
        hot, os.path.join(here, 'hot', 'hotosm_tur_buildings_polygons_geojson.geojson')
    )


if __name__ == '__main__':
    main()
