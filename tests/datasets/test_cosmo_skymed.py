# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import itertools
import math
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from matplotlib.figure import Figure
from pyproj import CRS
from torchgeo.datasets import (
    DatasetNotFoundError,
    IntersectionDataset,
    RasterDataset,
    UnionDataset,
)

from torchgeo_sar_damage.datasets.cosmo_skymed import COSMOSkyMed
from torchgeo_sar_damage.datasets.dsm import DSM
from torchgeo_sar_damage.datasets.utils import extract
from torchgeo_sar_damage.errors import ArgumentError, InputFileError

ROOT = Path('tests', 'data', 'cosmo_skymed')
CSK = ROOT / 'csk'
GTC = CSK / 'CSKS2_GTC_B_HI_09_HH_RD_SF_20230208154312_20230208154320.h5'
GEC = CSK / 'CSKS1_GEC_B_PP_05_CH_RA_SF_20230209034400_20230209034406.h5'
CSG = (
    ROOT
    / 'csg'
    / 'CSG_SSAR2_GTC_F_0101_S2B_007_VV_LD_F_20250329114557_20250329114606_1_F_22N_Z47_N00.tif'
)
INVALID = ROOT / 'invalid'
DGM = INVALID / 'CSKS4_DGM_B_HI_19_HH_RA_SF_20110305110725_20110305110733.h5'
SCS = INVALID / 'CSKS1_SCS_B_HI_15_HH_RA_SF_20201028224625_20201028224632.h5'
CSG_H5 = (
    INVALID
    / 'CSG_SSAR1_GTC_B_0101_STR_012_HH_RA_F_20240101033000_20240101033007_1_F_37N_Z37_N00.h5'
)
NO_CRS = (
    INVALID
    / 'CSG_SSAR1_GTC_B_0202_STR_005_VV_RD_F_20240102150000_20240102150007_1_F_37N_Z37_N00.tif'
)
DSM_DIR = Path('tests', 'data', 'dsm', 'dsm')
CALIBRATION = ROOT / 'calibration'

# Written by tests/data/cosmo_skymed/data.py: DN = offset + 10 col + row, DN 0 in
# the top-left 4 x 4 pixels; calibration F = 400, Rref = 1000, Rexp = 1, 30 deg,
# K = 2.5e5 (S01) and 4e5 (S02).
X0, Y1, PIXEL = 300000.0, 4118064.0, 2.0


def factor(k: float) -> float:
    return 1000.0**2 * math.sin(math.radians(30.0)) / (400.0**2 * k)


def window(
    col: int, row: int, cols: int, rows: int, res: float = PIXEL
) -> tuple[slice, slice]:
    x = X0 + col * PIXEL
    y = Y1 - row * PIXEL
    return slice(x, x + cols * res, res), slice(y - rows * res, y, res)


#: Mode codes of eoreader's CONSTELLATION_REGEX.
CSK_MODES = ('HI', 'PP', 'WR', 'HR', 'S2')
CSG_MODES = (
    'S2A',
    'S2B',
    'S2C',
    'D2R',
    'D2S',
    'D2J',
    'OQR',
    'OQS',
    'STR',
    'SC1',
    'SC2',
    'PPS',
    'QPS',
)

REAL_NAMES = [
    # real names published by readers and forums: roipac.org wiki, GAMMA's par_CS_SLC and
    # par_CS_geo docs, ESA STEP forum, OSGeo/gdal#2193, eoreader's csk_product.py; CSG:
    # SARscape's CSG import help and user GeoTIFFs in public code
    'CSKS3_RAW_B_HI_03_HH_RD_SF_20111226151216_20111226151223.h5',
    'CSKS1_SCS_B_HI_06_HH_RA_SF_20080210220247_20080210220252.h5',
    'CSKS1_GEC_B_HI_16_HH_LD_SN_20080108105558_20080108105604.h5',
    'CSKS4_DGM_B_HI_19_HH_RA_SF_20110305110725_20110305110733.h5',
    'CSKS1_DGM_B_HI_24_HH_RA_SF_20091113111415_20091113111422.h5',
    'CSKS1_SCS_B_HI_15_HH_RA_SF_20201028224625_20201028224632.h5',
    'CSKS2_GTC_B_HI_04_HH_RA_SF_20250728103626_20250728103634.S01.SBI.tif',
    'CSG_SSAR2_GTC_F_0101_S2B_007_VV_LD_F_20250329114557_20250329114606_1_F_22N_Z47_N00.tif',
    # its public source gives this name up to the stop time; the tail is completed here
    'CSG_SSAR2_GTC_B_0404_STR_007_HH_RD_F_20231004170859_20231004170905_1_F_45N_Z18_N00.tif',
]


@pytest.fixture
def regex() -> re.Pattern[str]:
    return re.compile(COSMOSkyMed.filename_regex, re.VERBOSE)


