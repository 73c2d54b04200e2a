# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""In-memory vector datasets: read every file once, answer windows from memory.

TorchGeo's :class:`~torchgeo.datasets.VectorDataset` re-opens, filters, re-projects and
rasterises its files on every query. The datasets of this package hold their (small)
tables in memory instead, re-projected once to the dataset CRS, with a
:class:`shapely.STRtree` to find the geometries of a window.
"""

import abc
import os
import pathlib
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio.transform
import shapely
import torch
from pyproj import CRS
from torchgeo.datasets import DatasetNotFoundError, VectorDataset
from torchgeo.datasets.utils import GeoSlice, Path, Sample

from ..errors import InputFileError
from .utils import ModalityMixin, from_origin, resolve_slice

#: Polygonal geometry types kept by :func:`drop_bad_geometries`.
POLYGON_TYPES = ('Polygon', 'MultiPolygon')
#: Their shapely type ids.
_POLYGON_TYPE_IDS = (3, 6)


def default_res(
    crs: CRS, res: float | tuple[float, float] | None
) -> tuple[float, float]:
    """A vector dataset's resolution: *res*, or about a metre in the CRS's units.

    Args:
        crs: the dataset's CRS.
        res: the ``res`` argument.

    Returns:
        ``res`` as a pair, or 1 for a projected CRS, 1e-5 (degrees) for a
        geographic one.
    """
    if res is None:
        res = 1.0 if crs.is_projected else 1e-5
    if isinstance(res, int | float):
        res = (float(res), float(res))
    return float(res[0]), float(res[1])


def timeless_index(
    columns: dict[str, object], geometries: object, crs: CRS
) -> gpd.GeoDataFrame:
    """A TorchGeo index whose rows hold for all time (vector data without dates).

    Args:
        columns: the index's columns (e.g. ``filepath``).
        geometries: one geometry per row.
        crs: their CRS.

    Returns:
        The index, with an unbounded ``datetime`` interval per row.
    """
    rows = len(next(iter(columns.values())))  # type: ignore[arg-type]
    full = (pd.Timestamp.min, pd.Timestamp.max)
    interval = pd.IntervalIndex.from_tuples(
        [full] * rows, closed='both', name='datetime'
    )
    return gpd.GeoDataFrame(columns, index=interval, geometry=geometries, crs=crs)


def read_table(path: str, layer: str | int | None = None) -> gpd.GeoDataFrame:
    """Read one vector file (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GeoParquet).

    Args:
        path: the file.
        layer: layer of a multi-layer file (name or index); the first by default.

    Returns:
        Its features, in the file's own CRS.

    Raises:
        InputFileError: if the file cannot be read, has no CRS, or has coordinates
            that cannot be in its (geographic) CRS.
    """
    try:
        if pathlib.Path(path).suffix.lower() == '.parquet':
            table = gpd.read_parquet(path)
        else:
            table = gpd.read_file(path, layer=layer, engine='pyogrio')
    except (RuntimeError, OSError, ValueError) as err:  # pyogrio, pyarrow errors
        raise InputFileError(
            path, f'cannot be read as a vector layer ({err})'
        ) from None
    if table.crs is None:
        raise InputFileError(
            path,
            'has no coordinate reference system (a Shapefile without its .prj?); '
            'add one, e.g. with `ogr2ogr -a_srs EPSG:4326`',
        )
    crs = CRS.from_user_input(table.crs)
    if crs.is_geographic and len(table) and not table.geometry.is_empty.all():
        xmin, ymin, xmax, ymax = table.total_bounds
        if xmin < -180.5 or xmax > 360.5 or ymin < -90.5 or ymax > 90.5:
            raise InputFileError(
                path,
                f'declares the geographic CRS {crs.to_string()} but its coordinates '
                f'({xmin:.0f}, {ymin:.0f}, {xmax:.0f}, {ymax:.0f}) are not degrees: '
                'the CRS is declared wrongly; assign the right one, e.g. with '
                '`ogr2ogr -a_srs EPSG:32637`',
            )
    return table


def _geometry_problems(geoms: npt.ArrayLike) -> tuple[npt.NDArray[np.bool_], ...]:
    """Masks of the missing, non-polygon, zero-area and invalid geometries.

    Each geometry is flagged once, in that order of precedence.
    """
    geoms = np.asarray(geoms, dtype=object)
    missing = np.asarray(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    kinds = np.asarray(shapely.get_type_id(geoms))
    not_polygon = ~missing & ~np.isin(kinds, _POLYGON_TYPE_IDS)
    candidate = ~missing & ~not_polygon
    zero_area = candidate & (np.asarray(shapely.area(geoms)) <= 0)
    invalid = candidate & ~zero_area & ~np.asarray(shapely.is_valid(geoms))
    return missing, not_polygon, zero_area, invalid


def unusable_geometries(geoms: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Which geometries cannot be a building outline.

    A geometry is unusable when it is missing or empty, not a (multi)polygon, of
    zero area, or invalid (e.g. a self-intersecting "bow-tie"); the rule
    :func:`drop_bad_geometries` applies, for callers that keep their own rows.

    Args:
        geoms: shapely geometries (an array, a GeoSeries' values...).

    Returns:
        True for each unusable geometry.

    .. versionadded:: 0.2
    """
    missing, not_polygon, zero_area, invalid = _geometry_problems(geoms)
    bad: npt.NDArray[np.bool_] = missing | not_polygon | zero_area | invalid
    return bad


