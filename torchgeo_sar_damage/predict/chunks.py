# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Chunks of buildings in raster-block order, read as raw batches."""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyogrio
import rasterio
import rasterio.warp
import shapely
import torch
from pyproj import CRS, Transformer
from torch.utils.data import Dataset
from torchgeo.datasets import DatasetNotFoundError, GeoDataset
from torchgeo.datasets.utils import Sample

from ..batch import TOWN_MODALITIES, check_modalities
from ..datasets import DSM, COSMOSkyMed, GEMExposure, OSMBuildings, unusable_geometries
from ..datasets.cosmo_skymed import Calibration
from ..datasets.utils import extract_batch, merge_batches
from ..errors import ArgumentError, InputFileError
from ..samplers import BuildingSampler, footprint_centres
from .checkpoint import match_training_sar

#: Values of the ``status`` column, by code: ``ok`` (assessed), ``outside_sar``
#: (centre outside the SAR product), ``outside_dsm`` / ``outside_gem`` (outside the
#: DSM or the exposure's units, for a model that needs them), ``sar_nodata`` (less
#: than :data:`MIN_VALID_SAR_FRACTION` of the footprint's SAR pixels are valid),
#: ``invalid_geometry`` (missing, empty, not a polygon, zero area or invalid).
STATUSES = (
    'ok',
    'outside_sar',
    'outside_dsm',
    'outside_gem',
    'sar_nodata',
    'invalid_geometry',
)
_CODE = {name: code for code, name in enumerate(STATUSES)}
#: Code of buildings no chunk has reported (never left in a finished layer).
_PENDING = -1

#: Keys of a chunk's raw batch that hold one row per assessed building.
BATCH_KEYS = ('image', 'dsm', 'footprint', 'tabular', 'building_id')

#: Share of a footprint's SAR pixels that must be valid for it to be assessed.
MIN_VALID_SAR_FRACTION = 0.5


#: Side of the raster-block tiles, in SAR pixels, that order the chunks.
TILE_PIXELS = 512

#: Width, in tiles, of the vertical strips the tiles are visited in (row by row
#: within a strip, strips from west to east), so that the raster blocks a tile row
#: shares with the next are still in GDAL's block cache (:data:`~.runner.
#: GDAL_CACHEMAX_MB`) whatever the product's width: 8 tiles of 512 px are 2 km at
#: 0.5 m.
STRIP_TILES = 8


def _require_file(path: str | os.PathLike[str], what: str) -> str:
    if not Path(path).is_file():
        raise InputFileError(path, f'{what} file does not exist')
    return os.fspath(path)


class _ChunkFootprints(OSMBuildings):
    """:class:`OSMBuildings` over the footprints of one chunk, already read."""

    filename_glob = '*'
    filename_regex = r'.*'

    def __init__(
        self, frame: gpd.GeoDataFrame, path: str, crs: CRS, res: tuple[float, float]
    ) -> None:
        self._frame = frame
        super().__init__(paths=path, crs=crs, res=res)

    def _load(self, path: str) -> gpd.GeoDataFrame:
        return self._normalise(self._frame.reset_index(drop=True), path)


@dataclass
class _Inputs:
    """Opened inputs of a prediction (datasets, footprint index)."""

    base: GeoDataset
    sar: COSMOSkyMed
    coverages: list[tuple[str, shapely.Geometry]] = field(default_factory=list)
    raw_names: list[str] = field(default_factory=list)


