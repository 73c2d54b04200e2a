# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Helpers shared by the datasets."""

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from affine import Affine
from torchgeo.datasets import (
    GeoDataset,
    IntersectionDataset,
    RasterDataset,
    UnionDataset,
    VectorDataset,
)
from torchgeo.datasets.utils import GeoSlice, Path, Sample, find_files

from ..errors import ArgumentError, InputFileError


def from_origin(west: float, north: float, xsize: float, ysize: float) -> Affine:
    """:func:`rasterio.transform.from_origin`, without its per-call overhead.

    Rasterio computes ``Affine.translation(west, north) * Affine.scale(xsize,
    -ysize)``; this evaluates the same floating-point expressions of that product
    (term by term, in the same order), so the result is bit-for-bit the same.

    Args:
        west: x of the upper-left corner.
        north: y of the upper-left corner.
        xsize: pixel width.
        ysize: pixel height (positive: the transform is north up).

    Returns:
        The pixel transform.
    """
    # translation (1, 0, west, 0, 1, north) @ scale (xsize, 0, 0, 0, -ysize, 0)
    neg = -ysize
    return Affine(
        1.0 * xsize + 0.0 * 0.0,
        1.0 * 0.0 + 0.0 * neg,
        1.0 * 0.0 + 0.0 * 0.0 + west,
        0.0 * xsize + 1.0 * 0.0,
        0.0 * 0.0 + 1.0 * neg,
        0.0 * 0.0 + 1.0 * 0.0 + north,
    )


def resolve_slice(
    index: GeoSlice, bounds: tuple[slice, slice, slice]
) -> tuple[slice, slice, slice]:
    """Fill the parts of a partial query from a dataset's bounds.

    :meth:`GeoDataset._disambiguate_slice
    <torchgeo.datasets.GeoDataset._disambiguate_slice>` with the bounds passed in, so
    that many queries are resolved against one computation of :attr:`bounds`.

    Args:
        index: ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax:tres]``, any part left out.
        bounds: the dataset's bounds.

    Returns:
        The fully resolved x, y and t slices.
    """
    parts = (index,) if isinstance(index, slice) else tuple(index)
    out = list(bounds)
    for i, part in enumerate(parts):
        out[i] = slice(
            out[i].start if part.start is None else part.start,
            out[i].stop if part.stop is None else part.stop,
            out[i].step if part.step is None else part.step,
        )
    x, y, t = out
    return x, y, t


def bounds_tensor(x: slice, y: slice, t: slice) -> torch.Tensor:
    """The ``bounds`` of a sample, as :meth:`GeoDataset._slice_to_tensor` builds it.

    Args:
        x: ``xmin:xmax:xres`` of a resolved query.
        y: ``ymin:ymax:yres``.
        t: ``tmin:tmax:tres`` (timestamps).

    Returns:
        ``[xmin, xmax, xres, ymin, ymax, yres, tmin, tmax, tres]`` (float32).
    """
    return torch.tensor(
        [
            x.start,
            x.stop,
            x.step,
            y.start,
            y.stop,
            y.step,
            t.start.timestamp(),
            t.stop.timestamp(),
            t.step,
        ]
    )


def named_files(paths: Path | Iterable[Path]) -> list[str]:
    """The files among *paths* (as opposed to directories to search).

    Args:
        paths: a dataset's ``paths``.

    Returns:
        The entries that are existing files, as strings.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    return [str(p) for p in paths if os.path.isfile(p)]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``torch.allclose(a, b)``, answering from a cheap exact comparison first."""
    if a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b):
        return True  # equal elements (no NaN: torch.equal is False for NaN)
    return torch.allclose(a, b)


#: Keys whose values are concatenated (in dataset order) when datasets are combined.
CONCATENATED_KEYS = ('tabular',)


