# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""FusionNet on the per-building public benchmarks (BRIGHT, QuickQuakeBuildings)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from torchgeo_sar_damage.batch import normalise_batch
from torchgeo_sar_damage.benchmark import (
    QQB_PUBLISHED,
    _BestState,
    bright_folds,
    check_sets,
    qqb_folds,
    run_benchmark,
    write_benchmark_report,
)
from torchgeo_sar_damage.cli import main
from torchgeo_sar_damage.datamodules.benchmark import (
    BuildingBenchmarkDataModule,
    collate_benchmark,
)
from torchgeo_sar_damage.datasets import BRIGHTBuildings, QuickQuakeBuildings
from torchgeo_sar_damage.errors import ArgumentError
from torchgeo_sar_damage.study import COLUMNS

DATA = Path(__file__).parent / 'data'
QQB = DATA / 'qqb'
BRIGHT = DATA / 'bright'


def qqb_ids(dataset: object) -> set[int]:
    assert isinstance(dataset, QuickQuakeBuildings)
    return {int(i) for i in dataset.osm_ids}


def test_collate_gives_the_raw_batch() -> None:
    footprint = torch.zeros(1, 8, 8, dtype=torch.uint8)
    footprint[0, 2:5, 3:7] = 2  # 12 target pixels
    footprint[0, 6, 6] = 1
    samples = [
        {
            'sar': torch.full((1, 8, 8), -7.0),
            'footprint': footprint,
            'optical': torch.full((3, 8, 8), 100.0),
            'label': torch.tensor(1),
            'osm_id': torch.tensor(42),
        },
        {
            'sar': torch.full((1, 8, 8), math.nan),
            'footprint': torch.zeros(1, 8, 8, dtype=torch.uint8),
            'optical': torch.zeros(3, 8, 8),
            'label': torch.tensor(0),
            'building_id': torch.tensor(7),
        },
    ]
    batch = collate_benchmark(samples, pixel_m=0.5)
    assert batch['image'].shape == (2, 1, 8, 8)
    assert batch['optical'].shape == (2, 3, 8, 8)
    assert batch['label'].tolist() == [1, 0]
    assert batch['building_id'].tolist() == [42, 7]
    # OSM features: log1p(area in m2), storeys not tagged
    assert batch['tabular'][0].tolist() == pytest.approx([math.log1p(3.0), 0.0, 1.0])
    assert batch['tabular'][1, 0] == 0.0
    unknown = collate_benchmark(samples, pixel_m=None)
    assert torch.isnan(unknown['tabular'][:, 0]).all()


def test_datamodule_refuses_town_modalities() -> None:
    data = QuickQuakeBuildings(QQB, folds=[1], size=16)
    with pytest.raises(ArgumentError, match='no dsm data'):
        BuildingBenchmarkDataModule(data, data, {}, modalities=['sar', 'dsm'])
    with pytest.raises(ArgumentError, match='feeds sar'):
        BuildingBenchmarkDataModule(data, data, {}, modalities=['optical'])


def test_datamodule_statistics_and_model_batch() -> None:
    train = QuickQuakeBuildings(QQB, folds=[1, 2, 3], size=16)
    val = QuickQuakeBuildings(QQB, folds=[4], size=16)
    data = BuildingBenchmarkDataModule(
        train, val, {'fold-5': val}, modalities=['sar', 'optical'], batch_size=4
    )
    batches = [collate_benchmark([train[i] for i in range(len(train))])]
    sar = batches[0]['image']
    optical = batches[0]['optical']
    stats = data.statistics
    finite = sar[torch.isfinite(sar)].double()
    assert stats.sar_mean_db == pytest.approx(float(finite.mean()), rel=1e-6)
    assert stats.sar_std_db == pytest.approx(
        float(finite.std(unbiased=False)), rel=1e-5
    )
    red = optical[:, 0][torch.isfinite(optical[:, 0])].double()
    assert stats.optical_mean[0] == pytest.approx(float(red.mean()), rel=1e-6)
    assert stats.class_counts == (
        int((batches[0]['label'] == 0).sum()),
        int((batches[0]['label'] == 1).sum()),
    )
    model_batch = data.normalise(batches[0])
    expected = normalise_batch(batches[0], stats, ('sar', 'optical'))
    assert torch.equal(model_batch['optical'], expected['optical'])
    assert torch.isfinite(model_batch['sar']).all()
    assert data.test_names == ['fold-5']
    assert len(data.test_dataloader()) == 1


