# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""What prediction needs from a training checkpoint, and what it expects of the SAR."""

import math
import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyproj import CRS

from ..batch import TOWN_MODALITIES, Normalisation, check_modalities
from ..datasets import COSMOSkyMed
from ..errors import InputFileError
from ..tasks import DamageClassification


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
        temperature: temperature ``T`` of the calibration (1 when not fitted).
        sensor: what the model was trained on (``pixel_m``, ``window_px``,
            ``polarisations``, ``product_types``; see
            :func:`~torchgeo_sar_damage.datamodules.damage.sar_product_info`), or
            None for a checkpoint written before it was recorded.
        calibration_bias: bias ``b`` of the calibration (0 when not fitted, or
            with ``calibration_method='temperature'``); the damage probability is
            ``sigmoid(logit / T + b)``, which :attr:`task` applies
            (:meth:`~torchgeo_sar_damage.tasks.DamageClassification.calibrate`).
        validation_prior: damage rate of the validation towns the calibration was
            fitted on (NaN when not recorded).
    """

    path: Path
    task: DamageClassification
    statistics: Normalisation
    modalities: tuple[str, ...]
    size_m: float
    threshold: float
    temperature: float
    sensor: dict[str, Any] | None = None
    calibration_bias: float = 0.0
    validation_prior: float = math.nan


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
            statistics, is a multiclass model or uses the ``'optical'`` modality
            (prediction reads no optical imagery).
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
    hparams = raw.get('hyper_parameters', {})
    modalities = hparams.get('modalities', TOWN_MODALITIES)
    chosen = [modalities] if isinstance(modalities, str) else list(modalities)
    unread = sorted(set(chosen) - set(TOWN_MODALITIES))
    if unread:
        raise InputFileError(
            path,
            f'was trained with modalities {unread}, which sardamage predict does not '
            'read: it reads SAR, footprints, a DSM and GEM exposure '
            f'({", ".join(TOWN_MODALITIES)}), no optical imagery; predict with a '
            f'model trained without {unread}',
        )
    stats = raw.get('SARDamageDataModule', {}).get('statistics')
    if stats is None:
        raise InputFileError(
            path,
            'has no normalisation statistics: save it from a Trainer fitted with a '
            'SARDamageDataModule (trainer.save_checkpoint or ModelCheckpoint)',
        )
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
        calibration_bias=float(task.calibration_bias),
        validation_prior=float(task.validation_prior),
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
    for what, have, trained in (
        ('polarisation', set(sar.bands), set(sensor.get('polarisations', ()))),
        ('product type', set(sar.product_types), set(sensor.get('product_types', ()))),
    ):
        if trained and have and not have <= trained:
            warnings.warn(
                f"{path}: {what} {', '.join(sorted(have))} differs from the model's "
                f'training data ({", ".join(sorted(trained))}); backscatter differs '
                'between them, so probabilities may be biased',
                UserWarning,
                stacklevel=2,
            )