class TestFileNames:
    @pytest.mark.parametrize('name', REAL_NAMES)
    def test_real_names(self, regex: re.Pattern[str], name: str) -> None:
        match = regex.match(name)
        assert match is not None
        fields = name.split('_')
        assert match.group('mission') == name[:3]
        assert match.group('product') in ('RAW', 'SCS', 'DGM', 'GEC', 'GTC')
        assert match.group('polarisation') in fields
        start = pd.to_datetime(match.group('start'), format=COSMOSkyMed.date_format)
        stop = pd.to_datetime(match.group('stop'), format=COSMOSkyMed.date_format)
        assert pd.Timedelta(0) < stop - start < pd.Timedelta(seconds=20)

    def test_fields(self, regex: re.Pattern[str]) -> None:
        match = regex.match(REAL_NAMES[7])
        assert match is not None
        expected = {
            'mission': 'CSG',
            'satellite': '2',
            'product': 'GTC',
            'variant': 'F',
            'mode': 'S2B',
            'beam': '007',
            'polarisation': 'VV',
            'look_side': 'L',
            'orbit': 'D',
            'quality': 'F',
            'start': '20250329114557',
            'stop': '20250329114606',
            'latitude': '22',
            'hemisphere': 'N',
            'zone': '47',
            'format': 'tif',
        }
        assert {k: match.group(k) for k in expected} == expected
        match = regex.match(REAL_NAMES[2])
        assert match is not None
        assert match.group('satellite', 'mode', 'beam', 'look_side', 'orbit') == (
            '1',
            'HI',
            '16',
            'L',
            'D',
        )
        assert match.group('delivery') == 'SN'

    def test_csk_combinations(self, regex: re.Pattern[str]) -> None:
        for satellite, mode, pol in itertools.product(
            '1234', CSK_MODES, ('HH', 'VV', 'VH', 'HV', 'CO', 'CH', 'CV')
        ):
            name = (
                f'CSKS{satellite}_GTC_B_{mode}_0A_{pol}_LA_FF_'
                '20200101000000_20200101000008.h5'
            )
            match = regex.match(name)
            assert match is not None, name
            assert match.group('satellite', 'mode', 'polarisation') == (
                satellite,
                mode,
                pol,
            )

    def test_csg_combinations(self, regex: re.Pattern[str]) -> None:
        for satellite, mode, pol, variant in itertools.product(
            '12', CSG_MODES, ('HH', 'VV', 'VH', 'HV'), ('U', 'B', 'F', 'FQLK_B')
        ):
            name = (
                f'CSG_SSAR{satellite}_GEC_{variant}_0303_{mode}_011_{pol}_RA_P_'
                '20200101000000_20200101000008_1_C_37S_Z07_B12.h5'
            )
            match = regex.match(name)
            assert match is not None, name
            assert match.group('satellite', 'mode', 'polarisation', 'variant') == (
                satellite,
                mode,
                pol,
                variant,
            )

    @pytest.mark.parametrize(
        'name',
        [
            'CSKS5_GTC_B_HI_04_HH_RA_SF_20250728103626_20250728103634.h5',  # CSKS5
            'CSKS1_GTC_B_STR_04_HH_RA_SF_20250728103626_20250728103634.h5',  # CSG mode
            'CSKS1_GTC_F_HI_04_HH_RA_SF_20250728103626_20250728103634.h5',  # CSG variant
            'CSKS1_GTC_B_HI_04_HH_RA_SF_20250728103626_20250728103634.h5.xml',
            'CSG_SSAR3_GTC_F_0101_S2B_007_VV_LD_F_20250329114557_20250329114606_1_F_22N_Z47_N00.h5',
            'CSG_SSAR2_GTC_F_0101_HI_007_VV_LD_F_20250329114557_20250329114606_1_F_22N_Z47_N00.h5',
            'CSG_SSAR2_GTC_F_0101_S2B_007_CO_LD_F_20250329114557_20250329114606_1_F_22N_Z47_N00.h5',
            'DFDN_CSKS1_GTC_B_HI_04_HH_RA_SF_20250728103626_20250728103634.h5',
        ],
    )
    def test_rejects(self, regex: re.Pattern[str], name: str) -> None:
        assert regex.match(name) is None


