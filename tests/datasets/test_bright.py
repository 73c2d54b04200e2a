# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from scipy import ndimage
from torch.utils.data import DataLoader
from torchgeo.datasets import DatasetNotFoundError

from torchgeo_sar_damage.datasets import BRIGHTBuildings
from torchgeo_sar_damage.datasets.bright import bilinear, building_id
from torchgeo_sar_damage.errors import ArgumentError, InputFileError

DATA = Path(__file__).parents[1] / 'data' / 'bright' / 'dfc25_track2_trainval'
TARGET = 'train/target/{}_building_damage.tif'

#: Tile pixel sizes in metres (tests/data/bright/data.py).
PIXEL_M = {
    'turkey-earthquake_00000001': 1.0,
    'turkey-earthquake_00000002': 0.3,
    'la_palma-volcano_00000001': 0.3,
    'morocco-earthquake_00000001': 1.0,
    'libya-flood_00000001': 0.5,
    'haiti-earthquake_00000001': 0.5,
}
#: Buildings per tile of the train list, and grades of turkey-earthquake_00000001.
TRAIN_COUNTS = {
    'la_palma-volcano_00000001': 2,
    'libya-flood_00000001': 1,
    'morocco-earthquake_00000001': 3,
    'turkey-earthquake_00000001': 6,
    'turkey-earthquake_00000002': 2,
}
TURKEY_1 = 'turkey-earthquake_00000001'


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(DATA, tmp_path / 'dfc25_track2_trainval')
    return tmp_path


@pytest.fixture(scope='module')
def train(tmp_path_factory: pytest.TempPathFactory) -> BRIGHTBuildings:
    root = tmp_path_factory.mktemp('bright')
    shutil.copytree(DATA, root / 'dfc25_track2_trainval')
    return BRIGHTBuildings(root, progress=False)


def position(ds: BRIGHTBuildings, tile: str, component: int) -> int:
    rows = ds.index.index[
        (ds.index['tile'] == tile) & (ds.index['component'] == component)
    ]
    assert len(rows) == 1
    return int(rows[0])


