# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The model over chunks (Lightning) and :func:`predict_buildings`."""

import math
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning
import numpy as np
import rasterio
import rasterio.warp
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchgeo.datasets.utils import Sample

from ..batch import normalise_batch
from ..datasets.cosmo_skymed import Calibration
from ..errors import ArgumentError, OutputError
from ..prior_shift import adapt_to_town, expected_f1_threshold
from ..utils import write_atomic
from .checkpoint import Checkpoint, load_checkpoint
from .chunks import _CODE, _PENDING, BATCH_KEYS, STATUSES, BuildingChunks
from .onnx_runtime import onnx_encoders, onnxruntime_available
from .output import (
    PartWriter,
    PredictionSummary,
    Results,
    draw_map,
    merge_parts,
    summary_path,
    write_layer,
)
from .quantize import calibration_chunks, quantize_encoders
from .read_ahead import ReadAhead

#: Monte Carlo dropout draws of the fusion head for ``uncertainty``.
MC_SAMPLES = 20

#: Model batches read together in one chunk by default (``chunk_size`` of
#: :func:`predict_buildings`): reading 1,024 buildings at once instead of 256 reads
#: the raster blocks and footprints neighbouring windows share fewer times (about
#: 1.3 times the reading rate on the benchmark town).
CHUNK_BATCHES = 4


#: GDAL block cache while predicting (MB): memory must not grow with the city.
GDAL_CACHEMAX_MB = 64

