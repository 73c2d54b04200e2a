# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""City-scale prediction: raw files -> per-building damage layer (streamed).

:func:`predict_buildings` (``sardamage predict``) reads one post-event SAR product
(one or more COSMO-SkyMed/CSG files), building footprints (any vector file, any
CRS), optionally a DSM and GEM exposure, and a checkpoint of
:class:`~torchgeo_sar_damage.tasks.DamageClassification`, and writes a GeoPackage
layer with every input footprint, in the input's CRS, row order and attributes, plus:

* ``damage_prob``: calibrated probability of damage (the checkpoint's temperature);
* ``damage``: 1 where ``damage_prob`` reaches the checkpoint's decision threshold;
* ``uncertainty``: standard deviation of the damage probability under Monte Carlo
  dropout of the fusion head (:data:`MC_SAMPLES` draws, encoders run once; see
  :meth:`~torchgeo_sar_damage.tasks.DamageClassification.probabilities_with_uncertainty`);
* ``status``: ``'ok'``, or why the building was not assessed (:data:`STATUSES`);
  ``damage_prob``, ``damage`` and ``uncertainty`` are empty (NULL) unless
  ``status`` is ``'ok'``: a building is never silently given a probability.

How it streams:

1. The footprints' bounding boxes only are read (:func:`pyogrio.read_bounds`), their
   centres re-projected to the SAR CRS (pyproj), and the buildings sorted in
   raster-block order (:data:`TILE_PIXELS` tiles of the SAR grid, row by row) and
   cut into chunks of ``batch_size`` buildings (:class:`BuildingChunks`).
2. Each chunk reads the footprints of its area (GeoPackage spatial index), makes one
   window per building with :class:`~torchgeo_sar_damage.samplers.BuildingSampler`
   and reads the windows with the package's datasets (:class:`COSMOSkyMed`,
   :class:`DSM`, :class:`GEMExposure`, :class:`OSMBuildings`), which re-project other
   CRSs with rasterio; Lightning's ``Trainer.predict`` runs the model
   (:class:`CityPredictor`), on one process or several (DDP), and
   :class:`PartWriter` keeps each process's results (a few bytes per building) and
   writes them as one part per process.
3. The parts are merged (:func:`merge_parts`) and the layer is written in input order,
   chunk by chunk, to a temporary GeoPackage renamed into place at the end
   (:func:`write_layer`); an interrupted or failed run leaves no output.

Memory depends on the chunk size, not on the number of buildings (besides a few
bytes per building for the bounds and results).