def drop_bad_geometries(table: gpd.GeoDataFrame, path: str) -> gpd.GeoDataFrame:
    """Drop the features that cannot be a building outline, with one counted warning.

    A feature is dropped when its geometry is missing or empty, not a (multi)polygon,
    of zero area, or invalid (e.g. a self-intersecting "bow-tie"), in that order of
    precedence. Invalid geometries are not repaired: a repaired outline is a guess.

    Args:
        table: features of one file, in the file's CRS.
        path: the file, named in the warning.

    Returns:
        The kept features, index reset.

    Raises:
        InputFileError: if every feature would be dropped.
    """
    missing, not_polygon, zero_area, invalid = _geometry_problems(table.geometry.array)
    drop = missing | not_polygon | zero_area | invalid
    if drop.any():
        reasons = [
            (int(missing.sum()), 'empty or missing'),
            (int(not_polygon.sum()), 'not a polygon'),
            (int(zero_area.sum()), 'zero area'),
            (int(invalid.sum()), 'invalid'),
        ]
        detail = ', '.join(f'{n} {why}' for n, why in reasons if n)
        if drop.all():
            raise InputFileError(
                path,
                f'has no usable polygon: all {len(table)} geometries are unusable '
                f'({detail}); fix them (e.g. in QGIS, Vector > Geometry Tools > Check '
                'Validity) or give another file',
            )
        warnings.warn(
            f'{path}: dropped {int(drop.sum())} of {len(table)} geometries ({detail})',
            UserWarning,
            stacklevel=3,
        )
    return table.loc[~drop].reset_index(drop=True)


def find_column(table: pd.DataFrame, names: Sequence[str]) -> str | None:
    """First of several alternative column names that a table has.

    Args:
        table: the table.
        names: candidates, preferred first (compared case-insensitively).

    Returns:
        The table's own spelling of the first candidate present, or None.
    """
    lower = {str(column).lower(): str(column) for column in table.columns}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


