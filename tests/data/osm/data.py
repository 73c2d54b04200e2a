#!/usr/bin/env python3

# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Make tiny OpenStreetMap building files as real exports lay them out.

* ``hotosm_tur_buildings_polygons.gpkg``: HOT Export Tool / HDX GeoPackage, EPSG:4326,
  columns ``osm_id``, ``osm_type``, ``building``, ``building:levels``, ``height``
  (tag values are strings), plus four features to drop: a self-intersecting bow-tie,
  an empty polygon, a LineString and a zero-area polygon.
* ``overpass_buildings.geojson``: Overpass turbo GeoJSON export, EPSG:4326, identifier
  in ``@id`` (``way/123``), same buildings and bad features.
* ``gis_osm_buildings_a_free_1.shp``: Shapefile in UTM 37N (EPSG:32637) with the
  tag names truncated to 10 characters (``building_l``), the valid buildings only;
  coordinates are the GeoPackage's re-projected, for the wrong-CRS test.

Layout in metres east/north of (299000, 4116800) in UTM 37N (Nurdağı):

======  ================================  ======  ===========  =============
osm_id  outline                           levels  height       building
======  ================================  ======  ===========  =============
1001    square (0, 0)-(10, 10)            "3"     "9 m"        apartments
1002    rectangle (12, 0)-(20, 6)         (none)  "12"         house
1003    square (0, 14)-(8, 22)            "2;3"   (none)       yes
1004    L shape in (30, 0)-(40, 10)       "5"     "40'"        yes
======  ================================  ======  ===========  =============
"""

import os

import geopandas as gpd
from shapely import LineString, Polygon, affinity, box
from shapely.geometry.base import BaseGeometry

X0, Y0 = 299000.0, 4116800.0
UTM = 'EPSG:32637'


def shifted(geom: BaseGeometry) -> BaseGeometry:
    return affinity.translate(geom, X0, Y0)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    good = [
        (1001, box(0, 0, 10, 10), '3', '9 m', 'apartments'),
        (1002, box(12, 0, 20, 6), None, '12', 'house'),
        (1003, box(0, 14, 8, 22), '2;3', None, 'yes'),
        (
            1004,
            Polygon([(30, 0), (40, 0), (40, 4), (34, 4), (34, 10), (30, 10)]),
            '5',
            "40'",
            'yes',
        ),
    ]
    bad = [
        (2001, Polygon([(50, 0), (60, 10), (60, 0), (50, 10)]), '1', None, 'yes'),
        (2002, Polygon(), None, None, 'yes'),
        (2003, LineString([(50, 20), (60, 20)]), None, None, 'yes'),
        (2004, Polygon([(50, 30), (55, 30), (60, 30)]), None, None, 'yes'),
    ]
    rows = good + bad
    utm = gpd.GeoDataFrame(
        {
            'osm_id': [r[0] for r in rows],
            'osm_type': 'ways_poly',
            'building': [r[4] for r in rows],
            'building:levels': [r[2] for r in rows],
            'height': [r[3] for r in rows],
        },
        geometry=[shifted(r[1]) for r in rows],
        crs=UTM,
    )
    wgs84 = utm.to_crs('EPSG:4326')
    # zero area in the file's own CRS: three points on one parallel
    lon, lat = wgs84.geometry.iloc[-1].exterior.coords[0]
    wgs84.loc[wgs84.index[-1], 'geometry'] = Polygon(
        [(lon, lat), (lon + 5e-5, lat), (lon + 1e-4, lat)]
    )
    wgs84.to_file(
        os.path.join(here, 'hotosm_tur_buildings_polygons.gpkg'),
        layer='hotosm_tur_buildings_polygons',
        driver='GPKG',
    )

    overpass = wgs84.drop(columns=['osm_id', 'osm_type'])
    overpass.insert(0, '@id', [f'way/{r[0]}' for r in rows])
    path = os.path.join(here, 'overpass_buildings.geojson')
    if os.path.exists(path):
        os.remove(path)
    overpass.to_file(path, driver='GeoJSON')

    shp = wgs84.iloc[: len(good)].to_crs(UTM)
    shp = shp.rename(columns={'building:levels': 'building_l'})
    shp = shp.drop(columns=['osm_type'])
    shp.to_file(os.path.join(here, 'gis_osm_buildings_a_free_1.shp'))


if __name__ == '__main__':
    main()
