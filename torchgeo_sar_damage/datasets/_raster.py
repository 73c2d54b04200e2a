# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Window reading shared by the raster datasets of this package (COSMOSkyMed, DSM)."""

import atexit
import functools
import math
import os
import struct
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
import rasterio.errors
import rasterio.windows
import shapely
import torch
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from torchgeo.datasets import RasterDataset
from torchgeo.datasets.utils import GeoSlice, Path, Sample

from ..errors import InputFileError
from .utils import ModalityMixin, bounds_tensor, from_origin, resolve_slice

#: An open raster: a file read as it is, or a warped view of it in the dataset's CRS.
type Source = DatasetReader | WarpedVRT

#: Side (pixels) of the blocks in which windows are read together as one union.
UNION_BLOCK_PIXELS = 512

#: A block's union is read in one call unless it is more than this many times the
#: area of its windows (sparse windows are read one by one).
UNION_SPARSITY = 16


def read_window(
    src: Source, x: slice, y: slice, indexes: Sequence[int], resampling: Resampling
) -> npt.NDArray[np.float64]:
    """Read the window of a TorchGeo query from an open raster.

    The output grid and the placement of the raster on it are those of
    :func:`rasterio.merge.merge`, which TorchGeo's
    :class:`~torchgeo.datasets.RasterDataset` uses: ``(ymax - ymin) / yres`` rows and
    ``(xmax - xmin) / xres`` columns (rounded) from ``(xmin, ymax)``; the part of the
    raster inside the query is read in one GDAL call and resampled onto the output
    pixels it covers (offsets rounded down, sizes to the nearest pixel). Where the
    query is aligned on the raster's grid at its resolution, the values are the
    file's, unresampled.

    Args:
        src: a north-up raster in the query's CRS.
        x: ``xmin:xmax:xres`` of the query.
        y: ``ymin:ymax:yres`` of the query.
        indexes: 1-based band indexes to read.
        resampling: resampling used where the grids differ.

    Returns:
        Array ``[len(indexes), rows, columns]``, NaN outside the raster and where the
        raster holds its declared nodata value.
    """
    width = round((x.stop - x.start) / x.step)
    height = round((y.stop - y.start) / y.step)
    out = np.full((len(indexes), height, width), np.nan)
    left, bottom, right, top = src.bounds
    west, east = max(x.start, left), min(x.stop, right)
    south, north = max(y.start, bottom), min(y.stop, top)
    if west >= east or south >= north:
        return out
    out_transform = from_origin(x.start, y.stop, x.step, y.step)
    dst = rasterio.windows.from_bounds(west, south, east, north, out_transform)
    row0 = math.floor(dst.row_off + 0.1)
    col0 = math.floor(dst.col_off + 0.1)
    rows = math.floor(dst.height + 0.5)
    cols = math.floor(dst.width + 0.5)
    if rows <= 0 or cols <= 0:
        return out
    data = src.read(
        list(indexes),
        window=rasterio.windows.from_bounds(west, south, east, north, src.transform),
        out_shape=(len(indexes), rows, cols),
        resampling=resampling,
    ).astype(np.float64)
    if src.nodata is not None:
        nodata = np.isnan(data) if math.isnan(src.nodata) else data == float(src.nodata)
        data[nodata] = np.nan
    data = data[:, : height - row0, : width - col0]
    out[:, row0 : row0 + data.shape[1], col0 : col0 + data.shape[2]] = data
    return out


#: Advice appended to GDAL's message when it cannot open a file.
UNREADABLE = 'is it truncated or corrupt? Download or copy it again'


#: Bytes per value of each TIFF field type (TIFF 6.0 and BigTIFF).
_TIFF_TYPE_SIZES = {
    1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
    13: 4, 16: 8, 17: 8, 18: 8,
}  # fmt: skip


