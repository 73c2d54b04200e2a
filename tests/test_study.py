# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, roc_auc_score
from torchgeo.models import ResNet50_Weights
from torchgeo.tasks import Classification

from torchgeo_sar_damage import study
from torchgeo_sar_damage.datamodules import SARDamageDataModule, holdout_blocks
from torchgeo_sar_damage.errors import ArgumentError, InputFileError
from torchgeo_sar_damage.prior_shift import expected_f1_threshold
from torchgeo_sar_damage.study import (
    COLUMNS,
    TRUTH_METRICS,
    StudyConfig,
    best_f1,
    extra_pairs,
    grid,
    inference_speed,
    run_study,
    scores,
    with_adaptation,
    with_bbse,
    with_best_f1,
    with_true_labels,
    write_report,
)
from torchgeo_sar_damage.tasks import DamageClassification

REPO = Path(__file__).resolve().parents[1]


def scene_config(training_scene: Path, **settings: Any) -> StudyConfig:  # noqa: ANN401
    """A study on three towns of the shared training scene, one seed and epoch,
    without TorchGeo's or pretrained models unless ``settings`` say otherwise."""
    defaults: dict[str, Any] = {
        'cities': ['nurdagi', 'islahiye', 'adiyaman'],
        'scene': str(training_scene),
        'seeds': [0],
        'epochs': 1,
        'holdout_block_m': 60.0,
        'torchgeo_sets': [],
        'pretrained_weights': [],
    }
    return StudyConfig(**{**defaults, **settings})


