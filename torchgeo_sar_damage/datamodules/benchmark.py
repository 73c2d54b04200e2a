# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Per-building public benchmarks (BRIGHT, QuickQuakeBuildings) as model batches."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchgeo.datasets.utils import Sample

from ..batch import IMAGE_KEYS, MASK_KEYS, Normalisation, check_modalities
from ..batch import normalise_batch as _normalise_batch
from ..datasets import OSMBuildings
from ..errors import ArgumentError
from ..transforms import RandomDecibelGain, RandomSpeckle, SARGeometricAugmentation
from .damage import augmented_model_batch

#: Modalities a per-building benchmark sample can feed (no DSM or GEM there).
BENCHMARK_MODALITIES = ('sar', 'osm', 'optical')


def collate_benchmark(
    samples: Sequence[Sample], pixel_m: float | None = None
) -> dict[str, Tensor]:
    """Batch benchmark samples into this package's raw batch.

    A benchmark sample (:class:`~torchgeo_sar_damage.datasets.BRIGHTBuildings`,
    :class:`~torchgeo_sar_damage.datasets.QuickQuakeBuildings`) holds ``sar`` (dB,
    NaN = nodata), ``footprint`` (0 none, 1 other building, 2 target), ``optical``
    and ``label``. The raw batch (``docs/design/batch_contract.md``) holds ``image``
    (the SAR), ``footprint``, ``optical``, ``label``, ``building_id`` (the sample's
    ``building_id`` or ``osm_id``, else its position) and ``tabular``, the OSM
    features of the target footprint: ``log1p_area_m2`` from its pixels (NaN
    without ``pixel_m``), ``storeys_tagged`` 0 and ``storeys_missing`` 1 (the
    benchmarks carry no storeys).

    Args:
        samples: benchmark samples of one size.
        pixel_m: pixel size of the windows in metres (None: unknown).

    Returns:
        The raw batch.
    """
    image = torch.stack([s['sar'].float() for s in samples])
    out: dict[str, Tensor] = {'image': image}
    if all('footprint' in s for s in samples):
        out['footprint'] = torch.stack([s['footprint'] for s in samples]).to(
            torch.uint8
        )
    else:
        out['footprint'] = torch.zeros(image.shape, dtype=torch.uint8)
    if all('optical' in s for s in samples):
        out['optical'] = torch.stack([s['optical'].float() for s in samples])
    out['label'] = torch.stack([torch.as_tensor(s['label']) for s in samples]).long()
    ids = []
    for i, sample in enumerate(samples):
        value = sample.get('building_id', sample.get('osm_id', i))
        ids.append(int(value))
    out['building_id'] = torch.tensor(ids, dtype=torch.int64)
    target = (out['footprint'] == 2).flatten(1).sum(1).double()
    area = target * pixel_m**2 if pixel_m else torch.full_like(target, math.nan)
    tabular = torch.stack(
        [torch.log1p(area), torch.zeros_like(area), torch.ones_like(area)], dim=1
    )
    out['tabular'] = tabular.float()
    return out