def _tiff_header_end(path: Path) -> int:
    """End (in bytes) of a TIFF's first directory and of the tag values it points to.

    Args:
        path: a (Big)TIFF file.

    Returns:
        The largest byte offset the first image file directory refers to.
    """
    with open(path, 'rb') as f:
        head = f.read(16)
        order = '<' if head[:2] == b'II' else '>'
        big = struct.unpack(order + 'H', head[2:4])[0] == 43
        count_format, entry_format, inline = (
            ('Q', 'HHQ8s', 8) if big else ('H', 'HHI4s', 4)
        )
        first = struct.unpack(
            order + ('Q' if big else 'I'), head[8:16] if big else head[4:8]
        )[0]
        f.seek(first)
        raw = f.read(struct.calcsize(order + count_format))
        if len(raw) < struct.calcsize(order + count_format):
            return first + len(raw) + 1
        (entries,) = struct.unpack(order + count_format, raw)
        size = struct.calcsize(order + entry_format)
        table = f.read(entries * size)
    end = first + len(raw) + entries * size
    for i in range(len(table) // size):
        _, kind, count, value = struct.unpack_from(
            order + entry_format, table, i * size
        )
        length = _TIFF_TYPE_SIZES.get(kind, 1) * count
        if length > inline:
            (offset,) = struct.unpack(order + ('Q' if big else 'I'), value)
            end = max(end, offset + length)
    return end


def check_complete(src: Source, path: Path) -> None:
    """Raise if a GeoTIFF's last image block lies beyond the end of the file.

    A GeoTIFF cut short (an interrupted download or copy) often still opens and
    fails only when the missing blocks are read, or loses the tags stored after its
    image data (its CRS, its calibration). The file's first directory and GDAL's
    ``BLOCK_OFFSET``/``BLOCK_SIZE`` metadata of the last block tell without reading.

    Args:
        src: the opened raster.
        path: the file, for the message.

    Raises:
        InputFileError: if the file ends before its last block or before the tag
            values its first directory points to.
    """
    if src.driver != 'GTiff' or not os.path.isfile(path):
        return
    height, width = src.block_shapes[0]
    row, col = (src.height - 1) // height, (src.width - 1) // width
    end = _tiff_header_end(path)
    for band in {1, src.count}:
        offset = src.get_tag_item(f'BLOCK_OFFSET_{col}_{row}', 'TIFF', bidx=band)
        size = src.get_tag_item(f'BLOCK_SIZE_{col}_{row}', 'TIFF', bidx=band)
        if offset and size:
            end = max(end, int(offset) + int(size))
    length = os.path.getsize(path)
    if end > length:
        raise InputFileError(
            path,
            f'is truncated: its structure ends at byte {end} but the file has '
            f'{length} bytes (an interrupted download or copy?); get it again',
        )


def check_georeferencing(src: Source, path: Path, advice: str = '') -> None:
    """Raise unless GDAL georeferences a raster (CRS and geotransform, or GCPs).

    Args:
        src: the opened raster.
        path: the file, for the message.
        advice: what to do, appended to the message.

    Raises:
        InputFileError: if the raster is truncated, has no CRS, or no geotransform
            and no GCPs.
    """
    check_complete(src, path)
    gcps, gcp_crs = src.gcps
    if gcps and gcp_crs is not None:
        return
    if src.crs is None and not src.transform.is_identity:
        problem = 'has a geotransform but no CRS'
        advice = advice or (
            'assign the CRS it was made in, e.g. gdal_edit.py -a_srs EPSG:32637'
        )
    elif src.crs is None or src.transform.is_identity:
        problem = 'has no georeferencing GDAL can read (no CRS or geotransform)'
        advice = advice or 'georeference it first (e.g. with gdalwarp or SNAP)'
    else:
        return
    raise InputFileError(path, f'{problem}; {advice}')


#: Upsampling factors (source pixel / query pixel) at which windows are still read
#: together: every position GDAL computes is then a binary fraction, so a window cut
#: from a union equals the window read alone (tested for nearest, bilinear and cubic;
#: a factor of 3 is not, and is read window by window).
EXACT_UPSAMPLING = (1, 2, 4, 8)


def _on_grids(x: slice, y: slice, grids: Sequence[Affine] | None) -> bool:
    """Whether a query's window is the same wherever it is cut from.

    True when, for every source grid, the query's pixels are the grid's own or an
    :data:`EXACT_UPSAMPLING` subdivision of them and the query's corner is on a
    corner of those pixels (within a millionth of a pixel); warped sources (None)
    and any rotation never are.

    Args:
        x: ``xmin:xmax:xres`` of the query.
        y: ``ymin:ymax:yres`` of the query.
        grids: north-up pixel transforms, or None (a warped source).

    Returns:
        Whether windows of this query's grid may be read as part of a union.
    """
    if not grids:
        return False
    for grid in grids:
        if grid.b != 0 or grid.d != 0:
            return False
        for size, step in ((grid.a, x.step), (-grid.e, y.step)):
            if not any(
                math.isclose(size, k * step, rel_tol=1e-12) for k in EXACT_UPSAMPLING
            ):
                return False
        col = (x.start - grid.c) / x.step
        row = (grid.f - y.stop) / y.step
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            return False
    return True


@dataclass(frozen=True)
class WindowBlock:
    """Windows of one pixel grid and size whose top-left corners share a block.

    Attributes:
        members: positions of the windows, ascending (in the order given).
        left: x of the union's top-left corner.
        top: y of the union's top-left corner.
        cols: column of each window's top-left pixel in the union.
        rows: row of each window's top-left pixel in the union.
        width: the union's width in pixels.
        height: the union's height in pixels.
        dense: whether the union is read in one call and cut into windows: more
            than one window, and a union at most :data:`UNION_SPARSITY` times the
            area of its windows (else the windows are read one by one).
    """

    members: npt.NDArray[np.int64]
    left: float
    top: float
    cols: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int64]
    width: int
    height: int
    dense: bool


