# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import re
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import rasterio
import torch
from matplotlib.figure import Figure
from torchgeo.datasets import (
    DatasetNotFoundError,
    IntersectionDataset,
    RasterDataset,
    UnionDataset,
)

from torchgeo_sar_damage.datasets.cosmo_skymed import COSMOSkyMed
from torchgeo_sar_damage.datasets.dsm import DSM
from torchgeo_sar_damage.datasets.utils import extract
from torchgeo_sar_damage.errors import InputFileError

ROOT = Path('tests', 'data', 'dsm')
DSM_DIR = ROOT / 'dsm'
DTM_DIR = ROOT / 'dtm'
GLO30 = ROOT / 'glo30' / 'Copernicus_DSM_COG_10_N37_00_E036_00_DEM.tif'
CSK = Path('tests', 'data', 'cosmo_skymed', 'csk')

# Written by tests/data/dsm/data.py: 32 x 32 at 2 m from (X0, Y1), ground 500 m, an
# 8 x 8 block 12 m high at rows/columns 12-19, nodata at row 0, columns 0-2.
X0, Y1, PIXEL = 300000.0, 4118064.0, 2.0


def window(
    col: int, row: int, cols: int, rows: int, res: float = PIXEL
) -> tuple[slice, slice]:
    x = X0 + col * PIXEL
    y = Y1 - row * PIXEL
    return slice(x, x + cols * res, res), slice(y - rows * res, y, res)