.. versionadded:: 0.1
"""

import os
import pickle
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import lightning
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyogrio
import rasterio
import rasterio.warp
import shapely
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from pyproj import CRS, Transformer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchgeo.datasets import DatasetNotFoundError, GeoDataset
from torchgeo.datasets.utils import Sample
from tqdm.auto import tqdm

from .batch import Normalisation, check_modalities, normalise_batch
from .datasets import DSM, COSMOSkyMed, GEMExposure, OSMBuildings
from .datasets.utils import extract_batch, merge_batches
from .errors import ArgumentError, InputFileError, OutputError
from .samplers import BuildingSampler
from .tasks import DamageClassification

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

#: Share of a footprint's SAR pixels that must be valid for it to be assessed.
MIN_VALID_SAR_FRACTION = 0.5
#: Monte Carlo dropout draws of the fusion head for ``uncertainty``.
MC_SAMPLES = 20
#: Side of the raster-block tiles, in SAR pixels, that order the chunks.
TILE_PIXELS = 512
#: Footprints read and written per step of :func:`write_layer`.
WRITE_CHUNK = 5000
#: Columns added to the footprints.
OUTPUT_COLUMNS = ('damage_prob', 'damage', 'uncertainty', 'status')
#: GDAL block cache while predicting (MB): memory must not grow with the city.
GDAL_CACHEMAX_MB = 64


@dataclass
class Checkpoint:
    """What prediction needs from a training checkpoint.

    Attributes:
        path: the checkpoint file.
        task: the trained task (evaluation mode, on the CPU).
        statistics: the training-city normalisation statistics.
        modalities: the model's modalities.
        size_m: window side in metres the model was trained with.
        threshold: decision threshold (calibrated probability).
        temperature: temperature of the calibration (1 when not fitted).
        sensor: what the model was trained on (``pixel_m``, ``window_px``,
            ``polarisations``, ``product_types``; see
            :func:`~torchgeo_sar_damage.datamodules.damage.sar_product_info`), or
            None for a checkpoint written before it was recorded.
    """

    path: Path
    task: DamageClassification
    statistics: Normalisation
    modalities: tuple[str, ...]
    size_m: float
    threshold: float
    temperature: float
    sensor: dict[str, Any] | None = None


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint of :class:`DamageClassification` trained with the data module.

    Lightning stores the data module's :meth:`state_dict` (the normalisation
    statistics) under the key ``'SARDamageDataModule'`` and its hyper-parameters
    (``size_m``) under ``'datamodule_hyper_parameters'``.

    Args:
        path: the ``.ckpt`` file.

    Returns:
        The task and what goes with it.

    Raises:
        InputFileError: if the file is missing, not a checkpoint of this task, has no
            statistics, or is a multiclass model.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, 'checkpoint does not exist')
    try:
        raw = torch.load(path, map_location='cpu', weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise InputFileError(
            path,
            'cannot be read as a PyTorch checkpoint '
            f'({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__})',
        ) from None
    if not isinstance(raw, dict) or 'state_dict' not in raw:
        raise InputFileError(path, 'is not a Lightning checkpoint (no state_dict)')
    stats = raw.get('SARDamageDataModule', {}).get('statistics')
    if stats is None:
        raise InputFileError(
            path,
            'has no normalisation statistics: save it from a Trainer fitted with a '
            'SARDamageDataModule (trainer.save_checkpoint or ModelCheckpoint)',
        )
    hparams = raw.get('hyper_parameters', {})
    if hparams.get('task', 'binary') != 'binary':
        raise InputFileError(
            path,
            f'is a {hparams.get("task")!r} model; sardamage predict needs a binary '
            'damage model',
        )
    try:
        task = DamageClassification.load_from_checkpoint(path, map_location='cpu')
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise InputFileError(
            path,
            'is not a DamageClassification checkpoint '
            f'({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__})',
        ) from None
    task.eval()
    data_hparams = raw.get('datamodule_hyper_parameters', {})
    sensor = raw.get('SARDamageDataModule', {}).get('sensor')
    if sensor is None:
        warnings.warn(
            f'{path}: the checkpoint does not record the pixel spacing, window size, '
            'polarisation and product type it was trained on (written by an older '
            "version): windows use each product's own pixel spacing; make sure it "
            'is the training spacing',
            UserWarning,
            stacklevel=2,
        )
    return Checkpoint(
        path=path,
        task=task,
        statistics=Normalisation.from_dict(stats),
        modalities=check_modalities(task.hparams['modalities']),
        size_m=float(data_hparams.get('size_m', 32.0)),
        threshold=float(task.threshold),
        temperature=float(task.temperature),
        sensor=None if sensor is None else dict(sensor),
    )


def match_training_sar(
    sar: COSMOSkyMed, sensor: Mapping[str, Any], path: str | os.PathLike[str]
) -> None:
    """Bring a product to what the model was trained on, or say why it differs.

    The product is resampled on the fly to the training pixel spacing when its own
    differs (TorchGeo reads it at ``sar.res``; a coarser product is upsampled, with a
    warning, since the model was trained on finer detail); a product whose CRS is
    not in metres cannot be, and is refused. Another polarisation or product type is
    read as it is, with a warning.

    Args:
        sar: the product's dataset (its ``res`` is changed in place).
        sensor: :attr:`Checkpoint.sensor`.
        path: the product, for messages.

    Raises:
        InputFileError: if the product needs resampling but its CRS is not in metres.
    """
    pixel_m = float(sensor['pixel_m'])
    xres, yres = (float(v) for v in sar.res)
    if not (np.isclose(xres, pixel_m) and np.isclose(yres, pixel_m)):
        crs = CRS.from_user_input(sar.crs)
        unit = crs.axis_info[0].unit_name if crs.axis_info else ''
        if not crs.is_projected or unit not in ('metre', 'meter'):
            raise InputFileError(
                path,
                f'its pixel spacing is {xres:g} x {yres:g} in {crs.to_string()} (not '
                f'metres) and the model was trained at {pixel_m:g} m: windows cannot '
                'be resampled to the training spacing; reproject the product to a '
                'projected CRS in metres (e.g. UTM with gdalwarp)',
            )
        if max(xres, yres) > pixel_m * 1.01:
            warnings.warn(
                f'{path}: pixel spacing {xres:g} x {yres:g} m is coarser than the '
                f'{pixel_m:g} m the model was trained at; it is upsampled, and the '
                'model sees less detail than in training: expect lower accuracy',
                UserWarning,
                stacklevel=2,
            )
        sar.res = (pixel_m, pixel_m)
    regex = re.compile(COSMOSkyMed.filename_regex, re.VERBOSE)
    products = set()
    for file in sar.files:
        match = regex.match(os.path.basename(file))
        if match is not None:
            products.add(f'{match.group("mission")} {match.group("product")}')
    for what, have, trained in (
        ('polarisation', set(sar.bands), set(sensor.get('polarisations', ()))),
        ('product type', products, set(sensor.get('product_types', ()))),
    ):
        if trained and have and not have <= trained:
            warnings.warn(
                f"{path}: {what} {', '.join(sorted(have))} differs from the model's "
                f'training data ({", ".join(sorted(trained))}); backscatter differs '
                'between them, so probabilities may be biased',
                UserWarning,
                stacklevel=2,
            )


def _require_file(path: str | os.PathLike[str], what: str) -> str:
    if not Path(path).is_file():
        raise InputFileError(path, f'{what} file does not exist')
    return os.fspath(path)


def _bad_geometry(geoms: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Geometries that cannot be a building outline (as ``drop_bad_geometries``)."""
    missing = np.asarray(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    kinds = np.asarray(shapely.get_type_id(geoms))
    polygon = np.isin(kinds, (3, 6)) & ~missing  # Polygon, MultiPolygon
    area = np.where(polygon, shapely.area(geoms), 0.0)
    valid = np.where(polygon, shapely.is_valid(geoms), False)
    bad: npt.NDArray[np.bool_] = missing | ~polygon | (area <= 0) | ~valid
    return bad


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
    ) -> None:
        """Open the inputs and plan the chunks.

        Args:
            sar: COSMO-SkyMed/CSG product files (HDF5 or GTC GeoTIFF).
            buildings: footprints (any vector file GDAL reads, any CRS).
            modalities: the model's modalities (``dsm`` needs ``dsm``, ``gem``
                needs ``gem``).
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

        Raises:
            ArgumentError: if a modality of the model has no input or a number is
                out of range.
            InputFileError: if an input is missing, unreadable or does not cover the
                footprints, or the SAR cannot be resampled to the training spacing.
        """
        if batch_size < 1:
            raise ArgumentError(f'batch_size must be at least 1, not {batch_size}')
        self.modalities = check_modalities(modalities)
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
        self._inputs: _Inputs | None = None
        inputs = self.inputs

        try:
            info = pyogrio.read_info(self.buildings, layer=layer)
            fids, bounds = pyogrio.read_bounds(self.buildings, layer=layer)
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
        self.crs = CRS.from_user_input(info['crs'])
        self.layer_name = str(info.get('layer_name') or Path(self.buildings).stem)
        self.fids = np.asarray(fids, dtype=np.int64)
        sar_crs = CRS.from_user_input(inputs.sar.crs)
        cx = (bounds[0] + bounds[2]) / 2
        cy = (bounds[1] + bounds[3]) / 2
        if self.crs != sar_crs:
            transformer = Transformer.from_crs(self.crs, sar_crs, always_xy=True)
            cx, cy = transformer.transform(cx, cy)
        self.centres = np.column_stack([cx, cy]).astype(np.float64)
        left, bottom, right, top = (float(v) for v in inputs.sar.index.total_bounds)
        inside = (cx >= left) & (cx <= right) & (cy >= bottom) & (cy <= top)
        inside &= np.isfinite(cx) & np.isfinite(cy)
        if not inside.any():
            raise InputFileError(
                self.sar_paths[0],
                f'covers none of the {len(fids)} footprints of {self.buildings} '
                f'(SAR bounds {left:.0f}, {bottom:.0f}, {right:.0f}, {top:.0f} in '
                f'{sar_crs.to_string()}); is it the right product for this area?',
            )
        #: Positions (input order) of buildings outside the SAR product's box.
        self.outside = np.flatnonzero(~inside)
        xres, yres = inputs.sar.res
        tile_x, tile_y = TILE_PIXELS * xres, TILE_PIXELS * yres
        position = np.flatnonzero(inside)
        row = np.floor((top - cy[position]) / tile_y)
        col = np.floor((cx[position] - left) / tile_x)
        order = np.lexsort((cx[position], -cy[position], col, row))
        position = position[order]
        #: Input positions of each chunk, in raster-block order.
        self.chunks = [
            position[i : i + batch_size] for i in range(0, len(position), batch_size)
        ]
        #: Chunks from this one on hold buildings outside the SAR product only.
        self.first_outside = len(self.chunks)
        if len(self.outside):
            self.chunks += [
                self.outside[i : i + batch_size]
                for i in range(0, len(self.outside), batch_size)
            ]

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
            sar = COSMOSkyMed(paths=self.sar_paths, units='db')
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
        inputs = self.inputs
        frame = self._read_area(positions)
        bad = _bad_geometry(frame.geometry.to_numpy())
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
        sar = inputs.sar
        res = (float(sar.res[0]), float(sar.res[1]))
        chunk_status = status
        local = targets.to_crs(sar.crs)
        centroid = local.geometry.centroid
        centre = centroid.where(
            local.geometry.contains(centroid), local.geometry.representative_point()
        ).to_numpy()
        covered = np.ones(len(targets), dtype=bool)
        for name, coverage in inputs.coverages:
            outside = covered & ~shapely.contains(coverage, centre)
            chunk_status[candidates[outside]] = _CODE[name]
            covered &= ~outside
        targets = targets.loc[covered]
        sampled: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        batch: Sample | None = None
        if len(targets):
            sampler = BuildingSampler(
                inputs.base, targets, self.size_m, id_column='_position'
            )
            sampled = np.asarray(sampler.building_ids, dtype=np.int64)
            lost = np.setdiff1d(targets['_position'].to_numpy(), sampled)
            chunk_status[lost] = _CODE['outside_sar']  # on a border: not sampled
            queries = list(sampler)
            if queries:
                footprints = _ChunkFootprints(frame, self.buildings, sar.crs, res)
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore', UserWarning)
                    batch = merge_batches(
                        [
                            extract_batch(inputs.base, queries),
                            extract_batch(footprints, queries),
                        ]
                    )
        if batch is not None:
            # NumPy, single-threaded: small arrays, no thread pool to wake
            count = len(batch['image'])
            finite = np.isfinite(batch['image'].numpy()).reshape(count, -1)
            target = (batch['footprint'].numpy() == 2).reshape(count, -1)
            pixels = target.sum(1)
            fraction = np.where(
                pixels > 0,
                (finite & target).sum(1) / np.maximum(pixels, 1),
                finite.mean(1),
            )
            ok = fraction >= MIN_VALID_SAR_FRACTION
            chunk_status[sampled[~ok]] = _CODE['sar_nodata']
            if ok.any():
                keep_t = torch.from_numpy(ok)
                for key in ('image', 'dsm', 'footprint', 'tabular', 'building_id'):
                    if key in batch:
                        out[key] = batch[key][keep_t]
                sampled = sampled[ok]
            else:
                sampled = np.empty(0, dtype=np.int64)
        else:
            sampled = np.empty(0, dtype=np.int64)
        out['status'] = torch.from_numpy(chunk_status)
        out['assessed'] = torch.from_numpy(positions[sampled].astype(np.int64))
        return out


