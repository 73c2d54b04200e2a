# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Per-building damage data split by city: the data module of the damage task."""

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor, nn
from torch.utils.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    Sampler,
    Subset,
    WeightedRandomSampler,
)
from torchgeo.datasets import GeoDataset
from torchgeo.datasets.utils import Sample

from ..batch import (
    IMAGE_INPUTS,
    IMAGE_KEYS,
    MASK_KEYS,
    TABULAR_FEATURES,
    TOWN_MODALITIES,
    Normalisation,
    check_modalities,
    feature_names,
    image_channel_count,
    normalise_batch,
    stack_images,
)
from ..datasets import (
    DSM,
    BuildingChips,
    COSMOSkyMed,
    DamageLabels,
    GEMExposure,
    OSMBuildings,
    collate_buildings,
)
from ..datasets.cosmo_skymed import Calibration
from ..errors import ArgumentError, InputFileError
from ..samplers import BuildingSampler
from ..transforms import RandomDecibelGain, RandomSpeckle, SARGeometricAugmentation
from .catalogue import Catalogue, TownFiles, town_gem_id_columns


def leave_one_city_out(cities: Sequence[str]) -> list[dict[str, list[str]]]:
    """Cross-validation folds that each hold one city out for testing.

    Fold *i* tests on ``cities[i]``, validates (chooses the threshold and early-stops)
    on the next city in the list (cyclically) and trains on all the others, so every
    city is the unseen test city exactly once and no city is in two splits of a fold.

    Args:
        cities: at least three city slugs, without duplicates.

    Returns:
        One dict per city with ``train``, ``val`` and ``test`` lists of slugs, e.g.
        ``SARDamageDataModule(root, fold['train'], fold['val'], fold['test'])``.

    Raises:
        ArgumentError: if fewer than three cities are given or a city repeats.
    """
    cities = list(cities)
    if len(set(cities)) != len(cities):
        raise ArgumentError(f'cities repeat in {cities}')
    if len(cities) < 3:
        raise ArgumentError(
            f'leave-one-city-out needs at least three cities (train, val, test), '
            f'got {cities}'
        )
    folds = []
    for i, test in enumerate(cities):
        val = cities[(i + 1) % len(cities)]
        train = [c for c in cities if c not in (test, val)]
        folds.append({'train': train, 'val': [val], 'test': [test]})
    return folds


def holdout_blocks(
    centres: np.ndarray, fraction: float, block_m: float, seed: int | Sequence[int] = 0
) -> np.ndarray:
    """Choose spatial blocks of buildings to hold out of a training city.

    The plane is cut into ``block_m`` squares; each square that holds a building is
    held out with probability ``fraction`` (independently, from ``seed``), and every
    building inside a held-out square is held out. Whole blocks rather than single
    buildings keep neighbours, which share their shaking, stock and SAR look, on one
    side of the split, so the held-out buildings measure performance on *seen cities*
    without the leak of testing on a training building's next-door twin.

    Args:
        centres: ``[N, 2]`` building centres (x, y) in a projected CRS, in metres.
        fraction: expected share of blocks held out, in ``[0, 1)``.
        block_m: side of the blocks in metres.
        seed: random seed (an int or a sequence of ints).

    Returns:
        ``[N]`` boolean mask, True for held-out buildings.

    Raises:
        ArgumentError: if ``fraction`` or ``block_m`` is out of range.
    """
    if not 0 <= fraction < 1:
        raise ArgumentError(f'holdout fraction must be in [0, 1), not {fraction}')
    if not np.isfinite(block_m) or block_m <= 0:
        raise ArgumentError(f'holdout block size must be positive, not {block_m}')
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    if fraction == 0 or len(centres) == 0:
        return np.zeros(len(centres), dtype=bool)
    cells = np.floor(centres / block_m).astype(np.int64)
    blocks, inverse = np.unique(cells, axis=0, return_inverse=True)
    draws = np.random.default_rng(seed).random(len(blocks))
    held: np.ndarray = draws[inverse.reshape(-1)] < fraction
    return held


def sar_product_info(
    datasets: Sequence[COSMOSkyMed], size_m: float, units: str = 'db'
) -> dict[str, Any]:
    """Describe the SAR a model is trained on, for its checkpoint.

    Args:
        datasets: the SAR datasets of the training and validation towns.
        size_m: window side in metres.
        units: what the model reads of the SAR (``'db'`` or ``'dn'``).

    Returns:
        ``pixel_m`` (spacing in metres of the first dataset, as read), ``window_px``
        (window side in pixels), ``polarisations`` and ``product_types`` (e.g.
        ``'CSG GTC'``, from the file names), the last two sorted.
    """
    polarisations = {band for dataset in datasets for band in dataset.bands}
    products = {kind for dataset in datasets for kind in dataset.product_types}
    pixel_m = float(datasets[0].res[0])
    return {
        'pixel_m': pixel_m,
        'window_px': round(size_m / pixel_m),
        'sar_units': units,
        'polarisations': sorted(polarisations),
        'product_types': sorted(products),
    }