class TestDSM:
    @pytest.fixture
    def dataset(self) -> DSM:
        return DSM(DSM_DIR)

    def test_getitem(self, dataset: DSM) -> None:
        x, y = window(0, 0, 32, 32)
        sample = dataset[x, y]
        assert set(sample) == {'dsm', 'tabular', 'bounds', 'transform'}
        dsm = sample['dsm']
        # height statistics: 5th percentile, central quarter median, 95th percentile
        valid = dsm[0][torch.isfinite(dsm[0])].numpy()
        low, high = np.percentile(valid, [5, 95])
        centre = dsm[0, 12:21, 12:21].numpy()
        centre = centre[np.isfinite(centre)]
        expected = [
            np.median(centre) - low,
            high - low,
            1 - float(torch.isfinite(dsm[0]).float().mean()),
        ]
        np.testing.assert_allclose(sample['tabular'].numpy(), expected, rtol=1e-5)
        assert list(dataset.feature_names) == [
            'dsm_centre_relief_m',
            'dsm_window_relief_m',
            'dsm_nodata_fraction',
        ]
        assert dsm.shape == (1, 32, 32)
        assert dsm.dtype == torch.float32
        assert torch.isnan(dsm[0, 0, :3]).all()
        assert dsm[0, 0, 3] == 500.0
        assert dsm[0, 12, 12] == 512.0
        assert dsm[0, 20, 20] == 500.0
        with rasterio.open(DSM_DIR / 'dsm.tif') as src:
            expected = src.read(1, masked=True).filled(np.nan)
        np.testing.assert_array_equal(dsm[0].numpy(), expected)

    def test_dtm(self) -> None:
        ds = DSM(DSM_DIR, dtm=DTM_DIR)
        x, y = window(0, 0, 32, 32)
        height = ds[x, y]['dsm'][0]
        assert torch.isnan(height[0, :3]).all()
        torch.testing.assert_close(height[12:20, 12:20], torch.full((8, 8), 12.0))
        torch.testing.assert_close(height[0, 3:], torch.zeros(29))
        # Beyond the DTM (but inside the DSM's index): NaN, not the DSM.
        x, y = window(28, 28, 8, 8)
        assert torch.isnan(ds[x, y]['dsm'][0, 4:, :]).all()

    def test_dtm_not_found(self, tmp_path: Path) -> None:
        with pytest.raises(
            InputFileError, match=re.escape(str(tmp_path)) + ': no DTM raster'
        ):
            DSM(DSM_DIR, dtm=tmp_path)
        with pytest.raises(InputFileError, match='no DTM raster'):
            DSM(DSM_DIR, dtm=[tmp_path, tmp_path / 'x'])

    def test_len(self) -> None:
        assert len(DSM(DSM_DIR)) == 1
        assert len(DSM([DSM_DIR, GLO30])) == 2

    def test_and(self) -> None:
        ds = COSMOSkyMed(CSK) & DSM(DSM_DIR, dtm=DTM_DIR)
        assert isinstance(ds, IntersectionDataset)
        x, y = window(4, 4, 8, 8)
        sample = ds[x, y, ds.bounds[2]]
        assert set(sample) == {'image', 'dsm', 'tabular', 'bounds', 'transform'}
        assert sample['dsm'].shape == (1, 8, 8)

    def test_and_torchgeo(self) -> None:
        ds = DSM(DSM_DIR) & RasterDataset(DTM_DIR)
        x, y = window(4, 4, 8, 8)
        sample = ds[x, y, ds.bounds[2]]
        assert sample['dsm'].shape == sample['image'].shape == (1, 8, 8)
        torch.testing.assert_close(sample['image'], torch.full((1, 8, 8), 500.0))

    def test_or(self) -> None:
        ds = DSM(DSM_DIR) | DSM(GLO30)
        assert isinstance(ds, UnionDataset)
        assert len(ds) == 2
        x, y = window(4, 4, 8, 8)
        assert ds[x, y]['dsm'].shape == (1, 8, 8)
        ds = DSM(DSM_DIR) | RasterDataset(DTM_DIR)
        assert len(ds) == 2

    @pytest.mark.parametrize('dtm', [None, DTM_DIR])
    def test_plot(self, dtm: Path | None) -> None:
        ds = DSM(DSM_DIR, dtm=dtm)
        x, y = window(0, 0, 16, 16)
        fig = ds.plot(ds[x, y], suptitle='Test')
        assert isinstance(fig, Figure)
        plt.close(fig)
        plt.close(ds.plot(ds[x, y], show_titles=False))

    def test_no_files(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError, match='Dataset not found'):
            DSM(tmp_path)

    def test_filename_glob(self) -> None:
        with pytest.raises(DatasetNotFoundError):
            DSM(ROOT, filename_glob='*.tiff')
        ds = DSM(ROOT, filename_glob='Copernicus_DSM_*_DEM.tif')
        assert [Path(p).name for p in ds.index.filepath] == [GLO30.name]

    def test_other_crs(self) -> None:
        ds = DSM(GLO30, crs=DSM(DSM_DIR).crs, res=PIXEL)
        assert ds.crs.to_epsg() == 32637
        x, y = window(8, 8, 8, 8)
        torch.testing.assert_close(ds[x, y]['dsm'], torch.full((1, 8, 8), 503.0))
        native = DSM(GLO30)
        assert native.crs.to_epsg() == 4326

    def test_no_crs(self) -> None:
        path = ROOT / 'invalid' / 'no_crs.tif'
        with pytest.raises(
            InputFileError,
            match=re.escape(str(path)) + ': has a geotransform but no CRS',
        ):
            DSM(path)

    def test_two_bands(self) -> None:
        path = ROOT / 'invalid' / 'two_bands.tif'
        with pytest.raises(
            InputFileError, match=re.escape(str(path)) + ': has 2 bands'
        ):
            DSM(path)

    def test_out_of_bounds(self, dataset: DSM) -> None:
        with pytest.raises(IndexError, match='not found'):
            dataset[0:10:1.0, 0:10:1.0]

    @pytest.mark.parametrize('dtm', [None, DTM_DIR])
    def test_extract_equals_getitem(self, dtm: Path | None) -> None:
        ds = DSM(DSM_DIR, dtm=dtm)
        aligned = [window(c, c // 2, 8, 8) for c in range(0, 28, 3)]
        unaligned = [
            (
                slice(X0 + 1.3 + c, X0 + 13.3 + c, 1.5),
                slice(Y1 - 20.2 - c, Y1 - 8.2 - c, 1.5),
            )
            for c in range(0, 40, 6)
        ]
        for queries, exact in ((aligned, True), (unaligned, False)):
            for query, sample in zip(queries, ds.extract(queries), strict=True):
                expected = ds[query]
                if exact:
                    assert torch.equal(
                        sample['dsm'].nan_to_num(-1), expected['dsm'].nan_to_num(-1)
                    )
                else:
                    torch.testing.assert_close(
                        sample['dsm'], expected['dsm'], equal_nan=True
                    )
                assert torch.equal(sample['bounds'], expected['bounds'])
                assert torch.equal(sample['transform'], expected['transform'])
        assert list(extract(ds, [])) == []

    @pytest.mark.parametrize(
        ('x', 'y'),
        [
            (slice(X0 + 4, X0 + 20, 2.0), slice(Y1 - 30, Y1 - 14, 2.0)),
            (slice(X0 + 1.3, X0 + 13.3, 1.5), slice(Y1 - 20.2, Y1 - 8.2, 1.5)),
            (slice(X0 - 5, X0 + 13, 3.0), slice(Y1 - 9, Y1 + 9, 3.0)),
            (slice(X0 + 50, X0 + 80, 1.0), slice(Y1 - 70, Y1 - 40, 1.0)),
            (slice(X0 + 0.5, X0 + 64.5, 4.0), slice(Y1 - 63.5, Y1 + 0.5, 4.0)),
        ],
    )
    def test_same_as_torchgeo(self, x: slice, y: slice) -> None:
        # TorchGeo's own RasterDataset (rasterio.merge) gives the same pixels, with
        # the nodata value where DSM gives NaN.
        expected = RasterDataset(DSM_DIR)[x, y]['image']
        expected = torch.where(expected == -9999, torch.nan, expected)
        actual = DSM(DSM_DIR)[x, y]['dsm']
        assert torch.equal(actual.nan_to_num(-1), expected.nan_to_num(-1))

    def test_no_cache(self) -> None:
        x, y = window(3, 5, 10, 10)
        assert torch.equal(
            DSM(DSM_DIR, cache=False)[x, y]['dsm'].nan_to_num(-1),
            DSM(DSM_DIR)[x, y]['dsm'].nan_to_num(-1),
        )


def test_cached_sources_close_before_exit(tmp_path: Path) -> None:
    # a session that leaves GDAL handles in the file cache must exit quietly: left to
    # the interpreter's final teardown they printed "Error in sys.excepthook"
    test = tmp_path / 'test_leave_open.py'
    test.write_text(
        'from torchgeo_sar_damage.datasets.dsm import DSM\n'
        'def test_read():\n'
        f'    dataset = DSM({str(DSM_DIR.resolve())!r})\n'
        f'    x = slice({X0}, {X0 + 64}, {PIXEL})\n'
        f'    y = slice({Y1 - 64}, {Y1}, {PIXEL})\n'
        "    assert dataset[x, y]['dsm'].shape == (1, 32, 32)\n"
        '    assert dataset._cached_open.cache_info().currsize > 0\n'
    )
    done = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', str(test)],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '1 passed' in done.stdout
    assert 'excepthook' not in done.stdout + done.stderr