def test_qqb_folds_under_both_protocols() -> None:
    folds = qqb_folds(QQB, 'both', size=16)
    assert len(folds) == 10
    everyone = qqb_ids(QuickQuakeBuildings(QQB, size=16))
    for fold in folds:
        k = int(fold.name.split('-')[1])
        test = qqb_ids(fold.test)
        assert test == qqb_ids(QuickQuakeBuildings(QQB, folds=[k], size=16))
        train, val = qqb_ids(fold.train), qqb_ids(fold.val)
        assert not train & test
        if fold.split == 'qqb-protocol':
            assert val == test  # their protocol: the validation fold is tested
            assert train | test == everyone
        else:
            assert fold.split == 'test'
            assert not val & test
            assert not train & val
            v = k % 5 + 1
            assert val == qqb_ids(QuickQuakeBuildings(QQB, folds=[v], size=16))
            assert train | val | test == everyone
    assert [f.name for f in qqb_folds(QQB, 'qqb', test_folds=[2])] == ['fold-2']
    with pytest.raises(ArgumentError, match='protocol'):
        qqb_folds(QQB, 'theirs')
    with pytest.raises(ArgumentError, match='among 1-5'):
        qqb_folds(QQB, 'qqb', test_folds=[6])


def test_bright_leave_one_event_out(tmp_path: Path) -> None:
    folds = bright_folds(
        BRIGHT, ['turkey-earthquake'], cache_dir=tmp_path, progress=False
    )
    assert len(folds) == 1
    fold = folds[0]
    assert fold.name == 'turkey-earthquake'
    assert isinstance(fold.test, BRIGHTBuildings)
    assert set(fold.test.index['event']) == {'turkey-earthquake'}
    events = {str(fold.train[i]['event']) for i in range(len(fold.train))}  # type: ignore[arg-type]
    val_tiles = {str(fold.val[i]['tile']) for i in range(len(fold.val))}  # type: ignore[arg-type]
    assert 'turkey-earthquake' not in events
    assert events  # other events train
    assert val_tiles == {'haiti-earthquake_00000001'}  # BRIGHT's holdout list
    # leaving out the only holdout event leaves nothing to choose the threshold on
    with pytest.raises(ArgumentError, match='holdout tiles'):
        bright_folds(BRIGHT, ['haiti-earthquake'], cache_dir=tmp_path, progress=False)


def test_best_state_keeps_the_best_epoch() -> None:
    class Trainer:
        def __init__(self) -> None:
            self.callback_metrics: dict[str, torch.Tensor] = {}

    model = torch.nn.Linear(1, 1)
    best = _BestState('val_AUROC')
    trainer = Trainer()
    for epoch, auroc in enumerate([0.6, 0.8, 0.7]):
        with torch.no_grad():
            model.weight.fill_(epoch)
        trainer.callback_metrics = {'val_AUROC': torch.tensor(auroc)}
        best.on_validation_end(trainer, model)  # type: ignore[arg-type]
    assert best.best == pytest.approx(0.8)
    assert best.state is not None
    assert float(best.state['weight']) == 1.0


def test_check_sets() -> None:
    assert check_sets(['sar+optical', 'optical+sar+osm']) == [
        ('sar', 'optical'),
        ('sar', 'osm', 'optical'),
    ]
    with pytest.raises(ArgumentError, match='unknown modalities'):
        check_sets(['sar+lidar'])