class TestCOSMOSkyMed:
    @pytest.fixture
    def dataset(self) -> COSMOSkyMed:
        return COSMOSkyMed(GTC)

    def test_getitem(self, dataset: COSMOSkyMed) -> None:
        x, y = window(0, 0, 8, 8)
        sample = dataset[x, y]
        image = sample['image']
        assert image.shape == (1, 8, 8)
        assert image.dtype == torch.float32
        assert torch.isnan(image[0, :4, :4]).all()
        assert torch.isfinite(image[0, 4:, :]).all()
        # Pixel (row 5, column 6): DN = 100 + 60 + 5.
        assert image[0, 5, 6].item() == pytest.approx(
            165.0**2 * factor(2.5e5), rel=1e-6
        )
        assert torch.equal(
            sample['bounds'][:6],
            torch.tensor([x.start, x.stop, 2.0, y.start, y.stop, 2.0]),
        )
        transform = rasterio.transform.from_origin(x.start, y.stop, 2.0, 2.0)
        assert torch.equal(sample['transform'], torch.tensor(transform))
        assert set(sample) == {'image', 'bounds', 'transform'}

    def test_matches_file(self, dataset: COSMOSkyMed) -> None:
        with h5py.File(GTC) as f:
            dn = f['S01/SBI'][:].astype(np.float64)
        expected = np.where(dn == 0, np.nan, dn**2 * factor(2.5e5)).astype(np.float32)
        x, y = window(0, 0, 32, 32)
        image = dataset[x, y]['image'][0].numpy()
        np.testing.assert_array_equal(image, expected)

    def test_db(self) -> None:
        linear = COSMOSkyMed(GTC)
        db = COSMOSkyMed(GTC, units='db')
        x, y = window(2, 2, 10, 10)
        a = linear[x, y]['image']
        b = db[x, y]['image']
        assert torch.equal(torch.isnan(a), torch.isnan(b))
        valid = torch.isfinite(a)
        torch.testing.assert_close(b[valid], 10 * torch.log10(a[valid]))
        assert b[0, 5, 6].item() == pytest.approx(
            10 * math.log10((100 + 80 + 7) ** 2 * factor(2.5e5)), abs=1e-4
        )

    def test_second_polarisation(self) -> None:
        ds = COSMOSkyMed(GEC, bands=('HV', 'HH'))
        assert ds.bands == ('HV', 'HH')
        x, y = window(16 + 6, 5, 4, 4)
        image = ds[x, y]['image']
        assert image.shape == (2, 4, 4)
        # First pixel of the window: column 6, row 5 of the GEC file.
        assert image[0, 0, 0].item() == pytest.approx(
            (50 + 65) ** 2 * factor(4e5), rel=1e-6
        )
        assert image[1, 0, 0].item() == pytest.approx(
            (200 + 65) ** 2 * factor(2.5e5), rel=1e-6
        )

    def test_missing_polarisation(self) -> None:
        with pytest.raises(
            InputFileError, match=r'CSKS2_GTC.*\.h5: has no HV polarisation'
        ):
            COSMOSkyMed(CSK, bands=('HV',))
        with pytest.raises(InputFileError, match='has no VV polarisation'):
            COSMOSkyMed(GEC, bands=('VV',))

    def test_default_bands(self) -> None:
        assert COSMOSkyMed(GEC).bands == ['HH', 'HV']
        assert COSMOSkyMed(CSK).bands == ['HH']
        assert COSMOSkyMed(CSG).bands == ['VV']

    def test_len(self) -> None:
        assert len(COSMOSkyMed(CSK)) == 2
        assert len(COSMOSkyMed([GTC, GEC, GTC])) == 2

    def test_time(self, dataset: COSMOSkyMed) -> None:
        interval = dataset.index.index[0]
        assert interval.left == pd.Timestamp('2023-02-08 15:43:12')
        assert pd.Timestamp('2023-02-08 15:43:20') < interval.right
        assert interval.right < pd.Timestamp('2023-02-08 15:43:21')

    def test_mosaic(self) -> None:
        ds = COSMOSkyMed(CSK)
        x, y = window(8, 8, 32, 4)
        image = ds[x, y]['image'][0]
        # Columns 8-15 only in the GTC; 16-31 in both (the GEC is first in the index);
        # 32-39 only in the GEC.
        assert image[0, 0].item() == pytest.approx(
            (100 + 80 + 8) ** 2 * factor(2.5e5), rel=1e-6
        )
        assert image[0, 8].item() == pytest.approx(
            (200 + 0 + 8) ** 2 * factor(2.5e5), rel=1e-6
        )
        assert image[0, 31].item() == pytest.approx(
            (200 + 230 + 8) ** 2 * factor(2.5e5), rel=1e-6
        )
        # In time: a query at the GTC's acquisition only reads the GTC.
        t = slice(
            pd.Timestamp('2023-02-08 15:43:15'), pd.Timestamp('2023-02-08 15:43:16'), 1
        )
        image = ds[x, y, t]['image'][0]
        assert image[0, 8].item() == pytest.approx(
            (100 + 160 + 8) ** 2 * factor(2.5e5), rel=1e-6
        )
        assert torch.isnan(image[0, 24:]).all()

    def test_out_of_bounds(self, dataset: COSMOSkyMed) -> None:
        with pytest.raises(IndexError, match='not found'):
            dataset[0:10:1.0, 0:10:1.0]

    def test_csg_geotiff(self) -> None:
        ds = COSMOSkyMed(CSG)
        assert ds.crs.to_epsg() == 32647
        x0, y1 = 199000.0, 2431032.0
        sample = ds[x0 : x0 + 8 : 1.0, y1 - 8 : y1 : 1.0]
        image = sample['image'][0]
        assert torch.isnan(image[:4, :4]).all()
        assert image[6, 5].item() == pytest.approx(
            (300 + 50 + 6) ** 2 * factor(2.5e5), rel=1e-6
        )

    def test_and(self) -> None:
        sar = COSMOSkyMed(CSK)
        both = sar & DSM(DSM_DIR)
        assert isinstance(both, IntersectionDataset)
        x, y = window(4, 4, 8, 8)
        sample = both[x, y, both.bounds[2]]
        assert set(sample) == {'image', 'dsm', 'tabular', 'bounds', 'transform'}
        assert sample['image'].shape == sample['dsm'].shape == (1, 8, 8)

    def test_and_torchgeo(self) -> None:
        class Mask(RasterDataset):
            is_image = False
            filename_glob = '*.tif'

        ds = COSMOSkyMed(GTC) & Mask(DSM_DIR)
        x, y = window(4, 4, 8, 8)
        sample = ds[x, y, ds.bounds[2]]
        assert sample['image'].shape == (1, 8, 8)
        assert sample['mask'].shape == (8, 8)

    def test_or(self) -> None:
        ds = COSMOSkyMed(GTC) | COSMOSkyMed(GEC, bands=('HH',))
        assert isinstance(ds, UnionDataset)
        assert len(ds) == 2
        x, y = window(40, 4, 8, 8)
        assert ds[x, y]['image'].shape == (1, 8, 8)
        ds = COSMOSkyMed(GTC) | RasterDataset(DSM_DIR)
        x, y = window(4, 4, 8, 8)
        assert ds[x, y]['image'].shape == (1, 8, 8)

    @pytest.mark.parametrize('units', ['linear', 'db'])
    def test_plot(self, units: str) -> None:
        ds = COSMOSkyMed(GEC, units=units)  # type: ignore[arg-type]
        x, y = window(16, 0, 16, 16)
        fig = ds.plot(ds[x, y], suptitle='Test')
        assert isinstance(fig, Figure)
        plt.close(fig)
        fig = ds.plot(ds[x, y], show_titles=False)
        plt.close(fig)

    def test_no_files(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError, match='Dataset not found'):
            COSMOSkyMed(tmp_path)

    @pytest.mark.parametrize(
        ('kwargs', 'message'),
        [
            ({'units': 'dB'}, "units must be 'linear', 'db' or 'dn'"),
            ({'units': 'amplitude'}, 'units must be'),
            ({'bands': ('XX',)}, 'bands must be distinct polarisations'),
            ({'bands': ('HH', 'HH')}, 'bands must be distinct'),
            ({'bands': ()}, 'bands must be distinct'),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, object], message: str) -> None:
        with pytest.raises(ArgumentError, match=message):
            COSMOSkyMed(GTC, **kwargs)  # type: ignore[arg-type]

    def test_other_crs(self) -> None:
        native = COSMOSkyMed(GTC)
        ds = COSMOSkyMed(GTC, crs=CRS.from_epsg(32636))
        assert ds.crs.to_epsg() == 32636
        x, y, _ = ds.bounds
        centre_x, centre_y = (x.start + x.stop) / 2, (y.start + y.stop) / 2
        sample = ds[
            centre_x - 10 : centre_x + 10 : 2.0, centre_y - 10 : centre_y + 10 : 2.0
        ]
        image = sample['image']
        assert image.shape == (1, 10, 10)
        values = native[X0 : X0 + 64 : 2.0, Y1 - 64 : Y1 : 2.0]['image']
        assert torch.isfinite(image).all()
        assert float(image.min()) >= float(values.nan_to_num(1e9).min()) * 0.9
        assert float(image.max()) <= float(values.nan_to_num(0).max()) * 1.1

    def test_no_crs(self) -> None:
        with pytest.raises(
            InputFileError,
            match=re.escape(str(NO_CRS)) + ': has a geotransform but no CRS',
        ):
            COSMOSkyMed(NO_CRS)

    @pytest.mark.parametrize(
        ('path', 'level'),
        [
            (DGM, 'L1B DGM product in ground range'),
            (SCS, 'L1A SCS product in slant range'),
        ],
    )
    def test_not_geocoded(self, path: Path, level: str) -> None:
        with pytest.raises(InputFileError, match=re.escape(str(path))) as error:
            COSMOSkyMed(path)
        assert level in str(error.value)
        assert 'not geocoded' in str(error.value)
        assert 'Terrain Correction' in str(error.value)
        assert 'GTC' in str(error.value)

    def test_csg_hdf5_without_geotransform(self) -> None:
        with pytest.raises(InputFileError, match=re.escape(str(CSG_H5))) as error:
            COSMOSkyMed(CSG_H5)
        message = str(error.value)
        assert "image dataset has no 'Top Left East-North' attribute" in message
        assert 'cannot georeference this CSG GTC product' in message
        assert 'GeoTIFF' in message

    def test_unknown_product(self, tmp_path: Path) -> None:
        path = tmp_path / GTC.name.replace('_GTC_', '_XYZ_')
        shutil.copy(GTC, path)
        with pytest.raises(InputFileError, match="unknown product type 'XYZ'"):
            COSMOSkyMed(path)

    def test_name_disagrees_with_metadata(self, tmp_path: Path) -> None:
        path = tmp_path / GTC.name.replace('_GTC_', '_GEC_')
        shutil.copy(GTC, path)
        with pytest.raises(
            InputFileError,
            match="file name says GEC but the root attribute 'Product Type' is 'GTC_B'",
        ):
            COSMOSkyMed(path)

    def test_not_a_csk_hdf5(self, tmp_path: Path) -> None:
        path = tmp_path / GTC.name
        shutil.copy(GTC, path)
        with h5py.File(path, 'a') as f:
            del f.attrs['Mission ID']
        with pytest.raises(InputFileError, match="'Mission ID' is 'missing'"):
            COSMOSkyMed(path)

    def test_missing_calibration(self, tmp_path: Path) -> None:
        path = tmp_path / GEC.name
        shutil.copy(GEC, path)
        with h5py.File(path, 'a') as f:
            del f['S02'].attrs['Calibration Constant']
        COSMOSkyMed(path, bands=('HH',))
        with pytest.raises(InputFileError, match=r'Calibration_Constant.*missing'):
            COSMOSkyMed(path, bands=('HV',))

    def test_float32_projection(self, tmp_path: Path) -> None:
        # GDAL only reads float64 projection attributes: a float32 one gives no CRS.
        path = tmp_path / GTC.name
        shutil.copy(GTC, path)
        with h5py.File(path, 'a') as f:
            f.attrs['Map Projection Centre'] = np.array([0.0, 39.0], np.float32)
        with pytest.raises(InputFileError, match=r"no CRS; GDAL's HDF5 driver builds"):
            COSMOSkyMed(path)

    def test_unreadable(self, tmp_path: Path) -> None:
        path = tmp_path / GTC.name
        path.write_bytes(b'not an HDF5 file')
        with pytest.raises(InputFileError, match='cannot be opened by GDAL'):
            COSMOSkyMed(path)

    def test_extract_equals_getitem(self) -> None:
        ds = COSMOSkyMed(CSK, units='db')
        aligned = [
            slice_pair
            for c in range(0, 40, 6)
            for slice_pair in [window(c, c % 20, 8, 8)]
        ]
        unaligned = [
            (
                slice(X0 + 3.3 + c, X0 + 3.3 + c + 15, 1.5),
                slice(Y1 - 30.7 - c / 2, Y1 - 15.7 - c / 2, 1.5),
            )
            for c in range(0, 50, 7)
        ]
        for queries, exact in ((aligned, True), (unaligned, False)):
            bulk = list(ds.extract(queries))
            assert len(bulk) == len(queries)
            for query, sample in zip(queries, bulk, strict=True):
                expected = ds[query]
                assert set(sample) == set(expected)
                if exact:
                    assert torch.equal(
                        sample['image'].nan_to_num(-999),
                        expected['image'].nan_to_num(-999),
                    )
                else:
                    torch.testing.assert_close(
                        sample['image'], expected['image'], equal_nan=True
                    )
                assert torch.equal(sample['bounds'], expected['bounds'])

    def test_extract_protocol(self) -> None:
        ds = COSMOSkyMed(CSK) & DSM(DSM_DIR)
        queries = [(*window(c, 2, 8, 8), ds.bounds[2]) for c in range(0, 20, 5)]
        for query, sample in zip(queries, extract(ds, queries), strict=True):
            expected = ds[query]
            for key in ('image', 'dsm'):
                assert torch.equal(
                    sample[key].nan_to_num(-1), expected[key].nan_to_num(-1)
                )

    def test_no_cache(self) -> None:
        cached = COSMOSkyMed(CSK)
        uncached = COSMOSkyMed(CSK, cache=False)
        x, y = window(10, 3, 12, 12)
        assert torch.equal(
            cached[x, y]['image'].nan_to_num(-1), uncached[x, y]['image'].nan_to_num(-1)
        )

    def test_transforms(self) -> None:
        ds = COSMOSkyMed(GTC, transforms=lambda s: {**s, 'image': s['image'] * 0})
        x, y = window(8, 8, 4, 4)
        assert torch.equal(ds[x, y]['image'], torch.zeros(1, 4, 4))
        assert torch.equal(next(ds.extract([(x, y)]))['image'], torch.zeros(1, 4, 4))

    @pytest.mark.parametrize(
        ('x', 'y'),
        [
            (
                slice(199000.0 + 2, 199000.0 + 10, 1.0),
                slice(2431032.0 - 12, 2431032.0 - 4, 1.0),
            ),
            (
                slice(199000.0 - 3.3, 199000.0 + 9.3, 0.7),
                slice(2431032.0 - 9.1, 2431032.0 + 2.1, 0.7),
            ),
        ],
    )
    def test_same_as_torchgeo(self, x: slice, y: slice) -> None:
        # TorchGeo's own RasterDataset reads the same DN (0 = nodata) from the GeoTIFF.
        dn = RasterDataset(CSG)[x, y]['image'].double()
        expected = torch.where(dn == 0, torch.nan, dn**2 * factor(2.5e5)).float()
        actual = COSMOSkyMed(CSG)[x, y]['image']
        assert torch.equal(actual.nan_to_num(-1), expected.nan_to_num(-1))


