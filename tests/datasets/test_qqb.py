# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import os
import shutil
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader
from torchgeo.datasets import DatasetNotFoundError

from torchgeo_sar_damage.datasets import QuickQuakeBuildings
from torchgeo_sar_damage.datasets.qqb import _resize_image, _resize_mask
from torchgeo_sar_damage.errors import ArgumentError, InputFileError

ROOT = Path(__file__).parents[1] / 'data' / 'qqb'
DATA = ROOT / 'data'
# (osm id, label, fold) in fold-file order, as tests/data/qqb/data.py writes them.
BUILDINGS = [
    (1139272419, 1, 1),
    (1139025727, 0, 1),
    (1141523658, 0, 1),
    (1138759917, 1, 2),
    (1138870256, 0, 2),
    (86709243, 0, 2),
    (1139181810, 1, 3),
    (1138681967, 0, 3),
    (1139270435, 0, 4),
    (1139280845, 0, 4),
    (1144158051, 1, 5),
    (1139720671, 0, 5),
]


def sar_expected(rows: int, cols: int) -> np.ndarray:
    """The fixture's SAR in MATLAB orientation: -20 + r + 0.1 c."""
    r, c = np.mgrid[:rows, :cols]
    return (-20.0 + r + 0.1 * c).astype(np.float32)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    root = tmp_path / 'qqb'
    shutil.copytree(DATA, root / 'data')
    return root


