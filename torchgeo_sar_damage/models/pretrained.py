# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""TorchGeo's pretrained Sentinel-1 weights as :class:`~torchgeo_sar_damage.models.FusionNet` encoders.

A TorchGeo ``WeightsEnum`` member (or its name, ``'ResNet50_Weights.SENTINEL1_ALL_MOCO'``)
decides what the SAR encoder is: ``meta['model']`` the backbone, ``meta['bands']`` and
``meta['in_chans']`` its input channels, and the Normalize of its ``transforms`` the
standardisation of the SAR. Nothing is downloaded at run time: the weights file is read
from torch hub's cache (:func:`weights_path`), and its absence is an
:class:`~torchgeo_sar_damage.errors.InputFileError` naming the path and the URL to
fetch it from once.

How a CSK/CSG chip becomes the input of a dual-polarisation (VV/VH) Sentinel-1
encoder (:class:`PretrainedSARInput`):

* the model batch's ``sar`` is standardised with the training towns' statistics; it
  is turned back into sigma nought in dB (:meth:`PretrainedSARInput.set_statistics`),
  then into the unit the weights were trained on (:data:`SAR_SCALES`);
* the product's single polarisation (HH or VV) is copied into every band of the
  weights (VV and VH alike), and each band is normalised with the weights' own mean
  and standard deviation for that band;