# ----------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """Calibration attributes of a product (HDF5 names in the comments)."""

    #: ``Rescaling Factor`` F.
    rescaling_factor: float
    #: ``Reference Slant Range`` Rref (m).
    slant_range: float
    #: ``Reference Slant Range Exponent`` Rexp.
    exponent: float
    #: ``Reference Incidence Angle`` (degrees).
    incidence_deg: float
    #: ``Calibration Constant Compensation Flag``.
    constant_flag: int
    #: ``Range Spreading Loss Compensation Geometry``.
    spreading: str
    #: ``Incidence Angle Compensation Geometry``.
    incidence: str
    #: ``Calibration Constant`` K of each polarisation's group (/S01, /S02).
    constants: dict[str, float]


#: The products of tests/data/cosmo_skymed/calibration (written by its data.py),
#: listed here independently: exponents other than 1, reference angles other than
#: 30 degrees, and flags that leave terms out.
CALIBRATED = {
    # every term; Rexp 0.75
    'CSKS3_GTC_B_HI_11_HH_RA_SF_20230210031500_20230210031508.h5': Calibration(
        850.0, 650000.0, 0.75, 42.5, 0, 'DEFAULT', 'DEFAULT', {'HH': 4.9e7}
    ),
    # no range spreading loss term (Rexp 1.4 ignored), K already compensated
    'CSKS4_GEC_B_PP_03_CO_LA_FN_20230211150000_20230211150006.h5': Calibration(
        310.0, 700000.0, 1.4, 23.0, 1, 'NONE', 'DEFAULT', {'HH': 7.7e5, 'VV': 2.2e6}
    ),
    # CSG HDF5 with geotransform attributes on /S01/IMG and /S02/IMG; every term
    'CSG_SSAR2_GTC_B_0101_S2C_009_VV_RA_F_20240305031000_20240305031006_1_F_37N_Z37_N00.h5': Calibration(
        520.0, 710000.0, 0.9, 33.1, 0, 'DEFAULT', 'DEFAULT', {'VV': 2.1e7, 'VH': 6.4e6}
    ),
    # CSG GeoTIFF: Rexp 1.25, no incidence term (55 degrees ignored)
    'CSG_SSAR1_GTC_B_0303_S2A_004_HH_RD_F_20240306150000_20240306150005_1_F_37N_Z37_N00.tif': Calibration(
        1200.0, 550000.0, 1.25, 55.0, 0, 'DEFAULT', 'NONE', {'HH': 1.56e13}
    ),
}
CSG_VALID_H5 = CALIBRATION / next(n for n in CALIBRATED if n.startswith('CSG_SSAR2'))