class TestQuickQuakeBuildings:
    def test_len_all_folds(self) -> None:
        ds = QuickQuakeBuildings(ROOT)
        assert len(ds) == 12
        assert ds.osm_ids == [b[0] for b in BUILDINGS]
        assert ds.labels == [b[1] for b in BUILDINGS]
        assert ds.fold_of == [b[2] for b in BUILDINGS]

    @pytest.mark.parametrize(
        ('folds', 'length', 'damaged'),
        [([1], 3, 1), ([2, 3], 5, 2), ([5, 4], 4, 1), ([1, 2, 3, 4, 5], 12, 4)],
    )
    def test_len_per_folds(self, folds: list[int], length: int, damaged: int) -> None:
        ds = QuickQuakeBuildings(ROOT, folds=folds)
        assert len(ds) == length
        assert sum(ds.labels) == damaged
        assert set(ds.fold_of) == set(folds)
        # folds in the order given, buildings in file order
        assert ds.fold_of == sorted(ds.fold_of, key=folds.index)

    def test_root_is_data_folder(self) -> None:
        ds = QuickQuakeBuildings(DATA, folds=[2])
        assert ds.osm_ids == [1138759917, 1138870256, 86709243]

    def test_getitem_keys_types(self) -> None:
        ds = QuickQuakeBuildings(ROOT, size=32)
        sample = ds[3]
        assert sample['sar'].dtype == torch.float32
        assert sample['sar'].shape == (1, 32, 32)
        assert sample['footprint'].dtype == torch.uint8
        assert sample['footprint'].shape == (1, 32, 32)
        assert sample['optical'].dtype == torch.float32
        assert sample['optical'].shape == (3, 32, 32)
        assert sample['optical_footprint'].dtype == torch.uint8
        assert sample['optical_footprint'].shape == (1, 32, 32)
        for key in ('label', 'osm_id', 'fold'):
            assert sample[key].dtype == torch.int64
            assert sample[key].shape == ()
        assert int(sample['label']) == 1
        assert int(sample['osm_id']) == 1138759917
        assert int(sample['fold']) == 2

    def test_labels_ids_folds_per_sample(self) -> None:
        ds = QuickQuakeBuildings(ROOT, size=8)
        got = [
            (int(s['osm_id']), int(s['label']), int(s['fold']))
            for s in (ds[i] for i in range(len(ds)))
        ]
        assert got == BUILDINGS

    def test_native_values_and_orientation(self) -> None:
        # building 1139025727: SAR 12 x 8, optical 10 x 6 (rows x columns in MATLAB)
        ds = QuickQuakeBuildings(ROOT, folds=[1], size=None)
        sample = ds[1]
        assert sample['sar'].shape == (1, 12, 8)
        np.testing.assert_allclose(sample['sar'][0].numpy(), sar_expected(12, 8))
        r, c = np.mgrid[:10, :6]
        optical = np.stack([40.0 * b + 5 * r + c for b in range(3)])
        assert sample['optical'].shape == (3, 10, 6)
        np.testing.assert_array_equal(sample['optical'].numpy(), optical)
        # top-left is the smallest value; rows step by 1, columns by 0.1
        sar = sample['sar'][0]
        assert float(sar[1, 0] - sar[0, 0]) == pytest.approx(1.0)
        assert float(sar[0, 1] - sar[0, 0]) == pytest.approx(0.1, abs=1e-5)

    def test_wide_patch_orientation(self) -> None:
        # building 1141523658: SAR 10 x 14, optical 8 x 12, stored as 14 x 10 / 3x12x8
        ds = QuickQuakeBuildings(ROOT, folds=[1], size=None)
        sample = ds[2]
        assert sample['sar'].shape == (1, 10, 14)
        assert sample['optical'].shape == (3, 8, 12)
        assert sample['footprint'].shape == (1, 10, 14)
        assert sample['optical_footprint'].shape == (1, 8, 12)

    @pytest.mark.parametrize(('index', 'missing'), [(0, True), (1, False), (2, True)])
    def test_missing_sar_is_nan(self, index: int, missing: bool) -> None:
        # building 0 stores -999 and building 2 -Inf in the top-left 2 x 3 block
        ds = QuickQuakeBuildings(ROOT, folds=[1], size=None)
        sar = ds[index]['sar'][0]
        nan = torch.isnan(sar)
        expected = torch.zeros_like(nan)
        if missing:
            expected[:2, :3] = True
        assert torch.equal(nan, expected)
        rows, cols = sar.shape
        valid = sar_expected(rows, cols)
        np.testing.assert_allclose(sar[~nan].numpy(), valid[~nan.numpy()])

    def test_missing_sar_resized(self) -> None:
        ds = QuickQuakeBuildings(ROOT, folds=[1], size=24)
        sar = ds[0]['sar'][0]  # 12 x 8 patch, missing rows 0-1, columns 0-2
        nan = torch.isnan(sar)
        # nearest source: output row i -> floor((i + 0.5) / 2), column j ->
        # floor((j + 0.5) / 3)
        expected = torch.zeros(24, 24, dtype=torch.bool)
        expected[:4, :9] = True
        assert torch.equal(nan, expected)
        # no NaN leaks into valid pixels, values stay within the valid range
        assert float(sar[~nan].min()) >= -20.0
        assert float(sar[~nan].max()) <= -20.0 + 11 + 0.7 + 1e-5

    def test_footprint_coding(self) -> None:
        ds = QuickQuakeBuildings(ROOT, size=None)
        for i in range(len(ds)):
            sample = ds[i]
            for key in ('footprint', 'optical_footprint'):
                values = set(torch.unique(sample[key]).tolist())
                assert values == {0, 2}, (i, key, values)
        sample = ds[0]  # SAR 12 x 8: block rows 4-7, columns 3-4
        expected = torch.zeros(1, 12, 8, dtype=torch.uint8)
        expected[0, 4:8, 3:5] = 2
        assert torch.equal(sample['footprint'], expected)
        expected = torch.zeros(1, 10, 6, dtype=torch.uint8)
        expected[0, 3:7, 2:4] = 2
        assert torch.equal(sample['optical_footprint'], expected)

    def test_logical_masks_and_uint8_optical(self) -> None:
        # 1139025727 is stored with MATLAB logical masks and uint8 optical
        ds = QuickQuakeBuildings(ROOT, folds=[1], size=None)
        sample = ds[1]
        assert int(sample['osm_id']) == 1139025727
        assert int((sample['footprint'] == 2).sum()) == 8
        assert float(sample['optical'].max()) == 80 + 5 * 9 + 5

    @pytest.mark.parametrize('size', [16, 17, 64])
    def test_resize_keeps_footprint_centred(self, size: int) -> None:
        ds = QuickQuakeBuildings(ROOT, size=size)
        for index in (0, 2):
            sample = ds[index]
            for key in ('footprint', 'optical_footprint'):
                mask = sample[key][0] == 2
                assert mask.shape == (size, size)
                rows, cols = torch.nonzero(mask, as_tuple=True)
                centre = (size - 1) / 2
                assert float(rows.float().mean()) == pytest.approx(centre, abs=0.5)
                assert float(cols.float().mean()) == pytest.approx(centre, abs=0.5)
                assert torch.equal(mask, mask.flip(0))
                assert torch.equal(mask, mask.flip(1))

    def test_resize_keeps_orientation(self) -> None:
        ds = QuickQuakeBuildings(ROOT, folds=[1], size=20)
        sample = ds[1]  # no missing values
        sar = sample['sar'][0]
        # rows increase by 11 dB over the patch, columns by 0.7 dB
        assert float(sar[-1, 0] - sar[0, 0]) > 8
        assert 0 < float(sar[0, -1] - sar[0, 0]) < 1
        optical = sample['optical']
        assert float(optical[0, -1, 0] - optical[0, 0, 0]) > 30
        assert 0 < float(optical[0, 0, -1] - optical[0, 0, 0]) < 6
        assert float(optical[2, 0, 0] - optical[0, 0, 0]) == pytest.approx(80, abs=1)
        # mean preserved by bilinear resampling of a linear ramp
        expected = float(sar_expected(12, 8).mean())
        assert float(sar.mean()) == pytest.approx(expected, abs=1e-4)

    def test_collate(self) -> None:
        ds = QuickQuakeBuildings(ROOT, folds=[1, 2], size=16)
        batch = next(iter(DataLoader(ds, batch_size=4)))
        assert batch['sar'].shape == (4, 1, 16, 16)
        assert batch['optical'].shape == (4, 3, 16, 16)
        assert batch['label'].tolist() == [1, 0, 0, 1]

    def test_transforms(self) -> None:
        def add_one(sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            sample['label'] = sample['label'] + 10
            return sample

        ds = QuickQuakeBuildings(ROOT, folds=[1], transforms=add_one)
        assert int(ds[0]['label']) == 11

    def test_index_error(self) -> None:
        ds = QuickQuakeBuildings(ROOT, folds=[1])
        with pytest.raises(IndexError, match='out of range'):
            ds[3]
        assert int(ds[-1]['osm_id']) == 1141523658

    def test_plot(self) -> None:
        ds = QuickQuakeBuildings(ROOT, folds=[1])
        sample = ds[0]
        fig = ds.plot(sample, suptitle='test')
        assert isinstance(fig, Figure)
        assert 'damaged' in fig.get_suptitle()
        assert '1139272419' in fig.get_suptitle()
        plt.close(fig)
        sample['prediction'] = torch.tensor(0.25)
        fig = ds.plot(sample, show_titles=True)
        assert 'p(damaged) = 0.25' in fig.get_suptitle()
        plt.close(fig)
        fig = ds.plot(ds[1], show_titles=False)
        assert fig.get_suptitle() == ''
        plt.close(fig)

    def test_plot_class_prediction_and_suptitle(self) -> None:
        ds = QuickQuakeBuildings(ROOT, folds=[1])
        sample = ds[1]
        sample['prediction'] = torch.tensor(1)
        fig = ds.plot(sample)
        assert fig.get_suptitle().endswith('intact, predicted damaged')
        plt.close(fig)
        fig = ds.plot(sample, show_titles=False, suptitle='only this')
        assert fig.get_suptitle() == 'only this'
        plt.close(fig)

    def test_resize_same_size_is_identity(self) -> None:
        image = torch.arange(16.0).reshape(1, 4, 4)
        image[0, 0, 0] = float('nan')
        assert _resize_image(image, 4) is image
        mask = torch.ones(1, 4, 4, dtype=torch.uint8)
        assert _resize_mask(mask, 4) is mask

    def test_plot_native_size(self) -> None:
        ds = QuickQuakeBuildings(ROOT, folds=[2], size=None)
        fig = ds.plot(ds[0])
        assert 'damaged' in fig.get_suptitle()
        plt.close(fig)

    # ---- errors ----

    def test_missing_root(self, tmp_path: Path) -> None:
        missing = tmp_path / 'nowhere'
        with pytest.raises(DatasetNotFoundError, match='nowhere') as info:
            QuickQuakeBuildings(missing)
        assert 'github.com/ya0-sun/PostEQ-SARopt-BuildingDamage' in str(info.value)

    def test_missing_fold_file(self, copy: Path) -> None:
        os.remove(copy / 'data' / 'fold-3.txt')
        assert len(QuickQuakeBuildings(copy, folds=[1, 2])) == 6
        with pytest.raises(InputFileError, match=r'fold-3\.txt: fold file missing'):
            QuickQuakeBuildings(copy)

    @pytest.mark.parametrize(
        'line',
        [
            'damaged/1139272419;1',
            'damaged/1139272419,0',
            'intact/1139272419,1',
            'broken/1139272419,1',
            'damaged/11392x2419,1',
            'damaged/1139272419',
        ],
    )
    def test_malformed_line(self, copy: Path, line: str) -> None:
        path = copy / 'data' / 'fold-4.txt'
        text = path.read_bytes().split(b'\r\n')
        text[1] = line.encode()
        path.write_bytes(b'\r\n'.join(text))
        with pytest.raises(InputFileError, match=r'fold-4\.txt: line 2 is') as info:
            QuickQuakeBuildings(copy, folds=[4])
        assert repr(line) in str(info.value)

    def test_blank_lines_and_lf(self, copy: Path) -> None:
        path = copy / 'data' / 'fold-4.txt'
        text = path.read_bytes().replace(b'\r\n', b'\n') + b'\n\n'
        path.write_bytes(text)
        assert QuickQuakeBuildings(copy, folds=[4]).osm_ids == [1139270435, 1139280845]

    def test_duplicate_building(self, copy: Path) -> None:
        with open(copy / 'data' / 'fold-5.txt', 'a') as f:
            f.write('\r\nintact/1139270435,0')
        with pytest.raises(InputFileError, match=r'fold-5\.txt: building 1139270435'):
            QuickQuakeBuildings(copy, folds=[4, 5])

    @pytest.mark.parametrize('suffix', ['SAR', 'SARftp', 'opt', 'optftp'])
    def test_missing_mat(self, copy: Path, suffix: str) -> None:
        name = f'1138870256_{suffix}.mat'
        os.remove(copy / 'data' / 'intact' / name)
        assert len(QuickQuakeBuildings(copy, folds=[1])) == 3
        with pytest.raises(InputFileError, match=rf'intact[/\\]{name}: missing'):
            QuickQuakeBuildings(copy, folds=[1, 2])

    def test_missing_patch_folder(self, copy: Path) -> None:
        shutil.rmtree(copy / 'data' / 'damaged')
        with pytest.raises(InputFileError, match='TeraBox') as info:
            QuickQuakeBuildings(copy)
        assert str(info.value).startswith(str(copy / 'data' / 'damaged'))

    def test_unreadable_mat(self, copy: Path) -> None:
        path = copy / 'data' / 'damaged' / '1138759917_opt.mat'
        path.write_text('not a MATLAB file')
        ds = QuickQuakeBuildings(copy, folds=[2])
        with pytest.raises(InputFileError, match=r'1138759917_opt\.mat: unreadable'):
            ds[0]

    def test_mat_missing_key(self, copy: Path) -> None:
        path = copy / 'data' / 'damaged' / '1138759917_SARftp.mat'
        path.unlink()
        with h5py.File(path, 'w') as f:
            f['x1'] = np.zeros((4, 4))
        ds = QuickQuakeBuildings(copy, folds=[2])
        with pytest.raises(
            InputFileError, match=r"1138759917_SARftp\.mat: has no array 'x2'"
        ):
            ds[0]

    def test_mat_wrong_shape(self, copy: Path) -> None:
        path = copy / 'data' / 'damaged' / '1138759917_SARftp.mat'
        path.unlink()
        with h5py.File(path, 'w') as f:
            f['x2'] = np.zeros((5, 5))
        ds = QuickQuakeBuildings(copy, folds=[2])
        with pytest.raises(
            InputFileError, match=r'1138759917_SARftp\.mat: mask shape \(5, 5\)'
        ):
            ds[0]

    def test_optical_not_three_bands(self, copy: Path) -> None:
        path = copy / 'data' / 'damaged' / '1138759917_opt.mat'
        path.unlink()
        with h5py.File(path, 'w') as f:
            f['x3'] = np.zeros((4, 12, 8))
        ds = QuickQuakeBuildings(copy, folds=[2])
        with pytest.raises(
            InputFileError,
            match=r"1138759917_opt\.mat: 'x3' has shape \(4, 12, 8\) in h5py",
        ):
            ds[0]

    def test_sar_not_2d(self, copy: Path) -> None:
        path = copy / 'data' / 'damaged' / '1138759917_SAR.mat'
        path.unlink()
        with h5py.File(path, 'w') as f:
            f['x1'] = np.zeros((2, 14, 10))
        ds = QuickQuakeBuildings(copy, folds=[2])
        with pytest.raises(
            InputFileError, match=r"_SAR\.mat: 'x1' has shape \(2, 14, 10\) in h5py"
        ):
            ds[0]

    def test_mat_not_numeric(self, copy: Path) -> None:
        path = copy / 'data' / 'damaged' / '1138759917_SAR.mat'
        path.unlink()
        with h5py.File(path, 'w') as f:
            f['x1'] = np.array([b'a', b'b'])
        ds = QuickQuakeBuildings(copy, folds=[2])
        with pytest.raises(InputFileError, match=r"_SAR\.mat: 'x1' is not numeric"):
            ds[0]

    @pytest.mark.parametrize('folds', [[], [0], [6], [1, 1], [True]])
    def test_bad_folds(self, folds: list[int]) -> None:
        with pytest.raises(ArgumentError, match='folds'):
            QuickQuakeBuildings(ROOT, folds=folds)

    @pytest.mark.parametrize('size', [0, -3])
    def test_bad_size(self, size: int) -> None:
        with pytest.raises(ArgumentError, match='size'):
            QuickQuakeBuildings(ROOT, size=size)