def _merge_bounds(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Bounds of two samples of one window: same space, intersected time.

    TorchGeo bounds are ``[xmin, xmax, xres, ymin, ymax, yres, tmin, tmax, tres]``; a
    dataset without dates reports an unbounded time range, so only the spatial part
    must agree and the time range is the intersection.
    """
    if a.shape != b.shape or not _same(a[:6], b[:6]):
        raise ValueError(f"datasets disagree on 'bounds': {a} != {b}")
    out = a.clone()
    if a.numel() >= 8:
        out[6] = torch.maximum(a[6], b[6])
        out[7] = torch.minimum(a[7], b[7])
    return out


def merge_modalities(samples: Sequence[Sample]) -> Sample:
    """Combine the samples of several datasets queried at the same window.

    Unlike TorchGeo's default for :class:`~torchgeo.datasets.IntersectionDataset`
    (:func:`~torchgeo.datasets.utils.concat_samples`, which would concatenate the
    ``bounds`` of the datasets and stack a DSM onto the SAR channels), each modality
    keeps its own key: ``image`` (SAR), ``dsm``, ``footprint``, ``label``... The
    spatial ``bounds`` and the ``transform`` of every sample must agree and are kept
    once (the time range is intersected: undated datasets report an unbounded one);
    ``tabular`` vectors are concatenated in dataset order; any other key present in
    two samples is an error rather than a silent overwrite.

    Args:
        samples: one sample per dataset, same window.

    Returns:
        The merged sample.

    Raises:
        ValueError: if two datasets produce the same key or disagree on the window.
    """
    merged: Sample = {}
    for sample in samples:
        for key, value in sample.items():
            if key not in merged:
                merged[key] = value
            elif key == 'bounds':
                merged[key] = _merge_bounds(merged[key], value)
            elif key == 'transform':
                if not _same(torch.as_tensor(merged[key]), torch.as_tensor(value)):
                    raise ValueError(
                        f'datasets disagree on {key!r}: {merged[key]} != {value}'
                    )
            elif key in CONCATENATED_KEYS:
                merged[key] = torch.cat([merged[key], value])
            else:
                raise ValueError(
                    f'two combined datasets both produce {key!r}; give one of them '
                    'another key'
                )
    return merged


def _files(dataset: GeoDataset) -> list[str]:
    """The files of a (combined) dataset, for messages."""
    if isinstance(dataset, IntersectionDataset | UnionDataset):
        return [f for member in dataset.datasets for f in _files(member)]
    return [str(f) for f in getattr(dataset, 'files', [])]


class ModalityIntersection(IntersectionDataset):
    """An intersection whose samples keep one key per modality.

    Like :class:`~torchgeo.datasets.IntersectionDataset`, but samples are combined by
    :func:`merge_modalities` by default, and intersecting it again (``a & b & c``)
    gives another ``ModalityIntersection``, so chains keep the per-modality keys.
    """

    def __init__(
        self,
        dataset1: GeoDataset,
        dataset2: GeoDataset,
        collate_fn: Callable[[Sequence[Sample]], Sample] = merge_modalities,
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        """Initialise a new ModalityIntersection.

        Args:
            dataset1: the first dataset.
            dataset2: the second dataset.
            collate_fn: how the two samples of a window are combined.
            transforms: a function/transform applied to the combined sample.

        Raises:
            InputFileError: if the two datasets do not overlap, naming the files of
                the second (e.g. footprints of another area, or a wrong CRS).
        """
        try:
            super().__init__(
                dataset1, dataset2, collate_fn=collate_fn, transforms=transforms
            )
        except RuntimeError as err:
            if 'have no spati' not in str(err):
                raise  # pragma: no cover - other TorchGeo errors pass unchanged
            raise InputFileError(
                ', '.join(_files(dataset2)) or type(dataset2).__name__,
                f'does not overlap {", ".join(_files(dataset1)) or "the other data"} '
                f'in space and time ({dataset1.crs.to_string()}): is it of another '
                'area or date, or is its CRS declared wrongly?',
            ) from None

    def __and__(self, other: GeoDataset) -> 'ModalityIntersection':
        """Intersect with one more dataset, keeping per-modality keys.

        Args:
            other: another dataset.

        Returns:
            The intersection.

        Raises:
            ArgumentError: if both produce the same data key (see
                :class:`ModalityMixin`).
        """
        return _intersect(self, other)


def _data_keys(dataset: GeoDataset) -> set[str]:
    """The data keys (``image``, ``mask``, ``dsm``...) a dataset's samples carry.

    Known for TorchGeo's raster and vector datasets and for those of this package
    that hold one raster key; other keys (``tabular``...) are not listed.
    """
    if isinstance(dataset, IntersectionDataset | UnionDataset):
        return set().union(*(_data_keys(d) for d in dataset.datasets))
    if isinstance(dataset, ModalityMixin):
        key = getattr(dataset, 'sample_key', None)
        return {key} if isinstance(key, str) else set()
    if isinstance(dataset, RasterDataset):
        return {'image' if dataset.is_image else 'mask'}
    if isinstance(dataset, VectorDataset):
        return {'mask'}
    return set()


def _intersect(dataset: GeoDataset, other: GeoDataset) -> 'ModalityIntersection':
    """``dataset & other`` with per-modality keys; a key both produce is refused."""
    both = sorted(_data_keys(dataset) & _data_keys(other))
    if both:
        names = f'{type(dataset).__name__} & {type(other).__name__}'
        raise ArgumentError(
            f'{names}: both produce {", ".join(map(repr, both))}. Datasets of this '
            'package keep one key per modality when combined with &, unlike '
            "TorchGeo's channel concatenation; for TorchGeo's behaviour (channels "
            'stacked in one key) use torchgeo.datasets.IntersectionDataset(a, b), or '
            'combine datasets whose keys differ'
        )
    collate = getattr(dataset, 'collate_fn', merge_modalities)
    return ModalityIntersection(dataset, other, collate_fn=collate)


class ModalityMixin:
    """Datasets that keep their own sample keys when combined with ``&``.

    ``a & b`` returns a :class:`ModalityIntersection`, whose samples are combined by
    :func:`merge_modalities`: ``image`` (SAR), ``dsm``, ``footprint``, ``label``, a
    TorchGeo raster's ``image`` or ``mask``... each keep their key, which differs from
    TorchGeo's :class:`~torchgeo.datasets.IntersectionDataset` (its
    :func:`~torchgeo.datasets.utils.concat_samples` stacks the channels of a shared
    key). Two datasets that produce the same key (e.g. ``COSMOSkyMed & Sentinel1``,
    both ``image``) are refused by ``&`` with an :class:`~..errors.ArgumentError`
    that says so: use ``IntersectionDataset(a, b)`` for TorchGeo's concatenation.

    File search: a directory of ``paths`` is searched for :attr:`filename_glob`; a file
    named in ``paths`` is taken whatever its name (the glob filters directory searches
    only, as the dataset's regex does: each dataset says what it does with a named
    file whose name does not follow its convention).
    """

    paths: Path | Iterable[Path]
    filename_glob: str

    def __and__(self, other: GeoDataset) -> 'ModalityIntersection':
        """Intersect with another dataset, keeping each modality under its own key.

        Args:
            other: another dataset.

        Returns:
            The intersection, with :func:`merge_modalities` as collate function.

        Raises:
            ArgumentError: if both datasets produce the same data key.

        .. versionchanged:: 0.2
           A data key both datasets produce is refused here, not at the first query.
        """
        assert isinstance(self, GeoDataset)
        return _intersect(self, other)

    @property
    def files(self) -> list[str]:
        """Files of the dataset: the named files, and the glob's matches in directories.

        Returns:
            All files, sorted.

        .. versionchanged:: 0.2
           A file named in ``paths`` is kept even if its name does not match
           :attr:`filename_glob`.
        """
        paths = (
            [self.paths] if isinstance(self.paths, str | os.PathLike) else self.paths
        )
        files: set[str] = set()
        for path in paths:
            if os.path.isfile(path):
                files.add(str(path))
                continue
            found = find_files(path, self.filename_glob)
            files.update(found)
            if not found and not os.path.isdir(path):
                warnings.warn(
                    f"Could not find any relevant files for provided path '{path}'. "
                    'Path was ignored.',
                    UserWarning,
                )
        return sorted(files)

    @property
    def named_files(self) -> list[str]:
        """The files named in ``paths`` (not found by searching a directory).

        Returns:
            Those files, as strings.
        """
        return named_files(self.paths)


def extract(dataset: GeoDataset, queries: Sequence[GeoSlice]) -> Iterator[Sample]:
    """Samples of many windows, in query order, through the fastest path available.

    Datasets of this package implement ``extract(queries)``, which reads every file
    once and yields exactly ``dataset[query]`` for each query. Other TorchGeo datasets
    fall back to one ``__getitem__`` per query. Intersections recurse into their
    members and combine with their own collate function.

    Args:
        dataset: any TorchGeo dataset.
        queries: windows, e.g. from :class:`~torchgeo_sar_damage.samplers.BuildingSampler`.

    Yields:
        One sample per query.
    """
    if isinstance(dataset, IntersectionDataset):
        streams = [extract(ds, queries) for ds in dataset.datasets]
        for parts in zip(*streams, strict=True):
            sample = dataset.collate_fn(list(parts))
            if dataset.transforms is not None:
                sample = dataset.transforms(sample)
            yield sample
        return
    bulk = getattr(dataset, 'extract', None)
    if callable(bulk):
        yield from bulk(queries)
        return
    for query in queries:
        yield dataset[query]


#: Keys of a sample that describe its window rather than its content.
WINDOW_KEYS = ('bounds', 'transform')


def extract_batch(dataset: GeoDataset, queries: Sequence[GeoSlice]) -> Sample:
    """The samples of many windows, already batched, through the fastest path.

    Equals :func:`collate_buildings` of :func:`extract` without the :data:`WINDOW_KEYS`
    (the windows are the queries): ``image`` ``(B, C, H, W)``, ``dsm``, ``footprint``,
    ``tabular`` ``(B, F)``, ``building_id`` ``(B,)``... Datasets of this package
    implement ``extract_batch(queries)``, which builds the arrays of all windows at
    once instead of one sample after the other (several times faster on city-scale
    prediction); intersections combined with :func:`merge_modalities` batch each member
    and concatenate the ``tabular`` columns in dataset order. Anything else (other
    datasets, transforms, other collate functions) goes through :func:`extract`.

    Args:
        dataset: any TorchGeo dataset.
        queries: windows of the same pixel size, e.g. from
            :class:`~torchgeo_sar_damage.samplers.BuildingSampler`.

    Returns:
        The batch.

    Raises:
        ValueError: if *queries* is empty, or the samples cannot be batched.

    .. versionadded:: 0.1
    """
    if not queries:
        raise ValueError('cannot batch an empty list of windows')
    if isinstance(dataset, IntersectionDataset):
        if dataset.collate_fn is merge_modalities and dataset.transforms is None:
            return merge_batches([extract_batch(d, queries) for d in dataset.datasets])
    elif getattr(dataset, 'transforms', None) is None:
        bulk = getattr(dataset, 'extract_batch', None)
        if callable(bulk):
            batch: Sample = bulk(queries)
            return batch
    batch = collate_buildings(list(extract(dataset, queries)))
    return {k: v for k, v in batch.items() if k not in WINDOW_KEYS}


def merge_batches(batches: Sequence[Sample]) -> Sample:
    """Combine the batches of several datasets over the same windows.

    The batch counterpart of :func:`merge_modalities`: every key keeps its own entry,
    ``tabular`` columns are concatenated in order, and a key present in two batches
    is an error.

    Args:
        batches: one batch per dataset, same windows in the same order.

    Returns:
        The merged batch.

    Raises:
        ValueError: if two batches produce the same key.
    """
    merged: Sample = {}
    for batch in batches:
        for key, value in batch.items():
            if key not in merged:
                merged[key] = value
            elif key in CONCATENATED_KEYS:
                merged[key] = torch.cat([merged[key], value], dim=1)
            else:
                raise ValueError(
                    f'two combined datasets both produce {key!r}; give one of them '
                    'another key'
                )
    return merged


def collate_buildings(samples: Sequence[Sample]) -> Sample:
    """Batch per-building samples, keeping every key's meaning.

    Every key is stacked along a new first dimension: ``image`` (B, C, H, W),
    ``dsm`` (B, 1, H, W), ``footprint`` (B, 1, H, W, kept as the integer mask
    0 = none, 1 = neighbour, 2 = target, not merged into the image),
    ``tabular`` (B, F), ``label`` (B,), ``building_id`` (B,), ``bounds`` and
    ``transform``. Unlike a silent default, samples whose keys or shapes differ raise
    an error naming the key.

    Args:
        samples: samples of the same combined dataset.

    Returns:
        The batch.

    Raises:
        ValueError: if the samples do not have the same keys and shapes.
    """
    if not samples:
        raise ValueError('cannot collate an empty list of samples')
    keys = list(samples[0])
    batch: Sample = {}
    for key in keys:
        values = []
        for i, sample in enumerate(samples):
            if key not in sample:
                raise ValueError(f'sample {i} has no {key!r} (sample 0 has)')
            values.append(torch.as_tensor(sample[key]))
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise ValueError(
                f'cannot batch {key!r}: samples have shapes {sorted(shapes)}'
            )
        batch[key] = torch.stack(values)
    for i, sample in enumerate(samples):
        extra = set(sample) - set(keys)
        if extra:
            raise ValueError(f'sample {i} has keys {sorted(extra)} that sample 0 lacks')
    return batch
