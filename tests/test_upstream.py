# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The three pieces docs/upstream.md proposes to TorchGeo, among plain TorchGeo objects.

Each test builds its pipeline from TorchGeo's own classes only (a plain
``RasterDataset`` subclass, ``IntersectionDataset``, ``GriddedPatchSampler`` and
``GridGeoSampler``, ``stack_samples``, ``DataLoader``, ``LeeFilter``) and Kornia's
``AugmentationSequential`` as TorchGeo's ``GeoDataModule`` builds it
(``data_keys=None, keepdim=True``), with one piece of this package in the middle:
what a TorchGeo pull request would need to hold.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import kornia.augmentation as K
import numpy as np
import pytest
import rasterio
import shapely
import torch
from rasterio.features import rasterize
from rasterio.transform import from_origin
from rasterio.windows import from_bounds
from torch import Tensor
from torch.utils.data import DataLoader
from torchgeo.datasets import IntersectionDataset, RasterDataset, stack_samples
from torchgeo.samplers import GriddedPatchSampler, GridGeoSampler, SpatialSampler, Units
from torchgeo.transforms import LeeFilter
from torchgeo.transforms.sar import lee_filter

from torchgeo_sar_damage.datasets import COSMOSkyMed
from torchgeo_sar_damage.samplers import BuildingSampler
from torchgeo_sar_damage.transforms import (
    PowerToDecibel,
    RandomDecibelGain,
    RandomSpeckle,
    SARGeometricAugmentation,
)

CSK = Path(__file__).parent / 'data' / 'cosmo_skymed' / 'csk'

#: UTM 37N; the grid origin is off whole metres so that snapping matters.
CRS = 'EPSG:32637'
ORIGIN = (300000.3, 4118050.2)
PIXEL = 0.5
HEIGHT, WIDTH = 60, 80


class Image(RasterDataset):
    """A plain TorchGeo raster: one float band."""

    filename_glob = 'image.tif'


class Footprints(RasterDataset):
    """A plain TorchGeo mask raster: 1 inside a building, 0 outside."""

    filename_glob = 'footprints.tif'
    is_image = False


def _houses() -> gpd.GeoDataFrame:
    """Five rectangles of 3-6 m whose centres are not on the pixel grid."""
    x0, y0 = ORIGIN
    boxes = [
        shapely.box(x0 + x, y0 - y - h, x0 + x + w, y0 - y)
        for x, y, w, h in [
            (6.1, 5.3, 4.0, 3.2),
            (18.8, 7.9, 5.6, 4.4),
            (30.2, 15.1, 3.3, 6.1),
            (8.9, 20.4, 6.0, 4.0),
            (24.5, 21.6, 4.2, 3.6),
        ]
    ]
    return gpd.GeoDataFrame(
        {'building_id': np.arange(5) + 100}, geometry=boxes, crs=CRS
    )


@pytest.fixture(scope='module')
def rasters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``image.tif`` (pixel value = 1000 * row + column) and ``footprints.tif``."""
    root = tmp_path_factory.mktemp('plain')
    transform = from_origin(*ORIGIN, PIXEL, PIXEL)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    profile = {
        'driver': 'GTiff',
        'height': HEIGHT,
        'width': WIDTH,
        'count': 1,
        'crs': CRS,
        'transform': transform,
    }
    with rasterio.open(root / 'image.tif', 'w', dtype='float32', **profile) as dst:
        dst.write((1000 * rows + cols).astype(np.float32), 1)
    mask = rasterize(_houses().geometry, (HEIGHT, WIDTH), transform=transform)
    with rasterio.open(root / 'footprints.tif', 'w', dtype='uint8', **profile) as dst:
        dst.write(mask.astype(np.uint8), 1)
    return root


def _batches(
    dataset: object, sampler: object, batch_size: int
) -> Iterator[dict[str, Any]]:
    """TorchGeo's way to batch a GeoDataset: a DataLoader with ``stack_samples``."""
    loader: DataLoader[dict[str, Any]] = DataLoader(
        dataset,  # type: ignore[arg-type]
        sampler=sampler,  # type: ignore[arg-type]
        batch_size=batch_size,
        collate_fn=stack_samples,
    )
    yield from loader


def d4(image: Tensor) -> list[Tensor]:
    """The 8 flips and rotations of a [..., H, W] square."""
    out = []
    for k in range(4):
        rotated = torch.rot90(image, k, dims=(-2, -1))
        out += [rotated, rotated.flip(-1)]
    return out