def window_blocks(
    xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64]
) -> list[WindowBlock]:
    """Group windows into :data:`UNION_BLOCK_PIXELS` blocks of their top-left corners.

    Windows go together when they have the same resolution and pixel size, their
    corners differ by whole pixels (same phase, to a millionth of a map unit), and
    their top-left pixels (on the grid of the resolution from the origin) fall in
    the same square block of :data:`UNION_BLOCK_PIXELS` pixels. The raster datasets
    read a dense block's union in one call, :class:`~.osm.OSMBuildings` rasterises
    it once; both then cut the union into windows.

    Args:
        xs: ``(xmin, xmax, xres)`` of each window.
        ys: ``(ymin, ymax, yres)`` of each window.

    Returns:
        The blocks, in the order of their first window.
    """
    if len(xs) == 0:
        return []
    col = np.floor(xs[:, 0] / xs[:, 2] + 0.5)
    row = np.floor(-ys[:, 1] / ys[:, 2] + 0.5)
    width = np.round((xs[:, 1] - xs[:, 0]) / xs[:, 2])
    height = np.round((ys[:, 1] - ys[:, 0]) / ys[:, 2])
    # windows share a grid when their corners differ by whole pixels (Python's
    # correctly rounded round: np.round differs where a phase is a tie)
    phase_x = [round(v, 6) for v in (xs[:, 0] - col * xs[:, 2]).tolist()]
    phase_y = [round(v, 6) for v in (ys[:, 1] + row * ys[:, 2]).tolist()]
    keys = np.column_stack(
        [
            xs[:, 2],
            ys[:, 2],
            width,
            height,
            np.array(phase_x, dtype=np.float64),
            np.array(phase_y, dtype=np.float64),
            col // UNION_BLOCK_PIXELS,
            row // UNION_BLOCK_PIXELS,
        ]
    )
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind='stable')] = np.arange(len(first))
    label = rank[inverse.ravel()]
    order = np.argsort(label, kind='stable')
    bounds = np.flatnonzero(np.diff(label[order])) + 1
    return [_window_block(g.astype(np.int64), xs, ys) for g in np.split(order, bounds)]


def _window_block(
    members: npt.NDArray[np.int64],
    xs: npt.NDArray[np.float64],
    ys: npt.NDArray[np.float64],
) -> WindowBlock:
    """The union of a group of same-grid windows and whether to read it at once.

    Args:
        members: positions of the windows.
        xs: ``(xmin, xmax, xres)`` of every window.
        ys: ``(ymin, ymax, yres)`` of every window.

    Returns:
        The block of the windows.
    """
    xmin, xmax, xres = map(float, xs[members[0]])
    ymin, ymax, yres = map(float, ys[members[0]])
    width, height = round((xmax - xmin) / xres), round((ymax - ymin) / yres)
    left, top = float(xs[members, 0].min()), float(ys[members, 1].max())
    cols = np.round((xs[members, 0] - left) / xres).astype(np.int64)
    rows = np.round((top - ys[members, 1]) / yres).astype(np.int64)
    union_w, union_h = int(cols.max()) + width, int(rows.max()) + height
    covered = len(members) * width * height
    dense = len(members) > 1 and not union_w * union_h > UNION_SPARSITY * covered
    return WindowBlock(members, left, top, cols, rows, union_w, union_h, dense)


class WindowedRasterDataset(ModalityMixin, RasterDataset):
    """A :class:`~torchgeo.datasets.RasterDataset` read window by window.

    Subclasses say how a file is read (:meth:`_read_raw`) and converted to the
    sample's values (:meth:`_convert`); this class selects the files of a query like
    TorchGeo does, mosaics them (the first file in index order wins where several
    cover a pixel, NaN where none does), and provides :meth:`extract`, which reads
    many windows file by file in block order and converts each file's windows in one
    vectorised call. ``__getitem__`` is ``extract`` of one query, so both give the
    same arrays. With ``time_series=True`` (TorchGeo's argument) the files of a query
    are stacked, ``[T, bands, H, W]`` in index order, instead of mosaicked.

    Subclasses change two hooks: :meth:`_read_raw` (a file's raw values over a
    window) and :meth:`_convert` (a file's raw values to the sample's, e.g.
    :class:`~torchgeo_sar_damage.datasets.COSMOSkyMed`'s per-product calibration);
    the block reads are an addition on top of them, not a second code path.

    .. versionadded:: 0.1
    """

    #: Sample key under which the data is returned.
    sample_key: ClassVar[str] = 'image'

    #: Number of queries :meth:`extract` reads and converts together.
    chunk_size: ClassVar[int] = 512

    def __getitem__(self, index: GeoSlice) -> Sample:
        """Retrieve the sample of a spatiotemporal slice.

        Args:
            index: ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax:tres]`` coordinates.

        Returns:
            Sample with the data, ``bounds`` and ``transform``.

        Raises:
            IndexError: if no file of the dataset intersects *index*.
        """
        return next(self.extract([index]))

    def extract(self, queries: Sequence[GeoSlice]) -> Iterator[Sample]:
        """Samples of many windows, in query order: exactly ``self[q]`` for each.

        Files stay open, each file's windows are read together in block order
        (top-down, left to right) and converted in one vectorised call per file.

        Args:
            queries: spatiotemporal slices, e.g. from a sampler.

        Yields:
            One sample per query.

        Raises:
            IndexError: if no file of the dataset intersects a query.
        """
        if self.time_series:
            yield from self._time_series(queries)
            return
        for (x, y, t), data in self._windows(queries):
            yield self._sample(x, y, t, data)

    def _time_series(self, queries: Sequence[GeoSlice]) -> Iterator[Sample]:
        """Samples stacking each query's files, ``[T, bands, H, W]`` in index order."""
        for (x, y, t), paths in self._plan(queries):
            data = np.stack([self._convert(p, self._read_raw(p, x, y)) for p in paths])
            yield self._sample(x, y, t, data)

    def extract_batch(self, queries: Sequence[GeoSlice]) -> Sample:
        """The windows of many queries as one batch, ``{sample_key: (B, C, H, W)}``.

        The arrays of :meth:`extract`, stacked, without building a sample per window
        (see :func:`~torchgeo_sar_damage.datasets.extract_batch`).

        Args:
            queries: windows of the same pixel size.

        Returns:
            The batch.

        Raises:
            IndexError: if no file of the dataset intersects a query.
            ValueError: if the windows differ in size.

        .. versionadded:: 0.1
        """
        if self.time_series:
            samples = list(self._time_series(queries))
            return {self.sample_key: torch.stack([s[self.sample_key] for s in samples])}
        return {self.sample_key: torch.from_numpy(self._batch(queries))}

    def _batch(
        self, queries: Sequence[GeoSlice], allow_empty: bool = False
    ) -> npt.NDArray[np.float32]:
        """Mosaicked, converted data of many queries, stacked ``[B, bands, h, w]``.

        The values of :meth:`_windows`, built in place: files are taken in index
        order, the first to cover a pixel wins. Windows holding only nodata give
        one warning for the whole batch.
        """
        plans = self._plan(queries, allow_empty)
        shapes = {
            (round((y.stop - y.start) / y.step), round((x.stop - x.start) / x.step))
            for (x, y, _), _ in plans
        }
        if len(shapes) != 1:
            raise ValueError(
                f'cannot batch {self.sample_key!r}: windows have shapes '
                f'{sorted(shapes) or "none"}'
            )
        height, width = shapes.pop()
        out = np.full(
            (len(plans), len(self.bands) or 1, height, width), np.nan, dtype=np.float32
        )
        assigned = np.zeros(len(plans), dtype=bool)
        for path, keys_in_path in self._by_file(plans):
            for keys, data in self._read_file_windows(path, plans, keys_in_path):
                rows = np.array([qi for qi, _ in keys])
                new = ~assigned[rows]
                out[rows[new]] = data[new]
                assigned[rows[new]] = True
                if not new.all():
                    current = out[rows[~new]]
                    hole = np.isnan(current)
                    current[hole] = data[~new][hole]
                    out[rows[~new]] = current
        empty = np.isnan(out).reshape(len(out), -1).all(axis=1) & assigned
        if empty.any():
            files = sorted({p for i in np.flatnonzero(empty) for p in plans[i][1]})
            warnings.warn(
                f'{", ".join(files)}: {int(empty.sum())} windows inside it hold only '
                f'nodata (outside the imaged area, or masked); their '
                f'{self.sample_key!r} is all NaN, so the buildings there have no such '
                'data',
                UserWarning,
                stacklevel=3,
            )
        return out

    def _sample(
        self, x: slice, y: slice, t: slice, data: npt.NDArray[np.float32]
    ) -> Sample:
        """Wrap a window's data into a TorchGeo sample (as RasterDataset does)."""
        transform = from_origin(x.start, y.stop, x.step, y.step)
        sample: Sample = {
            self.sample_key: torch.from_numpy(data),
            'bounds': bounds_tensor(x, y, t),
            'transform': torch.tensor(transform),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _plan(
        self, queries: Sequence[GeoSlice], allow_empty: bool = False
    ) -> list[tuple[tuple[slice, slice, slice], list[str]]]:
        """Resolve queries and find the files of each, in index order (as TorchGeo).

        A query's files are those whose time interval overlaps the query's (taking
        every ``tres``-th) and whose footprint intersects its box, as in
        :meth:`RasterDataset.__getitem__ <torchgeo.datasets.RasterDataset.__getitem__>`,
        computed for all queries at once.

        Args:
            queries: the queries.
            allow_empty: give no file rather than raising IndexError.

        Returns:
            Per query, its fully resolved ``(x, y, t)`` slices and its files.

        Raises:
            IndexError: if no file intersects a query and not *allow_empty*.
        """
        bounds = self.bounds
        resolved = [resolve_slice(query, bounds) for query in queries]
        boxes = shapely.box(
            *np.array([(x.start, y.start, x.stop, y.stop) for x, y, _ in resolved]).T
        )
        hits = self.index.sindex.query(boxes, predicate='intersects')
        in_space: list[set[int]] = [set() for _ in queries]
        for query, position in hits.T:
            in_space[query].add(int(position))
        left = self.index.index.left.as_unit('ns').asi8
        right = self.index.index.right.as_unit('ns').asi8
        filepaths = self.index.filepath.to_numpy()
        plans = []
        times: dict[tuple[object, object, object], list[int]] = {}
        for query, (x, y, t), candidates in zip(
            queries, resolved, in_space, strict=True
        ):
            when = (t.start, t.stop, t.step)
            if when not in times:  # queries usually share one time range
                # pandas' overlaps of the closed file intervals with Interval(tmin, tmax)
                tmin = pd.Timestamp(t.start).as_unit('ns').value
                tmax = pd.Timestamp(t.stop).as_unit('ns').value
                in_time = (left <= tmax) & (tmin < right)
                times[when] = [int(p) for p in np.flatnonzero(in_time)[:: t.step]]
            keep = [p for p in times[when] if p in candidates]
            if not keep and not allow_empty:
                raise IndexError(
                    f'index: {query} not found in dataset with bounds: {bounds}'
                )
            plans.append(((x, y, t), [str(filepaths[p]) for p in keep]))
        return plans

    def _by_file(
        self, plans: Sequence[tuple[tuple[slice, slice, slice], list[str]]]
    ) -> list[tuple[str, list[tuple[int, int]]]]:
        """The ``(query, file position)`` keys of each file of *plans*.

        Files come in index order, the order of every query's file list.
        """
        by_path: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for qi, (_, paths) in enumerate(plans):
            for fi, path in enumerate(paths):
                by_path[path].append((qi, fi))
        order = {str(p): i for i, p in enumerate(self.index.filepath)}
        return [
            (path, by_path[path]) for path in sorted(by_path, key=order.__getitem__)
        ]

    def _windows(
        self, queries: Sequence[GeoSlice], allow_empty: bool = False
    ) -> Iterator[tuple[tuple[slice, slice, slice], npt.NDArray[np.float32]]]:
        """Resolved slices and mosaicked, converted data of each query, in order."""
        for start in range(0, len(queries), self.chunk_size):
            plans = self._plan(queries[start : start + self.chunk_size], allow_empty)
            values: dict[tuple[int, int], npt.NDArray[np.float32]] = {}
            for path, keys_in_path in self._by_file(plans):
                for keys, data in self._read_file_windows(path, plans, keys_in_path):
                    values.update(zip(keys, data, strict=True))
            for qi, ((x, y, t), paths) in enumerate(plans):
                if not paths:
                    shape = (
                        len(self.bands) or 1,
                        round((y.stop - y.start) / y.step),
                        round((x.stop - x.start) / x.step),
                    )
                    yield (x, y, t), np.full(shape, np.nan, dtype=np.float32)
                    continue
                out = np.array(values.pop((qi, 0)))
                for fi in range(1, len(paths)):
                    hole = np.isnan(out)
                    out[hole] = values.pop((qi, fi))[hole]
                if np.isnan(out).all():
                    warnings.warn(
                        f'{", ".join(paths)}: a window inside it holds only nodata '
                        f'(outside the imaged area, or masked); its {self.sample_key!r}'
                        ' is all NaN, so the buildings there have no such data',
                        UserWarning,
                        stacklevel=2,
                    )
                yield (x, y, t), out

    def _read_file_windows(
        self,
        path: str,
        plans: Sequence[tuple[tuple[slice, slice, slice], list[str]]],
        keys: Sequence[tuple[int, int]],
    ) -> list[tuple[list[tuple[int, int]], npt.NDArray[np.float32]]]:
        """Read and convert the windows of some queries in one file.

        Windows of the file's own pixels, or of an exact subdivision of them (see
        :data:`EXACT_UPSAMPLING`; not warped), are grouped by size and by
        :data:`UNION_BLOCK_PIXELS` square blocks of their top-left corners; a block
        whose windows cover enough of their union is read in one GDAL call over the
        union and cut into windows. Other windows are read one by one. Both give the
        same values (``tests/datasets/test_extract_batch.py`` compares them).

        Args:
            path: a file of the index.
            plans: resolved slices and files of every query.
            keys: ``(query, file position)`` of the windows to read in *path*.

        Returns:
            Groups of keys with their converted windows stacked, ``[k, bands, h, w]``.
        """
        alone: dict[tuple[int, ...], list[tuple[int, int]]] = defaultdict(list)
        raw: dict[tuple[int, int], npt.NDArray[np.float64]] = {}
        aligned: list[tuple[int, int]] = []
        grids = self._source_grids(path)
        for key in keys:
            x, y, _ = plans[key[0]][0]
            if not _on_grids(x, y, grids):  # resampled: GDAL may read it differently
                raw[key] = self._read_raw(path, x, y)
                alone[raw[key].shape].append(key)
            else:
                aligned.append(key)
        out = [
            (same, self._convert(path, np.stack([raw.pop(k) for k in same])))
            for same in alone.values()
        ]
        windows = [plans[qi][0] for qi, _ in aligned]
        xs = np.array([(x.start, x.stop, x.step) for x, _, _ in windows], dtype=float)
        ys = np.array([(y.start, y.stop, y.step) for _, y, _ in windows], dtype=float)
        for block in window_blocks(xs.reshape(-1, 3), ys.reshape(-1, 3)):
            block_windows = [windows[i] for i in block.members]
            out.append(
                (
                    [aligned[i] for i in block.members],
                    self._convert(path, self._read_block(path, block, block_windows)),
                )
            )
        return out

    def _source_names(self, path: str) -> list[str]:
        """The GDAL sources :meth:`_read_raw` reads for a file of the index.

        Args:
            path: a file of the index.

        Returns:
            Names GDAL opens (the file itself unless a subclass says otherwise).
        """
        return [path]

    def _source_grids(self, path: str) -> list[Affine] | None:
        """Pixel grids of a file's sources in the dataset CRS; None if any is warped."""
        known: dict[str, list[Affine] | None] = self.__dict__.setdefault(
            '_grids_of_file', {}
        )
        if path not in known:
            grids: list[Affine] | None = []
            for name in self._source_names(path):
                src = RasterDataset._load_warp_file(self, name, self.crs)
                try:
                    if isinstance(src, WarpedVRT) or grids is None:
                        grids = None
                    else:
                        grids.append(src.transform)
                finally:
                    src.close()
            known[path] = grids
        return known[path]

    def _read_block(
        self,
        path: str,
        block: WindowBlock,
        windows: Sequence[tuple[slice, slice, slice]],
    ) -> npt.NDArray[np.float64]:
        """Raw windows of a block of same-size, grid-aligned queries.

        One read of their union when the block is dense, else one per window.

        Args:
            path: a file of the index.
            block: the block (:func:`window_blocks`).
            windows: resolved slices of the block's queries, in its order.

        Returns:
            The windows' raw values, ``[k, bands, h, w]``.
        """
        if not block.dense:
            return np.stack([self._read_raw(path, x, y) for x, y, _ in windows])
        x0, y0, _ = windows[0]
        xres, yres = x0.step, y0.step
        width = round((x0.stop - x0.start) / xres)
        height = round((y0.stop - y0.start) / yres)
        union = self._read_raw(
            path,
            slice(block.left, block.left + block.width * xres, xres),
            slice(block.top - block.height * yres, block.top, yres),
        )
        view = np.lib.stride_tricks.sliding_window_view(
            union, (height, width), axis=(1, 2)
        )
        return np.ascontiguousarray(np.moveaxis(view[:, block.rows, block.cols], 0, 1))

    def _source_window(
        self, name: str, x: slice, y: slice, indexes: Sequence[int]
    ) -> npt.NDArray[np.float64]:
        """Read a query's window of a GDAL source, opened in the dataset's CRS."""
        if self.cache:
            return read_window(
                self._cached_open(name, self.crs), x, y, indexes, self.resampling
            )
        src = RasterDataset._load_warp_file(self, name, self.crs)
        try:
            return read_window(src, x, y, indexes, self.resampling)
        finally:
            src.close()

    @functools.lru_cache(maxsize=128)  # noqa: B019 (as TorchGeo's file handle cache)
    def _cached_open(self, name: str, crs: CRS) -> Source:
        """Open a GDAL source warped to *crs* if needed, once per source and CRS."""
        return RasterDataset._load_warp_file(self, name, crs)

    def _read_raw(self, path: str, x: slice, y: slice) -> npt.NDArray[np.float64]:
        """Read a file's raw values over a query, ``[bands, rows, columns]``.

        Args:
            path: a file of the index.
            x: ``xmin:xmax:xres`` of the query.
            y: ``ymin:ymax:yres`` of the query.

        Returns:
            The file's values, NaN outside it and at its declared nodata.
        """
        return self._source_window(path, x, y, [1])

    def _convert(
        self, path: str, raw: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float32]:
        """Convert raw values of a file to the sample's values.

        Args:
            path: the file the values come from.
            raw: its values, ``[..., bands, rows, columns]`` (any leading dimensions:
                one call converts many windows).

        Returns:
            The sample's values, float32, same shape.
        """
        return raw.astype(np.float32)


# The cached sources are GDAL handles: close them while the interpreter still runs.
# Left to the interpreter's final teardown, each one's deallocation fails and prints
# "Error in sys.excepthook" at exit.
atexit.register(WindowedRasterDataset._cached_open.cache_clear)
