# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
import torch

from torchgeo_sar_damage.cli import build_parser, main
from torchgeo_sar_damage.demo import DemoConfig
from torchgeo_sar_damage.predict import load_checkpoint
from torchgeo_sar_damage.simulation.cities import CITIES


def test_help_lists_the_cities(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(['simulate', '--help'])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for slug in CITIES:
        assert slug in text


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (['--cities', 'atlantis'], 'unknown city'),
        (['--buildings', '0'], 'must be positive'),
        (['--buildings', '-3'], 'must be positive'),
        (['--buildings', 'many'], 'not an integer'),
        (['--seed', '-1'], 'non-negative'),
        (['--pixel-m', '0'], 'between 0.1 and 5'),
        (['--pixel-m', 'fine'], 'not a number'),
    ],
)
def test_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(['simulate', '--out', str(tmp_path / 'out'), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert 'Traceback' not in err
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize(
    'case', ['non-empty', 'under-a-file', 'missing-footprints', 'both-sources']
)
def test_bad_paths_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    out = tmp_path / 'out'
    extra: list[str] = ['--cities', 'nurdagi', '--buildings', '10', '--quiet']
    if case == 'non-empty':
        out.mkdir()
        (out / 'keep.txt').write_text('mine')
    elif case == 'under-a-file':
        (tmp_path / 'file').write_text('x')
        out = tmp_path / 'file' / 'out'
    elif case == 'missing-footprints':
        extra = ['--footprints', str(tmp_path / 'nope.gpkg'), '--quiet']
    else:
        (tmp_path / 'f.geojson').write_text('{}')
        extra += ['--footprints', str(tmp_path / 'f.geojson')]
    code = main(['simulate', '--out', str(out), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith('sardamage simulate: error:')
    if case == 'non-empty':
        assert (out / 'keep.txt').read_text() == 'mine'
        assert sorted(p.name for p in out.iterdir()) == ['keep.txt']


def test_bad_footprint_file_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / 'broken.gpkg'
    bad.write_bytes(b'not a geopackage')
    code = main(
        [
            'simulate',
            '--out',
            str(tmp_path / 'out'),
            '--footprints',
            str(bad),
            '--quiet',
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert str(bad) in err
    assert 'Traceback' not in err
    assert not (tmp_path / 'out').exists()


def test_entry_point_runs_in_a_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'torchgeo_sar_damage.cli',
            'simulate',
            '--out',
            str(tmp_path / 'o'),
            '--cities',
            'x',
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert 'unknown city' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_simulate_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'out'
    code = main(
        [
            'simulate',
            '--out',
            str(out),
            '--cities',
            'adiyaman',
            '--buildings',
            '40',
            '--pixel-m',
            '2',
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert 'adiyaman: 40 buildings' in text
    assert 'scene.json' in text
    manifest = json.loads((out / 'scene.json').read_text(encoding='utf-8'))
    assert manifest['cities']['adiyaman']['buildings'] == 40


def test_demo_writes_its_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'demo'
    args = ['demo', '--out', str(out), '--buildings', '60', '--epochs', '1', '--quiet']
    assert main(args) == 0
    text = capsys.readouterr().out
    assert 'unseen town antakya' in text
    for name in ('model.ckpt', 'predictions.gpkg', 'map.png', 'metrics.json'):
        assert str(out / name) in text
    metrics = json.loads((out / 'metrics.json').read_text(encoding='utf-8'))
    assert metrics['test_city'] == 'antakya'
    assert 'antakya' not in metrics['train_cities']
    # the default model: all four modalities, early fusion (the study's choice)
    assert metrics['fusion'] == 'early'
    assert metrics['backbone'] == DemoConfig().backbone
    hparams = torch.load(out / 'model.ckpt', weights_only=False)['hyper_parameters']
    assert hparams['backbone'] == DemoConfig().backbone
    assert metrics['modalities'] == ['sar', 'osm', 'dsm', 'gem']
    for key in (
        'f1score',
        'auroc',
        'averageprecision',
        'cohenkappa',
        'precision',
        'recall',
    ):
        assert 0.0 <= metrics[key] <= 1.0 or key == 'cohenkappa'
    predictions = gpd.read_file(out / 'predictions.gpkg')
    footprints = gpd.read_file(
        out / 'scene' / 'antakya' / 'hotosm_tur_buildings_polygons.gpkg'
    )
    assert len(predictions) == len(footprints)
    assessed = predictions['damage_prob'].notna()
    assert assessed.sum() == metrics['buildings_predicted'] > 0
    assert predictions.loc[assessed, 'damage_prob'].between(0, 1).all()
    # the town's damaged share as predict reports it by default, and the true one
    probs = predictions.loc[assessed, 'damage_prob']
    assert metrics['damaged_share_estimate'] == pytest.approx(probs.mean(), abs=1e-4)
    assert metrics['expected_damaged'] == pytest.approx(probs.sum(), abs=0.1)
    assert metrics['prior_adapted'] is False
    graded = predictions.loc[assessed, 'label']
    graded = graded[graded >= 0]
    assert metrics['damaged_share_true'] == pytest.approx(
        (graded == 1).mean(), abs=1e-4
    )
    assert (out / 'map.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    checkpoint = torch.load(out / 'model.ckpt', weights_only=False, map_location='cpu')
    assert 'state_dict' in checkpoint
    # an inference checkpoint: no optimiser state, but all that predict needs
    assert 'optimizer_states' not in checkpoint
    assert 'lr_schedulers' not in checkpoint
    loaded = load_checkpoint(out / 'model.ckpt')
    assert loaded.sensor is not None
    assert loaded.sensor['window_px'] == 64  # 32 m windows at 0.5 m
    assert loaded.threshold == pytest.approx(metrics['threshold'], abs=1e-4)
    threshold = float(checkpoint['decision_threshold'])
    assert metrics['threshold'] == pytest.approx(threshold, abs=1e-4)
    damage = predictions.loc[assessed, 'damage'].astype(int)
    expected = (predictions.loc[assessed, 'damage_prob'] >= threshold).astype(int)
    assert (damage == expected).all()
    assert not list(out.glob('.*tmp*'))


def test_one_accelerator_flag_per_command() -> None:
    """demo and predict take --accelerator; predict's old --device still works."""
    parser = build_parser()
    base = ['predict', '--sar', 'a.tif', '--buildings', 'b.gpkg']
    base += ['--checkpoint', 'm.ckpt', '--out', 'o.gpkg']
    assert parser.parse_args(base).accelerator == 'cpu'
    assert parser.parse_args([*base, '--accelerator', 'gpu']).accelerator == 'gpu'
    assert parser.parse_args([*base, '--device', 'auto']).accelerator == 'auto'
    assert parser.parse_args(['demo', '--accelerator', 'gpu']).accelerator == 'gpu'
    for command in (['simulate', '--out', 'x'], ['demo'], base):
        args = parser.parse_args(command)
        assert callable(args.handler)
        assert args.handler.__name__ == f'_{command[0]}'
