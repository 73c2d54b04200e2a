# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The batch contract between data and models: modality names and batch layout.

What a raw batch holds and how it becomes the model batch (``docs/design/
batch_contract.md``): the modality registry (:data:`MODALITIES`), the tabular features
of each modality, the training-town :class:`Normalisation` and
:func:`normalise_batch`. Data modules, models, tasks and prediction all import it;
it imports only the datasets' feature names.
"""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torchgeo.datasets.utils import Sample

from .datasets import DSM, GEMExposure, OSMBuildings
from .errors import ArgumentError

#: Modalities a model can use, in the order of the contract.
MODALITIES = ('sar', 'osm', 'dsm', 'gem', 'optical')

#: Modalities that the towns of a catalogue (simulated or real) have, which
#: :class:`~torchgeo_sar_damage.datamodules.SARDamageDataModule` and city-scale
#: prediction read: all but ``optical``, whose pre-event imagery comes with the BRIGHT
#: and QuickQuakeBuildings benchmark datasets only.
TOWN_MODALITIES = ('sar', 'osm', 'dsm', 'gem')

#: Tabular features of each modality (SAR has none), in the order of the raw
#: ``tabular`` vector: DSM, OSM, GEM.
TABULAR_FEATURES: dict[str, tuple[str, ...]] = {
    'dsm': tuple(DSM.feature_names),
    'osm': tuple(OSMBuildings.feature_names),
    'gem': tuple(GEMExposure.feature_names),
}

#: Quantile of a DSM window taken as its ground level.
GROUND_QUANTILE = 0.05

#: Image-like keys of a model batch (same geometric augmentation on all of them).
IMAGE_KEYS = ('sar', 'dsm', 'optical')
MASK_KEYS = ('sar_valid', 'footprint')


#: Model-batch keys of each image modality with their channels, in stacking order
#: (GEM is tabular only).
IMAGE_INPUTS: dict[str, tuple[tuple[str, int], ...]] = {
    'sar': (('sar', 1), ('sar_valid', 1)),
    'osm': (('footprint', 2),),
    'dsm': (('dsm', 1),),
    'optical': (('optical', 3),),
}


def image_channel_count(modalities: str | Sequence[str]) -> int:
    """Channels of the stacked image of a choice of modalities (:func:`stack_images`).

    Args:
        modalities: a non-empty subset of :data:`MODALITIES`.

    Returns:
        2 for SAR (sigma nought, valid mask), 2 for OSM (target, neighbours), 1 for
        DSM (relief), 3 for optical (red, green, blue), added up; GEM adds none.
    """
    chosen = check_modalities(modalities)
    return sum(c for m in chosen for _, c in IMAGE_INPUTS.get(m, ()))


def stack_images(batch: Mapping[str, Tensor], modalities: Sequence[str]) -> Tensor:
    """The image modalities of a model batch as one ``[B, C, H, W]`` image.

    Channels, in order: ``sar`` (standardised dB), ``sar_valid``, ``footprint``
    (target, neighbours), ``dsm`` (relief over the DSM scale), ``optical``
    (standardised red, green, blue), for the modalities chosen; the tabular features
    (DSM statistics, OSM attributes, GEM) are not in it.

    Args:
        batch: a model batch (:func:`normalise_batch`).
        modalities: the modalities to stack (at least one image modality).

    Returns:
        The stacked image (float).

    Raises:
        ArgumentError: if no image modality is chosen.
    """
    chosen = [m for m in check_modalities(modalities) if m in IMAGE_INPUTS]
    if not chosen:
        raise ArgumentError(
            f'modalities {list(modalities)} have no image to stack; choose at least '
            f'one of {", ".join(IMAGE_INPUTS)}'
        )
    tensors = [batch[key].float() for m in chosen for key, _ in IMAGE_INPUTS[m]]
    return torch.cat(tensors, dim=1)


def check_modalities(modalities: str | Sequence[str]) -> tuple[str, ...]:
    """Validate a choice of modalities.

    Args:
        modalities: a non-empty subset of :data:`MODALITIES` (one name or several).

    Returns:
        The modalities, without duplicates, in the order of :data:`MODALITIES`.

    Raises:
        ArgumentError: if the choice is empty or names an unknown modality.
    """
    chosen = [modalities] if isinstance(modalities, str) else list(modalities)
    unknown = sorted(set(chosen) - set(MODALITIES))
    if unknown:
        raise ArgumentError(
            f'unknown modalities {unknown}; choose a non-empty subset of '
            f'{", ".join(MODALITIES)}'
        )
    if not chosen:
        raise ArgumentError(
            f'modalities is empty; choose a non-empty subset of {", ".join(MODALITIES)}'
        )
    return tuple(m for m in MODALITIES if m in chosen)


def feature_names(modalities: str | Sequence[str]) -> list[str]:
    """Columns of the model batch's ``tabular`` for a choice of modalities.

    Args:
        modalities: a non-empty subset of :data:`MODALITIES`.

    Returns:
        The feature names, DSM then OSM then GEM (none for SAR alone).

    Raises:
        ArgumentError: if the modalities are not valid.
    """
    chosen = check_modalities(modalities)
    return [
        name
        for modality, names in TABULAR_FEATURES.items()
        if modality in chosen
        for name in names
    ]


def dsm_relief(dsm: Tensor) -> Tensor:
    """Heights above each window's ground level.

    Args:
        dsm: surface elevations ``[B, 1, H, W]`` (NaN = nodata).

    Returns:
        ``dsm`` minus the :data:`GROUND_QUANTILE` quantile of its window's valid
        pixels (NaN where ``dsm`` is NaN or the window has no valid pixel).
    """
    ground = torch.nanquantile(dsm.flatten(1).float(), GROUND_QUANTILE, dim=1)
    return dsm - ground.reshape(-1, *([1] * (dsm.dim() - 1)))


@dataclass(frozen=True)
class Normalisation:
    """Statistics fitted on the training cities, applied to every split.

    Attributes:
        cities: training cities the statistics come from.
        sar_mean_db: mean of valid SAR pixels (sigma nought in dB).
        sar_std_db: their standard deviation (dB).
        dsm_scale_m: standard deviation of the DSM relief (:func:`dsm_relief`) over
            valid pixels (m).
        tabular_names: names of the raw ``tabular`` columns.
        tabular_mean: per-column mean over training buildings (NaN ignored).
        tabular_std: per-column standard deviation (1 where constant).
        class_counts: training buildings per class (index = label).
        optical_mean: per-channel mean of the finite pixels of the pre-event optical
            image (red, green, blue; 0-255), empty when fitted on batches without
            ``optical`` (and in statistics saved before the optical modality).
        optical_std: their per-channel standard deviation (1 where constant).

    .. versionchanged:: 0.2
       *optical_mean* and *optical_std*.
    """

    cities: tuple[str, ...]
    sar_mean_db: float
    sar_std_db: float
    dsm_scale_m: float
    tabular_names: tuple[str, ...]
    tabular_mean: tuple[float, ...]
    tabular_std: tuple[float, ...]
    class_counts: tuple[int, ...]
    optical_mean: tuple[float, ...] = ()
    optical_std: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The statistics as plain Python values (for checkpoints and JSON)."""
        return {
            key: list(v) if isinstance(v, tuple) else v
            for key, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> 'Normalisation':
        """Statistics from :meth:`to_dict`'s output.

        Args:
            values: the dict (one saved before the optical statistics existed has
                none).

        Returns:
            The statistics.
        """
        return cls(
            cities=tuple(values['cities']),
            sar_mean_db=float(values['sar_mean_db']),
            sar_std_db=float(values['sar_std_db']),
            dsm_scale_m=float(values['dsm_scale_m']),
            tabular_names=tuple(values['tabular_names']),
            tabular_mean=tuple(float(v) for v in values['tabular_mean']),
            tabular_std=tuple(float(v) for v in values['tabular_std']),
            class_counts=tuple(int(v) for v in values['class_counts']),
            optical_mean=tuple(float(v) for v in values.get('optical_mean', ())),
            optical_std=tuple(float(v) for v in values.get('optical_std', ())),
        )

    @classmethod
    def fit(
        cls,
        batches: Iterator[Sample],
        cities: Sequence[str],
        tabular_names: Sequence[str],
        num_classes: int,
    ) -> 'Normalisation':
        """Fit the statistics on raw batches of training buildings.

        Args:
            batches: raw batches (:func:`~torchgeo_sar_damage.datasets.collate_buildings`);
                the optical statistics come from their ``optical`` images, where
                present.
            cities: the training cities (recorded).
            tabular_names: names of the raw ``tabular`` columns.
            num_classes: number of classes of the labels.

        Returns:
            The statistics.
        """
        width = len(tabular_names)
        sar = torch.zeros(3, dtype=torch.float64)
        relief = torch.zeros(3, dtype=torch.float64)
        tab_n = torch.zeros(width, dtype=torch.float64)
        tab_sum = torch.zeros(width, dtype=torch.float64)
        tab_sq = torch.zeros(width, dtype=torch.float64)
        counts = torch.zeros(num_classes, dtype=torch.int64)
        optical: Tensor | None = None  # [3 (count, sum, squares), channels]
        for batch in batches:
            for key, acc in (('image', sar), ('dsm', relief)):
                if key not in batch:
                    continue
                x = batch[key].double()
                if key == 'dsm':
                    x = dsm_relief(x)
                x = x[torch.isfinite(x)]
                acc += torch.stack([x.new_tensor(x.numel()), x.sum(), (x * x).sum()])
            if 'optical' in batch:
                optical = _channel_sums(batch['optical'], optical)
            if width:
                t = batch['tabular'].double()
                ok = torch.isfinite(t)
                t = torch.where(ok, t, 0.0)
                tab_n += ok.sum(0)
                tab_sum += t.sum(0)
                tab_sq += (t * t).sum(0)
            labels = batch['label']
            labels = labels[(labels >= 0) & (labels < num_classes)]
            counts += torch.bincount(labels, minlength=num_classes)

        def moments(n: Tensor, s: Tensor, sq: Tensor) -> tuple[Tensor, Tensor]:
            mean = torch.where(n > 0, s / n.clamp(min=1), 0.0)
            var = torch.where(n > 0, sq / n.clamp(min=1) - mean**2, 1.0)
            std = var.clamp(min=0).sqrt()
            return mean, torch.where(std > 1e-6, std, 1.0)

        sar_mean, sar_std = moments(*sar)
        tab_mean, tab_std = moments(tab_n, tab_sum, tab_sq)
        optical_mean, optical_std = (
            (torch.zeros(0), torch.zeros(0)) if optical is None else moments(*optical)
        )
        return cls(
            cities=tuple(cities),
            sar_mean_db=float(sar_mean),
            sar_std_db=float(sar_std),
            # the relief's spread about zero (the ground), not about its mean
            dsm_scale_m=float(
                torch.sqrt(relief[2] / relief[0]) if relief[0] > 0 else 1.0
            )
            or 1.0,
            tabular_names=tuple(tabular_names),
            tabular_mean=tuple(tab_mean.tolist()),
            tabular_std=tuple(tab_std.tolist()),
            class_counts=tuple(counts.tolist()),
            optical_mean=tuple(optical_mean.tolist()),
            optical_std=tuple(optical_std.tolist()),
        )


def _channel_sums(images: Tensor, sums: Tensor | None) -> Tensor:
    """Add the count, sum and sum of squares of each channel's finite pixels.

    Args:
        images: ``[B, C, H, W]`` (NaN = nodata).
        sums: ``[3, C]`` float64 sums so far (None: none yet).

    Returns:
        The updated ``[3, C]`` sums.

    Raises:
        ArgumentError: if the channels differ from those of earlier batches.
    """
    x = images.double().transpose(0, 1).flatten(1)  # [C, N]
    ok = torch.isfinite(x)
    x = torch.where(ok, x, 0.0)
    new = torch.stack([ok.sum(1).double(), x.sum(1), (x * x).sum(1)]).cpu()
    if sums is None:
        return new
    if sums.shape != new.shape:
        raise ArgumentError(
            f'optical images have {new.shape[1]} channels in one batch and '
            f'{sums.shape[1]} in another; give every batch the same bands'
        )
    return sums + new


def normalise_batch(
    batch: Sample,
    statistics: Normalisation,
    modalities: Sequence[str],
    raw_names: Sequence[str] | None = None,
) -> Sample:
    """Turn a raw batch into the model batch (``docs/design/batch_contract.md``).

    Shared by :meth:`SARDamageDataModule.normalise` and city-scale prediction
    (:mod:`torchgeo_sar_damage.predict`), which has no data module, only the
    statistics stored in a checkpoint.

    Args:
        batch: a raw batch (``image``, ``dsm``, ``footprint``, ``tabular``,
            ``optical``, ``label``, ``building_id``...).
        statistics: the training-city statistics.
        modalities: the model's modalities (decide the ``tabular`` columns, and
            whether the model batch has ``optical``).
        raw_names: names of the columns of ``batch['tabular']`` (default: those the
            statistics were fitted on, :attr:`Normalisation.tabular_names`).

    Returns:
        ``sar``, ``sar_valid``, ``footprint`` (2 channels: target, neighbours),
        ``dsm``, ``tabular`` (the selected modalities' columns), ``label`` and
        ``building_id``, and ``optical`` (per-channel standardised) when the
        modalities include it; standardised with the training-city statistics and
        with NaN replaced by 0.

    Raises:
        ArgumentError: if the batch lacks a column or an image the modalities need,
            or the statistics have no optical mean and standard deviation for the
            ``optical`` modality.
    """
    stats = statistics
    image = batch['image'].float()
    valid = torch.isfinite(image)
    sar = torch.where(valid, (image - stats.sar_mean_db) / stats.sar_std_db, 0.0)
    shape = (image.shape[0], 1, *image.shape[-2:])
    zeros = image.new_zeros(shape)
    if 'footprint' in batch:
        mask = batch['footprint']
        footprint = torch.cat([mask == 2, mask == 1], dim=1).float()
    else:
        footprint = image.new_zeros((shape[0], 2, *shape[2:]))
    if 'dsm' in batch:
        dsm = torch.nan_to_num(
            dsm_relief(batch['dsm'].float()) / stats.dsm_scale_m,
            nan=0.0,
            posinf=0.0,
            neginf=0.0,
        )
    else:
        dsm = zeros
    fitted = list(stats.tabular_names)
    names = fitted if raw_names is None else list(raw_names)
    wanted = feature_names(modalities)
    missing = [n for n in wanted if n not in names or n not in fitted]
    if missing:
        raise ArgumentError(
            f'the scene has no {missing}: the chosen modalities '
            f'{list(modalities)} need files the scene does not list'
        )
    columns = [names.index(n) for n in wanted]
    index = torch.tensor(columns, dtype=torch.long, device=image.device)
    stat_index = [fitted.index(n) for n in wanted]
    mean = torch.tensor([stats.tabular_mean[i] for i in stat_index])
    std = torch.tensor([stats.tabular_std[i] for i in stat_index])
    raw = batch['tabular'].float().index_select(1, index)
    tabular = torch.nan_to_num(
        (raw - mean.to(raw)) / std.to(raw), nan=0.0, posinf=0.0, neginf=0.0
    )
    out: Sample = {
        'sar': sar,
        'sar_valid': valid.float(),
        'footprint': footprint,
        'dsm': dsm,
        'tabular': tabular,
        # unlabelled (prediction) batches carry -1, the ignore value
        'label': batch['label']
        if 'label' in batch
        else torch.full_like(batch['building_id'], -1),
        'building_id': batch['building_id'],
    }
    if 'optical' in modalities:
        out['optical'] = standardise_optical(batch, stats)
    return out


def standardise_optical(
    batch: Mapping[str, Tensor], statistics: Normalisation
) -> Tensor:
    """The model batch's ``optical``: the raw optical image, per-channel standardised.

    Args:
        batch: a raw batch with ``optical`` ``[B, 3, H, W]`` (0-255, NaN = nodata).
        statistics: the training statistics (:attr:`Normalisation.optical_mean` and
            :attr:`Normalisation.optical_std`).

    Returns:
        ``(optical - mean) / std`` per channel, NaN replaced by 0 (the mean).

    Raises:
        ArgumentError: if the batch has no ``optical`` image, or the statistics have
            none for its channels.
    """
    if 'optical' not in batch:
        raise ArgumentError(
            "the modality 'optical' needs the raw batch's 'optical' image (pre-event "
            f'optical RGB, [B, 3, H, W]), but the batch has only {sorted(batch)}; '
            'use a data module of a benchmark with optical imagery (BRIGHT, '
            "QuickQuakeBuildings) or leave 'optical' out of the modalities"
        )
    optical = batch['optical'].float()
    mean, std = statistics.optical_mean, statistics.optical_std
    if optical.ndim != 4 or len(mean) != optical.shape[1] or len(std) != len(mean):
        raise ArgumentError(
            f"batch['optical'] has shape {tuple(optical.shape)}, but the statistics "
            f'have an optical mean for {len(mean)} channels; fit them '
            "(Normalisation.fit) on training batches with the same 'optical' images"
        )
    shape = (1, -1, 1, 1)
    m = torch.tensor(mean, dtype=optical.dtype, device=optical.device).reshape(shape)
    s = torch.tensor(std, dtype=optical.dtype, device=optical.device).reshape(shape)
    return torch.nan_to_num((optical - m) / s, nan=0.0, posinf=0.0, neginf=0.0)
