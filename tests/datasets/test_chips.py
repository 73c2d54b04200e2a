# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio.transform
import torch
from torch.utils.data import DataLoader
from torchgeo.datasets import RasterDataset
from torchgeo.datasets.utils import GeoSlice, Sample

from torchgeo_sar_damage.datasets.chips import BuildingChips
from torchgeo_sar_damage.datasets.utils import (
    collate_buildings,
    from_origin,
    merge_modalities,
)
from torchgeo_sar_damage.samplers import BuildingSampler


class SAR(RasterDataset):
    filename_glob = 'CSG_*.tif'


class DSM(RasterDataset):
    filename_glob = 'dsm_*.tif'

    def __getitem__(self, query: GeoSlice) -> Sample:
        sample = super().__getitem__(query)
        sample['dsm'] = sample.pop('image')
        return sample


class CountingSAR(SAR):
    """Counts reads, and offers a bulk path like the package's datasets."""

    calls = 0

    def extract(self, queries: Sequence[GeoSlice]) -> Iterator[Sample]:
        for query in queries:
            type(self).calls += 1
            yield self[query]


@pytest.fixture
def setup(
    tiny_scene: Path, tiny_manifest: dict[str, Any]
) -> tuple[Any, BuildingSampler]:
    folder = tiny_scene / 'kahramanmaras'
    osm = gpd.read_file(
        folder / tiny_manifest['cities']['kahramanmaras']['files']['osm']
    )
    sar = SAR(paths=folder)
    dsm = DSM(paths=folder)
    from torchgeo.datasets import IntersectionDataset

    ds = IntersectionDataset(sar, dsm, collate_fn=merge_modalities)
    return ds, BuildingSampler(ds, osm, size=20.0, id_column='osm_id')


def test_chips_equal_dataset(
    setup: tuple[Any, BuildingSampler], tmp_path: Path
) -> None:
    ds, sampler = setup
    chips = BuildingChips(ds, sampler, tmp_path, progress=False)
    assert len(chips) == len(sampler)
    for i, query in enumerate(sampler):
        expected = ds[query]
        got = chips[i]
        assert set(got) == set(expected) == {'image', 'dsm', 'bounds', 'transform'}
        for key in expected:
            assert torch.equal(got[key], expected[key]), (i, key)
    with pytest.raises(IndexError):
        chips[len(chips)]


