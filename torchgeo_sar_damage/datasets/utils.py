# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Helpers shared by the datasets."""

import os

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio import features

from ..errors import InputFileError
from .cosmo_skymed import sigma0_per_dn2


def read_sigma0(
    path: str | os.PathLike[str],
) -> tuple[np.ndarray, rasterio.Affine, dict[str, str]]:
    """Read a detected CSK/CSG GeoTIFF product as linear sigma nought.

    Args:
        path: GTC GeoTIFF carrying the calibration metadata tags.

    Returns:
        Linear sigma nought (float64, NaN where nodata), the pixel transform and the
        product's metadata tags.

    Raises:
        InputFileError: if the file cannot be read or lacks calibration metadata.
    """
    try:
        with rasterio.open(path) as src:
            dn = src.read(1).astype(np.float64)
            tags = src.tags()
            nodata = src.nodata
            transform = src.transform
    except rasterio.errors.RasterioIOError as err:
        raise InputFileError(path, f'cannot be read as a raster ({err})') from None
    sigma0 = dn**2 * sigma0_per_dn2(tags, path)
    sigma0[dn == (nodata if nodata is not None else 0)] = np.nan
    return sigma0, transform, tags


def footprint_sigma0_statistics(
    path: str | os.PathLike[str], footprints: gpd.GeoDataFrame, buffer_m: float = 0.0
) -> pd.DataFrame:
    """Per-footprint statistics of sigma nought in dB.

    Args:
        path: GTC GeoTIFF product (in the footprints' CRS).
        footprints: building polygons.
        buffer_m: grow each footprint by this many metres first.

    Returns:
        One row per footprint, in order, with ``mean_db``, ``std_db``, ``p90_db``,
        ``max_db`` and ``bright_fraction`` (share of pixels above 0 dB); NaN where a
        footprint covers no valid pixel.
    """
    sigma0, transform, _ = read_sigma0(path)
    db = 10 * np.log10(np.maximum(sigma0, 1e-6))
    geoms = footprints.geometry.buffer(buffer_m) if buffer_m else footprints.geometry
    labels = features.rasterize(
        ((g, i + 1) for i, g in enumerate(geoms)),
        out_shape=db.shape,
        transform=transform,
        fill=0,
        dtype='int32',
    )
    sel = (labels > 0) & np.isfinite(sigma0)
    values = db[sel]
    frame = pd.DataFrame({'id': labels[sel] - 1, 'v': values, 'bright': values > 0})
    grouped = frame.groupby('id')
    stats = pd.DataFrame(
        {
            'mean_db': grouped['v'].mean(),
            'std_db': grouped['v'].std(),
            'p90_db': grouped['v'].quantile(0.9),
            'max_db': grouped['v'].max(),
            'bright_fraction': grouped['bright'].mean(),
        }
    )
    return stats.reindex(range(len(footprints)))
