#!/usr/bin/env python3

# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Write tiny elevation GeoTIFFs for the DSM tests.

* ``dsm/dsm.tif``: UTM 37N, 32 x 32 at 2 m, over the CSK test products
  (tests/data/cosmo_skymed): ground 500 m, an 8 x 8 block 12 m high, a few nodata
  (-9999) pixels.
* ``dtm/dtm.tif``: the terrain, 16 x 16 at 4 m over the same area, 500 m.
* ``glo30/Copernicus_DSM_COG_10_N37_00_E036_00_DEM.tif``: the same area in geographic
  WGS84, named as a Copernicus DEM GLO-30 tile (to test reprojection).
* ``invalid/no_crs.tif`` (geotransform, no CRS) and ``invalid/two_bands.tif``.

Run it from this directory: ``python data.py``.
"""

import os
import shutil

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.transform import from_bounds, from_origin

ORIGIN = (300000.0, 4118064.0)
PIXEL = 2.0
SIZE = 32
GROUND = 500.0
NODATA = -9999.0


def write(
    path: str, data: np.ndarray, transform: rasterio.Affine, crs: str | None
) -> None:
    profile = {
        'driver': 'GTiff',
        'width': data.shape[-1],
        'height': data.shape[-2],
        'count': 1 if data.ndim == 2 else data.shape[0],
        'dtype': 'float32',
        'crs': crs,
        'transform': transform,
        'nodata': NODATA,
        'compress': 'deflate',
    }
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(data.astype(np.float32), None if data.ndim == 3 else 1)


def main() -> None:
    for directory in ('dsm', 'dtm', 'glo30', 'invalid'):
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)

    dsm = np.full((SIZE, SIZE), GROUND)
    dsm[12:20, 12:20] += 12.0
    dsm[0, :3] = NODATA
    transform = from_origin(*ORIGIN, PIXEL, PIXEL)
    write('dsm/dsm.tif', dsm, transform, 'EPSG:32637')

    dtm = np.full((SIZE // 2, SIZE // 2), GROUND)
    write('dtm/dtm.tif', dtm, from_origin(*ORIGIN, 2 * PIXEL, 2 * PIXEL), 'EPSG:32637')

    # The same extent in geographic coordinates, 16 x 16 pixels.
    to_wgs84 = Transformer.from_crs('EPSG:32637', 'EPSG:4326', always_xy=True)
    west, north = to_wgs84.transform(ORIGIN[0], ORIGIN[1])
    east, south = to_wgs84.transform(ORIGIN[0] + SIZE * PIXEL, ORIGIN[1] - SIZE * PIXEL)
    glo30 = np.full((16, 16), GROUND + 3.0)
    write(
        'glo30/Copernicus_DSM_COG_10_N37_00_E036_00_DEM.tif',
        glo30,
        from_bounds(west, south, east, north, 16, 16),
        'EPSG:4326',
    )

    write('invalid/no_crs.tif', dsm, transform, None)
    write('invalid/two_bands.tif', np.stack([dsm, dsm]), transform, 'EPSG:32637')


if __name__ == '__main__':
    main()