class BuildingChunks(Dataset[Sample]):
    """Chunks of buildings in raster-block order, read into raw batches.

    Item ``i`` is a dict of tensors: ``positions`` (input row numbers of the chunk's
    buildings), ``status`` (codes of :data:`STATUSES`, -1 for buildings assessed by
    the model), ``assessed`` (positions of the buildings in the raw batch, in its
    order) and, when there are any, the raw batch keys (``image``, ``footprint``,
    ``dsm``, ``tabular``, ...; see
    :func:`~torchgeo_sar_damage.datasets.extract_batch`).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        sar: Sequence[str | os.PathLike[str]],
        buildings: str | os.PathLike[str],
        modalities: Sequence[str],
        size_m: float,
        dsm: str | os.PathLike[str] | None = None,
        gem: Sequence[str | os.PathLike[str]] = (),
        admin: str | os.PathLike[str] | None = None,
        batch_size: int = 256,
        layer: str | int | None = None,
        sensor: Mapping[str, Any] | None = None,
        gem_id_columns: Mapping[str, str] | str | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        """Open the inputs and plan the chunks.

        Args:
            sar: COSMO-SkyMed/CSG product files (HDF5 or GTC GeoTIFF).
            buildings: footprints (any vector file GDAL reads, any CRS).
            modalities: the model's modalities (``dsm`` needs ``dsm``, ``gem``
                needs ``gem``; ``optical`` is not read).
            size_m: window side in metres.
            dsm: DSM GeoTIFF.
            gem: GEM exposure CSV files.
            admin: polygons of the exposure's administrative units.
            batch_size: buildings per chunk.
            layer: layer of ``buildings``.
            sensor: what the model was trained on (:attr:`Checkpoint.sensor`): the
                SAR is resampled to its ``pixel_m`` where the product's spacing
                differs, and another polarisation or product type is warned about.
            gem_id_columns: column of ``admin`` that holds GEM's codes, as a name
                (for the CSVs' deepest ``ID_n`` level) or a mapping such as
                ``{'ID_1': 'ISO_1'}`` (see :class:`GEMExposure`).
            calibration: calibration attributes for SAR products that lack them
                (``calibration`` of :class:`COSMOSkyMed`). The SAR is read in the
                units the model was trained on (``sensor['sar_units']``: ``'db'``,
                or ``'dn'`` for digital numbers; ``'db'`` for older checkpoints).

        Raises:
            ArgumentError: if a modality of the model has no input or a number is
                out of range.
            InputFileError: if an input is missing, unreadable or does not cover the
                footprints, or the SAR cannot be resampled to the training spacing.
        """
        if batch_size < 1:
            raise ArgumentError(f'batch_size must be at least 1, not {batch_size}')
        self.modalities = check_modalities(modalities)
        unread = [m for m in self.modalities if m not in TOWN_MODALITIES]
        if unread:
            raise ArgumentError(
                f'the model was trained with modalities {unread}, which prediction '
                'does not read (no optical imagery: SAR, footprints, a DSM and GEM '
                f'exposure only, {", ".join(TOWN_MODALITIES)}); predict with a model '
                f'trained without {unread}'
            )
        self.size_m = float(size_m)
        self.batch_size = batch_size
        self.buildings = _require_file(buildings, 'footprint')
        self.layer = layer
        self.sar_paths = [_require_file(p, 'SAR') for p in sar]
        if not self.sar_paths:
            raise ArgumentError('give at least one SAR file (--sar)')
        if 'dsm' in self.modalities and dsm is None:
            raise ArgumentError(
                "the model was trained with the 'dsm' modality (a pre-event DSM); "
                'give it with --dsm FILE'
            )
        if 'gem' in self.modalities and not gem:
            raise ArgumentError(
                "the model was trained with the 'gem' modality (GEM exposure); give "
                'the exposure CSVs with --gem FILE ... (and --admin FILE)'
            )
        self.dsm = None if dsm is None else _require_file(dsm, 'DSM')
        self.gem = [_require_file(p, 'GEM exposure') for p in gem]
        self.admin = None if admin is None else _require_file(admin, 'admin')
        self.sensor = None if sensor is None else dict(sensor)
        self.gem_id_columns = gem_id_columns
        self.calibration = calibration
        self.sar_units = str((sensor or {}).get('sar_units', 'db'))
        self._inputs: _Inputs | None = None
        inputs = self.inputs
        self.crs, self.layer_name, self.fids, self.centres = self._read_centres(
            CRS.from_user_input(inputs.sar.crs)
        )
        left, bottom, right, top = (float(v) for v in inputs.sar.index.total_bounds)
        cx, cy = self.centres[:, 0], self.centres[:, 1]
        inside = (cx >= left) & (cx <= right) & (cy >= bottom) & (cy <= top)
        inside &= np.isfinite(cx) & np.isfinite(cy)
        if not inside.any():
            raise InputFileError(
                self.sar_paths[0],
                f'covers none of the {len(self.fids)} footprints of {self.buildings} '
                f'(SAR bounds {left:.0f}, {bottom:.0f}, {right:.0f}, {top:.0f} in '
                f'{CRS.from_user_input(inputs.sar.crs).to_string()}); is it the right '
                'product for this area?',
            )
        #: Positions (input order) of buildings outside the SAR product's box.
        self.outside = np.flatnonzero(~inside)
        #: Input positions of each chunk, in raster-block order.
        self.chunks = self._plan(np.flatnonzero(inside), left, top)
        #: Chunks from this one on hold buildings outside the SAR product only.
        self.first_outside = len(self.chunks)
        self.chunks += [
            self.outside[i : i + batch_size]
            for i in range(0, len(self.outside), batch_size)
        ]

    def _read_centres(
        self, sar_crs: CRS
    ) -> tuple[CRS, str, npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """CRS, layer name, feature ids and bounding-box centres (SAR CRS)."""
        try:
            info = pyogrio.read_info(self.buildings, layer=self.layer)
            fids, bounds = pyogrio.read_bounds(self.buildings, layer=self.layer)
        except (RuntimeError, OSError, ValueError) as err:  # pyogrio errors
            raise InputFileError(
                self.buildings, f'cannot be read as a vector layer ({err})'
            ) from None
        if info.get('crs') is None:
            raise InputFileError(
                self.buildings,
                'has no coordinate reference system; add one, e.g. with '
                '`ogr2ogr -a_srs EPSG:4326`',
            )
        if len(fids) == 0:
            raise InputFileError(self.buildings, 'has no footprints')
        crs = CRS.from_user_input(info['crs'])
        layer_name = str(info.get('layer_name') or Path(self.buildings).stem)
        cx = (bounds[0] + bounds[2]) / 2
        cy = (bounds[1] + bounds[3]) / 2
        if crs != sar_crs:
            transformer = Transformer.from_crs(crs, sar_crs, always_xy=True)
            cx, cy = transformer.transform(cx, cy)
        centres = np.column_stack([cx, cy]).astype(np.float64)
        return crs, layer_name, np.asarray(fids, dtype=np.int64), centres

    def _plan(
        self, position: npt.NDArray[np.int64], left: float, top: float
    ) -> list[npt.NDArray[np.int64]]:
        """Chunks of buildings in :data:`TILE_PIXELS` tiles, row by row in strips."""
        xres, yres = self.inputs.sar.res
        cx, cy = self.centres[position, 0], self.centres[position, 1]
        row = np.floor((top - cy) / (TILE_PIXELS * yres))
        col = np.floor((cx - left) / (TILE_PIXELS * xres))
        strip = np.floor(col / STRIP_TILES)
        position = position[np.lexsort((cx, -cy, col, row, strip))]
        size = self.batch_size
        return [position[i : i + size] for i in range(0, len(position), size)]

    def __len__(self) -> int:
        """Number of chunks."""
        return len(self.chunks)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the opened datasets (re-opened in each process)."""
        state = self.__dict__.copy()
        state['_inputs'] = None
        return state

    @property
    def inputs(self) -> _Inputs:
        """The datasets, opened on first use (per process)."""
        if self._inputs is None:
            self._inputs = self._open()
        return self._inputs

    def _open(self) -> _Inputs:
        try:
            sar = COSMOSkyMed(
                paths=self.sar_paths,
                units=self.sar_units,  # type: ignore[arg-type]
                calibration=self.calibration,
            )
        except DatasetNotFoundError:
            raise InputFileError(
                self.sar_paths[0],
                'is not a COSMO-SkyMed/CSG product: the file name must follow the '
                'CSK (CSKS1_GTC_...) or CSG (CSG_SSAR1_GTC_...) convention',
            ) from None
        if self.sensor is not None:
            match_training_sar(sar, self.sensor, self.sar_paths[0])
        base: GeoDataset = sar
        coverages: list[tuple[str, shapely.Geometry]] = [
            ('outside_sar', shapely.union_all(sar.index.geometry.to_numpy()))
        ]
        raw_names: list[str] = []
        if 'dsm' in self.modalities and self.dsm is not None:
            try:
                elevation = DSM(paths=self.dsm)
            except DatasetNotFoundError:
                raise InputFileError(self.dsm, 'is not a DSM GeoTIFF') from None
            base = base & elevation
            coverages.append(
                ('outside_dsm', shapely.union_all(elevation.index.geometry.to_numpy()))
            )
            raw_names += DSM.feature_names
        if 'gem' in self.modalities:
            try:
                exposure = GEMExposure(
                    paths=self.gem, admin=self.admin, id_columns=self.gem_id_columns
                )
            except DatasetNotFoundError:
                raise InputFileError(
                    self.gem[0], 'is not a GEM exposure CSV (Exposure_*.csv)'
                ) from None
            base = base & exposure
            coverages.append(
                ('outside_gem', shapely.union_all(exposure.index.geometry.to_numpy()))
            )
            raw_names += GEMExposure.feature_names
        raw_names += OSMBuildings.feature_names
        # coverages are taken after ``&``, which re-projected every index to the
        # SAR CRS
        return _Inputs(base=base, sar=sar, coverages=coverages, raw_names=raw_names)

    @property
    def raw_names(self) -> list[str]:
        """Names of the columns of the raw batches' ``tabular``."""
        return self.inputs.raw_names

    def _read_area(self, positions: npt.NDArray[np.int64]) -> gpd.GeoDataFrame:
        """Footprints around some buildings (their windows' area), indexed by fid."""
        half = self.size_m
        x, y = self.centres[positions, 0], self.centres[positions, 1]
        box = (x.min() - half, y.min() - half, x.max() + half, y.max() + half)
        sar_crs = CRS.from_user_input(self.inputs.sar.crs)
        if sar_crs != self.crs:
            box = rasterio.warp.transform_bounds(sar_crs, self.crs, *box, densify_pts=5)
        frame = pyogrio.read_dataframe(
            self.buildings, layer=self.layer, bbox=box, fid_as_index=True
        )
        wanted = self.fids[positions]
        missing = np.setdiff1d(wanted, frame.index.to_numpy())
        if len(missing):  # features without a box filter match (rare): read them
            extra = pyogrio.read_dataframe(
                self.buildings, layer=self.layer, fids=missing, fid_as_index=True
            )
            frame = pd.concat([frame, extra])
        return frame

    def __getitem__(self, index: int) -> Sample:
        """The raw batch of a chunk (see the class docstring).

        Args:
            index: the chunk.

        Returns:
            The chunk's tensors.
        """
        positions = self.chunks[index]
        status = np.full(len(positions), _PENDING, dtype=np.int64)
        out: Sample = {'positions': torch.from_numpy(positions.astype(np.int64))}
        if index >= self.first_outside:
            out['status'] = torch.full((len(positions),), _CODE['outside_sar'])
            out['assessed'] = torch.empty(0, dtype=torch.int64)
            return out
        frame, targets = self._targets(positions, status)
        sampled, batch = self._read(frame, targets, status)
        if batch is not None:
            sampled = self._keep_valid(batch, sampled, status, out)
        out['status'] = torch.from_numpy(status)
        out['assessed'] = torch.from_numpy(positions[sampled].astype(np.int64))
        return out

    def _targets(
        self, positions: npt.NDArray[np.int64], status: npt.NDArray[np.int64]
    ) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
        """The chunk's valid footprints and its targets covered by every input.

        Sets ``status`` of targets with a bad geometry or outside an input.
        """
        frame = self._read_area(positions)
        bad = unusable_geometries(frame.geometry.to_numpy())
        by_fid = pd.Series(np.arange(len(frame)), index=frame.index)
        rows = by_fid.reindex(self.fids[positions]).to_numpy()
        target_bad = np.isnan(rows) | bad[np.nan_to_num(rows).astype(np.int64)]
        status[target_bad] = _CODE['invalid_geometry']
        frame = frame.loc[~bad]
        candidates = np.flatnonzero(~target_bad)
        targets = gpd.GeoDataFrame(
            {'_position': np.arange(len(positions))[candidates]},
            geometry=frame.geometry.reindex(self.fids[positions][candidates]).values,
            crs=self.crs,
        )
        # coverage of every input, at the window centres the sampler will use
        local = targets.to_crs(self.inputs.sar.crs)
        centre = footprint_centres(local.geometry).to_numpy()
        covered = np.ones(len(targets), dtype=bool)
        for name, coverage in self.inputs.coverages:
            outside = covered & ~shapely.contains(coverage, centre)
            status[candidates[outside]] = _CODE[name]
            covered &= ~outside
        return frame, targets.loc[covered]

    def _read(
        self,
        frame: gpd.GeoDataFrame,
        targets: gpd.GeoDataFrame,
        status: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.int64], Sample | None]:
        """Sample one window per target and read the raw batch (block reads)."""
        sampled: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        if not len(targets):
            return sampled, None
        inputs = self.inputs
        sar = inputs.sar
        res = (float(sar.res[0]), float(sar.res[1]))
        sampler = BuildingSampler(
            inputs.base, targets, size=self.size_m, id_column='_position'
        )
        sampled = np.asarray(sampler.building_ids, dtype=np.int64)
        lost = np.setdiff1d(targets['_position'].to_numpy(), sampled)
        status[lost] = _CODE['outside_sar']  # on a border: not sampled
        queries = list(sampler)
        if not queries:
            return sampled, None
        footprints = _ChunkFootprints(frame, self.buildings, sar.crs, res)
        # no warnings.catch_warnings here: it is not thread-safe, and chunks are
        # read in a background thread (predict's read-ahead)
        batch = merge_batches(
            [extract_batch(inputs.base, queries), extract_batch(footprints, queries)]
        )
        return sampled, batch

    @staticmethod
    def _keep_valid(
        batch: Sample,
        sampled: npt.NDArray[np.int64],
        status: npt.NDArray[np.int64],
        out: Sample,
    ) -> npt.NDArray[np.int64]:
        """Keep windows with enough valid SAR under the footprint (into ``out``)."""
        # NumPy, single-threaded: small arrays, no thread pool to wake
        count = len(batch['image'])
        finite = np.isfinite(batch['image'].numpy()).reshape(count, -1)
        target = (batch['footprint'].numpy() == 2).reshape(count, -1)
        pixels = target.sum(1)
        fraction = np.where(
            pixels > 0, (finite & target).sum(1) / np.maximum(pixels, 1), finite.mean(1)
        )
        ok = fraction >= MIN_VALID_SAR_FRACTION
        status[sampled[~ok]] = _CODE['sar_nodata']
        if not ok.any():
            return np.empty(0, dtype=np.int64)
        keep = torch.from_numpy(ok)
        for key in BATCH_KEYS:
            if key in batch:
                out[key] = batch[key][keep]
        return sampled[ok]
