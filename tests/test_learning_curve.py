# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from torchgeo_sar_damage.errors import ArgumentError, InputFileError
from torchgeo_sar_damage.study import StudyConfig

from .test_study import REPO, load_script


def test_points_follow_the_configuration(tmp_path: Path) -> None:
    script = load_script('learning_curve')
    settings = script.read_config(str(REPO / 'experiments' / 'learning_curve.yaml'))
    points = dict(script.points(settings))
    full = StudyConfig.from_yaml(REPO / settings['base'])
    assert list(points) == [
        *(f'n{s}' for s in settings['sizes']),
        *settings['variants'],
    ]
    for size in settings['sizes']:
        config = points[f'n{size}']
        assert config.buildings == size
        assert config.folds == settings['folds']
        assert config.seeds == settings['seeds']
        # everything else is the full study's
        assert config.epochs == full.epochs
        assert config.size_m == full.size_m
        assert config.cities == full.cities
        assert config.torchgeo_sets == []
        assert config.pretrained_weights == []
        assert config.int8_sets == []  # the int8 check is the study's, not the curve's
        assert config.backbone_sets == []  # so is the choice of backbone
        assert config.oracles
    assert points['epochs12'].epochs == 12
    assert points['epochs12'].buildings == settings['variant_size']
    assert points['pixel05'].pixel_m == 0.5
    assert points['pixel05'].epochs == full.epochs
    assert points['tta'].tta
    assert not points['n600'].tta
    assert {c.gem_level for c in points.values()} == {settings['settings']['gem_level']}
    # variants that keep the scene settings read the scene and chips of their size
    shared = dict(script.share_scenes(script.points(settings), tmp_path))
    for name in ('epochs12', 'tta'):
        assert shared[name].scene == str(tmp_path / 'n600' / 'scene')
        chips = tmp_path / name / 'chips'
        assert chips.is_symlink()
        assert chips.resolve() == (tmp_path / 'n600' / 'chips').resolve()
    assert shared['pixel05'].scene is None
    assert shared['n600'].scene is None
    assert not (tmp_path / 'pixel05').exists()


def test_bad_configurations(tmp_path: Path) -> None:
    script = load_script('learning_curve')
    path = tmp_path / 'lc.yaml'
    path.write_text('base: experiments/study/full.yaml\nsizes: [300]\nmodel: []\n')
    with pytest.raises(InputFileError, match='unknown settings'):
        script.read_config(str(path))
    path.write_text('base: experiments/study/full.yaml\nsizes: [300]\n')
    with pytest.raises(InputFileError, match="needs 'models'"):
        script.read_config(str(path))
    settings = {
        'base': 'experiments/study/full.yaml',
        'sizes': [300],
        'models': [['sar', 'early']],
        'variants': {'odd': {'epoch': 3}},
    }
    with pytest.raises(ArgumentError, match='variant odd'):
        script.points(settings)
    settings['settings'] = {'epoch': 3}
    with pytest.raises(ArgumentError, match='settings:'):
        script.points(settings)
    del settings['settings']
    settings['variants'] = {'none': {'folds': 0}}
    with pytest.raises(ArgumentError, match='folds must be between'):
        script.points(settings)
    assert script.main(['--config', str(tmp_path / 'missing.yaml')]) == 2


def test_collect_and_page(training_scene: Path, tmp_path: Path) -> None:
    script = load_script('learning_curve')
    config = StudyConfig(
        name='n60',
        cities=['nurdagi', 'islahiye', 'adiyaman'],
        scene=str(training_scene),
        seeds=[0],
        modality_sets=[['sar']],
        fusions=['early'],
        epochs=1,
        holdout_block_m=60.0,
        torchgeo_sets=[],
        pretrained_weights=[],
        folds=1,
    )
    rows = script.collect('n60', config, [('sar', 'early')], tmp_path / 'work')
    # one fold, one seed: the model and the two references, seen and unseen; the
    # other baselines are left out
    assert set(zip(rows.modalities, rows.fusion)) == {
        ('sar', 'early'),
        ('truth', 'oracle'),
        ('sar', 'gbm-truth'),
    }
    assert len(rows) == 6
    assert set(rows.held_out_city) == {'nurdagi'}
    assert (rows.point == 'n60').all()
    assert (rows.buildings_per_town == config.buildings).all()
    unseen = rows[rows.split == 'unseen']
    assert unseen.auroc_true.notna().all()
    assert unseen.f1_best.notna().all()
    # a second point of another size (the same runs relabelled) makes a curve
    other = rows.assign(point='n120', buildings_per_town=2 * config.buildings)
    other['auroc'] = other['auroc'] + 0.01
    settings = {
        'base': 'experiments/study/full.yaml',
        'sizes': [60, 120],  # the points' names, n60 and n120
        'models': [['sar', 'early']],
        'folds': 1,
        'seeds': [0],
        'variant_size': 120,
        'variants': {'n60': {'epochs': 1}},
    }
    files = script.write_page(
        pd.concat([rows, other], ignore_index=True), settings, tmp_path / 'out', 1.5
    )
    assert [f.name for f in files] == [
        'learning_curve.csv',
        'learning_curve.md',
        'learning_curve.png',
    ]
    table = pd.read_csv(tmp_path / 'out' / 'learning_curve.csv')
    assert len(table) == 12
    page = (tmp_path / 'out' / 'learning_curve.md').read_text()
    assert '## Learning curve' in page
    assert '## Variants at one size' in page
    assert 'fragility oracle' in page
    auroc = float(unseen[unseen.fusion == 'early'].auroc.iloc[0])
    assert f'{auroc:.3f} ± ' in page
    assert f'{auroc + 0.01:.3f} ± ' in page
    assert mpimg.imread(tmp_path / 'out' / 'learning_curve.png').shape[0] > 100
    assert np.isfinite(table.auroc).all()