#: Rules of the decision threshold when the probabilities are not adapted to the
#: town (``threshold`` of :func:`predict_buildings`, ``sardamage predict
#: --threshold``): the validation town's, recorded in the checkpoint, or the
#: expected-F1 threshold of the town's own calibrated probabilities
#: (:func:`~torchgeo_sar_damage.prior_shift.expected_f1_threshold`).
THRESHOLD_RULES = ('checkpoint', 'expected-f1')


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
        batch_size: int | None = None,
    ) -> None:
        """Initialise a new CityPredictor.

        Args:
            checkpoint: the loaded checkpoint.
            raw_names: names of the raw batches' ``tabular`` columns.
            mc_samples: Monte Carlo dropout draws (0: no uncertainty).
            batch_size: buildings per model batch: a chunk's assessed buildings are
                predicted this many at a time (None: the whole chunk at once).

        .. versionchanged:: 0.4
           *batch_size*.
        """
        super().__init__()
        # channels-last convolutions: about 1.3 times the rate of the default layout
        # on CPU (benchmarks/predict_city.py), the same values to float rounding
        self.task = checkpoint.task.to(memory_format=torch.channels_last)
        self.statistics = checkpoint.statistics
        self.modalities = checkpoint.modalities
        self.raw_names = list(raw_names)
        self.mc_samples = mc_samples
        self.batch_size = batch_size

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

    def _model_batches(self, batches: Sequence[Sample]) -> list[Sample]:
        """The normalised model batches of raw batches with assessed buildings.

        Puts the model in evaluation mode first (for the encoder switches).
        """
        self.task.eval()
        return [
            normalise_batch(b, self.statistics, self.modalities, self.raw_names)
            for b in batches
            if 'image' in b and len(b['assessed'])
        ]

    def quantize(self, batches: Sequence[Sample]) -> None:
        """Quantise the image encoders to int8, calibrated on raw batches (in place).

        Not exact (see :mod:`~torchgeo_sar_damage.predict.quantize`); CPU only.

        Args:
            batches: raw batches of the town (items of :class:`BuildingChunks`);
                those without assessed buildings are skipped.
        """
        quantize_encoders(self.task.model.fusion, self._model_batches(batches))

    def use_onnx(self, batches: Sequence[Sample]) -> None:
        """Run the image encoders on ONNX Runtime, exported on raw batches (in place).

        The same probabilities to float rounding, checked on the first windows (see
        :mod:`~torchgeo_sar_damage.predict.onnx_runtime`); CPU only.

        Args:
            batches: raw batches of the town (items of :class:`BuildingChunks`);
                those without assessed buildings are skipped.
        """
        onnx_encoders(self.task.model.fusion, self._model_batches(batches))

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
        assessed = batch['assessed']
        if 'image' in batch and len(assessed):
            step = self.batch_size or len(assessed)
            results = []
            for start in range(0, len(assessed), step):
                rows = {
                    k: batch[k][start : start + step] for k in BATCH_KEYS if k in batch
                }
                # dropout draws seeded by the batch's first building: the same on any
                # process or device
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(assessed[start]))
                    results.append(self(rows))
            probability = torch.cat([p for p, _ in results])
            uncertainty = torch.cat([u for _, u in results])
        else:
            probability = uncertainty = torch.empty(0)
        return {
            'positions': batch['positions'].cpu(),
            'status': batch['status'].cpu(),
            'assessed': batch['assessed'].cpu(),
            'probability': probability.float().cpu(),
            'uncertainty': uncertainty.float().cpu(),
        }


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
    chunk_size: int | None = None,
    accelerator: str = 'cpu',
    devices: int = 1,
    strategy: str | None = None,
    num_workers: int = 0,
    mc_samples: int = MC_SAMPLES,
    overwrite: bool = False,
    layer: str | int | None = None,
    progress: bool = True,
    gem_id_columns: Mapping[str, str] | str | None = None,
    sar_units: str | None = None,
    calibration: Calibration | None = None,
    adapt_prior: bool = False,
    quantize: bool = False,
    threshold: str = 'expected-f1',
    onnx: bool | None = None,
    read_ahead: bool = True,
) -> PredictionSummary | None:
    """Predict the damage of every footprint and write a GeoPackage (and a map).

    See the module docstring for the output columns and how it streams.

    With ``adapt_prior`` (off by default: on the unseen towns of the full study,
    ``docs/results/study.md``, it made the calibration and the damaged-share
    estimate worse, since the towns differ in how damage looks and not only in how
    much of it there is), once every building is predicted, the
    probabilities of the assessed buildings are adapted to the town's own damage
    rate, estimated from them without labels
    (:func:`~torchgeo_sar_damage.prior_shift.adapt_to_town`, from the validation
    town's rate recorded in the checkpoint): ``damage_prob`` holds the adapted
    probabilities and ``damage`` the decision at their expected-F1 threshold. The
    probabilities stay as calibrated, with the threshold of ``threshold``, when
    ``adapt_prior`` is False, when the checkpoint does not record the validation
    town's rate (written before it was; a warning says so), and when
    :func:`~torchgeo_sar_damage.prior_shift.adapt_to_town` fails safe (fewer than 30
    assessed buildings, EM not converging or running to 0 or 1, an interval wider
    than 0.5; a warning). ``uncertainty`` is always the
    Monte Carlo dropout spread of the probability before adaptation.

    The summary (:class:`PredictionSummary`: the estimated damaged share and its
    interval, the threshold, whether the probabilities were adapted and why not,
    counts per status) is also written beside ``out`` as JSON
    (``damage.gpkg`` -> ``damage.summary.json``, :func:`summary_path`).

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
        batch_size: buildings per model batch.
        chunk_size: buildings read together (one chunk), then predicted
            ``batch_size`` at a time; default :data:`CHUNK_BATCHES` times
            ``batch_size``. Larger chunks read the raster blocks and footprints that
            neighbouring windows share fewer times, and hold more memory (about
            40 kB per building, a few chunks at a time).
        accelerator: Lightning accelerator (``'cpu'``, ``'gpu'``, ``'auto'``).
        devices: processes (DDP when more than one).
        strategy: Lightning strategy (default ``'ddp'`` for several devices).
        num_workers: dataloader workers reading chunks beside the model.
        mc_samples: Monte Carlo dropout draws for ``uncertainty``.
        overwrite: replace an existing ``out`` (and its summary file and
            ``map_path``).
        layer: layer of ``buildings``.
        progress: show progress bars.
        gem_id_columns: column of ``admin`` that holds GEM's codes (a name, or a
            mapping such as ``{'ID_1': 'ISO_1'}``; see :class:`BuildingChunks`).
        sar_units: what the model reads of the SAR, ``'db'`` (sigma nought) or
            ``'dn'`` (digital numbers): the checkpoint's by default; another value
            is refused, since a model reads what it was trained on.
        calibration: calibration attributes for products that lack them, e.g. a
            clipped CSG GTC GeoTIFF without metadata tags (``calibration`` of
            :class:`~torchgeo_sar_damage.datasets.COSMOSkyMed`).
        adapt_prior: adapt the probabilities and the threshold to the town's
            estimated damage rate (label shift; see above).
        quantize: run the image encoders in int8 (post-training static
            quantisation calibrated on :data:`~.quantize.CALIBRATION_CHUNKS` chunks
            spread over the town; CPU only). **Not exact**: about twice the
            model's rate on CPU, probabilities within about 0.01 of the float
            model's (:mod:`~torchgeo_sar_damage.predict.quantize`).
        threshold: where ``damage``'s threshold comes from when the probabilities
            are not adapted (:data:`THRESHOLD_RULES`): ``'expected-f1'`` (the
            default), the expected-F1 threshold of the town's calibrated
            probabilities, chosen without labels like the adapted threshold but
            without re-weighting the probabilities; or ``'checkpoint'``, the
            validation town's. On the full study's unseen towns the town's own
            threshold raised every FusionNet model's mean F1 (better in 123 of 160
            runs). Adapted probabilities always use their own expected-F1
            threshold.
        onnx: run the image encoders on ONNX Runtime
            (:mod:`~torchgeo_sar_damage.predict.onnx_runtime`; the same
            probabilities to float rounding, checked on the town's first windows).
            None (the default): on the CPU, without ``quantize``, where ``onnx``
            and ``onnxruntime`` are installed, falling back to PyTorch with a
            warning if an encoder cannot be exported; True: required; False:
            PyTorch only.
        read_ahead: read the next chunks in a background thread while the model
            predicts (:class:`~torchgeo_sar_damage.predict.read_ahead.ReadAhead`;
            the same chunks in the same order, so the same output), with one
            device and ``num_workers=0``; more processes or dataloader workers
            read as they do without it.

    Returns:
        The summary (None on the non-zero ranks of a distributed run).

    Raises:
        ArgumentError: if an argument is invalid or an input the model needs is not
            given.
        InputFileError: if an input file is missing, unreadable or does not cover
            the footprints.
        OutputError: if ``out``, its summary file or ``map_path`` exists (without
            ``overwrite``) or cannot be written.
    """
    out = Path(out)
    _check_arguments(out, sar, map_path, overwrite, mc_samples)
    if threshold not in THRESHOLD_RULES:
        raise ArgumentError(
            f'threshold={threshold!r}: choose one of {", ".join(THRESHOLD_RULES)}'
        )
    if batch_size < 1 or (chunk_size is not None and chunk_size < 1):
        raise ArgumentError(
            f'batch_size and chunk_size must be at least 1, not {batch_size} and '
            f'{chunk_size}'
        )
    if quantize and accelerator != 'cpu':
        raise ArgumentError(
            f'--quantize runs int8 kernels on the CPU only, not on {accelerator!r}; '
            'leave --quantize out or predict with --accelerator cpu'
        )
    if onnx and (quantize or accelerator != 'cpu'):
        raise ArgumentError(
            '--onnx runs the float encoders on ONNX Runtime on the CPU: it excludes '
            f'--quantize and --accelerator {accelerator}; leave --onnx out'
        )
    ckpt = load_checkpoint(checkpoint)
    trained = str((ckpt.sensor or {}).get('sar_units', 'db'))
    if sar_units is not None and sar_units != trained:
        raise ArgumentError(
            f'--sar-units {sar_units}: the model was trained on {trained!r} '
            f'({"digital numbers" if trained == "dn" else "sigma nought in dB"}) and '
            'reads the SAR the same way; leave --sar-units out'
        )
    with _gdal_env():
        chunks = BuildingChunks(
            sar,
            buildings,
            ckpt.modalities,
            ckpt.size_m,
            dsm=dsm,
            gem=gem,
            admin=admin,
            batch_size=chunk_size or CHUNK_BATCHES * batch_size,
            layer=layer,
            sensor=ckpt.sensor,
            gem_id_columns=gem_id_columns,
            calibration=calibration,
        )
        # the same folder for every process of a distributed run
        parts = out.with_name(f'.{out.name}.parts')
        writer = PartWriter(parts, len(chunks.fids))
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
        data: Dataset[Sample] = chunks
        if read_ahead and num_workers == 0 and devices == 1:
            data = ReadAhead(chunks, context=_gdal_env)
        loader = DataLoader(
            data, batch_size=None, num_workers=num_workers, persistent_workers=False
        )
        predictor = CityPredictor(ckpt, chunks.raw_names, mc_samples, batch_size)
        if quantize:
            predictor.quantize(
                [chunks[i] for i in calibration_chunks(chunks.first_outside)]
            )
        elif accelerator == 'cpu' and onnx is not False:
            _use_onnx(predictor, chunks, required=bool(onnx))
        try:
            _run(trainer, predictor, loader)
            if trainer.global_rank != 0:
                return None
            files = sorted(parts.glob('part-*.npz'))
            results = (
                merge_parts(files, len(chunks.fids)) if devices > 1 else writer.results
            )
            rate = _adapt(results, ckpt, adapt_prior, threshold)
            _write(chunks, results, out, rate.threshold, layer, progress)
        finally:
            if trainer.global_rank == 0:
                shutil.rmtree(parts, ignore_errors=True)
    summary = _summarise(results, rate, ckpt, out, sar)
    if map_path is not None:
        summary.map = draw_map(
            out,
            sar,
            Path(map_path),
            chunks.layer_name,
            estimate=summary.damaged_share_estimate,
            interval=summary.damaged_share_interval,
            adapted=summary.prior_adapted,
        )
    summary.summary_file = summary.write(summary_path(out))
    return summary


