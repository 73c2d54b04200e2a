# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""OpenStreetMap building footprints."""

import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import rasterio.features
import shapely
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from pyproj import CRS
from torchgeo.datasets.utils import GeoSlice, Path, Sample

from ._raster import WindowBlock, window_blocks
from ._vector import InMemoryVectorDataset, drop_bad_geometries, find_column, read_table
from .utils import from_origin, resolve_slice

#: Column names of the OSM identifier, preferred first: HOT exports and osmium/ogr
#: (``osm_id``), Overpass turbo GeoJSON (``@id`` / ``id``, e.g. ``way/123``).
ID_COLUMNS = ('osm_id', '@id', 'id', 'osm_way_id')
#: Column names of the ``building:levels`` tag: as tagged (GeoPackage, GeoJSON), with
#: the colon replaced, and truncated to the 10 characters of a Shapefile field name.
LEVELS_COLUMNS = ('building:levels', 'building_levels', 'building_l', 'b_levels')
#: Column names of the ``height`` tag.
HEIGHT_COLUMNS = ('height', 'height_m')

_NUMBER = r'([0-9]+(?:[.,][0-9]+)?)'
_METRES = re.compile(rf'^{_NUMBER}\s*(?:m|metres?|meters?)?$', re.IGNORECASE)
_FEET = re.compile(r"^([0-9]+)'\s*(?:([0-9]+(?:\.[0-9]+)?)\")?$")
_FEET_WORD = re.compile(rf'^{_NUMBER}\s*(?:ft|feet)$', re.IGNORECASE)
_LEADING = re.compile(rf'^{_NUMBER}')
_ID = re.compile(r'([0-9]+)$')


def parse_height_m(value: object) -> float:
    """Metres from an OSM ``height`` value.

    OSM heights are metres by default, optionally with the unit (``12``, ``12.5 m``);
    feet are written ``40'``, ``40'6"`` or ``40 ft``. Anything else is not parsed.

    Args:
        value: the tag value (string, number or missing).

    Returns:
        Height in metres, NaN if missing or not understood.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    text = str(value).strip()
    if match := _METRES.match(text):
        return float(match.group(1).replace(',', '.'))
    if match := _FEET.match(text):
        return 0.3048 * int(match.group(1)) + 0.0254 * float(match.group(2) or 0)
    if match := _FEET_WORD.match(text):
        return 0.3048 * float(match.group(1).replace(',', '.'))
    return np.nan


def parse_levels(value: object) -> float:
    """Storeys from an OSM ``building:levels`` value.

    The tag counts the storeys above ground. Real values include ``3``, ``3.5``,
    ``2;3`` (several values: the first is used) and ``3 floors``.

    Args:
        value: the tag value (string, number or missing).

    Returns:
        The leading number, NaN if missing or not a number.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    match = _LEADING.match(str(value).strip())
    return float(match.group(1).replace(',', '.')) if match else np.nan


