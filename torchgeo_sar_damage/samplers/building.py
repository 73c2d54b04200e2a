# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""One window per building footprint."""

from collections.abc import Iterator

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely import Polygon
from torchgeo.datasets import (
    GeoDataset,
    IntersectionDataset,
    RasterDataset,
    UnionDataset,
)
from torchgeo.samplers import SpatialSampler, Units

from ..errors import ArgumentError, InputFileError


def _outside(buildings: object, count: int, dataset: GeoDataset) -> None:
    """Raise because no selected building lies inside the dataset.

    Raises:
        InputFileError: naming the footprint file, when ``buildings`` is a dataset.
        ArgumentError: when ``buildings`` is a GeoDataFrame.
    """
    x, y, _ = dataset.bounds
    box = ', '.join(f'{float(v):.1f}' for v in (x.start, y.start, x.stop, y.stop))
    problem = (
        f'none of its {count} selected buildings has its centre inside the other '
        f'datasets ({box} in {dataset.crs.to_string()}): are the footprints of '
        'another area, or is a CRS declared wrongly?'
    )
    files = getattr(buildings, 'files', None)
    if files:
        raise InputFileError(', '.join(map(str, files)), problem)
    raise ArgumentError(f'buildings: {problem}')


def _raster_origin(dataset: GeoDataset) -> tuple[float, float] | None:
    """Top-left corner of the first raster file of a (combined) dataset."""
    if isinstance(dataset, IntersectionDataset | UnionDataset):
        for member in dataset.datasets:
            origin = _raster_origin(member)
            if origin is not None:
                return origin
        return None
    if isinstance(dataset, RasterDataset) and len(dataset.index):
        # the index holds each file's footprint in the dataset CRS: its top-left
        # corner is the file's grid origin
        left, _, _, top = dataset.index.geometry.iloc[0].bounds
        return float(left), float(top)
    return None


def footprint_centres(footprints: gpd.GeoSeries) -> gpd.GeoSeries:
    """The point a building's window is centred on.

    Args:
        footprints: building polygons (any projected CRS).

    Returns:
        Each footprint's centroid, or a point inside it where the centroid falls
        outside (L or U shapes, courtyards), in the same CRS and index.

    .. versionadded:: 0.2
    """
    centroid = footprints.centroid
    inside = footprints.contains(centroid)
    return centroid.where(inside, footprints.representative_point())