* pixels outside the valid-pixel mask are set to zero after normalisation (the
  weights' mean, for SSL4EO-S12), and the mask itself is one more input channel whose
  first-layer weights start at zero, so at initialisation the encoder computes
  exactly the pretrained features and fine-tuning may learn to use the mask.

These are C-band (5.4 GHz), 10 m weights applied to X-band (9.6 GHz) sub-metre to 3 m
chips: backscatter levels, speckle and object sizes differ (a domain gap that the
study measures, not one this code removes).
"""

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchgeo.models
import torchvision.transforms as T1
import torchvision.transforms.v2 as T2
from torch import Tensor, nn
from torchgeo.models import get_weight
from torchvision.models._api import WeightsEnum

from ..errors import ArgumentError, InputFileError
from .encoders import backbone_exists

#: SAR polarisations a band of the weights may be.
POLARISATIONS = frozenset({'VV', 'VH', 'HH', 'HV'})

#: A TorchGeo weights name: ``<Enum>_Weights.<MEMBER>`` (TorchGeo's enums all end so).
WEIGHTS_NAME = re.compile(r'^(?P<enum>[A-Za-z]\w*Weights)\.(?P<member>\w+)$')

#: Model families that take more than an image (wavelengths, channel ids...), by the
#: prefix of their weights enum: refused with the reason.
NEEDS_MORE_THAN_AN_IMAGE = {
    'DOFA': 'the wavelength of every input band',
    'CROMA': 'a paired optical image and its own radar encoder',
    'CopernicusFM': 'the wavelength or band id of every input channel',
    'Panopticon': 'the wavelength and bandwidth of every input channel',
}

#: Amplitude digital number of SatlasPretrain's Sentinel-1 GRD inputs at 0 dB (an
#: assumed calibration constant: SatlasPretrain feeds raw GRD digital numbers, whose
#: calibration the weights do not record).
SATLAS_DN_AT_0_DB = 500.0


def _decibels(db: Tensor) -> Tensor:
    return db


def _grd_digital_numbers(db: Tensor) -> Tensor:
    return SATLAS_DN_AT_0_DB * torch.pow(10.0, db / 20)


#: How sigma nought in dB becomes the input unit of each pretraining data set
#: (``meta['dataset']``), before the weights' own Normalize. A new family is one entry.
#:
#: * ``'SSL4EO-S12'``: sigma nought in dB (the SSL4EO-S12 Sentinel-1 statistics,
#:   mean -12.59 / -20.26 dB and std 5.26 / 5.91 dB for VV / VH, are in dB).
#: * ``'SatlasPretrain'``: Sentinel-1 GRD amplitude digital numbers,
#:   ``SATLAS_DN_AT_0_DB * 10 ** (dB / 20)``, which the weights' Normalize divides by
#:   255 (then clipped to [0, 1] as SatlasPretrain does).
SAR_SCALES: dict[str, Callable[[Tensor], Tensor]] = {
    'SSL4EO-S12': _decibels,
    'SatlasPretrain': _grd_digital_numbers,
}

#: Pretraining data sets whose normalised input is clipped to [0, 1].
CLIPPED = frozenset({'SatlasPretrain'})


def is_weights_name(value: object) -> bool:
    """Whether ``value`` is a TorchGeo weights member or spells one's name.

    A string is a name when it is not an existing file and reads
    ``<Enum>_Weights.<MEMBER>``.
    """
    if isinstance(value, WeightsEnum):
        return True
    return (
        isinstance(value, str)
        and not os.path.exists(value)
        and WEIGHTS_NAME.match(value) is not None
    )


def resolve_weights(weights: WeightsEnum | str) -> WeightsEnum:
    """The TorchGeo weights a member or a name stands for.

    Names are looked up with :func:`torchgeo.models.get_weight`, then as
    ``Enum[MEMBER]`` of :mod:`torchgeo.models`, so aliases such as
    ``'ResNet50_Weights.SENTINEL1_GRD_MOCO'`` resolve too.

    Args:
        weights: a ``WeightsEnum`` member or its name.

    Returns:
        The member.

    Raises:
        ArgumentError: if no TorchGeo weights have this name.
    """
    if isinstance(weights, WeightsEnum):
        return weights
    try:
        return get_weight(weights)
    except ValueError:
        pass
    match = WEIGHTS_NAME.match(weights)
    enum = getattr(torchgeo.models, match['enum'], None) if match else None
    if isinstance(enum, type) and issubclass(enum, WeightsEnum) and match:
        members: dict[str, WeightsEnum] = dict(getattr(enum, '__members__', {}))
        if match['member'] in members:
            return members[match['member']]
    raise ArgumentError(
        f'weights {weights!r} is neither an existing file nor the name of TorchGeo '
        "weights (such as 'ResNet50_Weights.SENTINEL1_ALL_MOCO'; see "
        'docs/tutorial.md, "Use a TorchGeo pretrained encoder")'
    )


def weights_path(weights: WeightsEnum) -> Path:
    """Where torch hub keeps the file of ``weights``.

    Returns:
        ``$TORCH_HOME/hub/checkpoints/<last segment of weights.url>`` (the folder of
        :func:`torch.hub.get_dir`, as ``load_state_dict_from_url`` looks it up).
    """
    name = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / 'checkpoints' / name


def read_weights(weights: WeightsEnum) -> dict[str, Tensor]:
    """Read the state dict of TorchGeo weights from torch hub's cache, never the web.

    Args:
        weights: the weights.

    Returns:
        Their state dict (``weights.get_state_dict(weights_only=True)``).

    Raises:
        InputFileError: if the file is not in the cache (it names the path and URL).
    """
    path = weights_path(weights)
    if not path.is_file():
        raise InputFileError(
            path,
            f'the file of TorchGeo weights {weights} is missing, and nothing is '
            f'downloaded at run time: fetch it once from {weights.url} to this path '
            f'(e.g. curl -L -o {path} {weights.url}), or set TORCH_HOME to the folder '
            'whose hub/checkpoints holds it',
        )
    state: dict[str, Tensor] = weights.get_state_dict(
        progress=False, check_hash=False, weights_only=True
    )
    return state


def check_sar_weights(weights: WeightsEnum) -> None:
    """Refuse weights that cannot be a :class:`~torchgeo_sar_damage.models.FusionNet` SAR encoder, saying why.

    Supported: weights of a timm backbone (or one of
    :data:`~torchgeo_sar_damage.models.encoders.BACKBONES`) whose bands are SAR
    polarisations and whose pretraining data set has an entry in :data:`SAR_SCALES`.

    Raises:
        ArgumentError: otherwise.
    """
    enum = type(weights).__name__
    for prefix, needs in NEEDS_MORE_THAN_AN_IMAGE.items():
        if enum.startswith(prefix):
            raise ArgumentError(
                f'weights {weights}: {prefix} models take {needs} besides the image, '
                'which FusionNet encoders do not give; they are not supported (use '
                'ResNet-50, ViT or Swin V2 Sentinel-1 weights)'
            )
    model = weights.meta.get('model')
    if not isinstance(model, str) or not backbone_exists(model):
        raise ArgumentError(
            f'weights {weights}: their model {model!r} is neither a timm model nor '
            "one of FusionNet's other backbones, so it cannot be built as an encoder"
        )
    bands = weights.meta.get('bands')
    if not bands or not set(bands) <= POLARISATIONS:
        raise ArgumentError(
            f'weights {weights}: their bands {bands} are not SAR polarisations '
            f'({", ".join(sorted(POLARISATIONS))}); only Sentinel-1 weights can '
            'encode the SAR'
        )
    dataset = weights.meta.get('dataset')
    if dataset not in SAR_SCALES:
        raise ArgumentError(
            f'weights {weights}: the input scaling of their pretraining data '
            f'({dataset}) is not recorded, so sigma nought cannot be brought to it; '
            f'supported: weights pretrained on {", ".join(sorted(SAR_SCALES))}'
        )


def _normalize_stats(transforms: object, bands: int) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of the (last) Normalize in ``transforms``."""
    mean: list[float] = [0.0]
    std: list[float] = [1.0]
    if isinstance(transforms, nn.Module):
        for module in transforms.modules():
            if isinstance(module, T1.Normalize | T2.Normalize):
                mean = [float(v) for v in module.mean]
                std = [float(v) for v in module.std]
    if len(mean) == 1:
        mean, std = mean * bands, std * bands
    return mean, std


def input_size(weights: WeightsEnum) -> int | None:
    """Side of the images the weights were trained on.

    ``meta['img_size']``, else the size of the CenterCrop of their ``transforms``,
    else None.
    """
    size = weights.meta.get('img_size')
    if size is not None:
        return int(size)
    transforms = weights.transforms
    if isinstance(transforms, nn.Module):
        for module in transforms.modules():
            if isinstance(module, T1.CenterCrop | T2.CenterCrop):
                return int(module.size[0])
    return None


class PretrainedSARInput(nn.Module):
    """The SAR input of an encoder with TorchGeo Sentinel-1 weights.

    Maps the model batch's ``sar`` (standardised dB) and ``sar_valid`` to the weights'
    bands plus the mask (see the module docstring): ``[B, len(bands) + 1, H, W]``.

    The training towns' SAR statistics (mean and standard deviation of sigma nought in
    dB, :class:`~torchgeo_sar_damage.batch.Normalisation`) are buffers, so checkpoints
    keep them; they are NaN until :meth:`set_statistics` is called
    (:class:`~torchgeo_sar_damage.tasks.DamageClassification` does it in ``setup``
    from the data module), and a forward pass before then is an error.
    """

    def __init__(self, weights: WeightsEnum) -> None:
        """Initialise a new PretrainedSARInput.

        Args:
            weights: Sentinel-1 weights that passed :func:`check_sar_weights`.
        """
        super().__init__()
        self.weights = str(weights)
        self.bands = tuple(weights.meta['bands'])
        dataset = weights.meta['dataset']
        self.scale = SAR_SCALES[dataset]
        self.clip = dataset in CLIPPED
        mean, std = _normalize_stats(weights.transforms, len(self.bands))
        shape = (1, len(self.bands), 1, 1)
        self.band_mean: Tensor
        self.band_std: Tensor
        self.sar_mean_db: Tensor
        self.sar_std_db: Tensor
        self.register_buffer('band_mean', torch.tensor(mean).reshape(shape))
        self.register_buffer('band_std', torch.tensor(std).reshape(shape))
        self.register_buffer('sar_mean_db', torch.tensor(math.nan))
        self.register_buffer('sar_std_db', torch.tensor(math.nan))

    @property
    def channels(self) -> int:
        """Input channels of the encoder: the weights' bands and the mask."""
        return len(self.bands) + 1

    @property
    def has_statistics(self) -> bool:
        """Whether :meth:`set_statistics` was called (or a checkpoint set them)."""
        return bool(torch.isfinite(self.sar_mean_db) & torch.isfinite(self.sar_std_db))

    def set_statistics(self, mean_db: float, std_db: float) -> None:
        """Set the statistics the model batch's ``sar`` was standardised with.

        Args:
            mean_db: mean of the training towns' sigma nought (dB).
            std_db: its standard deviation (dB).
        """
        self.sar_mean_db.fill_(float(mean_db))
        self.sar_std_db.fill_(float(std_db))

    def forward(self, sar: Tensor, valid: Tensor) -> Tensor:
        """The encoder input of a batch.

        Args:
            sar: standardised sigma nought ``[B, 1, H, W]`` (the model batch's).
            valid: the valid-pixel mask ``[B, 1, H, W]``.

        Returns:
            ``[B, len(bands) + 1, H, W]``: the polarisation in every band, normalised
            as the weights expect, zero outside the mask; then the mask.

        Raises:
            ArgumentError: if the statistics were never set.
        """
        if not self.has_statistics:
            raise ArgumentError(
                f'the SAR encoder uses TorchGeo weights {self.weights}, which need '
                'sigma nought in dB: call FusionNet.set_sar_statistics(mean_db, '
                'std_db) with the training statistics (DamageClassification does it '
                'from the data module)'
            )
        db = sar.float() * self.sar_std_db + self.sar_mean_db
        x = (self.scale(db) - self.band_mean) / self.band_std
        if self.clip:
            x = x.clamp(0, 1)
        mask = valid.float()
        x = torch.where(mask > 0, x, 0.0)
        return torch.cat([x, mask], dim=1)