def _gdal_env() -> rasterio.Env:
    """GDAL's settings while predicting (per thread: the reader thread enters its own)."""
    # rasterio passes an integer GDAL_CACHEMAX to GDALSetCacheMax64: bytes, not MB
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX_MB * 1024 * 1024)


@dataclass(frozen=True)
class _TownRate:
    """The town's damage rate as :func:`predict_buildings` reports it."""

    threshold: float
    estimate: float
    interval: tuple[float, float] | None
    adapted: bool
    reason: str | None
    rule: str


def _adapt(
    results: Results, ckpt: Checkpoint, adapt_prior: bool, rule: str
) -> _TownRate:
    """Adapt the assessed buildings' probabilities to the town's rate, in place.

    Returns the threshold to decide ``damage`` at and what to report; when not
    adapted, the threshold of ``rule`` (:data:`THRESHOLD_RULES`) and the mean
    probability.
    """
    ok = results.status == _CODE['ok']
    p = results.probability[ok].astype(np.float64)
    reason: str | None
    if not adapt_prior:
        reason = 'adaptation turned off (adapt_prior=False, --no-adapt-prior)'
    elif math.isnan(ckpt.validation_prior):
        reason = (
            "the checkpoint does not record the validation town's damage rate "
            '(it predates calibration records)'
        )
        warnings.warn(
            f'{ckpt.path}: {reason}; damage probabilities are not adapted to the '
            "town's damage rate and the checkpoint's threshold is used; retrain "
            'the model (sardamage fit) to adapt them',
            UserWarning,
            stacklevel=3,
        )
    else:
        shift = adapt_to_town(p, ckpt.validation_prior)
        if shift.adapted:
            results.probability[ok] = shift.probabilities.astype(np.float32)
            return _TownRate(
                shift.threshold,
                shift.estimate,
                shift.interval,
                True,
                None,
                'adapted-expected-f1',
            )
        reason = shift.reason
    estimate = float(p.mean()) if p.size else math.nan
    if rule == 'expected-f1' and p.size:
        return _TownRate(expected_f1_threshold(p), estimate, None, False, reason, rule)
    return _TownRate(ckpt.threshold, estimate, None, False, reason, 'checkpoint')