class TestBuildingSamplerOnPlainTorchGeo:
    """BuildingSampler on an IntersectionDataset of two plain RasterDatasets."""

    def test_windows_read_the_raster_pixels(self, rasters: Path) -> None:
        dataset = Image(paths=rasters) & Footprints(paths=rasters)
        assert isinstance(dataset, IntersectionDataset)
        # footprints in another CRS: reprojected to the dataset's
        houses = _houses().to_crs('EPSG:4326')
        sampler = BuildingSampler(dataset, houses, size=7.5)  # 15 px of 0.5 m
        assert isinstance(sampler, SpatialSampler)
        assert sampler.strategy == 'sequential'
        assert len(sampler) == 5
        np.testing.assert_array_equal(sampler.building_ids, np.arange(5) + 100)
        queries = list(sampler)
        (batch,) = _batches(dataset, sampler, batch_size=5)
        assert batch['image'].shape == (5, 1, 15, 15)
        assert batch['mask'].shape[0] == 5
        mask = batch['mask'].reshape(5, 15, 15)
        centres = _houses().geometry.centroid
        with rasterio.open(rasters / 'image.tif') as src:
            for i, (x, y) in enumerate(queries):
                # the window is the file's own pixels, read without resampling
                window = from_bounds(x.start, y.start, x.stop, y.stop, src.transform)
                expected = src.read(1, window=window.round_offsets().round_lengths())
                np.testing.assert_array_equal(batch['image'][i, 0].numpy(), expected)
                # and centred on the building: its centre is in the middle pixel
                row, col = src.index(centres.x.iloc[i], centres.y.iloc[i])
                assert float(batch['image'][i, 0, 7, 7]) == 1000 * row + col
                assert int(mask[i, 7, 7]) == 1
        # the same windows in pixels of the dataset's resolution
        in_px = BuildingSampler(dataset, houses, size=15, units=Units.PIXELS)
        assert list(in_px) == queries

    def test_geometric_augmentation_on_a_torchgeo_batch(self, rasters: Path) -> None:
        """SARGeometricAugmentation moves TorchGeo's ``image`` and ``mask`` together."""
        dataset = Image(paths=rasters) & Footprints(paths=rasters)
        sampler = BuildingSampler(dataset, _houses(), size=7.5)
        (batch,) = _batches(dataset, sampler, batch_size=5)
        augment = SARGeometricAugmentation(
            'all', max_shift=0, image_keys=('image',), mask_keys=('mask',)
        )
        torch.manual_seed(0)
        out = augment(batch)
        for i in range(5):
            matches = [
                j
                for j, c in enumerate(d4(batch['image'][i]))
                if torch.equal(out['image'][i], c)
            ]
            assert len(matches) == 1
            assert torch.equal(out['mask'][i], d4(batch['mask'][i])[matches[0]])
        assert torch.equal(out['bounds'], batch['bounds'])


class TestCOSMOSkyMedWithTorchGeoSamplers:
    """COSMOSkyMed is a RasterDataset that TorchGeo's samplers and collation read."""

    @pytest.mark.filterwarnings('ignore:Use torchgeo.samplers.GriddedPatchSampler')
    @pytest.mark.parametrize('sampler_class', [GriddedPatchSampler, GridGeoSampler])
    def test_grid_and_stack_samples(self, sampler_class: type) -> None:
        dataset = COSMOSkyMed(paths=CSK, units='db')
        assert isinstance(dataset, RasterDataset)
        sampler = sampler_class(dataset, size=16, stride=16)
        queries = list(sampler)
        assert len(queries) == len(sampler) > 1
        seen = 0
        for batch in _batches(dataset, sampler, batch_size=4):
            count = len(batch['image'])
            assert batch['image'].shape == (count, len(dataset.bands), 16, 16)
            assert batch['image'].dtype == torch.float32
            assert set(batch) >= {'image', 'bounds', 'transform'}
            for i in range(count):
                x, y = queries[seen + i][:2]
                # the sample is the window the TorchGeo sampler asked for
                # (bounds: xmin, xmax, xres, ymin, ymax, yres, tmin, tmax, tres)
                box = batch['bounds'][i, [0, 1, 3, 4]].double()
                expected = torch.tensor([x.start, x.stop, y.start, y.stop]).double()
                torch.testing.assert_close(box, expected, rtol=0, atol=0.5)
                alone = dataset[queries[seen + i]]
                torch.testing.assert_close(
                    batch['image'][i], alone['image'], rtol=0, atol=0, equal_nan=True
                )
                torch.testing.assert_close(batch['bounds'][i], alone['bounds'])
            seen += count
        assert seen == len(queries)


class TestSARTransformsInKornia:
    """The SAR transforms inside Kornia's AugmentationSequential, as TorchGeo uses it."""

    def test_on_a_cosmo_skymed_batch(self) -> None:
        dataset = COSMOSkyMed(paths=CSK, units='linear')
        sampler = GriddedPatchSampler(dataset, size=16, stride=16)
        batch = next(_batches(dataset, sampler, batch_size=4))
        linear = batch['image'].clone()
        # as GeoDataModule builds its augmentations
        aug = K.AugmentationSequential(
            PowerToDecibel(),
            RandomDecibelGain(gain_db=(3.0, 3.0), p=1.0),
            data_keys=None,
            keepdim=True,
        )
        out = aug(batch)
        assert set(out) == set(batch)
        assert out['image'].shape == linear.shape
        valid = linear.isfinite()
        assert 0 < valid.sum() < valid.numel()  # the products' nodata corner
        torch.testing.assert_close(
            out['image'][valid], 10 * torch.log10(linear[valid]) + 3.0
        )
        assert out['image'][~valid].isnan().all()  # nodata stays nodata
        torch.testing.assert_close(out['bounds'], batch['bounds'])

    def test_with_torchgeo_lee_filter(self) -> None:
        """TorchGeo's LeeFilter, then this package's dB conversion and speckle."""
        torch.manual_seed(0)
        intensity = torch.rand(3, 2, 16, 16) + 0.1
        aug = K.AugmentationSequential(
            LeeFilter(window_size=3), PowerToDecibel(), data_keys=None, keepdim=True
        )
        out = aug({'image': intensity})
        torch.testing.assert_close(
            out['image'], 10 * torch.log10(lee_filter(intensity, window_size=3))
        )
        speckled = K.AugmentationSequential(
            RandomSpeckle(looks=(1.0, 1.0), domain='linear', p=1.0),
            data_keys=None,
            keepdim=True,
        )({'image': intensity})['image']
        assert speckled.shape == intensity.shape
        assert not torch.equal(speckled, intensity)
        assert (speckled > 0).all()