def test_run_benchmark_and_report(tmp_path: Path) -> None:
    folds = qqb_folds(QQB, 'honest', size=16, test_folds=[1])
    rows = run_benchmark(
        folds,
        [('sar', 'optical')],
        fusions=['late', 'attention'],  # attention needs osm: skipped
        seeds=[0],
        out=tmp_path,
        progress=False,
        epochs=1,
        batch_size=4,
        backbone='resnet10t',
    )
    assert list(rows.columns) == list(COLUMNS)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row.modalities, row.fusion, row.split) == ('sar+optical', 'late', 'test')
    assert row.held_out_city == 'fold-1'
    test = folds[0].test
    assert row.n_buildings == len(test)  # type: ignore[arg-type]
    assert 0 <= row.threshold <= 1
    assert pd.read_csv(tmp_path / 'benchmark.csv').shape == (1, len(COLUMNS))
    files = write_benchmark_report(
        rows, tmp_path, 'QQB', ['Data: tiny.'], QQB_PUBLISHED, 'Sun et al.'
    )
    page = files[1].read_text()
    assert page.startswith('# QQB')
    assert '| SAR + OPTICAL, late fusion | 1 |' in page
    assert '## Published (not rerun here)' in page
    assert '| SAR + optical | 0.670 | 0.962 |' in page
    with pytest.raises(ArgumentError, match='nothing to run'):
        run_benchmark(folds, [('sar',)], fusions=['attention'])


def test_cli_benchmark_qqb(tmp_path: Path) -> None:
    argv = ['benchmark', 'qqb', '--root', str(QQB), '--out', str(tmp_path)]
    argv += ['--folds', '2', '--modalities', 'sar', '--size', '16', '--epochs', '1']
    argv += ['--batch-size', '4', '--backbone', 'resnet10t', '--quiet']
    assert main(argv) == 0
    table = pd.read_csv(tmp_path / 'benchmark.csv')
    assert sorted(table.split) == ['qqb-protocol', 'test']
    assert set(table.held_out_city) == {'fold-2'}
    page = (tmp_path / 'benchmark.md').read_text()
    assert "QuickQuakeBuildings' protocol" in page
    assert 'sardamage benchmark qqb --root' in page
    assert '| SAR only, ResNet-18 | 0.282 | 0.769 |' in page


def test_cli_benchmark_bright(tmp_path: Path) -> None:
    argv = ['benchmark', 'bright', '--root', str(BRIGHT), '--out', str(tmp_path)]
    argv += ['--test-events', 'turkey-earthquake', '--modalities', 'sar+osm+optical']
    argv += ['--size-m', '8', '--pixel-m', '0.5', '--epochs', '1', '--batch-size', '4']
    argv += ['--backbone', 'resnet10t', '--cache-dir', str(tmp_path / 'cache')]
    argv += ['--quiet']
    assert main(argv) == 0
    table = pd.read_csv(tmp_path / 'benchmark.csv')
    assert table.held_out_city.tolist() == ['turkey-earthquake']
    test = BRIGHTBuildings(
        BRIGHT,
        split='test',
        test_events=['turkey-earthquake'],
        cache_dir=tmp_path / 'cache',
        progress=False,
    )
    assert int(table.n_buildings[0]) == len(test)
    assert int(table.n_damaged[0]) == int(np.sum(test.index['grade'] >= 2))
    page = (tmp_path / 'benchmark.md').read_text()
    assert 'leave-one-event-out over turkey-earthquake' in page
    assert 'Published' not in page


def test_cli_benchmark_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ['benchmark', 'qqb', '--root', str(tmp_path / 'none'), '--out']
    assert main([*argv, str(tmp_path / 'out')]) == 2
    assert 'none' in capsys.readouterr().err
    argv = ['benchmark', 'bright', '--root', str(BRIGHT), '--out', str(tmp_path)]
    argv += ['--modalities', 'sar+gem', '--cache-dir', str(tmp_path / 'c'), '--quiet']
    argv += ['--test-events', 'turkey-earthquake']
    assert main(argv) == 2
    assert 'no gem data' in capsys.readouterr().err