class CityPredictor(lightning.LightningModule):
    """Runs a trained task on :class:`BuildingChunks` items (``Trainer.predict``).

    ``predict_step`` normalises a chunk's raw batch with the checkpoint's statistics
    and returns, per chunk, the input ``positions``, their ``status`` and, for the
    ``assessed`` buildings, ``probability`` and ``uncertainty`` (MC dropout).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        raw_names: Sequence[str],
        mc_samples: int = MC_SAMPLES,
    ) -> None:
        """Initialise a new CityPredictor.

        Args:
            checkpoint: the loaded checkpoint.
            raw_names: names of the raw batches' ``tabular`` columns.
            mc_samples: Monte Carlo dropout draws (0: no uncertainty).
        """
        super().__init__()
        # channels-last convolutions: about 1.3 times the rate of the default layout
        # on CPU (benchmarks/predict_city.py), the same values to float rounding
        self.task = checkpoint.task.to(memory_format=torch.channels_last)
        self.statistics = checkpoint.statistics
        self.modalities = checkpoint.modalities
        self.raw_names = list(raw_names)
        self.mc_samples = mc_samples

    def forward(self, batch: Sample) -> tuple[Tensor, Tensor]:
        """Probability and uncertainty of a raw batch.

        Args:
            batch: a raw batch (``image``, ``footprint``, ``tabular``...).

        Returns:
            ``probability`` and ``uncertainty``, ``[B]``.
        """
        model_batch = normalise_batch(
            batch, self.statistics, self.modalities, self.raw_names
        )
        probability, uncertainty = self.task.probabilities_with_uncertainty(
            model_batch, self.mc_samples
        )
        return probability, uncertainty

    def predict_step(
        self, batch: Sample, batch_idx: int = 0, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """Predict one chunk.

        Args:
            batch: an item of :class:`BuildingChunks`.
            batch_idx: index of the chunk.
            dataloader_idx: index of the dataloader.

        Returns:
            ``positions``, ``status``, ``assessed``, ``probability``,
            ``uncertainty`` (on the CPU).
        """
        if 'image' in batch and len(batch['assessed']):
            # dropout draws seeded by the chunk: the same on any process or device
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(batch['positions'][0]))
                probability, uncertainty = self(batch)
        else:
            probability = uncertainty = torch.empty(0)
        return {
            'positions': batch['positions'].cpu(),
            'status': batch['status'].cpu(),
            'assessed': batch['assessed'].cpu(),
            'probability': probability.float().cpu(),
            'uncertainty': uncertainty.float().cpu(),
        }


@dataclass
class Results:
    """Per-building results in input order (a few bytes per building).

    Attributes:
        probability: calibrated damage probability (NaN: not assessed).
        uncertainty: MC dropout standard deviation (NaN: not assessed).
        status: codes of :data:`STATUSES` (-1: not reported).
    """

    probability: npt.NDArray[np.float32]
    uncertainty: npt.NDArray[np.float32]
    status: npt.NDArray[np.int8]

    @classmethod
    def empty(cls, n: int) -> 'Results':
        """Results of ``n`` buildings, none reported yet."""
        return cls(
            np.full(n, np.nan, dtype=np.float32),
            np.full(n, np.nan, dtype=np.float32),
            np.full(n, _PENDING, dtype=np.int8),
        )

    def update(self, output: Mapping[str, Tensor]) -> None:
        """Record the output of one :meth:`CityPredictor.predict_step`."""
        positions = output['positions'].numpy()
        status = output['status'].numpy()
        assessed = output['assessed'].numpy()
        self.status[positions] = np.where(status == _PENDING, _CODE['ok'], status)
        self.probability[assessed] = output['probability'].numpy()
        self.uncertainty[assessed] = output['uncertainty'].numpy()


class PartWriter(BasePredictionWriter):
    """Keeps each process's predictions and writes them as one part per process.

    Part ``part-<rank>.npz`` holds ``probability``, ``uncertainty`` and ``status``
    over all buildings (status -1 where another process predicted the building);
    :func:`merge_parts` combines them.

    .. versionadded:: 0.1
    """

    def __init__(self, folder: str | os.PathLike[str], buildings: int) -> None:
        """Initialise a new PartWriter.

        Args:
            folder: where the parts go.
            buildings: number of input buildings.
        """
        super().__init__(write_interval='batch')
        self.folder = Path(folder)
        self.results = Results.empty(buildings)

    def write_on_batch_end(
        self,
        trainer: lightning.Trainer,
        pl_module: lightning.LightningModule,
        prediction: Mapping[str, Tensor],
        batch_indices: Sequence[int] | None,
        batch: Sample,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Record a chunk's predictions (see :class:`BasePredictionWriter`)."""
        self.results.update(prediction)

    def on_predict_end(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule
    ) -> None:
        """Write this process's part."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f'part-{trainer.global_rank}.npz'
        tmp = self.folder / f'.part-{trainer.global_rank}.tmp.npz'
        np.savez(
            tmp,
            probability=self.results.probability,
            uncertainty=self.results.uncertainty,
            status=self.results.status,
        )
        os.replace(tmp, path)


def merge_parts(parts: Sequence[str | os.PathLike[str]], buildings: int) -> Results:
    """Merge the parts of :class:`PartWriter` into one set of results.

    Args:
        parts: the ``part-<rank>.npz`` files.
        buildings: number of input buildings.

    Returns:
        The merged results (a building reported by several processes, as a
        distributed sampler may repeat some, keeps the first part's values).

    Raises:
        OutputError: if a part is missing buildings no other part has.
    """
    merged = Results.empty(buildings)
    for part in parts:
        with np.load(part) as data:
            status = data['status']
            take = (merged.status == _PENDING) & (status != _PENDING)
            merged.status[take] = status[take]
            merged.probability[take] = data['probability'][take]
            merged.uncertainty[take] = data['uncertainty'][take]
    pending = int((merged.status == _PENDING).sum())
    if pending:
        raise OutputError(
            Path(parts[0]).parent if parts else '.',
            f'{pending} buildings are in no prediction part; was a process killed?',
        )
    return merged


def write_layer(
    buildings: str | os.PathLike[str],
    out: str | os.PathLike[str],
    results: Results,
    fids: npt.NDArray[np.int64],
    threshold: float,
    layer: str,
    input_layer: str | int | None = None,
    progress: bool = True,
) -> None:
    """Write the footprints with the prediction columns, in input order, streamed.

    Args:
        buildings: the input footprints.
        out: the GeoPackage to write (a temporary file: the caller renames it).
        results: per-building results, in the order of ``fids``.
        fids: feature ids of the input, in read order.
        threshold: decision threshold of ``damage``.
        layer: name of the output layer.
        input_layer: layer of ``buildings``.
        progress: show a progress bar.
    """
    order = np.argsort(fids, kind='stable')
    sorted_fids = fids[order]
    total = int(pyogrio.read_info(buildings, layer=input_layer)['features'])
    labels = np.array(STATUSES, dtype=object)
    written = 0
    with tqdm(
        total=total, desc='writing', unit='building', disable=not progress
    ) as bar:
        while written < total:
            frame = pyogrio.read_dataframe(
                buildings,
                layer=input_layer,
                skip_features=written,
                max_features=WRITE_CHUNK,
                fid_as_index=True,
            )
            if frame.empty:
                break
            where = np.searchsorted(sorted_fids, frame.index.to_numpy())
            where = np.clip(where, 0, len(sorted_fids) - 1)
            known = sorted_fids[where] == frame.index.to_numpy()
            position = order[where]
            status = np.where(
                known, results.status[position], _CODE['invalid_geometry']
            )
            ok = status == _CODE['ok']
            probability = np.where(ok, results.probability[position], np.nan)
            uncertainty = np.where(ok, results.uncertainty[position], np.nan)
            frame = frame.drop(
                columns=[c for c in OUTPUT_COLUMNS if c in frame.columns]
            )
            frame['damage_prob'] = probability.astype(np.float64)
            frame['damage'] = pd.array(
                np.where(ok, probability >= threshold, False).astype(np.int64),
                dtype='Int64',
            )
            frame.loc[~ok, 'damage'] = pd.NA
            frame['uncertainty'] = uncertainty.astype(np.float64)
            frame['status'] = labels[status]
            frame = frame.reset_index(drop=True)
            pyogrio.write_dataframe(
                frame,
                out,
                layer=layer,
                driver='GPKG',
                append=written > 0,
                promote_to_multi=False,
            )
            written += len(frame)
            bar.update(len(frame))


@dataclass
class PredictionSummary:
    """What :func:`predict_buildings` did.

    Attributes:
        out: the GeoPackage written.
        map: the PNG map, if drawn.
        buildings: input footprints.
        counts: buildings per status.
        threshold: decision threshold used.
        temperature: calibration temperature used.
        damaged: buildings predicted damaged.
    """

    out: Path
    map: Path | None
    buildings: int
    counts: dict[str, int]
    threshold: float
    temperature: float
    damaged: int


def _temporary(out: Path, tag: str) -> Path:
    return out.with_name(f'.{out.name}.{os.getpid()}.{tag}')


def predict_buildings(
    sar: Sequence[str | os.PathLike[str]],
    buildings: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    dsm: str | os.PathLike[str] | None = None,
    gem: Sequence[str | os.PathLike[str]] = (),
    admin: str | os.PathLike[str] | None = None,
    map_path: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    accelerator: str = 'cpu',
    devices: int = 1,
    strategy: str | None = None,
    num_workers: int = 0,
    mc_samples: int = MC_SAMPLES,
    overwrite: bool = False,
    layer: str | int | None = None,
    progress: bool = True,
    gem_id_columns: Mapping[str, str] | str | None = None,
) -> PredictionSummary | None:
    """Predict the damage of every footprint and write a GeoPackage (and a map).

    See the module docstring for the output columns and how it streams.

    Args:
        sar: COSMO-SkyMed/CSG product files (HDF5 or GTC GeoTIFF) of one acquisition.
        buildings: footprints (GeoPackage, GeoJSON, Shapefile, FlatGeobuf; any CRS).
        checkpoint: a checkpoint of :class:`DamageClassification` saved by a Trainer
            fitted with :class:`~torchgeo_sar_damage.datamodules.SARDamageDataModule`.
        out: the GeoPackage to write (``.gpkg``).
        dsm: pre-event DSM GeoTIFF (needed by models with ``'dsm'``).
        gem: GEM exposure CSV files (needed by models with ``'gem'``).
        admin: polygons of the exposure's administrative units.
        map_path: also draw a PNG map here (SAR quick-look of the first GeoTIFF of
            ``sar``, footprints coloured by probability, legend, scale bar, north
            arrow, product and date in the title); reads the whole layer back.
        batch_size: buildings per chunk.
        accelerator: Lightning accelerator (``'cpu'``, ``'gpu'``, ``'auto'``).
        devices: processes (DDP when more than one).
        strategy: Lightning strategy (default ``'ddp'`` for several devices).
        num_workers: dataloader workers reading chunks beside the model.
        mc_samples: Monte Carlo dropout draws for ``uncertainty``.
        overwrite: replace an existing ``out`` (and ``map_path``).
        layer: layer of ``buildings``.
        progress: show progress bars.
        gem_id_columns: column of ``admin`` that holds GEM's codes (a name, or a
            mapping such as ``{'ID_1': 'ISO_1'}``; see :class:`BuildingChunks`).

    Returns:
        The summary (None on the non-zero ranks of a distributed run).

    Raises:
        ArgumentError: if an argument is invalid or an input the model needs is not
            given.
        InputFileError: if an input file is missing, unreadable or does not cover
            the footprints.
        OutputError: if ``out`` exists (without ``overwrite``) or cannot be written.
    """
    out = Path(out)
    if out.suffix.lower() != '.gpkg':
        raise ArgumentError(f'--out must be a GeoPackage (.gpkg), not {out}')
    outputs = [out] + ([Path(map_path)] if map_path is not None else [])
    for path in outputs:
        if path.exists() and not overwrite:
            raise OutputError(path, 'exists; pass --overwrite to replace it')
        if not path.parent.is_dir():
            raise OutputError(path, f'its folder {path.parent} does not exist')
    if map_path is not None and not any(
        str(p).lower().endswith(('.tif', '.tiff')) for p in sar
    ):
        raise ArgumentError('--map needs a GTC GeoTIFF among --sar (the backdrop)')
    if mc_samples < 0:
        raise ArgumentError(f'mc_samples must be >= 0, not {mc_samples}')
    ckpt = load_checkpoint(checkpoint)
    # rasterio passes an integer GDAL_CACHEMAX to GDALSetCacheMax64: bytes, not MB
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX_MB * 1024 * 1024):
        chunks = BuildingChunks(
            sar,
            buildings,
            ckpt.modalities,
            ckpt.size_m,
            dsm=dsm,
            gem=gem,
            admin=admin,
            batch_size=batch_size,
            layer=layer,
            sensor=ckpt.sensor,
            gem_id_columns=gem_id_columns,
        )
        predictor = CityPredictor(ckpt, chunks.raw_names, mc_samples)
        n = len(chunks.fids)
        # the same folder for every process of a distributed run
        parts = out.with_name(f'.{out.name}.parts')
        tmp = _temporary(out, 'tmp.gpkg')
        writer = PartWriter(parts, n)
        trainer = lightning.Trainer(
            accelerator=accelerator,
            devices=devices,
            strategy=strategy or ('ddp' if devices > 1 else 'auto'),
            logger=False,
            callbacks=[writer],
            enable_checkpointing=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
            default_root_dir=str(parts),
        )
        loader = DataLoader(
            chunks, batch_size=None, num_workers=num_workers, persistent_workers=False
        )
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings('ignore', "Couldn't infer the batch indices")
                try:
                    trainer.predict(predictor, loader, return_predictions=False)
                except SystemExit:
                    # Lightning turns Ctrl-C into SystemExit(1): keep it an interrupt
                    if trainer.interrupted:
                        raise KeyboardInterrupt from None
                    raise  # pragma: no cover - any other exit passes unchanged
            trainer.strategy.barrier()
            if trainer.global_rank != 0:
                return None
            files = sorted(parts.glob('part-*.npz'))
            results = merge_parts(files, n) if devices > 1 else writer.results
            if (results.status == _PENDING).any():
                raise OutputError(out, 'some buildings were not predicted')
            write_layer(
                chunks.buildings,
                tmp,
                results,
                chunks.fids,
                ckpt.threshold,
                layer=chunks.layer_name,
                input_layer=layer,
                progress=progress,
            )
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            if trainer.global_rank == 0:
                shutil.rmtree(parts, ignore_errors=True)
    counts = {
        name: int((results.status == code).sum()) for code, name in enumerate(STATUSES)
    }
    ok = results.status == _CODE['ok']
    damaged = int((results.probability[ok] >= ckpt.threshold).sum())
    drawn = None
    if map_path is not None:
        drawn = draw_map(out, sar, Path(map_path), chunks.layer_name)
    return PredictionSummary(
        out=out,
        map=drawn,
        buildings=n,
        counts=counts,
        threshold=ckpt.threshold,
        temperature=ckpt.temperature,
        damaged=damaged,
    )


def draw_map(
    layer_path: str | os.PathLike[str],
    sar: Sequence[str | os.PathLike[str]],
    out_png: Path,
    layer: str | None = None,
) -> Path:
    """Draw the prediction map of a written layer over the SAR quick-look.

    Args:
        layer_path: the GeoPackage written by :func:`predict_buildings`.
        sar: the SAR files (the first GeoTIFF is the backdrop).
        out_png: the PNG to write (atomically).
        layer: the layer to read.

    Returns:
        ``out_png``.
    """
    import matplotlib.pyplot as plt

    from .plot import plot_prediction_map

    backdrop = next(
        os.fspath(p) for p in sar if str(p).lower().endswith(('.tif', '.tiff'))
    )
    with rasterio.open(backdrop) as src:
        crs = src.crs
    table = gpd.read_file(layer_path, layer=layer).to_crs(crs)
    fig = plot_prediction_map(
        backdrop,
        table,
        None,
        out_png,
        title=f'Predicted building damage ({int(table["damage_prob"].notna().sum())} '
        f'of {len(table)} buildings assessed)',
    )
    plt.close(fig)
    return out_png