def test_store_is_reused_and_invalidated(tiny_scene: Path, tmp_path: Path) -> None:
    folder = tiny_scene / 'nurdagi'
    osm = gpd.read_file(folder / 'hotosm_tur_buildings_polygons.gpkg')
    copy = tmp_path / 'data'
    copy.mkdir()
    tif = next(folder.glob('CSG_*.tif'))
    (copy / tif.name).write_bytes(tif.read_bytes())
    ds = CountingSAR(paths=copy)
    sampler = BuildingSampler(ds, osm, size=16.0)
    CountingSAR.calls = 0
    first = BuildingChips(ds, sampler, tmp_path / 'store', progress=False)
    assert CountingSAR.calls == len(sampler)
    again = BuildingChips(
        CountingSAR(paths=copy), sampler, tmp_path / 'store', progress=False
    )
    assert CountingSAR.calls == len(sampler)  # reused: nothing read
    assert again.path == first.path
    # another window size gives another store
    other = BuildingChips(
        ds, BuildingSampler(ds, osm, size=12.0), tmp_path / 'store', progress=False
    )
    assert other.path != first.path
    # touching the input invalidates the store
    stat = (copy / tif.name).stat()
    os.utime(copy / tif.name, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = BuildingChips(
        CountingSAR(paths=copy), sampler, tmp_path / 'store', progress=False
    )
    assert changed.path != first.path
    assert sorted(
        p.name for p in (tmp_path / 'store').iterdir() if not p.name.startswith('.')
    ) == sorted({first.key, other.key, changed.key})


def test_interrupted_build_leaves_no_store(
    setup: tuple[Any, BuildingSampler], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, sampler = setup

    def broken(dataset: object, queries: Sequence[GeoSlice]) -> Iterator[Sample]:
        yield ds[queries[0]]
        raise KeyboardInterrupt

    monkeypatch.setattr('torchgeo_sar_damage.datasets.chips.extract', broken)
    with pytest.raises(KeyboardInterrupt):
        BuildingChips(ds, sampler, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_dataloader_with_workers(
    setup: tuple[Any, BuildingSampler], tmp_path: Path
) -> None:
    ds, sampler = setup
    chips = BuildingChips(ds, sampler, tmp_path, progress=False)
    loader = DataLoader(
        chips, batch_size=8, num_workers=2, collate_fn=collate_buildings
    )
    batches = list(loader)
    assert sum(b['image'].shape[0] for b in batches) == len(chips)
    assert batches[0]['dsm'].shape[1:] == chips[0]['dsm'].shape


def test_collate_keeps_keys_and_checks_shapes() -> None:
    a = {
        'image': torch.zeros(1, 4, 4),
        'footprint': torch.ones(1, 4, 4, dtype=torch.uint8),
        'label': torch.tensor(1),
    }
    b = {
        'image': torch.ones(1, 4, 4),
        'footprint': torch.zeros(1, 4, 4, dtype=torch.uint8),
        'label': torch.tensor(0),
    }
    batch = collate_buildings([a, b])
    assert batch['image'].shape == (2, 1, 4, 4)
    assert batch['footprint'].dtype == torch.uint8
    assert batch['label'].tolist() == [1, 0]
    with pytest.raises(ValueError, match="'image'"):
        collate_buildings([a, {**b, 'image': torch.zeros(1, 5, 5)}])
    with pytest.raises(ValueError, match='label'):
        collate_buildings([a, {k: v for k, v in b.items() if k != 'label'}])
    with pytest.raises(ValueError, match='lacks'):
        collate_buildings([a, {**b, 'dsm': torch.zeros(1)}])
    with pytest.raises(ValueError, match='empty'):
        collate_buildings([])


def test_merge_modalities() -> None:
    bounds = torch.arange(9.0)
    sar = {
        'image': torch.zeros(1, 2, 2),
        'bounds': bounds,
        'tabular': torch.tensor([1.0]),
    }
    gem = {'tabular': torch.tensor([2.0, 3.0]), 'bounds': bounds.clone()}
    merged = merge_modalities([sar, gem])
    assert merged['tabular'].tolist() == [1.0, 2.0, 3.0]
    assert torch.equal(merged['bounds'], bounds)
    with pytest.raises(ValueError, match="both produce 'image'"):
        merge_modalities([sar, {'image': torch.ones(1, 2, 2)}])
    with pytest.raises(ValueError, match='disagree'):
        merge_modalities([sar, {'bounds': bounds + 1}])


def test_merge_modalities_close_and_nan_bounds() -> None:
    bounds = torch.arange(9.0)
    close = bounds.clone()
    close[1] += 1e-6  # not equal, but allclose: accepted, the first is kept
    merged = merge_modalities([{'bounds': bounds}, {'bounds': close}])
    assert torch.equal(merged['bounds'], bounds)
    nan = bounds.clone()
    nan[1] = float('nan')
    with pytest.raises(ValueError, match='disagree'):
        merge_modalities([{'bounds': nan}, {'bounds': nan.clone()}])
    transform = torch.arange(9.0)
    with pytest.raises(ValueError, match="disagree on 'transform'"):
        merge_modalities([{'transform': transform}, {'transform': transform + 1}])
    merged = merge_modalities(
        [{'transform': transform}, {'transform': transform.clone()}]
    )
    assert merged['transform'] is transform


def test_from_origin_is_rasterio_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    values: list[tuple[float, float, float, float]] = [
        (0.0, 0.0, 1.0, 1.0),
        (-0.0, -0.0, 0.5, 0.5),
        (-0.0, 0.0, -1.0, -0.0),
        (299000.0, 4116800.0, 0.5, 0.5),
        (1e-300, -1e300, 1e-12, 3.0),
    ]
    for _ in range(2000):
        x, y = rng.uniform(-1e7, 1e7, 2)
        sx, sy = rng.uniform(1e-6, 100, 2)
        values.append((float(x), float(y), float(sx), float(sy)))
    for x, y, sx, sy in values:
        fast = tuple(from_origin(x, y, sx, sy))
        slow = tuple(rasterio.transform.from_origin(x, y, sx, sy))
        assert np.array_equal(np.array(fast), np.array(slow))
        assert np.array_equal(np.signbit(fast), np.signbit(slow))
    x64, y64 = np.float64(2.5), np.float64(-3.25)
    assert tuple(from_origin(x64, y64, 0.5, 2)) == tuple(
        rasterio.transform.from_origin(x64, y64, 0.5, 2)
    )