def snap_sigma0(dn: np.ndarray, cal: Calibration, polarisation: str) -> np.ndarray:
    """Sigma nought of detected DN, by the published COSMO-SkyMed calibration.

    Written from SNAP's s1tbx ``CosmoSkymedCalibrator.computeTile`` (github.com/
    senbox-org/s1tbx, s1tbx-op-calibration/.../calibrators/CosmoSkymedCalibrator.java)
    and nansat's ``mapper_csks.py``, not from this package::

        sigma0 = DN^2 * Rref^(2 Rexp) * sin(alpha_ref) / (F^2 * K)

    where Rref^(2 Rexp) applies unless ``Range Spreading Loss Compensation Geometry``
    is NONE, sin(alpha_ref) unless ``Incidence Angle Compensation Geometry`` is NONE,
    and K unless ``Calibration Constant Compensation Flag`` is 1 (already
    compensated). DN 0 is nodata (NaN).
    """
    gain = 1.0
    if cal.spreading != 'NONE':
        gain *= cal.slant_range ** (2.0 * cal.exponent)
    if cal.incidence != 'NONE':
        gain *= math.sin(cal.incidence_deg * math.pi / 180.0)
    k = cal.constants[polarisation] if cal.constant_flag != 1 else 1.0
    dn = dn.astype(np.float64)
    return np.where(dn == 0, np.nan, dn * dn * gain / (cal.rescaling_factor**2 * k))