class InMemoryVectorDataset(ModalityMixin, VectorDataset, abc.ABC):
    """A vector dataset whose features are loaded once and kept in memory.

    Subclasses implement :meth:`_load` (read and normalise one file) and
    :meth:`_sample` (one window). The index has one row per file, with the bounds of
    its kept features; ``len`` is the number of files, as for every TorchGeo
    :class:`~torchgeo.datasets.VectorDataset`.
    """

    #: Every kept feature, in the dataset CRS (set by :meth:`_set_features`).
    _features: gpd.GeoDataFrame

    def __init__(
        self,
        paths: Path | Iterable[Path],
        crs: CRS | None = None,
        res: float | tuple[float, float] | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
        layer: str | int | None = None,
    ) -> None:
        """Read every matching file once.

        Args:
            paths: files or directories (searched recursively).
            crs: CRS to re-project to (default: that of the first file).
            res: resolution in CRS units (default: 1 for projected CRSs, 1e-5 for
                geographic ones, i.e. about a metre).
            transforms: function applied to each sample.
            layer: layer of multi-layer files (name or index).

        Raises:
            DatasetNotFoundError: if no file matches.
            InputFileError: if a matching file cannot be read, has no usable
                geometry, or every matching file is empty.
        """
        self.paths = paths
        self.transforms = transforms
        self.layer = layer
        self.label_name = None
        self.task = 'semantic_segmentation'
        crs = CRS.from_user_input(crs) if crs is not None else None
        regex = re.compile(self.filename_regex, re.VERBOSE)
        named = set(self.named_files)
        tables = []
        files: list[str] = []
        empty: list[str] = []
        for filepath in self.files:
            if not os.path.isfile(filepath):
                continue
            if (
                filepath not in named
                and regex.match(os.path.basename(filepath)) is None
            ):
                continue  # a named file is read whatever its name
            table = self._load(filepath)
            if table is None or table.empty:
                if table is not None:
                    empty.append(filepath)
                continue
            crs = crs or CRS.from_user_input(table.crs)
            table = table.to_crs(crs)
            table['_file'] = len(files)
            files.append(filepath)
            tables.append(table)
        if not tables and empty:
            raise InputFileError(
                empty[0], 'has no features (an empty layer); give a file with some'
            )
        if not tables:
            raise DatasetNotFoundError(self)
        assert crs is not None
        self._res = default_res(crs, res)
        table = pd.concat(tables, ignore_index=True)
        self._files_in_order = files
        self._file_of_row = table.pop('_file').to_numpy()
        self._set_features(gpd.GeoDataFrame(table, geometry='geometry', crs=crs))

    @abc.abstractmethod
    def _load(self, path: str) -> gpd.GeoDataFrame | None:
        """Read and normalise one file.

        Args:
            path: the file.

        Returns:
            Its features (file CRS), or None if the file is not one of this dataset.
        """

    def _set_features(self, table: gpd.GeoDataFrame) -> None:
        """Install the features and rebuild the index, tree and caches.

        Args:
            table: every kept feature, in the dataset CRS.
        """
        self._features = table
        geoms = table.geometry.array
        self._geoms = np.asarray(geoms, dtype=object)
        self._tree = shapely.STRtree(self._geoms)
        self._areas = np.asarray(shapely.area(geoms), dtype=np.float64)
        self._centroids = np.asarray(
            shapely.get_coordinates(shapely.centroid(geoms)), dtype=np.float64
        ).reshape(-1, 2)
        boxes = []
        files = []
        for code, filepath in enumerate(self._files_in_order):
            rows = self._geoms[self._file_of_row == code]
            if len(rows) == 0:
                continue
            boxes.append(shapely.box(*shapely.total_bounds(rows)))
            files.append(filepath)
        self._file_bounds = np.array([b.bounds for b in boxes], dtype=np.float64)
        self._file_bounds = self._file_bounds.reshape(-1, 4)
        self.index = timeless_index({'filepath': files}, boxes, table.crs)

    @property
    def crs(self) -> CRS:
        """:term:`coordinate reference system (CRS)` of the dataset.

        Returns:
            The CRS the features are held in.
        """
        return CRS.from_user_input(self._features.crs)

    @crs.setter
    def crs(self, new_crs: CRS) -> None:
        """Re-project the in-memory features (and the index) to another CRS.

        Args:
            new_crs: the new CRS.
        """
        if new_crs == self.crs:
            return
        self._set_features(self._features.to_crs(new_crs))

    def _window(
        self, index: GeoSlice
    ) -> tuple[tuple[float, float, float, float], tuple[int, int], rasterio.Affine]:
        """Resolve a query into its box, pixel shape and pixel transform.

        Args:
            index: ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax:tres]``.

        Returns:
            ``(xmin, ymin, xmax, ymax)``, ``(height, width)`` and the transform of the
            pixel grid (north up, pixel size = the query's steps).

        Raises:
            IndexError: if the window intersects no file of the dataset.
        """
        x, y, _ = self._disambiguate_slice(index)
        xmin, xmax, ymin, ymax = (
            float(x.start),
            float(x.stop),
            float(y.start),
            float(y.stop),
        )
        fb = self._file_bounds
        hit = (fb[:, 0] <= xmax) & (fb[:, 2] >= xmin)
        hit &= (fb[:, 1] <= ymax) & (fb[:, 3] >= ymin)
        if not hit.any():
            raise IndexError(
                f'index: {index} not found in dataset with bounds: {self.bounds}'
            )
        width = round((xmax - xmin) / x.step)
        height = round((ymax - ymin) / y.step)
        transform = from_origin(xmin, ymax, x.step, y.step)
        return (xmin, ymin, xmax, ymax), (height, width), transform

    def _in_window(self, box: tuple[float, float, float, float]) -> np.ndarray:
        """Rows whose geometry intersects a box.

        Args:
            box: ``(xmin, ymin, xmax, ymax)``.

        Returns:
            Sorted row numbers.
        """
        rows = self._tree.query(shapely.box(*box), predicate='intersects')
        return np.sort(rows)

    def _under_point(self, rows: np.ndarray, x: float, y: float) -> np.ndarray:
        """Those of some rows whose geometry contains (or touches) a point.

        Args:
            rows: candidate row numbers.
            x: point x.
            y: point y.

        Returns:
            The rows covering the point, smallest area first (ties: row order).
        """
        point = shapely.Point(x, y)
        covering = rows[shapely.intersects(self._geoms[rows], point)]
        return covering[np.argsort(self._areas[covering], kind='stable')]

    def _base_sample(self, index: GeoSlice, transform: rasterio.Affine) -> Sample:
        """The ``bounds`` and ``transform`` keys every sample carries.

        Args:
            index: the query.
            transform: its pixel transform.

        Returns:
            A sample with those two keys.
        """
        return {
            'bounds': self._slice_to_tensor(index),
            'transform': torch.tensor(transform),
        }

    @abc.abstractmethod
    def _sample(self, index: GeoSlice) -> Sample:
        """The sample of one window, before transforms.

        Args:
            index: the query.

        Returns:
            The sample.
        """

    def __getitem__(self, index: GeoSlice) -> Sample:
        """Retrieve the sample of a window from memory.

        Args:
            index: ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax:tres]`` coordinates.

        Returns:
            Sample at that index.

        Raises:
            IndexError: if *index* is not found in the dataset.
        """
        sample = self._sample(index)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def extract(self, queries: Iterable[GeoSlice]) -> Iterator[Sample]:
        """Samples of many windows, in query order (no file I/O: all in memory).

        The dataset's :attr:`bounds` (which resolve partial queries) are computed
        once, not twice per query; nothing changes them meanwhile.

        Args:
            queries: windows, e.g. from a sampler.

        Yields:
            Exactly ``self[query]`` for each query.
        """
        bounds = self.bounds
        for query in queries:
            yield self[resolve_slice(query, bounds)]

    def _disambiguate_slice(self, index: GeoSlice) -> tuple[slice, slice, slice]:
        """Resolve a query as TorchGeo does; a complete one without reading bounds.

        Args:
            index: ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax:tres]``.

        Returns:
            The resolved slices.
        """
        parts = (index,) if isinstance(index, slice) else tuple(index)
        if len(parts) == 3 and all(
            None not in (p.start, p.stop, p.step) for p in parts
        ):
            x, y, t = parts
            return x, y, t
        return resolve_slice(index, self.bounds)
