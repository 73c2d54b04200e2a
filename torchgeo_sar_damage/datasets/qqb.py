# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""QuickQuakeBuildings: per-building post-earthquake SAR and optical patches."""

import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

import h5py
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor
from torchgeo.datasets import DatasetNotFoundError, NonGeoDataset
from torchgeo.datasets.utils import Sample

from ..errors import ArgumentError, InputFileError

#: Where the data set is published.
REPOSITORY = 'https://github.com/ya0-sun/PostEQ-SARopt-BuildingDamage'

#: SAR values below this are missing (the authors' loader, ``dataset.py``).
SAR_MISSING_BELOW = -100.0

#: Footprint coding of this package: no building, another building, the target.
NONE, OTHER, TARGET = 0, 1, 2


def _get_data_dir(root: str | os.PathLike[str]) -> str:
    """The folder that holds the fold files: ``root/data`` if it exists, else root."""
    root = os.fspath(root)
    data = os.path.join(root, 'data')
    return data if os.path.isdir(data) else root


def _resize_image(image: Tensor, size: int) -> Tensor:
    """Resize a [C, H, W] float image to size x size, NaN-aware bilinear.

    Valid pixels are interpolated bilinearly (with antialiasing when shrinking) from
    the valid source pixels only; an output pixel is NaN where its nearest source
    pixel is NaN.
    """
    if image.shape[-2:] == (size, size):
        return image
    out_size = (size, size)
    valid = ~torch.isnan(image)
    if bool(valid.all()):
        return F.interpolate(
            image[None], out_size, mode='bilinear', antialias=True, align_corners=False
        )[0]
    weight = valid.to(image.dtype)
    stacked = torch.cat([torch.where(valid, image, 0.0), weight])[None]
    resized = F.interpolate(
        stacked, out_size, mode='bilinear', antialias=True, align_corners=False
    )[0]
    num, den = resized[: image.shape[0]], resized[image.shape[0] :]
    nearest = F.interpolate(weight[None], out_size, mode='nearest-exact')[0]
    keep = (nearest > 0.5) & (den > 0)
    return torch.where(keep, num / den.clamp_min(1e-12), float('nan'))


def _resize_mask(mask: Tensor, size: int) -> Tensor:
    """Resize a [C, H, W] uint8 mask to size x size with nearest-exact sampling."""
    if mask.shape[-2:] == (size, size):
        return mask
    resized = F.interpolate(mask[None].float(), (size, size), mode='nearest-exact')
    return resized[0].to(torch.uint8)