def _summarise(
    results: Results,
    rate: _TownRate,
    ckpt: Checkpoint,
    out: Path,
    sar: Sequence[str | os.PathLike[str]],
) -> PredictionSummary:
    """The summary of a finished run (no map, no summary file yet)."""
    ok = results.status == _CODE['ok']
    p = results.probability[ok].astype(np.float64)
    return PredictionSummary(
        out=out,
        map=None,
        buildings=len(results.status),
        counts={
            name: int((results.status == code).sum())
            for code, name in enumerate(STATUSES)
        },
        threshold=rate.threshold,
        temperature=ckpt.temperature,
        calibration_bias=ckpt.calibration_bias,
        damaged=int((p >= rate.threshold).sum()),
        assessed=int(ok.sum()),
        damaged_share_estimate=rate.estimate,
        damaged_share_interval=rate.interval,
        expected_damaged=float(p.sum()),
        prior_adapted=rate.adapted,
        threshold_rule=rate.rule,
        source_prior=ckpt.validation_prior,
        reason=rate.reason,
        checkpoint=ckpt.path,
        sar=[Path(f) for f in sar],
    )


def _use_onnx(predictor: CityPredictor, chunks: BuildingChunks, required: bool) -> None:
    """Switch the encoders to ONNX Runtime on the first chunk with a window.

    Without ``required``, a missing ONNX Runtime leaves PyTorch silently and a
    failed export with a warning.
    """
    if not required and not onnxruntime_available():
        return
    raw = (chunks[i] for i in calibration_chunks(chunks.first_outside))
    batch = next((b for b in raw if 'image' in b and len(b['assessed'])), None)
    if batch is None and not required:
        return  # nothing of the town can be read: nothing to predict with it
    try:
        # without a window, onnx_encoders says so
        predictor.use_onnx([] if batch is None else [batch])
    except ArgumentError as err:
        if required:
            raise
        warnings.warn(f'{err}; predicting with PyTorch instead', UserWarning)