class BuildingSampler(SpatialSampler):
    """Sample one window per building, centred on its footprint.

    Each building yields exactly one query ``[xmin:xmax:xres, ymin:ymax:yres]`` of
    ``size`` centred on its footprint (the centroid, or a point inside the polygon
    when the centroid falls outside it, e.g. for L or U shapes). Queries are ordinary
    TorchGeo slices, so ``dataset[query]`` works on any TorchGeo dataset. With
    ``snap=True`` (default) the window is moved by less than half a pixel so that its
    edges fall on the pixel grid of the dataset's first raster: windows then read
    pixels without resampling, and the footprint centre always stays inside its
    window.

    Buildings are yielded in the order given (deterministic, ``strategy`` is
    ``'sequential'``); buildings whose centre lies outside ``roi`` or outside the area
    the dataset covers are left out. To sample only some buildings, filter the
    GeoDataFrame first, e.g. the labelled ones of one city::

        table = osm.buildings
        keep = labels.labelled(table) & (table['city'] == 'antakya').to_numpy()
        sampler = BuildingSampler(dataset, table[keep], size=32.0)

    .. versionadded:: 0.1
    """

    strategy = 'sequential'

    def __init__(
        self,
        dataset: GeoDataset,
        buildings: gpd.GeoDataFrame | GeoDataset,
        *,
        size: tuple[float, float] | float,
        units: Units = Units.CRS,
        roi: Polygon | None = None,
        snap: bool = True,
        id_column: str = 'building_id',
    ) -> None:
        """Initialise a new BuildingSampler.

        The ``size`` argument can either be:

        * a single ``float`` - in which case the same value is used for the height and
          width dimension
        * a ``tuple`` of two floats - in which case, the first *float* is used for the
          height dimension, and the second *float* for the width dimension

        Args:
            dataset: the dataset (or intersection of datasets) to sample.
            buildings: footprints, as a GeoDataFrame in any CRS or an
                :class:`~torchgeo_sar_damage.datasets.OSMBuildings` dataset (its
                ``buildings`` table).
            size: window height and width, in ``units``.
            units: whether ``size`` is in CRS units (metres for projected CRSs, the
                default) or in pixels of the dataset's resolution.
            roi: only buildings whose centre lies in this polygon (dataset CRS).
            snap: align windows to the pixel grid of the dataset's first raster.
            id_column: column of ``buildings`` with the building ids (the index
                labels of ``buildings`` when absent).

        Raises:
            ArgumentError: if ``size`` is not positive, or ``buildings`` is not a
                GeoDataFrame or has no CRS.
            InputFileError: if ``buildings`` is not empty but none lies inside the
                dataset (e.g. footprints of another area, or with a wrong CRS).
        """
        super().__init__(dataset, roi=roi)
        try:
            pair = np.broadcast_to(np.asarray(size, dtype=np.float64), (2,))
        except (TypeError, ValueError):
            raise ArgumentError(
                f'window size must be a number or a (height, width) pair, not {size!r}'
            ) from None
        height, width = (float(v) for v in pair)
        if not all(np.isfinite(v) and v > 0 for v in (height, width)):
            raise ArgumentError(f'window size must be positive, not {size}')
        xres, yres = self.res
        if units == Units.PIXELS:
            height, width = height * yres, width * xres
        #: Window height and width in CRS units, as TorchGeo's samplers.
        self.size = (height, width)
        table = getattr(buildings, 'buildings', buildings)
        if not isinstance(table, gpd.GeoDataFrame):
            raise ArgumentError(
                'buildings must be a GeoDataFrame or an OSMBuildings dataset'
            )
        if table.crs is None:
            raise ArgumentError('buildings have no CRS')
        ids = (
            table[id_column].to_numpy()
            if id_column in table.columns
            else table.index.to_numpy()
        )
        table = table.to_crs(dataset.crs)
        centre = footprint_centres(table.geometry)
        keep = shapely.contains_xy(
            self.geometry, centre.x.to_numpy(), centre.y.to_numpy()
        )
        if len(table) and not keep.any():
            _outside(buildings, len(table), dataset)
        x = centre.x.to_numpy()[keep]
        y = centre.y.to_numpy()[keep]
        xmin = x - width / 2
        ymax = y + height / 2
        if snap:
            ox, oy = _raster_origin(dataset) or (0.0, 0.0)
            xmin = ox + np.round((xmin - ox) / xres) * xres
            ymax = oy + np.round((ymax - oy) / yres) * yres
        self.window_bounds = np.column_stack([xmin, ymax - height, xmin + width, ymax])
        self.building_ids = np.asarray(ids)[keep]
        self.buildings = table[keep]
        self.centres = np.column_stack([x, y])

    def __iter__(self) -> Iterator[tuple[slice, slice]]:
        """Yield one query per building.

        Yields:
            ``[xmin:xmax:xres, ymin:ymax:yres]`` of each building's window.
        """
        xres, yres = self.res
        for xmin, ymin, xmax, ymax in self.window_bounds:
            yield (
                slice(float(xmin), float(xmax), xres),
                slice(float(ymin), float(ymax), yres),
            )

    def __len__(self) -> int:
        """Number of buildings sampled."""
        return len(self.window_bounds)

    def windows(self) -> pd.DataFrame:
        """The windows as a table (building id, bounds, centre), in sampling order."""
        return pd.DataFrame(
            {
                'building_id': self.building_ids,
                'xmin': self.window_bounds[:, 0],
                'ymin': self.window_bounds[:, 1],
                'xmax': self.window_bounds[:, 2],
                'ymax': self.window_bounds[:, 3],
                'x': self.centres[:, 0],
                'y': self.centres[:, 1],
            }
        )