def raw_dn(path: Path, polarisation: str) -> np.ndarray:
    """The product's DN of one polarisation, read without GDAL's HDF5 driver."""
    if path.suffix == '.h5':
        with h5py.File(path) as f:
            for group in f.values():
                if isinstance(group, h5py.Group) and (
                    group.attrs['Polarisation'].decode() == polarisation
                ):
                    image = 'IMG' if 'IMG' in group else 'SBI'
                    return np.asarray(group[image][()])
        raise KeyError(polarisation)
    with rasterio.open(path) as src:
        return np.asarray(src.read(1))


class TestCalibration:
    @pytest.mark.parametrize('name', sorted(CALIBRATED))
    def test_files_hold_the_listed_attributes(self, name: str) -> None:
        cal = CALIBRATED[name]
        expected = {
            'Rescaling Factor': cal.rescaling_factor,
            'Reference Slant Range': cal.slant_range,
            'Reference Slant Range Exponent': cal.exponent,
            'Reference Incidence Angle': cal.incidence_deg,
            'Calibration Constant Compensation Flag': cal.constant_flag,
            'Range Spreading Loss Compensation Geometry': cal.spreading,
            'Incidence Angle Compensation Geometry': cal.incidence,
        }
        path = CALIBRATION / name
        if path.suffix == '.h5':
            with h5py.File(path) as f:
                found: dict[str, object] = {
                    k: v.decode() if isinstance(v, bytes) else v.item()
                    for k, v in f.attrs.items()
                    if k in expected
                }
                constants = {
                    g.attrs['Polarisation'].decode(): g.attrs['Calibration Constant']
                    for g in f.values()
                    if isinstance(g, h5py.Group)
                }
        else:
            with rasterio.open(path) as src:
                tags = src.tags()
            found = {
                k: (text if k.endswith('Geometry') else float(text))
                for k in expected
                for text in [tags[k.replace(' ', '_')]]
            }
            constants = {
                tags['S01_Polarisation']: float(tags['S01_Calibration_Constant'])
            }
        assert found == expected
        assert constants == cal.constants

    @pytest.mark.parametrize('name', sorted(CALIBRATED))
    @pytest.mark.parametrize('units', ['linear', 'db'])
    def test_sigma0_matches_the_published_formula(self, name: str, units: str) -> None:
        cal = CALIBRATED[name]
        path = CALIBRATION / name
        bands = sorted(cal.constants)
        ds = COSMOSkyMed(path, bands=bands, units=units)  # type: ignore[arg-type]
        image = ds[window(0, 0, 32, 32)]['image'].numpy()
        assert image.shape == (len(bands), 32, 32)
        for band, layer in zip(bands, image, strict=True):
            expected = snap_sigma0(raw_dn(path, band), cal, band)
            if units == 'db':
                expected = 10 * np.log10(expected)
                np.testing.assert_allclose(layer, expected, rtol=0, atol=1e-4)
            else:
                np.testing.assert_allclose(layer, expected, rtol=1e-6)
            assert np.isnan(layer[:4, :4]).all()
            assert np.isfinite(layer[4:]).all()

    def test_terms_matter(self) -> None:
        # Getting any term wrong moves sigma nought by far more than the tolerance
        # of the test above (1e-6): an exponent taken as 1 where the range spreading
        # loss applies, a reference angle of 30 degrees where the incidence term
        # applies, or a flag read the other way.
        dn = np.array([100.0])
        for name, cal in CALIBRATED.items():
            wrongs = [
                replace(cal, constant_flag=1 - cal.constant_flag),
                replace(
                    cal, spreading='DEFAULT' if cal.spreading == 'NONE' else 'NONE'
                ),
                replace(
                    cal, incidence='DEFAULT' if cal.incidence == 'NONE' else 'NONE'
                ),
            ]
            if cal.spreading != 'NONE':
                wrongs.append(replace(cal, exponent=1.0))
            if cal.incidence != 'NONE':
                wrongs.append(replace(cal, incidence_deg=30.0))
            for wrong in wrongs:
                for band in cal.constants:
                    right = snap_sigma0(dn, cal, band)[0]
                    other = snap_sigma0(dn, wrong, band)[0]
                    assert abs(other / right - 1) > 0.05, (name, wrong)

    def test_valid_csg_hdf5(self) -> None:
        ds = COSMOSkyMed(CSG_VALID_H5)
        assert ds.bands == ['VH', 'VV']
        assert ds.crs.to_epsg() == 32637
        assert ds.res == (PIXEL, PIXEL)
        x, y, _ = ds.bounds
        assert (x.start, x.stop, y.start, y.stop) == (
            X0,
            X0 + 32 * PIXEL,
            Y1 - 32 * PIXEL,
            Y1,
        )
        with rasterio.open(f'HDF5:"{CSG_VALID_H5}"://S02/IMG') as src:
            assert src.crs.to_epsg() == 32637
            assert src.transform == rasterio.transform.from_origin(X0, Y1, 2.0, 2.0)
        cal = CALIBRATED[CSG_VALID_H5.name]
        sample = ds[window(6, 5, 4, 4)]
        # First pixel of the window: column 6, row 5; VH is S02 (DN 40 + 65), VV is
        # S01 (DN 110 + 65), each with its own group's constant.
        for band, offset, layer in zip(
            ds.bands, (40, 110), sample['image'], strict=True
        ):
            k = cal.constants[band]
            expected = (
                (offset + 65) ** 2
                * 710000.0 ** (2 * 0.9)
                * math.sin(math.radians(33.1))
                / (520.0**2 * k)
            )
            assert layer[0, 0].item() == pytest.approx(expected, rel=1e-6)
        assert set(sample) == {'image', 'bounds', 'transform'}
        # it mixes with other rasters like any product
        both = COSMOSkyMed(CSG_VALID_H5, bands=('VV',)) & DSM(DSM_DIR)
        assert both[(*window(4, 4, 8, 8), both.bounds[2])]['image'].shape == (1, 8, 8)