def parse_osm_id(value: object) -> float:
    """Numeric OSM identifier from ``123``, ``way/123`` or ``w123``.

    Args:
        value: the identifier.

    Returns:
        The number, NaN if missing or not understood.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    match = _ID.search(str(value).strip())
    return float(match.group(1)) if match else np.nan


class OSMBuildings(InMemoryVectorDataset):
    """OpenStreetMap building footprints.

    Building outlines mapped by OpenStreetMap contributors, the footprint layer of
    every other modality: each sample is the footprint mask of a window centred on a
    building, in which the *target* building is distinguishable from its neighbours,
    plus the building's identifier and a few per-building features.

    Where to get them (any of these, downloaded once; nothing is queried at run time):

    * `Geofabrik <https://download.geofabrik.de/europe/turkey.html>`__ extracts:
      ``gis_osm_buildings_a_free_1.shp`` in the free Shapefile package (no
      ``building:levels`` or ``height``), or the ``.osm.pbf`` converted with
      ``ogr2ogr`` or ``osmium export`` (all tags).
    * HOT Export Tool and HDX, e.g. ``hotosm_tur_buildings`` (GeoPackage, GeoJSON,
      Shapefile; file ``hotosm_tur_buildings_polygons.gpkg``), with the tags
      ``building``, ``building:levels`` and ``height`` as columns.
    * An Overpass API query exported as GeoJSON (identifiers in ``@id``/``id``, e.g.
      ``way/123``); save it under a name containing ``buildings``.

    Dataset format:

    * GeoPackage, GeoJSON, Shapefile, FlatGeobuf or GeoParquet, in any CRS; every
      file whose name contains ``buildings`` (not ``destroyed``, HOT's damage layer,
      which :class:`~torchgeo_sar_damage.datasets.DamageLabels` reads).
    * Columns as they come: identifier ``osm_id``, ``@id``, ``id`` or
      ``osm_way_id``, the first present per row (row numbers for the whole file when
      a row has none); ``building:levels`` (or the
      Shapefile-truncated ``building_l``, ``b_levels``); ``height`` (metres, with or
      without unit, or feet). Values that are not numbers count as untagged.

    The table is read once, re-projected to :attr:`crs` and exposed as
    :attr:`buildings` for :class:`~torchgeo_sar_damage.samplers.BuildingSampler`;
    windows are answered from memory. Each sample is a dict with:

    * ``footprint``: uint8 ``[1, H, W]`` on the query's pixel grid, 0 = no building,
      1 = another building, 2 = the target building (drawn last, on top).
    * ``building_id``: int64 scalar, the target's :attr:`buildings` ``building_id``
      (-1 if no building intersects the window).
    * ``tabular``: float32 ``[3]``, see :attr:`feature_names`:
      ``log1p_area_m2`` (natural log of 1 + footprint area in m²),
      ``storeys_tagged`` (``building:levels``, 0 where untagged) and
      ``storeys_missing`` (1 where untagged, else 0). Without a target all three are
      0, 0, 1.
    * ``bounds`` and ``transform``.

    The target is the building whose footprint contains the window centre (the
    smallest, if several overlap); if none does, the building intersecting the window
    whose centroid is nearest to the centre. Centre windows on a point inside the
    footprint (e.g. ``representative_point()``), as the sampler does, and the target
    is that building.

    .. note::

       OSM coverage and tag completeness vary: in Türkiye most footprints carry no
       ``building:levels`` or ``height`` (hence the missing flag), outlines can be
       offset from imagery by a few metres, and mapping after the 2023 earthquakes
       removed or re-tagged collapsed buildings. Invalid (self-intersecting), empty,
       zero-area and non-polygon features are dropped with one counted warning per
       file. Identifiers of ways and relations can coincide; keep one kind per file.

    Data © OpenStreetMap contributors, available under the Open Database License
    (ODbL 1.0): https://www.openstreetmap.org/copyright

    A file named in ``paths`` is read whatever its name (the glob and the regex
    filter directory searches only). ``&`` keeps one key per modality, unlike TorchGeo's
    channel concatenation (see :class:`~torchgeo_sar_damage.datasets.utils.ModalityMixin`).

    .. versionadded:: 0.1

    .. versionchanged:: 0.2
       Named files are read whatever their name.
    """

    filename_glob = '*buildings*'

    #: File names: anything containing ``buildings`` except HOT's damage layer.
    filename_regex = r"""
        ^(?!.*destroyed)               # hotosm_*_destroyed_buildings: labels, not footprints
        (?P<name>.*buildings.*?)       # e.g. hotosm_tur_buildings_polygons, gis_osm_buildings_a_free_1
        \.(?P<ext>gpkg|geojson|json|shp|fgb|parquet)$
    """

    #: Names of the entries of the ``tabular`` vector.
    feature_names: ClassVar[tuple[str, ...]] = (
        'log1p_area_m2',
        'storeys_tagged',
        'storeys_missing',
    )

    #: Value of ``storeys_tagged`` where ``building:levels`` is not tagged.
    storeys_fill = 0.0

    def __init__(
        self,
        paths: Path | Iterable[Path] = 'data',
        crs: CRS | None = None,
        res: float | tuple[float, float] | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
        layer: str | int | None = None,
    ) -> None:
        """Initialise a new OSMBuildings instance.

        Args:
            paths: one or more files or directories (searched recursively).
            crs: CRS to re-project to (default: that of the first file).
            res: resolution in CRS units (default: 1 for projected CRSs, 1e-5 degrees
                for geographic ones); the pixel grid of a sample is the query's.
            transforms: function applied to each sample.
            layer: layer of multi-layer files such as GeoPackages (first by default).

        Raises:
            DatasetNotFoundError: if no file is found.
            InputFileError: if a file cannot be read, has no (or a wrongly declared)
                CRS or no usable footprint, or every file is empty.
        """
        super().__init__(paths, crs, res, transforms, layer)

    def _load(self, path: str) -> gpd.GeoDataFrame:
        """Read one file and normalise its OSM columns.

        Args:
            path: the file.

        Returns:
            ``building_id``, ``storeys_tagged``, ``height_tagged_m``, ``city``
            (the name of the file's folder), geometry.
        """
        raw = drop_bad_geometries(read_table(path, self.layer), path)
        return self._normalise(raw, path)

    def _normalise(self, raw: gpd.GeoDataFrame, path: str) -> gpd.GeoDataFrame:
        """Normalise the OSM columns of valid features read from one file.

        Args:
            raw: the features (or some of them), bad geometries already dropped.
            path: the file they come from.

        Returns:
            As :meth:`_load`.
        """
        ids = np.full(len(raw), np.nan)
        for name in ID_COLUMNS:  # GDAL's OSM driver: osm_id or osm_way_id per row
            column = find_column(raw, (name,))
            if column is not None:
                parsed = np.array([parse_osm_id(v) for v in raw[column]], dtype=float)
                ids = np.where(np.isnan(ids), parsed, ids)
        if np.isnan(ids).any():
            ids = np.arange(len(raw), dtype=float)
        levels = find_column(raw, LEVELS_COLUMNS)
        height = find_column(raw, HEIGHT_COLUMNS)
        table = gpd.GeoDataFrame(
            {
                'building_id': ids.astype(np.int64),
                'storeys_tagged': [parse_levels(v) for v in raw[levels]]
                if levels
                else np.nan,
                'height_tagged_m': [parse_height_m(v) for v in raw[height]]
                if height
                else np.nan,
                'city': os.path.basename(os.path.dirname(os.path.abspath(path))),
            },
            geometry=raw.geometry.values,
            crs=raw.crs,
        )
        table['storeys_tagged'] = table['storeys_tagged'].astype(np.float64)
        table['height_tagged_m'] = table['height_tagged_m'].astype(np.float64)
        return table

    def _set_features(self, table: gpd.GeoDataFrame) -> None:
        """Install the footprints, compute their areas in square metres.

        Args:
            table: footprints in the dataset CRS.
        """
        crs = CRS.from_user_input(table.crs)
        if crs.is_projected and crs.axis_info[0].unit_name in ('metre', 'meter'):
            area = table.geometry.area
        else:
            area = table.geometry.to_crs(table.estimate_utm_crs()).area
        table = table.assign(area_m2=np.asarray(area, dtype=np.float64))
        table = table[
            [
                'building_id',
                'storeys_tagged',
                'height_tagged_m',
                'area_m2',
                'city',
                'geometry',
            ]
        ]
        super()._set_features(table)
        storeys = table['storeys_tagged'].to_numpy()
        self._tabular = np.stack(
            [
                np.log1p(table['area_m2'].to_numpy()),
                np.where(np.isnan(storeys), self.storeys_fill, storeys),
                np.isnan(storeys).astype(np.float64),
            ],
            axis=1,
        ).astype(np.float32)
        self._ids = table['building_id'].to_numpy()

    @property
    def buildings(self) -> gpd.GeoDataFrame:
        """All kept footprints, in the dataset CRS.

        Columns: ``building_id`` (int64, the OSM identifier when the file has one,
        else the row number), ``storeys_tagged`` and ``height_tagged_m`` (float, NaN
        where untagged), ``area_m2``, ``city`` (the name of the folder of the file the
        footprint comes from, e.g. ``antakya`` for ``scene/antakya/*.gpkg``) and
        ``geometry``.

        Returns:
            The footprint table (do not modify it in place).
        """
        return self._features

    def _target(self, rows: np.ndarray, x: float, y: float) -> int:
        """The target row of a window (see the class docstring).

        Args:
            rows: rows intersecting the window.
            x: window centre x.
            y: window centre y.

        Returns:
            The row, -1 if there is none.
        """
        if len(rows) == 0:
            return -1
        covering = self._under_point(rows, x, y)
        if len(covering):
            return int(covering[0])
        offsets = self._centroids[rows] - (x, y)
        return int(rows[np.argmin(np.hypot(offsets[:, 0], offsets[:, 1]))])

    def _mask(
        self,
        rows: np.ndarray,
        target: int,
        shape: tuple[int, int],
        transform: rasterio.Affine,
    ) -> npt.NDArray[np.uint8]:
        """Footprint mask of one window: 1 for neighbours, 2 for the target."""
        shapes = [(self._geoms[r], 1) for r in rows if r != target]
        if target >= 0:
            shapes.append((self._geoms[target], 2))
        if not shapes:
            return np.zeros(shape, dtype=np.uint8)
        mask: npt.NDArray[np.uint8] = rasterio.features.rasterize(
            shapes, out_shape=shape, transform=transform, fill=0, dtype='uint8'
        )
        return mask

    def _sample(self, index: GeoSlice) -> Sample:
        """The sample of one window.

        Args:
            index: the query.

        Returns:
            ``footprint``, ``building_id``, ``tabular``, ``bounds``, ``transform``.
        """
        box, shape, transform = self._window(index)
        rows = self._in_window(box)
        target = self._target(rows, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        mask = self._mask(rows, target, shape, transform)
        if target >= 0:
            building_id = int(self._ids[target])
            tabular = self._tabular[target]
        else:
            building_id = -1
            tabular = np.array([0.0, self.storeys_fill, 1.0], dtype=np.float32)
        sample = self._base_sample(index, transform)
        sample['footprint'] = torch.from_numpy(mask[None])
        sample['building_id'] = torch.tensor(building_id, dtype=torch.int64)
        sample['tabular'] = torch.tensor(tabular, dtype=torch.float32)
        return sample

    def extract_batch(self, queries: Sequence[GeoSlice]) -> Sample:
        """The samples of many windows as one batch, built together.

        Same values as stacking :meth:`extract`: targets are found for all windows
        in one vectorised query, and the footprints of each block of neighbouring
        windows are rasterised once (each footprint burning its own number), then cut
        into windows: neighbours where any footprint burned, the target where its
        own number did. A target that touches or overlaps another footprint (shared
        walls) is rasterised on its own window, as :meth:`extract` does, since the
        shared pixels may hold the other number.

        Args:
            queries: windows of the same pixel size, e.g. from a sampler.

        Returns:
            ``footprint`` ``(B, 1, H, W)`` uint8, ``building_id`` ``(B,)``,
            ``tabular`` ``(B, 3)``.

        Raises:
            IndexError: if a window intersects no file of the dataset.

        .. versionadded:: 0.1
        """
        queries = list(queries)
        bounds = self.bounds
        resolved = [resolve_slice(query, bounds) for query in queries]
        xs = np.array([(x.start, x.stop, x.step) for x, _, _ in resolved], dtype=float)
        ys = np.array([(y.start, y.stop, y.step) for _, y, _ in resolved], dtype=float)
        if len(resolved) == 0:
            raise ValueError('cannot batch an empty list of windows')
        fb = self._file_bounds
        hit = (fb[None, :, 0] <= xs[:, 1:2]) & (fb[None, :, 2] >= xs[:, 0:1])
        hit &= (fb[None, :, 1] <= ys[:, 1:2]) & (fb[None, :, 3] >= ys[:, 0:1])
        missing = np.flatnonzero(~hit.any(axis=1))
        if len(missing):
            raise IndexError(
                f'index: {queries[missing[0]]} not found in dataset with bounds: '
                f'{bounds}'
            )
        widths = {round((b - a) / r) for a, b, r in xs}
        heights = {round((b - a) / r) for a, b, r in ys}
        if len(widths) > 1 or len(heights) > 1:
            raise ValueError(
                f'cannot batch {"footprint"!r}: windows have sizes '
                f'{sorted(widths)} x {sorted(heights)} pixels'
            )
        width, height = widths.pop(), heights.pop()
        cx = (xs[:, 0] + xs[:, 1]) / 2
        cy = (ys[:, 0] + ys[:, 1]) / 2
        targets = self._targets(xs, ys, cx, cy)
        masks = np.zeros((len(queries), 1, height, width), dtype=np.uint8)
        for block in window_blocks(xs, ys):
            self._burn_block(block, xs, ys, targets, masks)
        known = targets >= 0
        ids = np.full(len(queries), -1, dtype=np.int64)
        ids[known] = self._ids[targets[known]]
        tabular = np.empty((len(queries), len(self.feature_names)), dtype=np.float32)
        tabular[:] = (0.0, self.storeys_fill, 1.0)
        tabular[known] = self._tabular[targets[known]]
        return {
            'footprint': torch.from_numpy(masks),
            'building_id': torch.from_numpy(ids),
            'tabular': torch.from_numpy(tabular),
        }

    def _targets(
        self,
        xs: npt.NDArray[np.float64],
        ys: npt.NDArray[np.float64],
        cx: npt.NDArray[np.float64],
        cy: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.int64]:
        """Target row of every window (as :meth:`_target`, all windows at once)."""
        n = len(xs)
        boxes = shapely.box(xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1])
        window, rows = self._tree.query(boxes, predicate='intersects')
        covers = shapely.intersects(
            self._geoms[rows], shapely.points(cx[window], cy[window])
        )
        w, r = window[covers], rows[covers]
        # smallest area first, ties in row order, as _under_point
        order = np.lexsort((r, self._areas[r], w))
        w, r = w[order], r[order]
        targets = np.full(n, -1, dtype=np.int64)
        first_window, first = np.unique(w, return_index=True)
        targets[first_window] = r[first]
        has_rows = np.bincount(window, minlength=n) > 0
        for i in np.flatnonzero(has_rows & (targets < 0)):  # none under the centre
            targets[i] = self._target(np.sort(rows[window == i]), cx[i], cy[i])
        return targets

    def _burn_block(
        self,
        block: WindowBlock,
        xs: npt.NDArray[np.float64],
        ys: npt.NDArray[np.float64],
        targets: npt.NDArray[np.int64],
        masks: npt.NDArray[np.uint8],
    ) -> None:
        """Fill the masks of a block of windows from one rasterisation of their union."""
        height, width = masks.shape[2:]
        group = block.members
        xres, yres = xs[group[0], 2], ys[group[0], 2]
        left, top = block.left, block.top
        cols, rows = block.cols, block.rows
        union_w, union_h = block.width, block.height
        if not block.dense:
            for i in group:  # sparse windows: one by one, as _sample
                box = (xs[i, 0], ys[i, 0], xs[i, 1], ys[i, 1])
                transform = from_origin(xs[i, 0], ys[i, 1], xs[i, 2], ys[i, 2])
                masks[i, 0] = self._mask(
                    self._in_window(box), int(targets[i]), (height, width), transform
                )
            return
        union = (left, top - union_h * yres, left + union_w * xres, top)
        inside = np.sort(self._tree.query(shapely.box(*union), predicate='intersects'))
        numbers = np.zeros((union_h, union_w), dtype=np.int32)
        if len(inside):
            numbers = rasterio.features.rasterize(
                [(self._geoms[r], int(r) + 1) for r in inside],
                out_shape=(union_h, union_w),
                transform=from_origin(left, top, xres, yres),
                fill=0,
                dtype='int32',
            )
        view = np.lib.stride_tricks.sliding_window_view(numbers, (height, width))
        cut = view[rows, cols]
        burnt = (cut > 0).astype(np.uint8)
        target = targets[group]
        tangled = self._tangled(target)
        own = (target >= 0) & ~tangled
        burnt[(cut == (target + 1)[:, None, None]) & own[:, None, None]] = 2
        for j in np.flatnonzero(tangled):
            i = group[j]
            transform = from_origin(xs[i, 0], ys[i, 1], xs[i, 2], ys[i, 2])
            alone = rasterio.features.rasterize(
                [(self._geoms[target[j]], 2)],
                out_shape=(height, width),
                transform=transform,
                fill=0,
                dtype='uint8',
            )
            burnt[j][alone == 2] = 2
        masks[group, 0] = burnt

    def _tangled(self, targets: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Targets whose footprint touches or overlaps another footprint."""
        out = np.zeros(len(targets), dtype=bool)
        known = np.flatnonzero(targets >= 0)
        if len(known):
            which, other = self._tree.query(
                self._geoms[targets[known]], predicate='intersects'
            )
            out[known[which[other != targets[known][which]]]] = True
        return out

    def plot(
        self, sample: Sample, show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Plot a sample: neighbours grey, target red.

        Args:
            sample: a sample returned by :meth:`__getitem__`.
            show_titles: show the building id and features above the panel.
            suptitle: optional figure title.

        Returns:
            A matplotlib Figure with the rendered sample.
        """
        footprint = sample['footprint'].squeeze(0).numpy()
        cmap = ListedColormap(['white', 'lightgrey', 'tab:red'])
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(footprint, cmap=cmap, vmin=0, vmax=2, interpolation='nearest')
        ax.axis('off')
        if show_titles and 'building_id' in sample:
            title = f'building {int(sample["building_id"])}'
            if 'tabular' in sample:
                tab = sample['tabular'][: len(self.feature_names)].tolist()
                area = np.expm1(tab[0])
                storeys = '?' if tab[2] else f'{tab[1]:g}'
                title += f'\n{area:.0f} m², {storeys} storeys'
            ax.set_title(title)
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig
