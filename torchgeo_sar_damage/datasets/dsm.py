# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Digital surface models (DSM), optionally as height above a terrain model (DTM)."""

import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.errors
import torch
from matplotlib.figure import Figure
from pyproj import CRS
from torchgeo.datasets import DatasetNotFoundError
from torchgeo.datasets.utils import GeoSlice, Path, Sample

from ..errors import InputFileError
from ._raster import UNREADABLE, Source, WindowedRasterDataset, check_georeferencing
from .utils import resolve_slice


class DSM(WindowedRasterDataset):
    """Digital surface model (DSM) dataset.

    A digital surface model gives the elevation of the top of whatever covers the
    ground: roofs, trees, bridges. Where a digital terrain model (DTM, the bare
    ground) is also available, DSM - DTM is the height of buildings and vegetation
    above the ground (a normalised DSM), which tells a standing building from a
    collapsed one.

    DSMs are made by:

    * photogrammetry from stereo or tri-stereo very-high-resolution optical images
      (Pléiades, WorldView, aerial surveys), 0.5-2 m
    * single-pass SAR interferometry: TanDEM-X (WorldDEM, and the 30 m Copernicus DEM
      derived from it)
    * airborne lidar: first returns give the DSM, ground-classified returns the DTM

    Data can be obtained from:

    * `Copernicus DEM GLO-30 / GLO-90
      <https://dataspace.copernicus.eu/explore-data/data-collections/copernicus-contributing-missions/collections-description/COP-DEM>`_,
      a global DSM at 30 m (GLO-30 Public and GLO-90 free, with attribution, under
      the `Copernicus DEM licence
      <https://spacedata.copernicus.eu/documents/20126/0/CSCDA_ESA_Mission-specific+Annex.pdf>`_);
      too coarse for single buildings, but usable as the DTM of a finer DSM in flat
      areas
    * national lidar and mapping agencies (e.g. USGS 3DEP, IGN LiDAR HD, national
      open-data portals), usually under open licences
    * commercial VHR stereo DSMs (e.g. Airbus WorldDEM Neo, Maxar), under their
      vendors' licences

    Any single-band GeoTIFF of elevations in metres is read; files are found with
    :attr:`filename_glob` (a class attribute, or the ``filename_glob`` argument).
    Files in another CRS than the dataset's are reprojected (bilinear).

    Samples are dicts with:

    * ``dsm``: float32 ``[1, H, W]``, elevation in metres (height above the DTM in
      metres when ``dtm`` is given), NaN at the files' nodata and outside them; kept
      under its own key (not ``image``) so that it stays apart from SAR images when
      datasets are combined with ``&``
    * ``bounds`` and ``transform``: the window, as TorchGeo's

    .. note::
       Declare a nodata value in files that will be reprojected: warping fills the
       area outside a file with its nodata value, or with 0 (a valid elevation) when
       it has none.

    .. note::
       The DTM is resampled (bilinear) onto each query's window; where it does not
       cover a pixel of the DSM, the height above ground is NaN.

    If you use the Copernicus DEM, please cite:

    * https://doi.org/10.5270/ESA-c5d3d65

    A file named in ``paths`` is read whatever its name (the glob filters
    directory searches only). ``&`` keeps one key per modality, unlike TorchGeo's
    channel concatenation (see :class:`~torchgeo_sar_damage.datasets.utils.ModalityMixin`).

    .. versionadded:: 0.1

    .. versionchanged:: 0.2
       Named files are read whatever their name.
    """

    filename_glob = '*.tif'
    sample_key = 'dsm'

    def __init__(
        self,
        paths: Path | Iterable[Path] = 'data',
        crs: CRS | None = None,
        res: float | tuple[float, float] | None = None,
        dtm: Path | Iterable[Path] | None = None,
        filename_glob: str | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
        cache: bool = True,
    ) -> None:
        """Initialize a new DSM instance.

        Args:
            paths: one or more root directories to search or files to load
            crs: :term:`coordinate reference system (CRS)` to warp to
                (defaults to the CRS of the first file found)
            res: resolution of the dataset in units of CRS
                (defaults to the resolution of the first file found)
            dtm: one or more directories or files of a terrain model (DTM); when
                given, samples hold the height above ground, DSM - DTM
            filename_glob: glob of the DSM (and DTM) files, instead of
                :attr:`filename_glob`
            transforms: a function/transform that takes an input sample
                and returns a transformed version
            cache: if True, cache file handles to speed up repeated sampling

        Raises:
            InputFileError: if a file is unreadable or truncated, has more than one
                band or no georeferencing, or no DTM file is found under *dtm*.
            DatasetNotFoundError: if no DSM file is found.
        """
        if filename_glob is not None:
            self.filename_glob = filename_glob
        super().__init__(paths, crs, res, None, transforms, cache)
        self.dtm: DSM | None = None
        if dtm is not None:
            try:
                self.dtm = DSM(
                    dtm, self.crs, self.res, filename_glob=filename_glob, cache=cache
                )
            except DatasetNotFoundError:
                where = (
                    dtm
                    if isinstance(dtm, str | os.PathLike)
                    else ', '.join(map(str, dtm))
                )
                raise InputFileError(
                    where,
                    f'no DTM raster matching {self.filename_glob!r} found; give the '
                    'terrain model files or directories as dtm=',
                ) from None

    def _load_warp_file(self, filepath: Path, crs: CRS | None = None) -> Source:
        """Open a DSM file, checking that it is one georeferenced band.

        Args:
            filepath: the file.
            crs: CRS to warp to.

        Returns:
            The opened (warped) file.

        Raises:
            InputFileError: if the file is unreadable or truncated, has several
                bands or no georeferencing.
        """
        try:
            src = rasterio.open(filepath)
        except rasterio.errors.RasterioIOError as err:
            raise InputFileError(
                filepath, f'cannot be opened by GDAL ({err}); {UNREADABLE}'
            ) from None
        with src:
            if src.count != 1:
                raise InputFileError(
                    filepath,
                    f'has {src.count} bands; a DSM is one band of elevations '
                    '(extract it with gdal_translate -b 1)',
                )
            check_georeferencing(src, filepath)
        return super()._load_warp_file(filepath, crs)

    #: Names of the ``tabular`` entries of a sample.
    feature_names = (
        'dsm_centre_relief_m',
        'dsm_window_relief_m',
        'dsm_nodata_fraction',
    )

    def _sample(
        self, x: slice, y: slice, t: slice, data: npt.NDArray[np.float32]
    ) -> Sample:
        """Wrap a window into a sample and add its height statistics as ``tabular``.

        Windows from :class:`~torchgeo_sar_damage.samplers.BuildingSampler` are
        centred on a footprint, so the statistics describe that building:

        * ``dsm_centre_relief_m``: median of the central quarter of the window minus
          the window's 5th percentile (a ground level proxy): the building's height;
        * ``dsm_window_relief_m``: 95th minus 5th percentile over the window;
        * ``dsm_nodata_fraction``: share of nodata pixels (1 with the reliefs set to 0
          when the whole window is nodata).
        """
        sample = super()._sample(x, y, t, data)
        sample['tabular'] = torch.from_numpy(_height_statistics(data))
        return sample

    def extract(self, queries: Sequence[GeoSlice]) -> Iterator[Sample]:
        """Samples of many windows, in query order: exactly ``self[q]`` for each.

        Files stay open, each file's windows are read together in block order, and
        the DTM (if any) is read the same way.

        Args:
            queries: spatiotemporal slices, e.g. from a sampler.

        Yields:
            One sample per query.

        Raises:
            IndexError: if no DSM file intersects a query.
        """
        for (x, y, t), height in self._heights(queries):
            yield self._sample(x, y, t, height)

    def extract_batch(self, queries: Sequence[GeoSlice]) -> Sample:
        """The windows of many queries as one batch: ``dsm`` and ``tabular``.

        The arrays of :meth:`extract`, stacked; the height statistics of complete
        windows are computed for all of them at once.

        Args:
            queries: windows of the same pixel size.

        Returns:
            ``dsm`` ``(B, 1, H, W)`` and ``tabular`` ``(B, 3)``.

        Raises:
            IndexError: if no DSM file intersects a query.
            ValueError: if the windows differ in size.

        .. versionadded:: 0.1
        """
        data = self._batch(queries)
        if self.dtm is not None:
            data = data - self.dtm._batch(self._spatial(queries), allow_empty=True)
        return {
            self.sample_key: torch.from_numpy(data),
            'tabular': torch.from_numpy(height_statistics(data)),
        }

    def _spatial(self, queries: Sequence[GeoSlice]) -> list[GeoSlice]:
        """The queries' spatial slices, for the DTM.

        The DTM has no time: it is read over the whole of its time range.
        """
        bounds = self.bounds
        return [resolve_slice(query, bounds)[:2] for query in queries]

    def _heights(
        self, queries: Sequence[GeoSlice]
    ) -> Iterator[tuple[tuple[slice, slice, slice], npt.NDArray[np.float32]]]:
        """Resolved slices and heights (DSM, minus the DTM if any) of each query."""
        if self.dtm is None:
            yield from self._windows(queries)
            return
        surface = self._windows(queries)
        terrain = self.dtm._windows(self._spatial(queries), allow_empty=True)
        for ((x, y, t), dsm), (_, dtm) in zip(surface, terrain, strict=True):
            height: npt.NDArray[np.float32] = dsm - dtm
            yield (x, y, t), height

    def plot(
        self, sample: Sample, show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Plot a sample from the dataset.

        Args:
            sample: a sample returned by :meth:`__getitem__`
            show_titles: flag indicating whether to show titles above each panel
            suptitle: optional string to use as a suptitle

        Returns:
            a matplotlib Figure with the rendered sample
        """
        dsm = sample['dsm'][0].detach().cpu().numpy()
        fig, ax = plt.subplots(1, 1, figsize=(4, 4))
        image = ax.imshow(dsm, cmap='terrain')
        fig.colorbar(image, ax=ax, label='m')
        ax.axis('off')
        if show_titles:
            ax.set_title('height above ground' if self.dtm is not None else 'DSM')
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig


def height_statistics(data: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The ``tabular`` height statistics of many DSM windows (see :class:`DSM`).

    Windows without nodata are computed together (same NumPy reductions along an
    axis, so the same values as one window at a time); the others one by one.

    Args:
        data: windows ``(B, 1, H, W)``.

    Returns:
        ``(B, 3)``: centre relief, window relief and nodata share of each window.
    """
    out = np.empty((len(data), 3), dtype=np.float32)
    complete = np.isfinite(data).reshape(len(data), -1).all(axis=1)
    complete &= data[0].size > 0
    for i in np.flatnonzero(~complete):
        out[i] = _height_statistics(data[i])
    if complete.any():
        grids = data[complete, 0]
        low, high = np.percentile(grids.reshape(len(grids), -1), [5, 95], axis=1)
        rows, cols = grids.shape[1:]
        r, c = max(1, rows // 4), max(1, cols // 4)
        centre = grids[
            :,
            (rows - r) // 2 : (rows + r) // 2 + 1,
            (cols - c) // 2 : (cols + c) // 2 + 1,
        ]
        median = np.median(centre.reshape(len(grids), -1), axis=1)
        out[complete] = np.stack([median - low, high - low, np.zeros_like(low)], 1)
    return out


def _height_statistics(data: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Centre relief, window relief and nodata share of a DSM window (see DSM)."""
    grid = data[0]
    valid = np.isfinite(grid)
    nodata = 1.0 - float(valid.mean()) if grid.size else 1.0
    if not valid.any():
        return np.array([0.0, 0.0, 1.0], dtype=np.float32)
    low, high = np.percentile(grid[valid], [5, 95])
    rows, cols = grid.shape
    r, c = max(1, rows // 4), max(1, cols // 4)
    centre = grid[
        (rows - r) // 2 : (rows + r) // 2 + 1, (cols - c) // 2 : (cols + c) // 2 + 1
    ]
    centre = centre[np.isfinite(centre)]
    centre_relief = float(np.median(centre)) - low if centre.size else 0.0
    return np.array([centre_relief, high - low, nodata], dtype=np.float32)