class QuickQuakeBuildings(NonGeoDataset):
    """QuickQuakeBuildings (QQB) post-earthquake building damage data set.

    One Capella Space X-band SAR scene (Geocoded Terrain Corrected, HH, 2023-02-09)
    and Maxar optical imagery of İslahiye (Gaziantep, Türkiye) after the 6 February
    2023 earthquakes, cut into one patch per OpenStreetMap building: 4,029
    buildings, 169 of them damaged (HOT's ``destroyed:building=yes`` tags). Each
    building has four MATLAB v7.3 (HDF5) files: the SAR patch, its footprint
    mask, the optical patch and its footprint mask. Five fixed folds (806, 807,
    805, 805 and 806 buildings) define the benchmark: train on four, validate on
    the fifth.

    Getting the data: the fold files are in the git repository,
    ``git clone https://github.com/ya0-sun/PostEQ-SARopt-BuildingDamage``; the
    patches are not: download them from the TeraBox link in its README and extract
    them into its ``data/`` folder. Nothing is downloaded at run time.

    Layout, under ``data/``::

        fold-1.txt ... fold-5.txt      lines "damaged/<osm id>,1" or "intact/<osm id>,0"
        damaged/<osm id>_SAR.mat       key x1: SAR patch (values < -100 missing)
        damaged/<osm id>_SARftp.mat    key x2: footprint mask on the SAR grid
        damaged/<osm id>_opt.mat       key x3: optical patch, 3 bands
        damaged/<osm id>_optftp.mat    key x4: footprint mask on the optical grid
        intact/...                     the same for intact buildings

    A sample holds:

    * ``sar``: float32 [1, H, W], values as stored (the authors' loader treats them
      as dB-like: missing values are below -100); missing values are NaN, as in
      this package's other SAR inputs, and models derive the valid mask from them.
    * ``footprint``: uint8 [1, H, W] on the SAR grid, this package's coding: 0 no
      building, 2 the target. QQB masks mark only the target building, so 1
      (another building) never occurs.
    * ``optical``: float32 [3, H', W'] values as stored (RGB), and
      ``optical_footprint``: uint8 [1, H', W'] coded like ``footprint``.
    * ``label``: int64 scalar, 1 damaged, 0 intact; ``osm_id``: int64 scalar;
      ``fold``: int64 scalar, 1 to 5.

    With ``size`` every image and mask is resized to size x size pixels (H = W =
    H' = W' = size): images bilinearly, antialiased when shrinking, from valid
    pixels only, NaN where the nearest source pixel is NaN; masks by nearest-exact
    sampling, so a centred footprint stays centred. ``size=None`` keeps each
    patch as stored (shapes then differ between buildings and between SAR and
    optical, so samples do not collate into batches).

    .. note::

       MATLAB stores arrays column-major, so h5py sees every array transposed
       (an H x W SAR patch as W x H, an H x W x 3 optical patch as 3 x W x H). This
       dataset swaps the last two axes back, giving rows and columns as MATLAB
       shows them. The authors' loader (``dataset.py``) does not, which makes no
       difference to their square-resized CNN inputs but does to anything that
       combines these patches with other imagery.

    .. note::

       The published protocol has no separate test fold: each run trains on four
       folds and reports F1 (at the threshold best on that fold) and AUROC on the
       fifth, at the epoch with the best AUROC on that same fold; the numbers are
       5-fold means. For example, fold 1 held out::

           train = QuickQuakeBuildings(root, folds=[2, 3, 4, 5])
           val = QuickQuakeBuildings(root, folds=[1])

    If you use this dataset in your research, please cite the following paper:

    * https://doi.org/10.1109/LGRS.2024.3406966

    .. versionadded:: 0.1
    """

    #: Class names, indexed by ``label``.
    classes: ClassVar[tuple[str, str]] = ('intact', 'damaged')

    #: The five benchmark folds.
    all_folds: ClassVar[tuple[int, ...]] = (1, 2, 3, 4, 5)

    #: One line of a fold file, e.g. ``damaged/1139272419,1``:
    #:
    #: * ``folder``: ``damaged`` or ``intact``, the folder that holds the patches;
    #: * ``osm_id``: the OpenStreetMap id of the building (8 to 10 digits);
    #: * ``label``: 1 damaged, 0 intact (must agree with the folder).
    #:
    #: The published files end lines with CRLF; surrounding white space and blank
    #: lines are ignored.
    fold_line_regex = re.compile(
        r"""
        ^(?P<folder>damaged|intact)
        /(?P<osm_id>[0-9]+)
        ,(?P<label>[01])$
        """,
        re.VERBOSE,
    )

    #: Per sample key: file-name suffix (``<osm id>_<suffix>.mat``) and HDF5 key.
    patch_files: ClassVar[dict[str, tuple[str, str]]] = {
        'sar': ('SAR', 'x1'),
        'footprint': ('SARftp', 'x2'),
        'optical': ('opt', 'x3'),
        'optical_footprint': ('optftp', 'x4'),
    }

    def __init__(
        self,
        root: str | os.PathLike[str] = 'data',
        folds: Iterable[int] = all_folds,
        size: int | None = 64,
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        """Initialise a new QuickQuakeBuildings instance.

        Args:
            root: the clone of the authors' repository (the folder holding
                ``data/``), or its ``data/`` folder itself: ``root/data`` is used
                when it exists, else ``root``.
            folds: which fold files to read (1 to 5); the buildings listed in them,
                in file order.
            size: output height and width in pixels of every image and mask; the
                default 64 matches this package's 64 x 64 building windows (the
                authors resized to 224). None keeps the stored sizes.
            transforms: a function/transform that takes a sample and returns a
                transformed version.

        Raises:
            ArgumentError: if *folds* or *size* is invalid.
            DatasetNotFoundError: if *root* holds no fold file.
            InputFileError: if a fold file is missing or malformed, a building is
                listed twice, or a listed building's ``.mat`` file is missing.
        """
        self.root = os.fspath(root)
        self.folds = self._check_folds(folds)
        if size is not None and (isinstance(size, bool) or size < 1):
            raise ArgumentError(f'size must be a positive number of pixels, not {size}')
        self.size = size
        self.transforms = transforms
        self.data_dir = _get_data_dir(self.root)
        self._check_root()
        entries = [e for fold in self.folds for e in self._read_fold(fold)]
        self._check_duplicates(entries)
        #: Per building, in order: path without ``_<suffix>.mat``, label, OSM id, fold.
        self.stems = [e[0] for e in entries]
        self.labels = [e[1] for e in entries]
        self.osm_ids = [e[2] for e in entries]
        self.fold_of = [e[3] for e in entries]
        self._check_files()

    def _check_folds(self, folds: Iterable[int]) -> list[int]:
        """Validate the fold numbers: 1 to 5, at least one, no repeats."""
        chosen = list(folds)
        if not chosen:
            raise ArgumentError('folds is empty: choose some of 1, 2, 3, 4, 5')
        for fold in chosen:
            if isinstance(fold, bool) or fold not in self.all_folds:
                raise ArgumentError(f'folds must be among 1, 2, 3, 4, 5, not {fold!r}')
        if len(set(chosen)) != len(chosen):
            raise ArgumentError(f'folds has repeats: {chosen}')
        return chosen

    def _fold_path(self, fold: int) -> str:
        """The path of a fold file."""
        return os.path.join(self.data_dir, f'fold-{fold}.txt')

    def _check_root(self) -> None:
        """Raise DatasetNotFoundError if the root holds no fold file at all."""
        if any(os.path.isfile(self._fold_path(f)) for f in self.all_folds):
            return
        error = DatasetNotFoundError(self)
        where = (
            f'{error.args[0]} No QuickQuakeBuildings fold file (fold-1.txt ... '
            f'fold-5.txt) in {self.root!r} or {os.path.join(self.root, "data")!r}: '
            f'git clone {REPOSITORY} and download the patches from the TeraBox link '
            "in its README into its 'data/' folder."
        )
        error.args = (where,)
        raise error

    def _read_fold(self, fold: int) -> list[tuple[str, int, int, int]]:
        """Parse one fold file into (path stem, label, OSM id, fold) entries."""
        path = self._fold_path(fold)
        if not os.path.isfile(path):
            raise InputFileError(
                path,
                f'fold file missing; it is in {REPOSITORY} (data/fold-{fold}.txt), '
                'or choose other folds',
            )
        entries = []
        with open(path, encoding='utf-8') as f:
            for number, line in enumerate(f, start=1):
                text = line.strip()
                if not text:
                    continue
                match = self.fold_line_regex.match(text)
                if match is None or (match['folder'] == 'damaged') != (
                    match['label'] == '1'
                ):
                    raise InputFileError(
                        path,
                        f'line {number} is {text!r}, expected "damaged/<osm id>,1" '
                        'or "intact/<osm id>,0"; restore the file from '
                        f'{REPOSITORY}',
                    )
                stem = os.path.join(self.data_dir, match['folder'], match['osm_id'])
                entries.append((stem, int(match['label']), int(match['osm_id']), fold))
        return entries

    def _check_duplicates(self, entries: Sequence[tuple[str, int, int, int]]) -> None:
        """Refuse a building listed twice (in one fold or in two)."""
        seen: dict[int, int] = {}
        for _, _, osm_id, fold in entries:
            if osm_id in seen:
                raise InputFileError(
                    self._fold_path(fold),
                    f'building {osm_id} is listed twice (also in '
                    f'fold-{seen[osm_id]}.txt); the folds must not overlap',
                )
            seen[osm_id] = fold

    def _check_files(self) -> None:
        """Refuse listed buildings whose .mat files are missing."""
        for folder in sorted({os.path.dirname(p) for p in self.stems}):
            if not os.path.isdir(folder):
                raise InputFileError(
                    folder,
                    'folder of patches missing; the patches are not in the git '
                    'repository: download them from the TeraBox link in the README '
                    f'of {REPOSITORY} and extract them into {self.data_dir!r}',
                )
        missing = [
            f'{stem}_{suffix}.mat'
            for stem in self.stems
            for suffix, _ in self.patch_files.values()
            if not os.path.isfile(f'{stem}_{suffix}.mat')
        ]
        if missing:
            raise InputFileError(
                missing[0],
                f'missing ({len(missing)} listed .mat files are missing in all); '
                'every listed building needs its _SAR, _SARftp, _opt and _optftp '
                'files: download the patches again',
            )

    def __len__(self) -> int:
        """The number of buildings in the chosen folds.

        Returns:
            length of the dataset
        """
        return len(self.stems)

    def __getitem__(self, index: int) -> Sample:
        """One building's patches, masks and label.

        Args:
            index: index to return

        Returns:
            the sample (keys in the class description)

        Raises:
            IndexError: if *index* is out of range.
            InputFileError: if a file is unreadable, lacks its key or has the wrong
                shape.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)} buildings')
        stem = self.stems[index]
        arrays = {key: self._read(stem, key) for key in self.patch_files}
        self._check_shapes(stem, arrays)
        sar = arrays['sar'].astype(np.float32)
        sar[~(sar >= SAR_MISSING_BELOW) | ~np.isfinite(sar)] = np.nan
        sample: Sample = {
            'sar': torch.from_numpy(sar)[None],
            'footprint': self._footprint(arrays['footprint']),
            'optical': torch.from_numpy(arrays['optical'].astype(np.float32)),
            'optical_footprint': self._footprint(arrays['optical_footprint']),
            'label': torch.tensor(self.labels[index], dtype=torch.int64),
            'osm_id': torch.tensor(self.osm_ids[index], dtype=torch.int64),
            'fold': torch.tensor(self.fold_of[index], dtype=torch.int64),
        }
        if self.size is not None:
            for key in ('sar', 'optical'):
                sample[key] = _resize_image(sample[key], self.size)
            for key in ('footprint', 'optical_footprint'):
                sample[key] = _resize_mask(sample[key], self.size)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _read(self, stem: str, key: str) -> np.ndarray:
        """Read one array from a MATLAB v7.3 file, rows and columns as in MATLAB."""
        suffix, name = self.patch_files[key]
        path = f'{stem}_{suffix}.mat'
        try:
            with h5py.File(path, 'r') as f:
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    raise InputFileError(
                        path,
                        f'has no array {name!r} (keys: {sorted(f.keys())}); a QQB '
                        f'_{suffix}.mat file holds {name}: download it again',
                    )
                array = np.asarray(f[name][()])
        except OSError as error:
            raise InputFileError(
                path,
                f'unreadable as a MATLAB v7.3 (HDF5) file ({error}); download it again',
            ) from error
        if array.dtype.kind not in 'biuf':
            raise InputFileError(
                path, f'{name!r} is not numeric ({array.dtype}); download it again'
            )
        return np.swapaxes(array, -1, -2) if array.ndim >= 2 else array

    def _check_shapes(self, stem: str, arrays: dict[str, np.ndarray]) -> None:
        """Check ranks, the 3 optical bands, and that masks match their images."""
        expected = {'sar': 2, 'footprint': 2, 'optical': 3, 'optical_footprint': 2}
        for key, ndim in expected.items():
            shape = arrays[key].shape
            if arrays[key].ndim != ndim or (key == 'optical' and shape[0] != 3):
                suffix, name = self.patch_files[key]
                stored = shape[:-2] + shape[:-3:-1] if len(shape) >= 2 else shape
                want = 'W x H' if ndim == 2 else '3 x W x H (MATLAB H x W x 3)'
                raise InputFileError(
                    f'{stem}_{suffix}.mat',
                    f'{name!r} has shape {stored} in h5py, expected {want}; '
                    'download it again',
                )
        for mask, image in (('footprint', 'sar'), ('optical_footprint', 'optical')):
            if arrays[mask].shape[-2:] != arrays[image].shape[-2:]:
                raise InputFileError(
                    f'{stem}_{self.patch_files[mask][0]}.mat',
                    f'mask shape {arrays[mask].shape[-2:]} differs from '
                    f'{stem}_{self.patch_files[image][0]}.mat '
                    f'{arrays[image].shape[-2:]}; download both again',
                )

    @staticmethod
    def _footprint(array: np.ndarray) -> Tensor:
        """A [1, H, W] uint8 mask: 2 where the stored mask is positive, else 0."""
        return torch.from_numpy(np.where(array > 0, TARGET, NONE).astype(np.uint8))[
            None
        ]

    def plot(
        self, sample: Sample, show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Plot a sample: SAR and optical, each with its footprint outlined.

        Args:
            sample: a sample returned by :meth:`__getitem__`.
            show_titles: show the building, label (and prediction) above the panels.
            suptitle: optional figure title.

        Returns:
            a matplotlib Figure with the rendered sample
        """
        sar = sample['sar'][0].numpy()
        optical = sample['optical'].numpy().transpose(1, 2, 0).astype(np.float64)
        low, high = np.nanpercentile(optical, (2, 98)) if optical.size else (0, 1)
        optical = np.clip((optical - low) / max(high - low, 1e-6), 0, 1)
        fig, axes = plt.subplots(1, 2, figsize=(8, 4))
        axes[0].imshow(sar, cmap='gray', interpolation='nearest')
        axes[1].imshow(optical, interpolation='nearest')
        for ax, key in zip(axes, ('footprint', 'optical_footprint'), strict=True):
            mask = sample[key][0].numpy()
            if (mask == TARGET).any():
                ax.contour(mask == TARGET, levels=[0.5], colors='tab:red')
            ax.axis('off')
        if show_titles:
            axes[0].set_title('SAR')
            axes[1].set_title('optical')
            label = self.classes[int(sample['label'])]
            title = f'building {int(sample["osm_id"])}: {label}'
            if 'prediction' in sample:
                prediction = sample['prediction']
                if prediction.is_floating_point():
                    title += f', predicted p(damaged) = {float(prediction):.2f}'
                else:
                    title += f', predicted {self.classes[int(prediction)]}'
            fig.suptitle(title if suptitle is None else f'{suptitle}\n{title}')
        elif suptitle is not None:
            fig.suptitle(suptitle)
        return fig