class BuildingBenchmarkDataModule(LightningDataModule):
    """Per-building samples of a public benchmark, trained on like the study's towns.

    Feeds :class:`~torchgeo_sar_damage.tasks.DamageClassification` from a
    non-geo per-building dataset (one sample per building) instead of the
    simulated or catalogued towns: the same raw batch (:func:`collate_benchmark`),
    training-set statistics (:class:`~torchgeo_sar_damage.batch.Normalisation`),
    model batch and augmentation as
    :class:`~torchgeo_sar_damage.datamodules.SARDamageDataModule`. Modalities:
    ``sar``, ``osm`` (the footprint mask and its area) and ``optical``.

    .. versionadded:: 0.3
    """

    num_classes = 2

    def __init__(
        self,
        train: Dataset[Sample],
        val: Dataset[Sample],
        test: Mapping[str, Dataset[Sample]],
        modalities: Sequence[str] = ('sar', 'osm'),
        pixel_m: float | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        augmentation: str = 'azimuth',
        intensity_augmentation: bool = True,
        train_name: str = 'train',
    ) -> None:
        """Initialise a new BuildingBenchmarkDataModule instance.

        Args:
            train: training buildings.
            val: validation buildings (threshold, temperature, checkpoint choice).
            test: test sets by name (metrics per name, as per test town).
            modalities: a non-empty subset of :data:`BENCHMARK_MODALITIES` with
                ``sar``.
            pixel_m: pixel size of the windows in metres (the footprint area
                feature; None where unknown).
            batch_size: samples per batch.
            num_workers: dataloader workers.
            augmentation: geometric augmentation policy
                (:class:`~torchgeo_sar_damage.transforms.SARGeometricAugmentation`).
            intensity_augmentation: random gain and speckle on the SAR in dB.
            train_name: name of the training set (recorded in the statistics).

        Raises:
            ArgumentError: if the modalities or sizes are not valid.
        """
        super().__init__()
        chosen = check_modalities(modalities)
        other = sorted(set(chosen) - set(BENCHMARK_MODALITIES))
        if other or 'sar' not in chosen:
            raise ArgumentError(
                f'modalities {list(modalities)}: a per-building benchmark feeds sar '
                f'with any of {", ".join(BENCHMARK_MODALITIES[1:])} (it has no '
                f'{", ".join(other) or "other"} data)'
            )
        if batch_size < 1 or num_workers < 0:
            raise ArgumentError('batch_size must be >= 1 and num_workers >= 0')
        if len(train) == 0 or len(val) == 0:  # type: ignore[arg-type]
            raise ArgumentError('the training and validation sets must not be empty')
        self.modalities = chosen
        self.train_dataset = train
        self.val_dataset = val
        self.test_sets = dict(test)
        self.pixel_m = pixel_m
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_name = train_name
        self.geometric_augmentation = SARGeometricAugmentation(
            augmentation, image_keys=(*IMAGE_KEYS,), mask_keys=MASK_KEYS
        )
        self.intensity_augmentation: nn.Module = (
            nn.Sequential(RandomDecibelGain(domain='db'), RandomSpeckle(domain='db'))
            if intensity_augmentation
            else nn.Identity()
        )
        self.statistics_: Normalisation | None = None

    @property
    def test_names(self) -> list[str]:
        """Names of the test sets, in dataloader order."""
        return list(self.test_sets)

    @property
    def tabular_names(self) -> list[str]:
        """Names of the raw ``tabular`` columns (:func:`collate_benchmark`)."""
        return list(OSMBuildings.feature_names)

    def collate(self, samples: Sequence[Sample]) -> dict[str, Tensor]:
        """:func:`collate_benchmark` with this data module's pixel size."""
        return collate_benchmark(samples, self.pixel_m)

    def loader(
        self, dataset: Dataset[Sample], shuffle: bool = False, drop_last: bool = False
    ) -> DataLoader[Sample]:
        """A dataloader of raw batches.

        Args:
            dataset: the samples.
            shuffle: shuffle them.
            drop_last: drop an incomplete last batch.

        Returns:
            The dataloader.
        """
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=self.num_workers > 0,
        )

    @property
    def statistics(self) -> Normalisation:
        """Training-set statistics, fitted on first use."""
        if self.statistics_ is None:
            loader = DataLoader(
                self.train_dataset, batch_size=256, collate_fn=self.collate
            )
            self.statistics_ = Normalisation.fit(
                iter(loader), [self.train_name], self.tabular_names, self.num_classes
            )
        return self.statistics_

    def setup(self, stage: str) -> None:
        """Fit the statistics before training.

        Args:
            stage: ``'fit'``, ``'validate'``, ``'test'`` or ``'predict'``.
        """
        if stage == 'fit':
            _ = self.statistics

    def train_dataloader(self) -> DataLoader[Sample]:
        """Training buildings, shuffled (a last batch of one sample dropped)."""
        drop_last = len(self.train_dataset) > self.batch_size  # type: ignore[arg-type]
        return self.loader(self.train_dataset, shuffle=True, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader[Sample]:
        """Validation buildings."""
        return self.loader(self.val_dataset)

    def test_dataloader(self) -> list[DataLoader[Sample]]:
        """One dataloader per test set, in :attr:`test_names` order."""
        return [self.loader(ds) for ds in self.test_sets.values()]

    def normalise(self, batch: Sample) -> Sample:
        """The model batch of a raw batch (training-set statistics).

        Args:
            batch: a raw batch.

        Returns:
            The model batch (:func:`~torchgeo_sar_damage.batch.normalise_batch`).
        """
        return _normalise_batch(batch, self.statistics, self.modalities)

    def on_after_batch_transfer(self, batch: Sample, dataloader_idx: int) -> Sample:
        """Make the model batch on the accelerator, augmented while training.

        Args:
            batch: a raw batch.
            dataloader_idx: index of its dataloader.

        Returns:
            The model batch.
        """
        return augmented_model_batch(
            batch,
            self.normalise,
            self.intensity_augmentation,
            self.geometric_augmentation,
            self.trainer is not None and self.trainer.training,
        )

    def state_dict(self) -> dict[str, Any]:
        """The statistics, kept in checkpoints."""
        stats = self.statistics_
        return {'statistics': None if stats is None else stats.to_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the statistics of a checkpoint.

        Args:
            state_dict: from :meth:`state_dict`.
        """
        stats = state_dict.get('statistics')
        if stats is not None:
            self.statistics_ = Normalisation.from_dict(stats)