#: A CSG GTC GeoTIFF as users clip or export it: uint16 DN, EPSG:32637, no tags.
CLIPPED = (
    'CSG_SSAR1_GTC_B_0101_STR_012_HH_RA_F_20240101033000_20240101033007_1_F_37N_Z37_N00'
    '.tif'
)
#: Calibration a user supplies for it (any product's values would do).
USER_CALIBRATION: dict[str, float | str] = {
    'Rescaling_Factor': 300.0,
    'Reference_Slant_Range': 600000.0,
    'Reference_Slant_Range_Exponent': 1.1,
    'Reference_Incidence_Angle': 28.0,
    'S01_Calibration_Constant': 3.3e6,
    'Range_Spreading_Loss_Compensation_Geometry': 'DEFAULT',
    'Incidence_Angle_Compensation_Geometry': 'DEFAULT',
    'Calibration_Constant_Compensation_Flag': 0,
}


#: A calibrated CSG GeoTIFF (HH) over the same area.
CSG_HH = CALIBRATION / next(n for n in CALIBRATED if n.endswith('.tif'))


def write_clipped(folder: Path, name: str = CLIPPED) -> Path:
    """Write a tagless uint16 GTC GeoTIFF over the test products' area."""
    path = folder / name
    dn = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 997) + 1
    dn[:2, :2] = 0
    profile = {
        'driver': 'GTiff',
        'width': 32,
        'height': 32,
        'count': 1,
        'dtype': 'uint16',
        'crs': 'EPSG:32637',
        'transform': rasterio.transform.from_origin(X0, Y1, PIXEL, PIXEL),
    }
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(dn, 1)
    return path