def _check_settings(
    size_m: float,
    batch_size: int,
    num_workers: int,
    scheme: str,
    pixel_m: float | None,
    sar_units: str,
) -> None:
    """Refuse out-of-range settings of :class:`SARDamageDataModule`."""
    if not np.isfinite(size_m) or size_m <= 0:
        raise ArgumentError(f'size_m must be positive, not {size_m}')
    if batch_size < 1:
        raise ArgumentError(f'batch_size must be at least 1, not {batch_size}')
    if num_workers < 0:
        raise ArgumentError(f'num_workers must be >= 0, not {num_workers}')
    if scheme not in ('binary', 'four'):
        raise ArgumentError(f"scheme must be 'binary' or 'four', not {scheme!r}")
    if pixel_m is not None and (not np.isfinite(pixel_m) or pixel_m <= 0):
        raise ArgumentError(f'pixel_m must be positive, not {pixel_m}')
    if sar_units not in ('db', 'dn'):
        raise ArgumentError(f"sar_units must be 'db' or 'dn', not {sar_units!r}")


class CityDatasets:
    """The combined datasets of one town, opened once (:meth:`SARDamageDataModule.city`).

    Attributes:
        osm: the footprints (one sample per building).
        labels: the damage labels.
        sar: the SAR product(s).
        inputs: SAR & DSM & OSM & GEM (what prediction reads).
        dataset: the inputs & labels (their intersection is the labels' area).
        tabular_names: columns of the raw ``tabular`` vector.
        missing: modalities the town has no file for.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        town: TownFiles,
        modalities: Sequence[str],
        labels_kwargs: Mapping[str, Any],
        gem_id_columns: Mapping[str, str] | None = None,
        pixel_m: float | None = None,
        sar_units: Literal['db', 'dn'] = 'db',
        calibration: Calibration | None = None,
    ) -> None:
        """Open a town's datasets.

        Args:
            town: its files (from the catalogue).
            modalities: the model's modalities.
            labels_kwargs: arguments of :class:`DamageLabels` (the label rule).
            gem_id_columns: default ``id_columns`` of :class:`GEMExposure`.
            pixel_m: SAR pixel spacing to resample to (None: the product's own).
            sar_units: ``units`` of :class:`COSMOSkyMed`.
            calibration: ``calibration`` of :class:`COSMOSkyMed`.

        Raises:
            ArgumentError: if the town has no footprints.
        """
        if town.osm is None:  # Catalogue.check refuses such towns first
            raise ArgumentError(f'town {town.name!r} has no footprints ("osm")')
        self.osm = OSMBuildings(paths=town.osm)
        self.labels = DamageLabels(paths=town.labels, **labels_kwargs)
        self.sar = COSMOSkyMed(
            paths=town.sar, units=sar_units, res=pixel_m, calibration=calibration
        )
        dataset: GeoDataset = self.sar
        self.tabular_names: list[str] = []
        self.missing: list[str] = []
        # dsm, osm, gem: the order of the contract's raw tabular vector
        if town.dsm is not None:
            dataset = dataset & DSM(paths=town.dsm, dtm=town.dtm)
            self.tabular_names += TABULAR_FEATURES['dsm']
        else:
            self.missing.append('dsm')
        dataset = dataset & self.osm
        self.tabular_names += TABULAR_FEATURES['osm']
        if town.gem:
            dataset = dataset & GEMExposure(
                paths=list(town.gem),
                admin=town.admin,
                id_columns=town_gem_id_columns(town, gem_id_columns),
            )
            self.tabular_names += TABULAR_FEATURES['gem']
        else:
            self.missing.append('gem')
        # the inputs only: prediction covers every building the SAR sees
        self.inputs = dataset
        # inputs and labels: their intersection is the labels' area of interest
        self.dataset = dataset & self.labels


def augmented_model_batch(
    batch: Sample,
    normalise: Callable[[Sample], Sample],
    intensity: nn.Module,
    geometric: nn.Module,
    training: bool,
) -> Sample:
    """The model batch of a raw batch, augmented while training.

    The SAR intensity augmentation works in dB, so it is applied to the raw
    ``image`` before ``normalise``; the geometric one to the model batch, the same
    transform to every image-like key. Shared by the data modules'
    ``on_after_batch_transfer``.

    Args:
        batch: a raw batch.
        normalise: raw batch -> model batch (training statistics).
        intensity: the SAR intensity augmentation.
        geometric: the geometric augmentation.
        training: augment (only while training).

    Returns:
        The model batch.
    """
    if training:
        batch = dict(batch)
        batch['image'] = intensity(batch['image'].float())
    out = normalise(batch)
    if training:
        out = geometric(out)
    return out


def _with_label(dataset: Dataset[Sample]) -> Dataset[Sample]:
    """The chips of a chip store (or a subset of one) whose label is not -1.

    Args:
        dataset: a :class:`BuildingChips` or a ``Subset`` of one.

    Returns:
        A ``Subset`` of the chip store without the unlabelled chips.
    """
    if isinstance(dataset, Subset):
        base, indices = dataset.dataset, np.asarray(dataset.indices, dtype=np.int64)
    else:
        base, indices = dataset, np.arange(len(dataset))  # type: ignore[arg-type]
    assert isinstance(base, BuildingChips)
    labels = np.asarray(base._open()['label']).reshape(len(base), -1)[:, 0]
    return Subset(base, indices[labels[indices] >= 0].tolist())


class SARDamageDataModule(LightningDataModule):
    """Per-building chips of post-event SAR and context, split by city.

    ``root`` is a town catalogue (:class:`~.catalogue.Catalogue`): a JSON file, or a
    folder holding it as ``scene.json`` as ``sardamage simulate --out DIR`` writes it,
    that lists each town's files: ``sar`` (COSMO-SkyMed/CSG GEC or GTC products),
    ``osm`` (building footprints), ``labels`` (Copernicus EMS grading or HOT tags),
    ``dsm`` (and ``dtm``), ``gem`` (exposure CSVs) with ``admin`` (their unit
    polygons). Every town of the splits is checked when the data module is created
    (:meth:`~.catalogue.Catalogue.check`). For each city the datasets are combined as
    ``COSMOSkyMed(units='db') & DSM & OSMBuildings & GEMExposure & DamageLabels``, a
    :class:`~torchgeo_sar_damage.samplers.BuildingSampler` makes one ``size_m``
    window per OSM footprint and a
    :class:`~torchgeo_sar_damage.datasets.BuildingChips` store under ``chips_root``
    holds the chips (built once, reused by every run on the same files).

    **Splits are by city**: every building of a city belongs to the split of its city;
    train, validation and test use the labelled buildings only, prediction
    (:meth:`predict_dataloader`) every building of the test cities. With
    ``holdout`` > 0, spatial blocks of each training city are kept out of training and
    tested as ``seen_<city>`` (:attr:`test_names`): the seen-city split that measures
    the generalisation gap to unseen cities.

    **Normalisation** statistics (:class:`Normalisation`: SAR dB mean and standard
    deviation over valid pixels, DSM relief scale, per-column mean and standard
    deviation of the tabular features, class counts) are fitted on the training
    cities only and kept in :attr:`statistics`; :meth:`state_dict` returns them, so
    Lightning stores them in every checkpoint under the key ``'SARDamageDataModule'``
    and restores them with the checkpoint (``trainer.test(ckpt_path=...)``).

    :meth:`on_after_batch_transfer` turns the raw batch into the model batch of
    ``docs/design/batch_contract.md`` on the accelerator (see :meth:`normalise`)
    and, while training only, augments it (:meth:`augment`): random calibration gain
    and speckle on the SAR (in dB, before standardisation), then the same geometric
    transform on ``sar``, ``sar_valid``, ``footprint`` and ``dsm``
    (:class:`~torchgeo_sar_damage.transforms.SARGeometricAugmentation`; the default
    ``'azimuth'`` policy keeps the look direction, see there).

    Test and predict dataloaders are one per test city (``dataloader_idx`` = position
    in :attr:`test_cities`), so metrics and predictions are reported per city.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = 'outputs/scene',
        train_cities: str | Sequence[str] = ('kahramanmaras', 'nurdagi', 'islahiye'),
        val_cities: str | Sequence[str] = ('adiyaman',),
        test_cities: str | Sequence[str] = ('antakya',),
        modalities: Sequence[str] = TOWN_MODALITIES,
        size_m: float = 32.0,
        batch_size: int = 32,
        num_workers: int = 0,
        balanced: bool = False,
        augmentation: Literal['azimuth', 'none', 'all'] = 'azimuth',
        intensity_augmentation: bool = True,
        chips_root: str | os.PathLike[str] | None = None,
        scheme: Literal['binary', 'four'] = 'binary',
        positive: Sequence[str] | None = None,
        negative: Sequence[str] | None = None,
        progress: bool = True,
        holdout: float = 0.0,
        holdout_block_m: float = 250.0,
        holdout_seed: int = 0,
        gem_id_columns: Mapping[str, str] | None = None,
        pixel_m: float | None = None,
        sar_units: Literal['db', 'dn'] = 'db',
        calibration: Calibration | None = None,
        stacked: bool = False,
    ) -> None:
        """Initialise a new SARDamageDataModule.

        Args:
            root: the town catalogue (a JSON file, see
                :mod:`~torchgeo_sar_damage.datamodules.catalogue`), or a folder
                holding it as ``scene.json`` (e.g. ``sardamage simulate --out``).
            train_cities: slugs of the training cities.
            val_cities: slugs of the validation cities (threshold, early stopping).
            test_cities: slugs of the test (unseen) cities.
            modalities: a non-empty subset of
                :data:`~torchgeo_sar_damage.batch.TOWN_MODALITIES` (``'sar'``,
                ``'osm'``, ``'dsm'``, ``'gem'``; the towns have no optical imagery);
                decides the ``tabular`` columns of the model batch.
            size_m: window side in metres (the chip is ``size_m`` / pixel size wide).
            batch_size: buildings per batch.
            num_workers: dataloader worker processes.
            balanced: draw training buildings with probabilities inversely
                proportional to their class frequency
                (:class:`~torch.utils.data.WeightedRandomSampler`).
            augmentation: geometric augmentation policy while training: ``'azimuth'``
                (flips along azimuth, physically valid), ``'none'`` or ``'all'``.
            intensity_augmentation: random calibration gain and speckle on the SAR
                while training.
            chips_root: folder of the chip stores (default ``root/.chips``).
            scheme: ``'binary'`` labels (damaged or not) or the ``'four'`` EMS grades.
            positive: grades labelled 1 under ``'binary'``
                (see :class:`~torchgeo_sar_damage.datasets.DamageLabels`).
            negative: grades labelled 0 under ``'binary'``.
            progress: show progress bars while building chip stores.
            holdout: share of each training city's ``holdout_block_m`` blocks held
                out of training and tested as *seen-city* test sets (see
                :func:`holdout_blocks`); 0 trains on every labelled building.
            holdout_block_m: side of the held-out blocks in metres.
            holdout_seed: random seed of the held-out blocks.
            gem_id_columns: columns of every town's ``admin`` layer that hold GEM's
                codes, e.g. ``{'ID_1': 'ISO_1'}`` for GADM-style polygons (a town's
                own ``gem_id_columns`` in the catalogue takes precedence).
            pixel_m: SAR pixel spacing in metres to resample every product to
                (default: the products' own spacing, which must then be the same in
                every town).
            sar_units: what the model reads of the SAR: ``'db'``, sigma nought in
                decibels (calibrated products), or ``'dn'``, the products' digital
                numbers as stored (uncalibrated products; the intensity augmentation,
                which works in dB, must then be off); prediction must read the same.
            calibration: calibration attributes for products that lack them, as
                :class:`~torchgeo_sar_damage.datasets.COSMOSkyMed`'s ``calibration``
                (one mapping for every product, or file -> mapping).
            stacked: give TorchGeo's sample layout instead of the model batch:
                ``image`` ``[B, C, H, W]`` (the image modalities' channels stacked by
                :func:`~torchgeo_sar_damage.batch.stack_images`: SAR dB, SAR valid
                mask, footprint target and neighbours, DSM relief, for the chosen
                modalities; :attr:`num_channels` of them) and ``label``, with the
                same splits, chips, normalisation and augmentation, for
                :class:`torchgeo.tasks.Classification` and any timm or TorchGeo
                model. Tabular features are not in it. TorchGeo's tasks have no
                ignore label, so this mode leaves out the chips whose label is -1
                (a labelled building whose window centre no graded polygon covers).

        .. versionchanged:: 0.2
           *sar_units*, *calibration* and *stacked*.

        Raises:
            ArgumentError: if a city is unknown or in two splits, there is no training
                city, a modality is unknown or ``'optical'``, a number is out of
                range or the towns'
                SAR products have different pixel spacings and ``pixel_m`` is None.
            CatalogueError: if the catalogue is missing or malformed, or a town's
                files are missing, lack a CRS, labels or do not overlap (see
                :meth:`Catalogue.check`).
        """
        # plain strings in the hyper-parameters, so checkpoints load with
        # torch.load(weights_only=True)
        root = os.fspath(root)
        chips_root = None if chips_root is None else os.fspath(chips_root)
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        self.modalities = check_modalities(modalities)
        if 'optical' in self.modalities:
            raise ArgumentError(
                "modalities: the towns of a catalogue have no 'optical' imagery; "
                'pre-event optical images come with the BRIGHT and QuickQuakeBuildings '
                "benchmark datasets only: leave 'optical' out here (choose from "
                f'{", ".join(TOWN_MODALITIES)})'
            )
        _check_settings(size_m, batch_size, num_workers, scheme, pixel_m, sar_units)
        self.size_m = float(size_m)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.balanced = balanced
        self.scheme = scheme
        self.num_classes = 2 if scheme == 'binary' else 4
        self.progress = progress
        self.chips_root = Path(chips_root) if chips_root else self.root / '.chips'
        self._labels_kwargs: dict[str, Any] = {'scheme': scheme}
        if positive is not None:
            self._labels_kwargs['positive'] = tuple(positive)
        if negative is not None:
            self._labels_kwargs['negative'] = tuple(negative)
        # validate the augmentation policy now (ArgumentError names the valid ones)
        self.geometric_augmentation = SARGeometricAugmentation(
            augmentation, image_keys=IMAGE_KEYS, mask_keys=MASK_KEYS
        )
        self.intensity_augmentation: nn.Module = (
            nn.Sequential(RandomDecibelGain(domain='db'), RandomSpeckle(domain='db'))
            if intensity_augmentation
            else nn.Identity()
        )

        if sar_units == 'dn' and intensity_augmentation:
            raise ArgumentError(
                "sar_units='dn' reads digital numbers, but the intensity augmentation "
                'works on sigma nought in dB: give intensity_augmentation=False'
            )
        self.sar_units: Literal['db', 'dn'] = sar_units
        self.stacked = bool(stacked)
        if self.stacked and not any(m in IMAGE_INPUTS for m in self.modalities):
            raise ArgumentError(
                f'stacked=True needs an image modality; {list(self.modalities)} has none'
            )
        self.calibration = calibration
        self.pixel_m = None if pixel_m is None else float(pixel_m)
        self.gem_id_columns = dict(gem_id_columns) if gem_id_columns else None
        #: The town catalogue.
        self.catalogue = Catalogue(self.root)
        self.scene = self.catalogue.raw
        available = list(self.catalogue.towns)
        splits = {
            'train_cities': train_cities,
            'val_cities': val_cities,
            'test_cities': test_cities,
        }
        for name, cities in self._check_splits(splits, available).items():
            setattr(self, name, cities)
        self.train_cities: list[str]
        self.val_cities: list[str]
        self.test_cities: list[str]
        if not self.train_cities:
            raise ArgumentError('train_cities is empty; give at least one city')

        if holdout and not self.train_cities:
            raise ArgumentError('holdout needs training cities')
        holdout_blocks(np.zeros((0, 2)), holdout, holdout_block_m)  # validate
        self.holdout = float(holdout)
        self.holdout_block_m = float(holdout_block_m)
        self.holdout_seed = int(holdout_seed)

        self._check_towns()
        if self.chips_root == self.root / '.chips' and self.root.suffix == '.json':
            self.chips_root = self.root.parent / '.chips'

        self.statistics_: Normalisation | None = None
        self.sensor_: dict[str, Any] | None = None
        self._cities: dict[str, CityDatasets] = {}
        self._chips: dict[tuple[str, bool], BuildingChips] = {}
        self.train_dataset: ConcatDataset[Sample] | None = None
        self.val_dataset: ConcatDataset[Sample] | None = None
        self.test_datasets: list[Dataset[Sample]] = []
        self.predict_datasets: list[BuildingChips] = []

    def _check_splits(
        self, splits: Mapping[str, str | Sequence[str]], available: Sequence[str]
    ) -> dict[str, list[str]]:
        """Each split's towns: known to the catalogue, each in one split only."""
        seen: dict[str, str] = {}
        chosen: dict[str, list[str]] = {}
        for name, value in splits.items():
            cities = [value] if isinstance(value, str) else list(value)
            unknown = [c for c in cities if c not in available]
            if unknown:
                raise ArgumentError(
                    f'{name}: unknown cities {unknown}; {self.catalogue.path} '
                    f'has: {", ".join(available)}'
                )
            for city in cities:
                if city in seen:
                    raise ArgumentError(
                        f'city {city!r} is in both {seen[city]} and {name}; a city '
                        'belongs to one split only'
                    )
                seen[city] = name
            chosen[name] = cities
        return chosen

    def _check_towns(self) -> None:
        """Check every town's files before anything is read or trained."""
        used = self.train_cities + self.val_cities + self.test_cities
        self.catalogue.check(used, self.modalities, labelled=used)
        spacings = {t: self.catalogue.spacing[t] for t in used}
        if self.pixel_m is None and len(set(spacings.values())) > 1:
            listed = ', '.join(f'{t} {x:g} x {y:g}' for t, (x, y) in spacings.items())
            raise ArgumentError(
                f"the towns' SAR products have different pixel spacings ({listed}); "
                'windows would hold different ground areas per pixel: give pixel_m '
                '(--data.pixel_m) to resample every product to one spacing'
            )

    # -- files -------------------------------------------------------------------

    @staticmethod
    def _read_scene(root: Path) -> dict[str, Any]:
        """The catalogue of ``root`` as read (see :class:`Catalogue`)."""
        return Catalogue(root).raw

    def city(self, slug: str) -> CityDatasets:
        """The combined datasets of a city (opened on first use).

        Args:
            slug: the city.

        Returns:
            Its datasets.
        """
        if slug not in self._cities:
            self._cities[slug] = CityDatasets(
                self.catalogue[slug],
                self.modalities,
                self._labels_kwargs,
                self.gem_id_columns,
                self.pixel_m,
                self.sar_units,
                self.calibration,
            )
        return self._cities[slug]

    def chips(self, slug: str, labelled: bool = True) -> BuildingChips:
        """The chip store of a city, built on first use.

        Args:
            slug: the city.
            labelled: labelled buildings only (else every building).

        Returns:
            One chip per building of the city, in the sampler's order.
        """
        key = (slug, labelled)
        if key not in self._chips:
            city = self.city(slug)
            buildings = city.osm.buildings
            if labelled:
                buildings = buildings[city.labels.labelled(buildings)]
            # prediction leaves the labels out, so that buildings outside the
            # grading's area of interest are assessed too
            dataset = city.dataset if labelled else city.inputs
            sampler = BuildingSampler(dataset, buildings, size=self.size_m)
            self._chips[key] = BuildingChips(
                dataset, sampler, self.chips_root, progress=self.progress
            )
        return self._chips[key]

    def heldout(self, slug: str) -> np.ndarray:
        """Which labelled buildings of a city are held out of training.

        Args:
            slug: the city.

        Returns:
            ``[N]`` boolean mask over :meth:`chips` ``(slug)``; all False unless
            ``holdout`` > 0 and ``slug`` is a training city.
        """
        chips = self.chips(slug)
        if not self.holdout or slug not in self.train_cities:
            return np.zeros(len(chips), dtype=bool)
        centres = np.zeros((len(chips.queries), 2))
        for i, query in enumerate(chips.queries):
            assert isinstance(query, tuple)
            assert len(query) >= 2
            x, y = query[0], query[1]
            centres[i] = ((x.start + x.stop) / 2, (y.start + y.stop) / 2)
        # one stream per city and seed, independent of the other cities chosen
        seed = [self.holdout_seed, *slug.encode()]
        return holdout_blocks(centres, self.holdout, self.holdout_block_m, seed)

    def training_part(self, slug: str) -> Dataset[Sample]:
        """The labelled buildings of a training city that are trained on.

        Args:
            slug: a training city.

        Returns:
            Its chips without the held-out blocks.
        """
        chips = self.chips(slug)
        if not self.holdout:
            return chips
        keep = np.flatnonzero(~self.heldout(slug))
        return Subset(chips, keep.tolist())

    @property
    def test_names(self) -> list[str]:
        """Names of the test sets, in dataloader order.

        The test cities, then (with ``holdout`` > 0) ``seen_<city>`` for the held-out
        blocks of each training city.
        """
        seen = [f'seen_{c}' for c in self.train_cities] if self.holdout else []
        return [*self.test_cities, *seen]

    def _stage_chips(self, stage: str) -> list[tuple[str, bool]]:
        match stage:
            case 'fit':
                cities = self.train_cities + self.val_cities
                return [(c, True) for c in cities]
            case 'validate':
                return [(c, True) for c in self.val_cities]
            case 'test':
                return [(c, True) for c in self.test_cities]
            case 'predict':
                return [(c, False) for c in self.test_cities]
        return []

    def prepare_data(self) -> None:
        """Build the chip stores the current stage needs (on one process only)."""
        fn = self.trainer.state.fn if self.trainer is not None else None
        stage_name = fn.value if fn is not None else 'fit'
        for slug, labelled in self._stage_chips(stage_name):
            self.chips(slug, labelled)

    def setup(self, stage: str) -> None:
        """Open the chip stores of a stage and fit the statistics when training.

        Args:
            stage: ``'fit'``, ``'validate'``, ``'test'`` or ``'predict'``.
        """
        model = self.trainer.lightning_module if self.trainer is not None else None
        hparams = getattr(model, 'hparams', {}) if model is not None else {}
        if model is not None and not self.stacked and 'modalities' not in hparams:
            raise ArgumentError(
                f'{type(model).__name__} takes TorchGeo samples (image, label), not '
                "this package's model batch: give stacked=True (--data.stacked true)"
            )
        # TorchGeo's tasks have no ignore label: the stacked mode leaves out the
        # chips whose label is -1 (no grade under the window centre)
        known = _with_label if self.stacked else lambda dataset: dataset
        if stage == 'fit':
            self.train_dataset = ConcatDataset(
                [known(self.training_part(c)) for c in self.train_cities]
            )
            if self.statistics_ is None:  # before the first batch
                self.fit_statistics()
        if stage in ('fit', 'validate') and self.val_cities:
            self.val_dataset = ConcatDataset(
                [known(self.chips(c)) for c in self.val_cities]
            )
        if stage == 'test':
            self.test_datasets = [known(self.chips(c)) for c in self.test_cities]
            if self.holdout:
                for slug in self.train_cities:
                    held = np.flatnonzero(self.heldout(slug)).tolist()
                    self.test_datasets.append(known(Subset(self.chips(slug), held)))
        if stage == 'predict':
            self.predict_datasets = [self.chips(c, False) for c in self.test_cities]

    # -- statistics ----------------------------------------------------------------

    @property
    def raw_feature_names(self) -> list[str]:
        """Names of the columns of the raw ``tabular`` vector."""
        return self.city(self.train_cities[0]).tabular_names

    @property
    def feature_names(self) -> list[str]:
        """Names of the columns of the model batch's ``tabular``."""
        return feature_names(self.modalities)

    @property
    def statistics(self) -> Normalisation:
        """The normalisation statistics, fitted on the training cities on first use."""
        if self.statistics_ is None:
            self.statistics_ = self.fit_statistics()
        return self.statistics_

    def fit_statistics(self) -> Normalisation:
        """Fit the normalisation statistics on the labelled training buildings.

        Returns:
            The statistics (also kept in :attr:`statistics`).
        """
        names = self.raw_feature_names
        for slug in self.train_cities[1:]:
            if self.city(slug).tabular_names != names:
                raise InputFileError(
                    self.catalogue.path,
                    f'the cities {self.train_cities[0]!r} and {slug!r} have different '
                    'modalities; give every city the same kinds of files',
                )
        dataset: ConcatDataset[Sample] = ConcatDataset(
            [self.training_part(c) for c in self.train_cities]
        )
        loader = DataLoader(dataset, batch_size=512, collate_fn=collate_buildings)
        self.statistics_ = Normalisation.fit(
            iter(loader), self.train_cities, names, self.num_classes
        )
        return self.statistics_

    def training_labels(self) -> Tensor:
        """Labels of the training buildings, in training dataset order."""
        dataset: ConcatDataset[Sample] = ConcatDataset(
            [self.training_part(c) for c in self.train_cities]
        )
        loader = DataLoader(dataset, batch_size=512, collate_fn=collate_buildings)
        return torch.cat([batch['label'] for batch in loader])

    @property
    def sensor(self) -> dict[str, Any]:
        """What the model is trained on, as :func:`sar_product_info` of the towns.

        Kept in checkpoints, so that prediction can resample a product of another
        pixel spacing and warn about another polarisation or product type.
        """
        if self.sensor_ is None:
            towns = self.train_cities + self.val_cities
            self.sensor_ = sar_product_info(
                [self.city(t).sar for t in towns], self.size_m, self.sar_units
            )
        return self.sensor_

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the data module.

        Returns:
            ``{'statistics': Normalisation.to_dict(), 'sensor': sensor}`` once the
            statistics are fitted (:attr:`sensor`: pixel spacing, window size in
            pixels, polarisations and product types of the training towns), else
            ``{}``.
        """
        if self.statistics_ is None:
            return {}
        return {'statistics': self.statistics_.to_dict(), 'sensor': self.sensor}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training statistics from a checkpoint.

        Args:
            state_dict: the output of :meth:`state_dict`.
        """
        if 'statistics' in state_dict:
            self.statistics_ = Normalisation.from_dict(state_dict['statistics'])
        if 'sensor' in state_dict:
            self.sensor_ = dict(state_dict['sensor'])

    # -- loaders -------------------------------------------------------------------

    def _loader(
        self,
        dataset: Dataset[Sample],
        shuffle: bool = False,
        sampler: Sampler[int] | None = None,
        drop_last: bool = False,
    ) -> DataLoader[Sample]:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            collate_fn=collate_buildings,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[Sample]:
        """Labelled buildings of the training cities, shuffled (or class-balanced).

        Returns:
            The training dataloader.
        """
        if self.train_dataset is None:
            self.setup('fit')
        assert self.train_dataset is not None
        # a last batch of one sample breaks BatchNorm (see FusionNet)
        drop_last = len(self.train_dataset) > self.batch_size
        if not self.balanced:
            return self._loader(self.train_dataset, shuffle=True, drop_last=drop_last)
        counts = torch.tensor(self.statistics.class_counts, dtype=torch.float64)
        labels = self.training_labels()
        weights = 1.0 / counts.clamp(min=1)[labels.clamp(min=0)]
        sampler = WeightedRandomSampler(
            weights.tolist(), num_samples=len(labels), replacement=True
        )
        return self._loader(self.train_dataset, sampler=sampler, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader[Sample]:
        """Labelled buildings of the validation cities.

        Returns:
            The validation dataloader.
        """
        if self.val_dataset is None:
            if not self.val_cities:
                raise ArgumentError('no val_cities: there is nothing to validate on')
            self.setup('validate')
        assert self.val_dataset is not None
        return self._loader(self.val_dataset)

    def test_dataloader(self) -> list[DataLoader[Sample]]:
        """Labelled buildings of the test sets, one dataloader per set.

        Returns:
            The test dataloaders, in the order of :attr:`test_names` (the test
            cities, then the held-out blocks of the training cities).
        """
        if not self.test_datasets:
            if not self.test_names:
                raise ArgumentError('no test_cities: there is nothing to test on')
            self.setup('test')
        return [self._loader(ds) for ds in self.test_datasets]

    def predict_dataloader(self) -> list[DataLoader[Sample]]:
        """Every building of the test cities (labelled or not), one loader per city.

        Returns:
            The prediction dataloaders, in the order of :attr:`test_cities`.
        """
        if not self.predict_datasets:
            if not self.test_cities:
                raise ArgumentError('no test_cities: there is nothing to predict')
            self.setup('predict')
        return [self._loader(ds) for ds in self.predict_datasets]

    # -- batches on the accelerator ------------------------------------------------

    def normalise(self, batch: Sample) -> Sample:
        """Turn a raw batch into the model batch (``docs/design/batch_contract.md``).

        Args:
            batch: a raw batch (``image``, ``dsm``, ``footprint``, ``tabular``,
                ``label``, ``building_id``...).

        Returns:
            The model batch of :func:`normalise_batch` with the training statistics.
        """
        return normalise_batch(batch, self.statistics, self.modalities)

    def augment(self, batch: Sample) -> Sample:
        """Augment a model batch (training only; see the class docstring).

        The SAR intensity augmentations work in dB, so :meth:`on_after_batch_transfer`
        applies them to the raw ``image`` before :meth:`normalise`; this method applies
        the geometric transform, the same to every image-like key.

        Args:
            batch: a model batch.

        Returns:
            The augmented batch.
        """
        out: Sample = self.geometric_augmentation(batch)
        return out

    def on_after_batch_transfer(self, batch: Sample, dataloader_idx: int) -> Sample:
        """Make the model batch on the accelerator, augmented while training.

        Args:
            batch: a raw batch.
            dataloader_idx: index of its dataloader.

        Returns:
            The model batch.
        """
        training = self.trainer is not None and self.trainer.training
        model_batch = augmented_model_batch(
            batch,
            self.normalise,
            self.intensity_augmentation,
            self.geometric_augmentation,
            training,
        )
        if self.stacked:
            return {
                'image': stack_images(model_batch, self.modalities),
                'label': model_batch['label'],
                'building_id': model_batch['building_id'],
            }
        return model_batch

    @property
    def num_channels(self) -> int:
        """Channels of ``image`` in the stacked sample mode (``in_channels``)."""
        return image_channel_count(self.modalities)