def _check_arguments(
    out: Path,
    sar: Sequence[str | os.PathLike[str]],
    map_path: str | os.PathLike[str] | None,
    overwrite: bool,
    mc_samples: int,
) -> None:
    """Refuse bad outputs and arguments before anything is read."""
    if out.suffix.lower() != '.gpkg':
        raise ArgumentError(f'--out must be a GeoPackage (.gpkg), not {out}')
    outputs = [out, summary_path(out)]
    outputs += [Path(map_path)] if map_path is not None else []
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


def _run(
    trainer: lightning.Trainer, predictor: CityPredictor, loader: DataLoader[Sample]
) -> None:
    """Predict every chunk; Ctrl-C stays a KeyboardInterrupt."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', "Couldn't infer the batch indices")
        # the read-ahead's IterableDataset: one process, so its length is exact
        warnings.filterwarnings('ignore', '.*IterableDataset. has .__len__. defined')
        try:
            trainer.predict(predictor, loader, return_predictions=False)
        except SystemExit:
            # Lightning turns Ctrl-C into SystemExit(1): keep it an interrupt
            if trainer.interrupted:
                raise KeyboardInterrupt from None
            raise  # pragma: no cover - any other exit passes unchanged
    trainer.strategy.barrier()


def _write(
    chunks: BuildingChunks,
    results: Results,
    out: Path,
    threshold: float,
    layer: str | int | None,
    progress: bool,
) -> None:
    """Write the layer to a temporary file renamed into place (none on failure)."""
    if (results.status == _PENDING).any():
        raise OutputError(out, 'some buildings were not predicted')
    write_atomic(
        out,
        lambda tmp: write_layer(
            chunks.buildings,
            tmp,
            results,
            chunks.fids,
            threshold,
            layer=chunks.layer_name,
            input_layer=layer,
            progress=progress,
        ),
    )