def load_script(name: str = 'study') -> Any:  # noqa: ANN401
    """Import ``experiments/<name>.py`` (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(
        f'{name}_script', REPO / 'experiments' / f'{name}.py'
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestHoldoutBlocks:
    def test_whole_blocks_held_out(self) -> None:
        rng = np.random.default_rng(0)
        centres = rng.uniform(0, 1000, size=(2000, 2))
        held = holdout_blocks(centres, 0.3, 100.0, seed=1)
        cells = [tuple(c) for c in np.floor(centres / 100).astype(int)]
        status: dict[tuple[int, ...], bool] = {}
        for cell, h in zip(cells, held):
            assert status.setdefault(cell, bool(h)) == bool(h)
        share = np.mean(list(status.values()))
        assert 0.15 < share < 0.45
        assert np.array_equal(held, holdout_blocks(centres, 0.3, 100.0, seed=1))
        assert not np.array_equal(held, holdout_blocks(centres, 0.3, 100.0, seed=2))

    def test_zero_fraction(self) -> None:
        assert not holdout_blocks(np.ones((5, 2)), 0.0, 100.0).any()

    @pytest.mark.parametrize(
        ('fraction', 'block'), [(1.0, 100.0), (-0.1, 100.0), (0.2, 0.0)]
    )
    def test_bad_arguments(self, fraction: float, block: float) -> None:
        with pytest.raises(ArgumentError, match='holdout'):
            holdout_blocks(np.ones((5, 2)), fraction, block)


def test_datamodule_holds_out_seen_blocks(training_scene: Path, tmp_path: Path) -> None:
    data = SARDamageDataModule(
        root=training_scene,
        train_cities=['nurdagi', 'islahiye'],
        val_cities=['adiyaman'],
        test_cities=[],
        chips_root=tmp_path / 'chips',
        progress=False,
        holdout=0.4,
        holdout_block_m=60.0,
    )
    assert data.test_names == ['seen_nurdagi', 'seen_islahiye']
    data.setup('fit')
    data.setup('test')
    assert data.train_dataset is not None
    held_total = 0
    for slug, seen in zip(data.train_cities, data.test_datasets):
        chips = data.chips(slug)
        held = data.heldout(slug)
        assert 0 < held.sum() < len(chips)
        assert len(seen) == held.sum()  # type: ignore[arg-type]
        trained = {int(s['building_id']) for s in data.training_part(slug)}  # type: ignore[attr-defined]
        tested = {int(seen[i]['building_id']) for i in range(len(seen))}  # type: ignore[arg-type]
        assert not trained & tested
        assert len(trained) + len(tested) == len(chips)
        held_total += len(tested)
    total = sum(len(data.chips(c)) for c in data.train_cities)
    assert len(data.train_dataset) == total - held_total
    # validation and unseen cities are never split
    assert not data.heldout('adiyaman').any()


def test_scores_match_sklearn() -> None:
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.2])
    y = np.array([0, 0, 1, 1, 1, 0])
    result = scores(p, y, threshold=0.3)
    predicted = (p >= 0.3).astype(int)
    assert result['f1'] == pytest.approx(f1_score(y, predicted))
    assert result['auroc'] == pytest.approx(roc_auc_score(y, p))
    assert result['n_buildings'] == 6
    assert result['n_damaged'] == 3
    one_class = scores(p, np.zeros(6, dtype=int), threshold=0.3)
    assert np.isnan(one_class['auroc'])


def test_grid_skips_what_does_not_apply() -> None:
    config = StudyConfig(
        modality_sets=[['sar'], ['sar', 'dsm'], ['sar', 'osm']],
        fusions=['early', 'late', 'attention'],
    )
    assert grid(config) == [
        ('sar', 'late'),
        ('sar+dsm', 'early'),
        ('sar+dsm', 'late'),
        ('sar+osm', 'early'),
        ('sar+osm', 'late'),
        ('sar+osm', 'attention'),
    ]


def test_backbone_runs_are_named_by_their_fusion() -> None:
    config = StudyConfig(
        backbones=['lcnet_100', 'resnet10t'],
        backbone_sets=[['sar'], ['sar', 'osm']],
        backbone_fusions=['early', 'attention'],
        torchgeo_sets=[],
    )
    # attention needs the footprint; SAR alone has none
    assert extra_pairs(config) == [
        ('sar', 'early~lcnet_100'),
        ('sar', 'early~resnet10t'),
        ('sar+osm', 'early~lcnet_100'),
        ('sar+osm', 'early~resnet10t'),
        ('sar+osm', 'attention~lcnet_100'),
        ('sar+osm', 'attention~resnet10t'),
    ]
    assert study.run_backbone('early~lcnet_100') == 'lcnet_100'
    assert study.run_backbone('early~lcnet_100+int8') == 'lcnet_100'
    assert study.run_backbone('early') is None
    assert study.fusion_type('attention~lcnet_100+int8') == 'attention'
    assert study.fusion_type('late@ResNet50_Weights.SENTINEL1_ALL_MOCO') == 'late'
    assert study.describe_model('sar+osm+dsm+gem', 'early~lcnet_100') == (
        'SAR + OSM + DSM + GEM, early fusion, lcnet_100 encoder'
    )


def test_backbone_section_pairs_runs_with_the_configured_backbone() -> None:
    records = []
    fusions = [('early', 0, 0), ('early~lcnet_100', -0.1, 0.02), ('late', 0, 0.05)]
    for city, seed, f1, auroc in [('a', 0, 0.4, 0.7), ('b', 0, 0.5, 0.8)]:
        for fusion, df1, dauroc in fusions:
            records.append(
                {
                    'modalities': 'sar',
                    'fusion': fusion,
                    'split': 'unseen',
                    'held_out_city': city,
                    'seed': seed,
                    'f1': f1 + df1 * (1 + seed + (city == 'b')),
                    'auroc': auroc + dauroc,
                }
            )
    rows = pd.DataFrame(records)
    speeds = pd.DataFrame(
        {
            'modalities': ['sar', 'sar'],
            'fusion': ['early', 'early~lcnet_100'],
            'buildings_per_s': [500.0, 2000.0],
        }
    )
    lines = study.backbone_section(rows, speeds)
    row = next(line for line in lines if 'lcnet_100 encoder' in line)
    # F1 -0.1 and -0.2: mean -0.15, std 0.05; AUROC +0.02 both; four times as fast;
    # against late fusion: the same F1 differences, AUROC 0.02 - 0.05
    assert row == (
        '| SAR only, early fusion, lcnet_100 encoder | 2 | -0.150 ± 0.050 | '
        '+0.020 ± 0.000 | 4.00 | -0.150 ± 0.050 | -0.030 ± 0.000 |'
    )
    alone = study.backbone_section(rows[rows.fusion != 'late'], speeds)
    assert next(line for line in alone if 'lcnet_100 encoder' in line).endswith(
        '| 4.00 | n/a | n/a |'
    )
    assert '| n/a | -0.150' in '\n'.join(study.backbone_section(rows))
    assert study.backbone_section(rows[rows.fusion == 'early']) == []


#: Study settings that are refused, and what the error says.
BAD_SETTINGS = [
    ('cities: [nurdagi, islahiye]', 'at least three'),
    ('modality_sets: [[osm, dsm]]', 'needs sar'),
    ('torchgeo_sets: [[sar, gem]]', 'only image modalities'),
    ('pretrained_sets: [[osm]]', 'pretrained_sets need sar'),
    (
        'pretrained_weights: [ResNet18_Weights.SENTINEL2_ALL_MOCO]',
        'not SAR polarisations',
    ),
    ('int8_fusions: [middle]', r"unknown fusions \['middle'\]"),
    ('int8_sets: [[sar, lidar]]', 'lidar'),
    ('backbones: [resnet1000]', "unknown backbone 'resnet1000'"),
    ('backbone: nope', "unknown backbone 'nope'"),
    ('backbone_fusions: [middle]', r"unknown fusions \['middle'\]"),
    ('backbone_sets: [[sar, lidar]]', 'lidar'),
    ('gem_level: 3', 'gem_level must be 1'),
    ('folds: 0', 'folds must be between 1 and'),
    ('folds: 5', 'folds must be between 1 and'),
    ('pretrained_weights: [ResNet50_Weights.NOPE]', 'neither an existing file'),
]


@pytest.mark.parametrize(('text', 'message'), BAD_SETTINGS)
def test_config_refuses(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / 'bad.yaml'
    path.write_text(text + '\n')
    with pytest.raises(ArgumentError, match=message):
        StudyConfig.from_yaml(path)


def test_config_errors(tmp_path: Path) -> None:
    path = tmp_path / 'bad.yaml'
    path.write_text('epochs: 1\nepoch: 2\n')
    with pytest.raises(InputFileError, match=r'bad\.yaml.*unknown settings'):
        StudyConfig.from_yaml(path)
    assert load_script().main(['--config', str(tmp_path / 'missing.yaml')]) == 2


def test_tiny_study_writes_table_and_figures(
    training_scene: Path, tmp_path: Path
) -> None:
    config = scene_config(
        training_scene,
        name='tiny',
        modality_sets=[['sar'], ['sar', 'osm']],
        fusions=['late', 'attention'],
        holdout=0.3,
    )
    calls: list[pd.DataFrame] = []
    rows, predictions = run_study(config, tmp_path / 'work', False, calls.append)
    # 3 folds x (3 deep models + 2 baselines + 2 references), seen and unseen
    assert len(calls) == 21
    assert len(rows) == 42
    assert list(rows.columns) == list(COLUMNS)
    models = set(zip(rows.modalities, rows.fusion))
    assert models == {
        ('sar', 'late'),
        ('sar+osm', 'late'),
        ('sar+osm', 'attention'),
        ('osm+dsm+gem', 'gbm'),
        ('sar', 'gbm'),
        ('truth', 'oracle'),
        ('sar', 'gbm-truth'),
    }
    assert set(rows.split) == {'seen', 'unseen'}
    # the oracle scores the same labelled buildings as the models, without training
    oracle = rows[rows.fusion == 'oracle']
    late = rows[(rows.fusion == 'late') & (rows.modalities == 'sar')]
    pairs = oracle.merge(late, on=['split', 'held_out_city'], suffixes=('', '_m'))
    assert (pairs.n_buildings == pairs.n_buildings_m).all()
    assert (pairs.n_damaged == pairs.n_damaged_m).all()
    assert set(rows.held_out_city) == set(config.cities)
    for metric in ('f1', 'precision', 'recall', 'kappa', 'ece'):
        values = rows[metric].astype(float)
        assert values.between(-1, 1).all(), metric
    # every unseen row scores every labelled building of its held-out city
    unseen = rows[rows.split == 'unseen']
    assert (unseen.groupby('held_out_city').n_buildings.nunique() == 1).all()
    assert len(predictions) == rows.n_buildings.sum()
    # the unseen predictions carry each building's true label from truth.gpkg
    # (-1: an OSM footprint over no true building)
    assert predictions.building_id.notna().all()
    unseen_p = predictions[predictions.split == 'unseen']
    assert set(unseen_p.label_true) <= {-1, 0, 1}
    assert (unseen_p.label_true >= 0).mean() > 0.8
    # every model, baselines included, names the same buildings
    ids = unseen_p.groupby(['modalities', 'fusion', 'held_out_city']).building_id
    per_city = ids.apply(lambda x: tuple(sorted(x))).groupby(level=2).nunique()
    assert (per_city == 1).all()
    assert predictions[predictions.split == 'seen'].label_true.isna().all()
    city = config.cities[0]
    truth = gpd.read_file(training_scene / city / 'truth.gpkg')
    damaged = truth[truth.osm_id.notna()].groupby('osm_id').damaged.max()
    first = unseen_p[unseen_p.held_out_city == city]
    expected = damaged.reindex(first.building_id.to_numpy()).fillna(-1).to_numpy()
    np.testing.assert_array_equal(first.label_true.to_numpy(), expected)

    out = tmp_path / 'results'
    files = write_report(
        rows, predictions, config, out, 12.0, 'x', simulator_page='../simulator.md'
    )
    assert {f.name for f in files} == {
        'study.csv',
        'study.md',
        'study_models.png',
        'study_curves.png',
        'study_reliability.png',
    }
    table = pd.read_csv(out / 'study.csv')
    assert len(table) == 42
    # the oracle F1 bounds the F1 at the transferred threshold
    assert (table.f1_best >= table.f1 - 1e-4).all()
    assert table.f1_best.notna().all()
    assert list(table.columns[:11]) == [
        'modalities',
        'fusion',
        'split',
        'held_out_city',
        'seed',
        'f1',
        'precision',
        'recall',
        'auroc',
        'ap',
        'kappa',
    ]
    page = (out / 'study.md').read_text()
    assert page.startswith('# The study (tiny configuration)')
    assert f'Data: the scene in `{training_scene}`' in page
    assert 'simulator report' not in page  # a given scene is not simulated
    assert 'SAR only, ResNet-18 (QuickQuakeBuildings-style)' in page
    assert 'context only (no SAR), gradient boosting' in page
    assert 'SAR + OSM, attention fusion' in page
    assert 'fragility oracle (true PGA and taxonomy, no training)' in page
    assert 'SAR statistics on the true footprints, gradient boosting' in page
    for city in config.cities:
        assert f'| {city} |' in page
    assert '| f1_best |' in page
    assert "F1 lost on unseen cities by using the validation city's threshold" in page
    assert '## Unseen cities after prior adaptation (FusionNet models)' in page
    assert '## Unseen cities: estimating the damaged share without labels' in page
    # BBSE: on the unseen rows of calibrated models only
    fused = table[(table.split == 'unseen') & (table.fusion == 'late')]
    assert fused.share_validation_error.notna().all()
    assert table[table.split == 'seen'].share_bbse.isna().all()
    assert table[table.fusion == 'gbm'].share_bbse.isna().all()
    assert '| f1_expected |' in page
    deep = table.fusion.map(study.calibrated_on_validation).astype(bool)
    calibrated = table[(table.split == 'unseen') & deep]
    assert len(calibrated) == 9
    assert calibrated.f1_expected.between(0, 1).all()
    assert table[~deep].f1_expected.isna().all()
    assert calibrated.share_mean_error.between(0, 1).all()
    assert 'gives F1' in page  # the finding on the expected-F1 threshold
    # scores against the true grades, on unseen rows only
    scored = table[table.split == 'unseen']
    assert scored.label_noise.between(0, 0.5).all()
    assert scored.auroc_true.notna().all()
    assert table[table.split == 'seen'].auroc_true.isna().all()
    assert '## Unseen cities against the true grades (label noise)' in page
    assert 'of the EMS labels of the unseen cities disagree with the true grade' in page
    for name in ('study_models.png', 'study_curves.png', 'study_reliability.png'):
        assert mpimg.imread(out / name).shape[0] > 100
        assert f']({name})' in page
    assert not list(out.glob('.*tmp*'))

    # the accuracy-per-cost table: each deep model's inference rate, timed on chips
    timed = sorted(set(zip(rows.modalities, rows.fusion)))
    speeds = inference_speed(config, tmp_path / 'work', timed, batch_size=8, repeats=1)
    assert set(zip(speeds.modalities, speeds.fusion)) == {
        ('sar', 'late'),
        ('sar+osm', 'late'),
        ('sar+osm', 'attention'),
    }
    assert (speeds.buildings_per_s > 0).all()
    assert (speeds.batch == 8).all()
    size = dict(zip(speeds.modalities + ' ' + speeds.fusion, speeds.parameters))
    assert size['sar+osm late'] > size['sar late']  # one encoder per modality
    files = write_report(rows, predictions, config, out, speeds=speeds)
    assert out / 'study_inference.csv' in files
    written = pd.read_csv(out / 'study_inference.csv')
    np.testing.assert_allclose(written.parameters, speeds.parameters, atol=1e-4)
    page = (out / 'study.md').read_text()
    assert '## Accuracy per cost (unseen cities)' in page
    cost = page.split('## Accuracy per cost (unseen cities)')[1]
    row = (
        r'\| SAR \+ OSM, attention fusion \| 3 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \d+ \|'
    )
    assert re.search(row, cost)
    assert 'SAR statistics, gradient boosting' not in cost  # no deep model
    assert 'Fastest model within 0.01 AUROC of the most accurate one' in cost
    with pytest.raises(ArgumentError, match='batch_size'):
        inference_speed(config, tmp_path / 'work', timed, batch_size=0)

    # resuming runs nothing again and returns the same rows
    again: list[pd.DataFrame] = []
    rows2, _ = run_study(config, tmp_path / 'work', False, again.append)
    assert not again
    pd.testing.assert_frame_equal(rows, rows2)


def test_script_default_out_and_simulator_link(tmp_path: Path) -> None:
    script = load_script()
    results = REPO / 'docs' / 'results'
    assert script.default_out('full') == results
    assert script.default_out('quick') == results / 'quick'
    assert script.simulator_link(results) == 'simulator.md'
    assert script.simulator_link(results / 'quick') == '../simulator.md'
    link = script.simulator_link(tmp_path / 'out')
    assert (tmp_path / 'out' / link).resolve() == results / 'simulator.md'


def test_script_reuses_the_speeds_it_wrote(tmp_path: Path) -> None:
    script = load_script()
    path = tmp_path / 'study_inference.csv'
    models = [('sar', 'late'), ('sar', 'gbm'), ('truth', 'oracle')]
    with pytest.raises(ArgumentError, match='does not exist'):
        script.reused_speeds(path, models)
    path.write_text('modalities,fusion,buildings_per_s\nsar,early,900.0\n')
    # the baselines need no rate, every deep model does
    with pytest.raises(ArgumentError, match='no rate for sar late'):
        script.reused_speeds(path, models)
    path.write_text('modalities,fusion,buildings_per_s\nsar,late,412.5\n')
    speeds = script.reused_speeds(path, models)
    assert speeds.to_dict('records') == [
        {'modalities': 'sar', 'fusion': 'late', 'buildings_per_s': 412.5}
    ]
    path.write_text('not,a\nrate,file\n')
    with pytest.raises(ArgumentError, match='cannot read'):
        script.reused_speeds(path, models)


def test_report_links_the_simulator(tmp_path: Path) -> None:
    config = StudyConfig(name='mini', buildings=123, pixel_m=0.5)
    rows = pd.DataFrame(
        [
            {
                'modalities': 'sar',
                'fusion': 'late',
                'split': split,
                'held_out_city': 'antakya',
                'seed': 0,
                **scores(np.array([0.2, 0.7, 0.6, 0.1]), np.array([0, 1, 0, 0]), 0.5),
                'threshold': 0.5,
                'seconds': 3.0,
            }
            for split in ('seen', 'unseen')
        ],
        columns=list(COLUMNS),
    )
    predictions = pd.DataFrame(
        {
            'modalities': 'sar',
            'fusion': 'late',
            'split': ['seen'] * 4 + ['unseen'] * 4,
            'held_out_city': 'antakya',
            'seed': 0,
            'probability': [0.2, 0.7, 0.6, 0.1] * 2,
            'label': [0, 1, 0, 0] * 2,
        }
    )
    write_report(rows, predictions, config, tmp_path, simulator_page='../sim.md')
    page = (tmp_path / 'study.md').read_text()
    assert page.startswith('# The study (mini configuration)')
    assert (
        '(see [the simulator report](../sim.md)), 123 buildings per city at 0.5 m'
        in page
    )
    write_report(rows, predictions, config, tmp_path, simulator_page=None)
    page = (tmp_path / 'study.md').read_text()
    assert 'simulator report' not in page
    assert 'Data: the simulated scene, 123 buildings per city at 0.5 m;' in page


@settings(max_examples=60, deadline=None)
@given(
    # model outputs are float32
    probabilities=st.lists(
        st.floats(0, 1, allow_nan=False, width=32), min_size=2, max_size=40
    ).map(lambda values: np.array(values, dtype=np.float32)),
    seed=st.integers(0, 2**16),
)
def test_best_f1_is_the_best_threshold(probabilities: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, len(probabilities))
    if not labels.any():
        assert np.isnan(best_f1(probabilities, labels))
        return
    candidates = [*np.unique(probabilities), 2.0]
    brute = max(
        f1_score(labels, (probabilities >= t).astype(int), zero_division=0)
        for t in candidates
    )
    assert best_f1(probabilities, labels) == pytest.approx(brute)


def test_with_best_f1_matches_runs_to_predictions() -> None:
    rows = pd.DataFrame(
        {
            'modalities': ['sar', 'sar', 'sar+osm'],
            'fusion': ['late', 'late', 'early'],
            'split': ['seen', 'unseen', 'unseen'],
            'held_out_city': ['antakya'] * 3,
            'seed': [0, 0, 1],
        }
    )
    predictions = pd.DataFrame(
        {
            'modalities': ['sar'] * 4 + ['sar'] * 3,
            'fusion': 'late',
            'split': ['seen'] * 4 + ['unseen'] * 3,
            'held_out_city': 'antakya',
            'seed': 0,
            # seen: perfectly separable; unseen: one damaged building ranked last
            'probability': [0.9, 0.8, 0.2, 0.1, 0.9, 0.5, 0.1],
            'label': [1, 1, 0, 0, 0, 0, 1],
        }
    )
    out = with_best_f1(rows, predictions)
    assert 'f1_best' not in rows.columns
    assert out.f1_best[0] == 1.0
    assert out.f1_best[1] == pytest.approx(0.5)  # everything called damaged: P 1/3, R 1
    assert np.isnan(out.f1_best[2])  # no predictions saved for that run


def test_study_runs_torchgeo_models(
    training_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a fake ResNet-50 Sentinel-1 MoCo file in an empty hub; DeCUR's file is absent
    moco = ResNet50_Weights.SENTINEL1_ALL_MOCO
    decur = ResNet50_Weights.SENTINEL1_ALL_DECUR
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    monkeypatch.setattr(moco.value, 'url', 'https://example.invalid/fake-moco.pth')
    torch.manual_seed(0)
    state = timm.create_model('resnet50', in_chans=2).state_dict()
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    torch.save(state, tmp_path / 'hub' / 'checkpoints' / 'fake-moco.pth')
    # record what the study builds
    built: list[tuple[str, dict[str, Any]]] = []

    def spy(name: str, cls: type) -> Callable[..., Any]:
        def make(**kwargs: Any) -> Any:  # noqa: ANN401
            built.append((name, kwargs))
            return cls(**kwargs)

        return make

    monkeypatch.setattr(study, 'Classification', spy('torchgeo', Classification))
    monkeypatch.setattr(
        study, 'DamageClassification', spy('fusion', DamageClassification)
    )
    config = scene_config(
        training_scene,
        name='tg',
        modality_sets=[['sar']],
        fusions=['late'],
        baselines=False,
        # more than one epoch: TorchGeo's learning-rate schedule needs val_loss
        epochs=2,
        size_m=16.0,
        torchgeo_sets=[['sar'], ['sar', 'osm']],
        pretrained_weights=[str(moco), str(decur)],
        pretrained_sets=[['sar']],
        int8_sets=[['sar']],
        int8_fusions=['late', 'attention'],  # attention needs the footprint
        backbones=['resnet10t'],
        backbone_sets=[['sar']],
        backbone_fusions=['late'],
    )
    with pytest.warns(UserWarning, match=r'SENTINEL1_ALL_DECUR are skipped.*hub'):
        rows, predictions = run_study(config, tmp_path / 'work', False)
    pretrained = f'late@{moco}'
    assert set(zip(rows.modalities, rows.fusion)) == {
        ('sar', 'late'),
        ('sar', 'torchgeo'),
        ('sar+osm', 'torchgeo'),
        ('sar', pretrained),
        ('sar', 'late+int8'),
        ('sar', 'late~resnet10t'),
    }
    assert len(rows) == 3 * 6 * 2
    # TorchGeo's task on the stacked channels: 2 for SAR, 4 with the footprint
    channels = [k['in_channels'] for n, k in built if n == 'torchgeo']
    assert sorted(set(channels)) == [2, 4]
    assert all(
        k['task'] == 'binary' and k['weights'] is None
        for n, k in built
        if n == 'torchgeo'
    )
    fusion = [k for n, k in built if n == 'fusion']
    assert sorted(str(k['weights']) for k in fusion) == ['None'] * 9 + [str(moco)] * 3
    backbones = [k['backbone'] for k in fusion if k['weights'] is None]
    assert sorted(backbones) == ['resnet10t'] * 3 + ['resnet18'] * 6
    # every model is scored on the same buildings of each split
    counts = rows.groupby(['split', 'held_out_city']).n_buildings.nunique()
    assert (counts == 1).all()

    # the pretrained encoder changes the predictions; thresholds are probabilities
    def probs(fusion: str) -> np.ndarray:
        sel = predictions[
            (predictions.fusion == fusion) & (predictions.modalities == 'sar')
        ]
        return sel.probability.to_numpy()

    assert len(probs(pretrained)) == len(probs('late'))
    assert not np.allclose(probs(pretrained), probs('late'))
    # the int8 runs quantise the float run's trained model (saved, then removed)
    dp = np.abs(probs('late+int8') - probs('late'))
    assert 0 < dp.max() < 0.1
    assert dp.mean() < 0.02
    assert not list((tmp_path / 'work' / 'models').glob('*.pt'))
    assert rows.threshold.between(0, 1).all()
    assert predictions.probability.between(0, 1).all()

    out = tmp_path / 'results'
    write_report(rows, predictions, config, out, simulator_page=None)
    page = (out / 'study.md').read_text()
    assert 'TorchGeo Classification on SAR channels stacked' in page
    assert 'TorchGeo Classification on SAR + OSM channels stacked' in page
    assert f'SAR only, late fusion, SAR encoder {moco}' in page
    other = page.split("## Other backbones against the configuration's")[1]
    assert re.search(r'\| SAR only, late fusion, resnet10t encoder \| 3 \| [+-]', other)
    assert '## Pretrained SAR encoders' in page
    assert f'`{pretrained}` ran with these weights' in page
    assert f'`{decur}`: **skipped**' in page
    int8 = page.split('## Int8 encoders (`predict --quantize`)')[1]
    assert re.search(
        r'\| SAR only, ResNet-18 \(QuickQuakeBuildings-style\), int8 ', int8
    )
    assert decur.url in page
    # findings compare the new rows with this package's models
    assert 'for the best FusionNet on the same modalities' in page
    assert 'trained from scratch (AUROC' in page

    # inference rates of TorchGeo's task on stacked chips and of the pretrained model
    models = sorted(set(zip(rows.modalities, rows.fusion)))
    speeds = inference_speed(config, tmp_path / 'work', models, batch_size=4, repeats=1)
    size = dict(zip(speeds.fusion + ' ' + speeds.modalities, speeds.parameters))
    assert len(size) == 6
    assert size['late~resnet10t sar'] < 0.6 * size['late sar']  # 4.9 M against 11.2 M
    assert size['late+int8 sar'] == pytest.approx(size['late sar'], rel=0.01)
    assert size[f'{pretrained} sar'] > 2 * size['late sar']  # a ResNet-50 encoder
    assert size['torchgeo sar+osm'] > size['torchgeo sar']  # 4 input channels, not 2
    assert (speeds.buildings_per_s > 0).all()


def test_with_true_labels_scores_against_the_truth() -> None:
    # a model that knows the truth, scored against EMS labels with 10 % flipped
    rng = np.random.default_rng(1)
    n = 2000
    truth = (rng.random(n) < 0.25).astype(int)
    flip = rng.random(n) < 0.1
    ems = np.where(flip, 1 - truth, truth)
    p = np.clip(truth * 0.8 + rng.random(n) * 0.2, 0, 1)
    base = {'modalities': 'sar', 'fusion': 'late', 'held_out_city': 'a', 'seed': 0}
    rows = pd.DataFrame(
        [
            {**base, 'split': 'unseen', **scores(p, ems, 0.5), 'threshold': 0.5},
            {**base, 'split': 'seen', **scores(p, ems, 0.5), 'threshold': 0.5},
        ],
        columns=list(COLUMNS),
    )
    predictions = pd.concat(
        [
            pd.DataFrame(
                {**base, 'split': 'unseen', 'probability': p, 'label': ems}
                | {'label_true': truth}
            ),
            pd.DataFrame({**base, 'split': 'seen', 'probability': p, 'label': ems}),
        ],
        ignore_index=True,
    )
    out = with_true_labels(rows, predictions)
    unseen, seen = out.iloc[0], out.iloc[1]
    assert unseen.label_noise == pytest.approx(flip.mean())
    assert unseen.auroc_true == pytest.approx(1.0)
    assert unseen.f1_true == pytest.approx(1.0)
    assert unseen.auroc < 0.95  # the EMS labels' noise caps the score
    assert np.isnan(seen.auroc_true)
    assert np.isnan(seen.label_noise)
    # predictions without true labels (a real scene) leave the columns NaN
    plain = with_true_labels(rows, predictions.drop(columns='label_true'))
    assert plain[list(TRUTH_METRICS)].isna().all().all()


def test_with_adaptation_estimates_each_town_share() -> None:
    # three towns; the model is calibrated on the validation town (the next one)
    rng = np.random.default_rng(0)
    cities = ['a', 'b', 'c']
    share = {'a': 0.08, 'b': 0.3, 'c': 0.2}
    rows, parts = [], []
    drawn: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, city in enumerate(cities):
        source = share[cities[(i + 1) % 3]]
        n = 20000
        y = (rng.random(n) < share[city]).astype(int)
        x = rng.normal(2.5 * y, 1.0)
        # exact posterior under the validation town's share
        odds = source / (1 - source) * np.exp(2.5 * x - 3.125)
        p = odds / (1 + odds)
        drawn[city] = (p, y)
        for fusion in ('late', 'gbm'):
            base: dict[str, Any] = {
                'modalities': 'sar',
                'fusion': fusion,
                'split': 'unseen',
                'held_out_city': city,
                'seed': 0,
            }
            rows.append({**base, **scores(p, y, 0.5), 'threshold': 0.5, 'seconds': 1.0})
            parts.append(pd.DataFrame({**base, 'probability': p, 'label': y}))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    out = with_adaptation(frame, pd.concat(parts, ignore_index=True), cities)
    for record in out.to_dict('records'):
        truth = share[record['held_out_city']]
        assert record['share_true'] == pytest.approx(truth, abs=0.015)
        if record['fusion'] == 'gbm':  # not calibrated on the validation town
            assert np.isnan(record['share_estimate'])
            assert np.isnan(record['ece_adapted'])
            continue
        assert record['share_estimate'] == pytest.approx(truth, abs=0.02)
        assert record['share_error'] < 0.02
        assert record['ece_adapted'] < 0.03
        # the unadapted probabilities carry the validation town's share
        assert record['ece'] > record['ece_adapted'] + 0.02
        assert 0 < record['f1_adapted'] <= 1
        # unadapted: the mean probability carries the validation town's share
        p, y = drawn[record['held_out_city']]
        assert record['share_mean_error'] == pytest.approx(abs(p.mean() - y.mean()))
        assert record['share_mean_error'] > record['share_error']
        chosen = p >= expected_f1_threshold(p)
        assert record['f1_expected'] == pytest.approx(f1_score(y, chosen))


def test_with_bbse_recovers_a_pure_label_shift() -> None:
    # the score of a damaged building is drawn alike in every town (label shift):
    # the seen split's hit and false-alarm rates solve for each town's share
    rng = np.random.default_rng(3)
    cities = ['a', 'b', 'c']
    share = {'a': 0.08, 'b': 0.3, 'c': 0.2}

    def town(rate: float, n: int = 20000) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < rate).astype(int)
        p = 1 / (1 + np.exp(-rng.normal(2.5 * y - 1.5, 1.0)))
        return p, y

    rows, parts = [], []
    for city in cities:
        for split, rate in (('unseen', share[city]), ('seen', 0.25)):
            p, y = town(rate)
            for fusion in ('late', 'gbm'):
                base: dict[str, Any] = {
                    'modalities': 'sar',
                    'fusion': fusion,
                    'split': split,
                    'held_out_city': city,
                    'seed': 0,
                }
                rows.append(
                    {**base, **scores(p, y, 0.4), 'threshold': 0.4, 'seconds': 1.0}
                )
                if not (city == 'c' and split == 'seen'):  # c has no seen split
                    parts.append(pd.DataFrame({**base, 'probability': p, 'label': y}))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    out = with_bbse(frame, pd.concat(parts, ignore_index=True), cities)
    assert len(out) == len(frame)
    unseen = frame[frame.split == 'unseen']
    realised = dict(zip(unseen.held_out_city, unseen.n_damaged / unseen.n_buildings))
    for record in out.to_dict('records'):
        city = record['held_out_city']
        if record['split'] == 'seen' or record['fusion'] == 'gbm':
            assert np.isnan(record['share_bbse'])
            assert np.isnan(record['share_validation_error'])
            continue
        validation = realised[cities[(cities.index(city) + 1) % 3]]
        truth = record['n_damaged'] / record['n_buildings']
        assert record['share_validation_error'] == pytest.approx(
            abs(validation - truth)
        )
        if city == 'c':  # no seen predictions: no rates, no estimate
            assert np.isnan(record['share_bbse'])
            assert np.isnan(record['f1_bbse'])
            continue
        assert record['share_bbse'] == pytest.approx(share[city], abs=0.02)
        assert record['share_bbse_error'] < 0.02
        assert 0 <= record['ece_bbse'] < 1
        assert 0 < record['f1_bbse'] <= 1


def test_tta_averages_the_azimuth_flip(monkeypatch: pytest.MonkeyPatch) -> None:
    sar = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    batch = {
        'sar': sar,
        'footprint': (sar > 20).float()[:, :1],
        'tabular': torch.ones(2, 3),
        'building_id': torch.tensor([7, 9]),
        'label': torch.tensor([0, 1]),
    }
    flipped = study.azimuth_flipped(batch)
    torch.testing.assert_close(flipped['sar'], sar.flip(-2))
    torch.testing.assert_close(flipped['footprint'], batch['footprint'].flip(-2))
    assert flipped['tabular'] is batch['tabular']

    class TopLeft(torch.nn.Module):
        """Logit: the first SAR channel's top-left pixel; probability: identity."""

        def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
            return b['sar'][:, 0, 0, 0]

        def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
            return logits

    class Identity:
        def normalise(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return b

    monkeypatch.setattr(study, '_loader', lambda dataset, size: [batch])
    model, data = TopLeft(), Identity()
    plain = study._predict(model, data, [], tta=False)  # type: ignore[arg-type]
    tta = study._predict(model, data, [], tta=True)  # type: ignore[arg-type]
    np.testing.assert_allclose(plain.probability, [0.0, 32.0])
    # the mean of the top-left and bottom-left pixels
    np.testing.assert_allclose(tta.probability, [6.0, 38.0])
    np.testing.assert_array_equal(tta.building_id, [7, 9])


def test_prepare_scene_stamps_the_gem_level(tmp_path: Path) -> None:
    config = StudyConfig(
        cities=['nurdagi', 'islahiye', 'adiyaman'], buildings=15, pixel_m=2.0
    )
    _, manifest = study.prepare_scene(config, tmp_path, progress=False)
    gem = manifest['cities']['nurdagi']['files']['gem']
    assert all(name.endswith('_Adm1.csv') for name in gem)
    stamp = json.loads((tmp_path / 'scene.settings.json').read_text())
    assert stamp['gem_level'] == 1
    # a stamp written before the level existed stands for district files: the
    # province-level study simulates again, a district-level one reuses the scene
    del stamp['gem_level']
    old = tmp_path / 'scene.settings.json'
    old.write_text(json.dumps(stamp))
    districts = replace(config, gem_level=2)
    study.prepare_scene(districts, tmp_path, progress=False)
    assert 'gem_level' not in json.loads(old.read_text())  # reused as it was
    # runs in the journal were made on the old scene: refused, not mixed
    (tmp_path / 'runs.csv').write_text(
        ','.join(COLUMNS) + '\nsar,late,unseen,nurdagi,0' + ',0' * (len(COLUMNS) - 5)
    )
    with pytest.raises(InputFileError, match=r'runs\.csv.*other settings'):
        study.prepare_scene(config, tmp_path, progress=False)
    (tmp_path / 'runs.csv').unlink()
    _, manifest = study.prepare_scene(config, tmp_path, progress=False)
    assert json.loads(old.read_text())['gem_level'] == 1  # simulated again
    gem = manifest['cities']['nurdagi']['files']['gem']
    assert all(name.endswith('_Adm1.csv') for name in gem)


def test_shards_split_the_study_and_are_collected(
    training_scene: Path, tmp_path: Path
) -> None:
    config = scene_config(
        training_scene,
        name='shards',
        seeds=[0, 1],
        modality_sets=[['sar']],
        fusions=['late'],
        baselines=False,
        size_m=16.0,
    )
    work = tmp_path / 'work'
    first: list[pd.DataFrame] = []
    rows0, _ = run_study(config, work, False, first.append, shard=(0, 2))
    assert len(rows0) == 6  # 3 runs, seen and unseen
    # 3 folds x 2 seeds: shard 0 runs groups 0, 2 and 4, each a fold and seed
    ran = {(r.held_out_city.iloc[0], int(r.seed.iloc[0])) for r in first}
    assert ran == {('nurdagi', 0), ('islahiye', 0), ('adiyaman', 0)}
    assert (work / 'runs.shard0of2.csv').is_file()
    assert not (work / 'runs.csv').exists()
    second: list[pd.DataFrame] = []
    rows1, _ = run_study(config, work, False, second.append, shard=(1, 2))
    assert len(second) == 3
    assert len(rows1) == 12  # the other shard's finished runs are returned too
    # an unsharded call runs nothing and collects both journals
    again: list[pd.DataFrame] = []
    rows, predictions = run_study(config, work, False, again.append)
    assert not again
    pd.testing.assert_frame_equal(rows, rows1)
    assert len(predictions) == rows.n_buildings.sum()
    with pytest.raises(ArgumentError, match='shard must be'):
        run_study(config, work, False, shard=(2, 2))
    script = load_script()
    path = tmp_path / 'shards.yaml'
    path.write_text('name: shards\n')
    assert script.main(['--config', str(path), '--shard', '1of2']) == 2


def test_cost_section_charges_int8_rows_their_float_training() -> None:
    def run(fusion: str, seed: int, auroc: float, seconds: float) -> dict[str, Any]:
        return {
            'modalities': 'sar',
            'fusion': fusion,
            'split': 'unseen',
            'held_out_city': 'nurdagi',
            'seed': seed,
            'f1': 0.4,
            'auroc': auroc,
            'seconds': seconds,
        }

    rows = pd.DataFrame(
        [
            run('late', 0, 0.70, 100.0),
            run('late', 1, 0.72, 120.0),
            run('late+int8', 0, 0.70, 5.0),
            run('late+int8', 1, 0.716, 6.0),
        ]
    )
    speeds = pd.DataFrame(
        {
            'modalities': ['sar', 'sar'],
            'fusion': ['late', 'late+int8'],
            'buildings_per_s': [200.0, 500.0],
            'parameters': [11.2, 11.2],
            'batch': [256, 256],
            'pixels': [32, 32],
            'threads': [2, 2],
            'load': [0.5, 0.5],
        }
    )
    lines = study.cost_section(rows, speeds)
    text = '\n'.join(lines)
    assert (
        '| SAR only, ResNet-18 (QuickQuakeBuildings-style) | 2 | 0.400 | 0.710 | 110.0 | 200 | 11.2 |'
        in text
    )
    assert (
        '| SAR only, ResNet-18 (QuickQuakeBuildings-style), int8 encoders | 2 | 0.400 '
        '| 0.708 | 110.0 | 500 | 11.2 |'
    ) in text
    # within 0.01 AUROC of the most accurate, the int8 model is the faster one
    assert 'int8 encoders, AUROC 0.708, 500 buildings/s (2.5x).' in text
    assert study.cost_section(rows, speeds.iloc[:0]) == []