def window_coords(
    ds: BRIGHTBuildings, i: int, res_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Expected window pixel centres in tile pixels, from the known geometry."""
    row = ds.index.iloc[i]
    steps = (np.arange(ds.size_px) + 0.5) / ds.size_px - 0.5
    return (
        row['centroid_row'] + steps * ds.size_m / res_m,
        row['centroid_col'] + steps * ds.size_m / res_m,
    )


class TestBRIGHTBuildings:
    def test_counts_per_tile(self, train: BRIGHTBuildings) -> None:
        assert len(train) == 14
        assert train.index['tile'].value_counts().to_dict() == TRAIN_COUNTS
        assert 'libya-flood_00000002' in train.tiles  # listed, no building
        assert train.events == [
            'la_palma-volcano',
            'libya-flood',
            'morocco-earthquake',
            'turkey-earthquake',
        ]

    def test_event_with_underscore(self, train: BRIGHTBuildings) -> None:
        sample = train[position(train, 'la_palma-volcano_00000001', 1)]
        assert sample['event'] == 'la_palma-volcano'
        assert sample['tile'] == 'la_palma-volcano_00000001'

    def test_components_and_worst_grade(self, train: BRIGHTBuildings) -> None:
        tile = train.index[train.index['tile'] == TURKEY_1]
        # A, F, B+C (touching: one, worst grade 3), D and E (one pixel apart: two),
        # G+H (touching at a corner: one, 8-connectivity)
        assert tile['grade'].tolist() == [1, 2, 3, 2, 1, 2]
        assert tile['pixels'].tolist() == [60, 36, 128, 36, 36, 32]
        bc = tile.iloc[2]
        assert (bc['row_min'], bc['row_max'], bc['col_min'], bc['col_max']) == (
            30,
            38,
            5,
            21,
        )
        assert (bc['centroid_row'], bc['centroid_col']) == (34.0, 13.0)

    @pytest.mark.parametrize(
        ('task', 'expected'),
        [('binary', [0, 1, 1, 1, 0, 1]), ('grades', [0, 1, 2, 1, 0, 1])],
    )
    def test_labels(
        self, root: Path, task: Literal['binary', 'grades'], expected: list[int]
    ) -> None:
        ds = BRIGHTBuildings(root, task=task, progress=False)
        labels = [ds[position(ds, TURKEY_1, c)]['label'] for c in range(1, 7)]
        assert all(label.dtype == torch.int64 and label.ndim == 0 for label in labels)
        assert [int(label) for label in labels] == expected
        assert ds.classes == BRIGHTBuildings.tasks[task]

    def test_edge_flag(self, train: BRIGHTBuildings) -> None:
        edge = {
            (t, c) for t, c, e in train.index[['tile', 'component', 'edge']].values if e
        }
        assert edge == {
            (TURKEY_1, 2),
            ('turkey-earthquake_00000002', 1),
            ('la_palma-volcano_00000001', 2),
        }
        assert bool(train[position(train, TURKEY_1, 2)]['edge'])
        assert not bool(train[position(train, TURKEY_1, 1)]['edge'])

    def test_building_id(self, train: BRIGHTBuildings, root: Path) -> None:
        ids = train.index['building_id']
        assert ids.is_unique
        assert (ids > 0).all()
        sample = train[position(train, TURKEY_1, 3)]
        assert sample['building_id'].dtype == torch.int64
        assert int(sample['building_id']) == building_id(TURKEY_1, 3)
        # the same building has the same id in another split and another copy
        test = BRIGHTBuildings(
            root, 'test', test_events=['turkey-earthquake'], progress=False
        )
        assert set(test.index['building_id']) <= set(ids)
        assert building_id(TURKEY_1, 3) != building_id('turkey-earthquake_00000002', 3)

    @pytest.mark.parametrize(
        ('size_m', 'pixel_m', 'pixels'),
        [(32.0, 0.5, 64), (20.0, 1.0, 20), (10, 0.3, 33)],
    )
    def test_window_shape(
        self, root: Path, size_m: float, pixel_m: float, pixels: int
    ) -> None:
        ds = BRIGHTBuildings(root, size_m=size_m, pixel_m=pixel_m, progress=False)
        sample = ds[0]
        assert sample['sar'].shape == (1, pixels, pixels)
        assert sample['sar'].dtype == torch.float32
        assert sample['optical'].shape == (3, pixels, pixels)
        assert sample['optical'].dtype == torch.float32
        assert sample['footprint'].shape == (1, pixels, pixels)
        assert sample['footprint'].dtype == torch.uint8

    @pytest.mark.parametrize(
        ('tile', 'component', 'width_m', 'height_m'),
        [
            (TURKEY_1, 1, 10, 6),  # UTM, 1 m
            ('turkey-earthquake_00000002', 2, 9, 6),  # EPSG:4326, 0.3 m
            ('la_palma-volcano_00000001', 1, 9, 6),  # UTM, 0.3 m
            ('morocco-earthquake_00000001', 1, 10, 6),  # EPSG:4326, 1 m
            ('libya-flood_00000001', 1, 10, 6),  # UTM, 0.5 m
        ],
    )
    @pytest.mark.parametrize(('size_m', 'pixel_m'), [(32.0, 0.5), (16.0, 0.25)])
    def test_footprint_centred_in_metres(
        self,
        root: Path,
        tile: str,
        component: int,
        width_m: float,
        height_m: float,
        size_m: float,
        pixel_m: float,
    ) -> None:
        ds = BRIGHTBuildings(root, size_m=size_m, pixel_m=pixel_m, progress=False)
        footprint = ds[position(ds, tile, component)]['footprint'][0].numpy()
        rows, cols = np.nonzero(footprint == 2)
        n = ds.size_px
        width, height = round(width_m / pixel_m), round(height_m / pixel_m)
        assert len(rows) == width * height  # a full rectangle
        assert (cols.min(), cols.max()) == ((n - width) // 2, (n + width) // 2 - 1)
        assert (rows.min(), rows.max()) == ((n - height) // 2, (n + height) // 2 - 1)

    @pytest.mark.parametrize('tile', list(PIXEL_M)[:5])
    def test_optical_geometry(self, root: Path, tile: str) -> None:
        # pre-event R = 2 column, G = 2 row: bilinear reproduces it between pixel
        # centres, so each window pixel tells where it was sampled
        ds = BRIGHTBuildings(root, progress=False)
        i = position(ds, tile, 1)
        optical = ds[i]['optical'].numpy()
        rows, cols = window_coords(ds, i, PIXEL_M[tile])
        r_in = (rows >= 0.5) & (rows <= 63.5)
        c_in = (cols >= 0.5) & (cols <= 63.5)
        assert r_in.sum() > 10
        assert c_in.sum() > 10
        red = np.broadcast_to(2 * (cols - 0.5), optical[0].shape)
        green = np.broadcast_to(2 * (rows[:, None] - 0.5), optical[1].shape)
        np.testing.assert_allclose(
            optical[0][np.ix_(r_in, c_in)], red[np.ix_(r_in, c_in)], atol=2e-3
        )
        np.testing.assert_allclose(
            optical[1][np.ix_(r_in, c_in)], green[np.ix_(r_in, c_in)], atol=2e-3
        )
        outside = (cols < 0) | (cols >= 64)
        assert np.isnan(optical[:, :, outside]).all()
        assert (optical[2][np.ix_(r_in, ~outside)] == 7).all()

    def test_sar_relative_db(self, train: BRIGHTBuildings) -> None:
        sar = train[position(train, 'morocco-earthquake_00000001', 2)]['sar'][0]
        assert sar[32, 32] == pytest.approx(40.0)  # building, DN 100
        assert sar[0, 0] == pytest.approx(20.0)  # background, DN 10

    def test_sar_nodata_and_outside(self, train: BRIGHTBuildings) -> None:
        # B+C, centroid column 13 at 1 m: window columns -3 to 29; tile columns 0-1
        # hold DN 0 (nodata), columns < 0 are outside the tile
        sample = train[position(train, TURKEY_1, 3)]
        sar, optical = sample['sar'][0], sample['optical']
        assert torch.isnan(sar[:, :9]).all()  # no valid neighbour
        assert torch.isfinite(sar[:, 9:]).all()
        assert sar[0, 9] == pytest.approx(20.0)  # not pulled down by the DN 0
        assert torch.isnan(optical[:, :, :6]).all()
        assert torch.isfinite(optical[:, :, 6:]).all()
        assert (sample['footprint'][0, :, :6] == 0).all()

    def test_cut_by_edge(self, train: BRIGHTBuildings) -> None:
        # Q: 4 x 4 pixels at 0.3 m in the top left corner, centroid (2, 2): window
        # columns 2 - 53.3 + 1.667 (j + 0.5), outside the tile for j <= 30
        sample = train[position(train, 'turkey-earthquake_00000002', 1)]
        assert torch.isnan(sample['sar'][0, :31]).all()
        assert torch.isnan(sample['sar'][0, :, :31]).all()
        assert torch.isfinite(sample['sar'][0, 31:, 31:]).all()
        footprint = sample['footprint'][0]
        assert (footprint[:31] == 0).all()
        assert (footprint[:, :31] == 0).all()
        rows, cols = torch.nonzero(footprint == 2, as_tuple=True)
        assert sorted(set(cols.tolist())) == [31, 32]
        assert sorted(set(rows.tolist())) == [31, 32]

    def test_other_buildings(self, train: BRIGHTBuildings) -> None:
        # D's window (tile rows 32-64, columns 17-49) holds E, one pixel apart (6 x 6
        # m, 12 x 12 pixels), and the corner of B+C (tile rows 32-37, columns 17-20)
        footprint = train[position(train, TURKEY_1, 4)]['footprint'][0]
        assert int((footprint == 2).sum()) == 144
        assert (footprint[26:38, 40:52] == 1).all()
        assert (footprint[:12, :8] == 1).all()
        assert int((footprint == 1).sum()) == 144 + 96

    def test_own_splits(self, root: Path) -> None:
        holdout = BRIGHTBuildings(root, 'holdout', progress=False)
        assert holdout.index['tile'].value_counts().to_dict() == {
            'haiti-earthquake_00000001': 2
        }
        with pytest.raises(InputFileError, match='no targets for BRIGHT'):
            BRIGHTBuildings(root, 'val', progress=False)
        # with the val targets added
        src = root / 'dfc25_track2_trainval' / TARGET.format('libya-flood_00000001')
        dst = root / 'dfc25_track2_trainval' / 'val' / 'target'
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst / 'mexico-hurricane_00000001_building_damage.tif')
        val = BRIGHTBuildings(root, 'val', progress=False)
        assert len(val) == 1
        assert val[0]['tile'] == 'mexico-hurricane_00000001'
        assert BRIGHTBuildings.torchgeo_splits == {
            'train': 'train',
            'holdout': 'val',
            'val': 'test',
        }

    def test_leave_one_event_out(self, root: Path) -> None:
        test = BRIGHTBuildings(
            root, 'test', test_events=['turkey-earthquake'], progress=False
        )
        train = BRIGHTBuildings(
            root, 'train', test_events=['turkey-earthquake'], progress=False
        )
        assert test.events == ['turkey-earthquake']
        assert len(test) == 8
        assert train.events == [
            'haiti-earthquake',
            'la_palma-volcano',
            'libya-flood',
            'morocco-earthquake',
        ]
        assert len(train) == 8
        assert not set(test.index['building_id']) & set(train.index['building_id'])
        one = BRIGHTBuildings(root, 'test', test_events='la_palma-volcano')
        assert one.events == ['la_palma-volcano']

    def test_earthquakes_only(self, root: Path) -> None:
        own = BRIGHTBuildings(root, earthquakes_only=True, progress=False)
        assert own.events == ['morocco-earthquake', 'turkey-earthquake']
        assert len(own) == 11
        train = BRIGHTBuildings(
            root,
            'train',
            test_events=['turkey-earthquake'],
            earthquakes_only=True,
            progress=False,
        )
        assert train.events == ['haiti-earthquake', 'morocco-earthquake']
        assert len(train) == 5

    def test_unknown_event(self, root: Path) -> None:
        with pytest.raises(ArgumentError, match=r"\['nepal-earthquake'\].*'haiti-"):
            BRIGHTBuildings(root, 'test', test_events=['nepal-earthquake'])
        with pytest.raises(ArgumentError, match='earthquake events'):
            BRIGHTBuildings(
                root, 'test', test_events=['libya-flood'], earthquakes_only=True
            )

    @pytest.mark.parametrize(
        ('kwargs', 'match'),
        [
            ({'split': 'test'}, 'test_events'),
            ({'split': 'foo'}, "split='foo'"),
            ({'split': 'holdout', 'test_events': ['libya-flood']}, 'with test_events'),
            ({'test_events': []}, 'empty'),
            ({'task': 'foo'}, "task='foo'"),
            ({'size_m': 0.0}, 'positive'),
            ({'pixel_m': float('nan')}, 'positive'),
            ({'size_m': 0.2}, 'smaller than one pixel'),
        ],
    )
    def test_bad_arguments(
        self, root: Path, kwargs: dict[str, Any], match: str
    ) -> None:
        with pytest.raises(ArgumentError, match=match):
            BRIGHTBuildings(root, **kwargs)

    def test_cache_reused(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        first = BRIGHTBuildings(root, progress=False)
        assert first.cache_path == root / 'bright_buildings_index.csv'
        assert (root / 'bright_buildings_index.json').is_file()

        def fail(*args: object) -> None:
            raise AssertionError('index rebuilt')

        monkeypatch.setattr(BRIGHTBuildings, '_build_index', fail)
        second = BRIGHTBuildings(root, progress=False)
        pd.testing.assert_frame_equal(first.index, second.index)
        holdout = BRIGHTBuildings(root, 'holdout', progress=False)  # same cache
        assert len(holdout) == 2

    def test_cache_invalidated(
        self, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        BRIGHTBuildings(root, progress=False)
        data = root / 'dfc25_track2_trainval'
        new = 'libya-flood_00000003'
        for kind, suffix in [
            ('pre-event', 'pre_disaster'),
            ('post-event', 'post_disaster'),
            ('target', 'building_damage'),
        ]:
            shutil.copy(
                data / 'train' / kind / f'libya-flood_00000001_{suffix}.tif',
                data / 'train' / kind / f'{new}_{suffix}.tif',
            )
        with open(data / 'train_setlevel.txt', 'a') as f:
            f.write(f'{new}\n')
        with monkeypatch.context() as m:

            def fail(*args: object) -> None:
                raise AssertionError('index rebuilt')

            m.setattr(BRIGHTBuildings, '_build_index', fail)
            with pytest.raises(AssertionError, match='index rebuilt'):
                BRIGHTBuildings(root, progress=False)
        ds = BRIGHTBuildings(root, progress=False)
        assert len(ds) == 15
        # a target rewritten
        target = data / TARGET.format(new)
        os.utime(target, ns=(0, 0))
        with monkeypatch.context() as m:
            m.setattr(BRIGHTBuildings, '_build_index', fail)
            with pytest.raises(AssertionError, match='index rebuilt'):
                BRIGHTBuildings(root, progress=False)

    def test_cache_dir(self, root: Path, tmp_path: Path) -> None:
        ds = BRIGHTBuildings(root, cache_dir=tmp_path / 'cache', progress=False)
        assert ds.cache_path is not None
        assert ds.cache_path.parent == tmp_path / 'cache'
        assert not (root / 'bright_buildings_index.csv').exists()

    def test_cache_unwritable_root(
        self, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # a folder where the cache file would go: the root's copy cannot be written
        (root / 'bright_buildings_index.csv').mkdir()
        monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
        ds = BRIGHTBuildings(root, progress=False)
        assert ds.cache_path is not None
        assert ds.cache_path.parent == tmp_path / 'xdg' / 'torchgeo_sar_damage'
        again = BRIGHTBuildings(root, progress=False)
        assert again.cache_path == ds.cache_path

    def test_cache_corrupt(self, root: Path) -> None:
        BRIGHTBuildings(root, progress=False)
        (root / 'bright_buildings_index.csv').write_text('tile\nnonsense\n')
        assert len(BRIGHTBuildings(root, progress=False)) == 14

    def test_missing_root(self, tmp_path: Path) -> None:
        with pytest.raises(
            DatasetNotFoundError, match=r'zenodo\.org/records/14619797'
        ) as err:
            BRIGHTBuildings(tmp_path)
        assert str(tmp_path / 'dfc25_track2_trainval') in str(err.value)
        assert 'download=True' in str(err.value)
        (tmp_path / 'dfc25_track2_trainval.zip').write_bytes(b'')
        with pytest.raises(DatasetNotFoundError, match='extract it'):
            BRIGHTBuildings(tmp_path)

    def test_missing_list(self, root: Path) -> None:
        (root / 'dfc25_track2_trainval' / 'holdout_setlevel.txt').unlink()
        with pytest.raises(
            InputFileError, match=r'holdout_setlevel\.txt: BRIGHT split'
        ):
            BRIGHTBuildings(root)

    def test_missing_target(self, root: Path) -> None:
        target = root / 'dfc25_track2_trainval' / TARGET.format(TURKEY_1)
        target.unlink()
        with pytest.raises(InputFileError, match='target raster of BRIGHT tile') as err:
            BRIGHTBuildings(root, progress=False)
        assert err.value.path == str(target)
        # other events do not need it
        ds = BRIGHTBuildings(
            root, 'train', test_events=['turkey-earthquake'], progress=False
        )
        assert 'turkey-earthquake' not in ds.events

    def test_malformed_id(self, root: Path) -> None:
        with open(root / 'dfc25_track2_trainval' / 'train_setlevel.txt', 'a') as f:
            f.write('turkey-earthquake_413\n')
        with pytest.raises(InputFileError, match="line 7: 'turkey-earthquake_413'"):
            BRIGHTBuildings(root)

    def test_bad_target_values(self, root: Path) -> None:
        import rasterio

        target = root / 'dfc25_track2_trainval' / TARGET.format('libya-flood_00000001')
        with rasterio.open(target, 'r+') as dst:
            data = dst.read()
            data[0, 0, 0] = 5
            dst.write(data)
        with pytest.raises(InputFileError, match='holds the value 5'):
            BRIGHTBuildings(root, progress=False)

    def test_len_getitem_errors(self, train: BRIGHTBuildings) -> None:
        with pytest.raises(IndexError):
            train[len(train)]
        assert train[-1]['tile'] == train[len(train) - 1]['tile']

    def test_transforms_pickle_loader(self, root: Path) -> None:
        def double(sample: dict[str, Any]) -> dict[str, Any]:
            sample['optical'] = sample['optical'] * 2
            return sample

        plain = BRIGHTBuildings(root, progress=False)
        ds = BRIGHTBuildings(root, transforms=double, progress=False)
        torch.testing.assert_close(
            ds[3]['optical'], plain[3]['optical'] * 2, equal_nan=True
        )
        copy = pickle.loads(pickle.dumps(plain))
        torch.testing.assert_close(copy[3]['sar'], plain[3]['sar'], equal_nan=True)
        batch = next(iter(DataLoader(plain, batch_size=4)))
        assert batch['sar'].shape == (4, 1, 64, 64)
        assert batch['label'].shape == (4,)
        assert len(batch['event']) == 4

    def test_plot(self, train: BRIGHTBuildings) -> None:
        sample = train[position(train, TURKEY_1, 3)]
        fig = train.plot(sample, suptitle='test')
        assert isinstance(fig, Figure)
        assert 'damaged or destroyed' in fig.texts[0].get_text()
        plt.close(fig)
        sample['prediction'] = torch.tensor(0)
        fig = train.plot(sample, show_titles=False)
        assert not fig.texts
        plt.close(fig)


def test_bilinear_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    values = rng.random((2, 20, 30))
    rows, cols = rng.uniform(-1.5, 20.5, 40), rng.uniform(-1.5, 30.5, 50)
    out = bilinear(values, np.ones(values.shape, dtype=bool), rows, cols)
    coords = np.stack(np.meshgrid(rows, cols, indexing='ij'))
    ones = np.ones(values.shape[1:])
    weights = ndimage.map_coordinates(ones, coords, order=1, mode='grid-constant')
    for k in range(2):
        sums = ndimage.map_coordinates(values[k], coords, order=1, mode='grid-constant')
        with np.errstate(invalid='ignore'):
            expected = np.where(weights > 1e-6, sums / weights, np.nan)
        np.testing.assert_allclose(out[k], expected, atol=1e-12)


def test_bilinear_leaves_invalid_out() -> None:
    values = np.array([[[1.0, 100.0], [3.0, 5.0]]])
    valid = values != 100.0
    # a quarter of the way from (0, 0) to (1, 1): weights 9/16, 3/16, 3/16, 1/16
    out = bilinear(values, valid, np.array([0.25]), np.array([0.25]))
    expected = (9 * 1.0 + 3 * 3.0 + 1 * 5.0) / 13
    assert out[0, 0, 0] == pytest.approx(expected)
    none = bilinear(values, np.zeros_like(valid), np.array([0.5]), np.array([0.5]))
    assert np.isnan(none).all()