class TestWhatUsersHave:
    """Products as users have them: clipped GeoTIFFs without tags, odd names."""

    def test_dn_reads_uncalibrated_geotiff(self, tmp_path: Path) -> None:
        path = write_clipped(tmp_path)
        ds = COSMOSkyMed(path, units='dn')
        image = ds[window(0, 0, 32, 32)]['image']
        dn = raw_dn(path, 'HH').astype(np.float32)
        expected = np.where(dn == 0, np.nan, dn)
        np.testing.assert_array_equal(image[0].numpy(), expected)

    def test_dn_reads_hdf5_as_stored(self) -> None:
        ds = COSMOSkyMed(GTC, units='dn')
        image = ds[window(0, 0, 32, 32)]['image'][0].numpy()
        dn = raw_dn(GTC, 'HH').astype(np.float32)
        np.testing.assert_array_equal(image, np.where(dn == 0, np.nan, dn)[:32, :32])

    def test_refusal_names_file_attributes_and_options(self, tmp_path: Path) -> None:
        path = write_clipped(tmp_path)
        with pytest.raises(InputFileError) as err:
            COSMOSkyMed(path)
        message = str(err.value)
        assert CLIPPED in message
        assert 'Rescaling_Factor' in message
        assert 'S01_Calibration_Constant' in message
        assert 'calibration=' in message
        assert "units='dn'" in message

    @pytest.mark.parametrize('per_file', [False, True])
    def test_calibration_argument(self, tmp_path: Path, per_file: bool) -> None:
        path = write_clipped(tmp_path)
        given = {CLIPPED: USER_CALIBRATION} if per_file else USER_CALIBRATION
        ds = COSMOSkyMed(path, calibration=given)
        cal = Calibration(300.0, 600000.0, 1.1, 28.0, 0, 'DEFAULT', 'DEFAULT', {})
        cal = replace(cal, constants={'HH': 3.3e6})
        expected = snap_sigma0(raw_dn(path, 'HH'), cal, 'HH').astype(np.float32)
        image = ds[window(0, 0, 32, 32)]['image'][0].numpy()
        np.testing.assert_allclose(image, expected, rtol=1e-6)

    def test_calibration_wins_over_product(self) -> None:
        ds = COSMOSkyMed(CSG_HH, calibration=USER_CALIBRATION)
        cal = Calibration(300.0, 600000.0, 1.1, 28.0, 0, 'DEFAULT', 'DEFAULT', {})
        cal = replace(cal, constants={'HH': 3.3e6})
        expected = snap_sigma0(raw_dn(CSG_HH, 'HH'), cal, 'HH').astype(np.float32)
        image = ds[window(0, 0, 32, 32)]['image'][0].numpy()
        np.testing.assert_allclose(image, expected, rtol=1e-6)

    def test_calibration_with_hdf5_names(self, tmp_path: Path) -> None:
        path = write_clipped(tmp_path)
        spaced = {k.replace('_', ' '): v for k, v in USER_CALIBRATION.items()}
        spaced['S01_Calibration_Constant'] = spaced.pop('S01 Calibration Constant')
        a = COSMOSkyMed(path, calibration=spaced)[window(0, 0, 8, 8)]['image']
        b = COSMOSkyMed(path, calibration=USER_CALIBRATION)[window(0, 0, 8, 8)]
        np.testing.assert_array_equal(a.numpy(), b['image'].numpy())

    @pytest.mark.parametrize(
        ('calibration', 'message'),
        [
            ({'Rescaling': 1.0}, "'Rescaling' is not a calibration attribute"),
            ({'other.tif': {'Rescaling_Factor': 1.0}}, 'not one of the products'),
            ({'a': 1.0, 'b': {'c': 1.0}}, 'not mix both'),
        ],
    )
    def test_bad_calibration(
        self, tmp_path: Path, calibration: dict[str, object], message: str
    ) -> None:
        path = write_clipped(tmp_path)
        with pytest.raises(ArgumentError, match=message):
            COSMOSkyMed(path, calibration=calibration)  # type: ignore[arg-type]

    def test_calibration_with_dn_refused(self, tmp_path: Path) -> None:
        path = write_clipped(tmp_path)
        with pytest.raises(ArgumentError, match="no effect with units='dn'"):
            COSMOSkyMed(path, units='dn', calibration=USER_CALIBRATION)

    def test_mixed_calibration_refused(self, tmp_path: Path) -> None:
        shutil.copy(CSG_HH, tmp_path / CSG_HH.name)
        write_clipped(tmp_path)
        with pytest.raises(InputFileError, match='calibrated and uncalibrated') as err:
            COSMOSkyMed(tmp_path)
        assert CLIPPED in str(err.value)
        assert CSG_HH.name in str(err.value)
        # every product as digital numbers, or the missing constants given: read
        assert len(COSMOSkyMed(tmp_path, units='dn')) == 2
        ds = COSMOSkyMed(tmp_path, calibration={CLIPPED: USER_CALIBRATION})
        assert len(ds) == 2

    def test_named_file_off_convention_refused(self, tmp_path: Path) -> None:
        path = write_clipped(tmp_path, 'my_clip.tif')
        with pytest.raises(InputFileError, match='does not follow the CSK/CSG') as err:
            COSMOSkyMed(path, units='dn')
        assert 'my_clip.tif' in str(err.value)
        # in a directory, files off the convention are not products: skipped
        write_clipped(tmp_path)
        assert len(COSMOSkyMed(tmp_path, units='dn')) == 1

    def test_upstream_shape(self) -> None:
        ds = COSMOSkyMed(GTC)
        assert isinstance(ds, RasterDataset)
        # TorchGeo's own start/stop parsing, no override
        assert (
            COSMOSkyMed._filepath_to_timestamp is RasterDataset._filepath_to_timestamp
        )
        interval = ds.index.index[0]
        assert interval.left == pd.Timestamp('2023-02-08 15:43:12')
        assert interval.right == pd.Timestamp('2023-02-08 15:43:20.999999')

    def test_time_series(self, tmp_path: Path) -> None:
        shutil.copy(CSG_HH, tmp_path / CSG_HH.name)
        write_clipped(tmp_path)
        ds = COSMOSkyMed(tmp_path, units='dn', time_series=True)
        x, y = window(0, 0, 8, 8)
        image = ds[x, y, ds.bounds[2]]['image']
        assert image.shape == (2, 1, 8, 8)
        for i, path in enumerate(ds.index.filepath):
            alone = COSMOSkyMed(path, units='dn')[x, y]['image']
            assert torch.equal(image[i], alone) or torch.allclose(
                image[i], alone, equal_nan=True
            )
        batch = ds.extract_batch([(x, y, ds.bounds[2])])['image']
        np.testing.assert_array_equal(batch[0].numpy(), image.numpy())

    def test_and_plain_torchgeo_image_refused(self) -> None:
        class Optical(RasterDataset):  # e.g. Sentinel1, Sentinel2: key 'image'
            filename_glob = '*.tif'

        sar, optical = COSMOSkyMed(GTC), Optical(DSM_DIR)
        with pytest.raises(ArgumentError, match="both produce 'image'"):
            sar & optical
        with pytest.raises(ArgumentError, match='IntersectionDataset'):
            (sar & DSM(DSM_DIR)) & optical
        # TorchGeo's own intersection stacks the channels, as TorchGeo users expect
        both = IntersectionDataset(sar, optical)
        x, y = window(4, 4, 8, 8)
        sample = both[x, y, both.bounds[2]]
        assert sample['image'].shape == (2, 8, 8)
        assert torch.allclose(sample['image'][:1], sar[x, y]['image'], equal_nan=True)
