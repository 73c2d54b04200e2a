# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""``sardamage predict --adapt-prior``: the town's damage rate, and the summary file."""

import contextlib
import io
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import torch
from scipy.special import logit

from torchgeo_sar_damage import plot
from torchgeo_sar_damage import predict as predict_module
from torchgeo_sar_damage.cli import build_parser, main
from torchgeo_sar_damage.errors import ArgumentError, OutputError
from torchgeo_sar_damage.predict import (
    THRESHOLD_RULES,
    PredictionSummary,
    load_checkpoint,
    map_title,
    predict_buildings,
    share_text,
    summary_path,
)
from torchgeo_sar_damage.prior_shift import (
    adapt_probabilities,
    em_prior,
    expected_f1_threshold,
    prior_interval,
)

#: :func:`conftest.town_chunks`: opens a town's chunks for a checkpoint.
TownChunks = Callable[..., predict_module.BuildingChunks]


TOWN = 'adiyaman'  # never seen in training

#: Damage rate of the validation town written into :func:`sharp_model`.
SOURCE_PRIOR = 0.3

#: Keys the summary file must have.
SUMMARY_KEYS = {
    'buildings',
    'assessed',
    'counts',
    'damaged_share_estimate',
    'damaged_share_interval',
    'expected_damaged',
    'damaged',
    'threshold',
    'threshold_rule',
    'prior_adapted',
    'source_prior',
    'reason',
    'checkpoint',
    'sar',
}


@pytest.fixture(scope='module')
def town(unseen_town: dict[str, Any]) -> dict[str, Any]:
    """Paths of the unseen town's files (the shared ``unseen_town``)."""
    return unseen_town


@pytest.fixture(scope='module')
def sharp_model(
    small_model: Path,
    town: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
    town_chunks: TownChunks,
) -> Path:
    """The small model with a calibration that spreads the town over (0.05, 0.95).

    The one-epoch model barely tells the buildings apart: its calibrated
    probabilities of the town lie within a few hundredths of each other, and EM then
    runs the town's rate to 0 or 1, the maximum-likelihood answer of a classifier
    that carries no information. Here the checkpoint's temperature and bias (not the
    weights) are changed so that the town's calibrated logits span 8 (probabilities
    from about 0.05 to 0.95) with 40 % of them above 0, and the validation prior is
    :data:`SOURCE_PRIOR`: EM then finds a rate inside (0, 1) (about 0.5), away
    from it (the tests that need this check it).
    """
    ckpt = load_checkpoint(small_model)
    chunks = town_chunks(town, ckpt, 1000)
    with torch.no_grad():
        probability, _ = predict_module.CityPredictor(ckpt, chunks.raw_names, 0)(
            chunks[0]
        )
    calibrated = logit(probability.double().numpy())
    scale = 8.0 / float(np.ptp(calibrated))
    centre = float(np.quantile(calibrated, 0.6))
    # scale * (z / T + b - centre) = z / (T / scale) + scale * (b - centre)
    temperature = ckpt.temperature / scale
    bias = scale * (ckpt.calibration_bias - centre)
    raw = torch.load(small_model, weights_only=True)
    for key, value in (
        ('temperature', temperature),
        ('calibration_bias', bias),
        ('validation_prior', SOURCE_PRIOR),
    ):
        raw['state_dict'][key] = torch.tensor(value)
        raw[key] = value
    path = tmp_path_factory.mktemp('sharp_model') / 'sharp.ckpt'
    torch.save(raw, path)
    return path


def cli(town: dict[str, Any], model: Path, out: Path, *extra: str) -> tuple[int, str]:
    """Run ``sardamage predict`` on the town; its exit code and standard output."""
    args = ['predict', '--sar', str(town['sar']), '--buildings']
    args += [str(town['buildings']), '--dsm', str(town['dsm']), '--gem']
    args += [*map(str, town['gem']), '--admin', str(town['admin'])]
    args += ['--checkpoint', str(model), '--out', str(out), '--quiet']
    args += ['--batch-size', '16', '--mc-samples', '4', *extra]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(args)
    return code, stdout.getvalue()


def read_summary(path: Path) -> dict[str, Any]:
    """The summary file, parsed strictly (NaN or Infinity in it fail)."""

    def refuse(token: str) -> None:
        raise ValueError(f'{path} holds {token}, which is not JSON')

    value: dict[str, Any] = json.loads(
        path.read_text(encoding='utf-8'), parse_constant=refuse
    )
    return value


def outcome(folder: Path, stdout: str, titles: list[str]) -> dict[str, Any]:
    """What a run left in ``folder`` (``town.gpkg`` and its summary)."""
    return {
        'folder': folder,
        'layer': gpd.read_file(folder / 'town.gpkg'),
        'summary': read_summary(folder / 'town.summary.json'),
        'stdout': stdout,
        'titles': titles,
    }


@pytest.fixture(scope='module')
def adapted(
    town: dict[str, Any], sharp_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """``sardamage predict --adapt-prior`` with a map; the map's titles."""
    folder = tmp_path_factory.mktemp('adapted')
    titles: list[str] = []
    draw = plot.plot_prediction_map

    def record(*args: object, **kwargs: object) -> object:
        titles.append(str(kwargs['title']))
        return draw(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plot, 'plot_prediction_map', record)
        code, stdout = cli(
            town,
            sharp_model,
            folder / 'town.gpkg',
            '--adapt-prior',
            '--map',
            str(folder / 'town.png'),
        )
    assert code == 0
    return outcome(folder, stdout, titles)


@pytest.fixture(scope='module')
def unadapted(
    town: dict[str, Any], sharp_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """``sardamage predict --no-adapt-prior --threshold checkpoint``."""
    folder = tmp_path_factory.mktemp('unadapted')
    args = ['--no-adapt-prior', '--threshold', 'checkpoint']
    code, stdout = cli(town, sharp_model, folder / 'town.gpkg', *args)
    assert code == 0
    return outcome(folder, stdout, [])


@pytest.mark.parametrize('run', ['adapted', 'unadapted'])
def test_summary_file_beside_the_layer(
    run: str, request: pytest.FixtureRequest, town: dict[str, Any], sharp_model: Path
) -> None:
    result: dict[str, Any] = request.getfixturevalue(run)
    summary, layer = result['summary'], result['layer']
    assert SUMMARY_KEYS <= set(summary)
    names = ['town.gpkg', 'town.summary.json']
    names += ['town.png'] if run == 'adapted' else []
    assert sorted(p.name for p in result['folder'].iterdir()) == sorted(names)
    ok = (layer['status'] == 'ok').to_numpy()
    assert summary['buildings'] == len(layer) == sum(summary['counts'].values())
    assert summary['assessed'] == summary['counts']['ok'] == ok.sum() > 30
    probability = layer['damage_prob'].to_numpy()[ok]
    assert summary['expected_damaged'] == pytest.approx(probability.sum(), rel=1e-9)
    assert summary['damaged'] == int(layer['damage'].sum())
    assert summary['damaged'] == int((probability >= summary['threshold']).sum())
    assert summary['prior_adapted'] is (run == 'adapted')
    assert summary['source_prior'] == pytest.approx(SOURCE_PRIOR)
    assert summary['checkpoint'] == str(sharp_model)
    assert summary['sar'] == [str(town['sar'])]
    assert summary['out'] == str(result['folder'] / 'town.gpkg')
    assert 0 < summary['damaged_share_estimate'] < 1


def test_no_adapt_prior_keeps_the_checkpoints_probabilities(
    unadapted: dict[str, Any],
    town: dict[str, Any],
    sharp_model: Path,
    town_chunks: TownChunks,
) -> None:
    """``--threshold checkpoint``: the calibrated probabilities, the checkpoint's threshold."""
    summary, layer = unadapted['summary'], unadapted['layer']
    ckpt = load_checkpoint(sharp_model)
    assert summary['prior_adapted'] is False
    assert summary['damaged_share_interval'] is None
    assert 'turned off' in summary['reason']
    assert summary['threshold'] == ckpt.threshold
    chunks = town_chunks(town, ckpt, 1000)
    item = chunks[0]
    with torch.no_grad():
        probability, _ = predict_module.CityPredictor(ckpt, chunks.raw_names, 0)(item)
    written = layer['damage_prob'].to_numpy()[item['assessed'].numpy()]
    np.testing.assert_allclose(written, probability.numpy(), rtol=1e-5)
    ok = (layer['status'] == 'ok').to_numpy()
    p = layer['damage_prob'].to_numpy()[ok]
    np.testing.assert_array_equal(
        layer['damage'].to_numpy()[ok].astype(int), (p >= ckpt.threshold).astype(int)
    )
    assert summary['damaged_share_estimate'] == pytest.approx(p.mean(), rel=1e-9)


def test_adapted_probabilities_follow_bayes(
    adapted: dict[str, Any], unadapted: dict[str, Any]
) -> None:
    """The layer holds the unadapted probabilities re-weighted to the EM estimate."""
    summary, layer = adapted['summary'], adapted['layer']
    before = unadapted['layer']
    assert (layer['status'] == before['status']).all()
    ok = (layer['status'] == 'ok').to_numpy()
    p0 = before['damage_prob'].to_numpy()[ok]
    p1 = layer['damage_prob'].to_numpy()[ok]
    estimate = summary['damaged_share_estimate']
    # the checkpoint's float32 buffer: SOURCE_PRIOR to float32 rounding
    source = summary['source_prior']
    # the premise: the town's rate differs from the validation town's
    assert abs(estimate - source) > 0.05
    assert estimate == pytest.approx(em_prior(p0, source)[0], abs=1e-12)
    low, high = summary['damaged_share_interval']
    assert low < estimate < high
    assert (low, high) == pytest.approx(prior_interval(p0, source), abs=1e-12)
    assert summary['interval_level'] == 0.9
    expected = adapt_probabilities(p0, source, estimate)
    # written as float32, like every probability
    np.testing.assert_allclose(p1, expected, rtol=1e-6, atol=1e-7)
    assert np.abs(p1 - p0).max() > 0.05
    assert summary['threshold'] == pytest.approx(
        expected_f1_threshold(expected), abs=1e-6
    )
    np.testing.assert_array_equal(
        layer['damage'].to_numpy()[ok].astype(int),
        (p1 >= summary['threshold']).astype(int),
    )
    assert summary['expected_damaged'] == pytest.approx(expected.sum(), rel=1e-6)
    assert summary['reason'] is None
    # uncertainty: the MC dropout spread before adaptation, the same in both runs
    np.testing.assert_array_equal(
        layer['uncertainty'].to_numpy()[ok], before['uncertainty'].to_numpy()[ok]
    )
    assert 'before adaptation' in summary['uncertainty_column']


def test_cli_prints_the_share(
    adapted: dict[str, Any], unadapted: dict[str, Any]
) -> None:
    summary = adapted['summary']
    low, high = summary['damaged_share_interval']
    line = next(
        s for s in adapted['stdout'].splitlines() if 'estimated damaged share' in s
    )
    assert line.startswith(
        f'estimated damaged share {100 * summary["damaged_share_estimate"]:.0f} % '
        f'({100 * low:.0f}-{100 * high:.0f} %); threshold {summary["threshold"]:.3f}; '
        'prior adapted'
    )
    assert str(adapted['folder'] / 'town.summary.json') in adapted['stdout']
    line = next(
        s for s in unadapted['stdout'].splitlines() if 'estimated damaged share' in s
    )
    assert '(not adapted)' in line
    assert f'threshold {unadapted["summary"]["threshold"]:.3f}' in line
    assert 'prior not adapted: adaptation turned off' in line


def test_map_title_carries_the_share(adapted: dict[str, Any]) -> None:
    summary = adapted['summary']
    (title,) = adapted['titles']
    assert title == map_title(
        summary['assessed'],
        summary['buildings'],
        summary['damaged_share_estimate'],
        tuple(summary['damaged_share_interval']),
        True,
    )
    share = round(100 * summary['damaged_share_estimate'])
    assert f'estimated damaged share {share} % (' in title
    assert (adapted['folder'] / 'town.png').stat().st_size > 10_000


def test_map_title_text() -> None:
    assert map_title(118, 120, 0.23, (0.19, 0.27), True) == (
        'Predicted building damage (118 of 120 buildings assessed)\n'
        'estimated damaged share 23 % (19\N{EN DASH}27 %)'
    )
    assert map_title(118, 120, 0.23, None, False).endswith(
        'estimated damaged share 23 % (not adapted)'
    )
    assert (
        map_title(0, 120) == 'Predicted building damage (0 of 120 buildings assessed)'
    )
    assert share_text(0.045, (0.02, 0.081), True, dash='-') == (
        'estimated damaged share 4.5 % (2.0-8.1 %)'
    )
    assert share_text(math.nan, None, False).startswith('damaged share not estimated')


def test_expected_f1_threshold_of_the_town(
    town: dict[str, Any], sharp_model: Path, unadapted: dict[str, Any], tmp_path: Path
) -> None:
    """By default, the unadapted probabilities at the town's expected-F1 threshold."""
    out = tmp_path / 'town.gpkg'
    code, stdout = cli(town, sharp_model, out)
    assert code == 0
    summary, layer = read_summary(summary_path(out)), gpd.read_file(out)
    before = unadapted['layer']
    np.testing.assert_array_equal(layer['damage_prob'], before['damage_prob'])
    ok = (layer['status'] == 'ok').to_numpy()
    p = layer['damage_prob'].to_numpy()[ok]
    threshold = expected_f1_threshold(p)
    assert summary['threshold'] == pytest.approx(threshold, abs=1e-6)
    assert summary['threshold'] != pytest.approx(load_checkpoint(sharp_model).threshold)
    assert summary['threshold_rule'] == 'expected-f1'
    assert unadapted['summary']['threshold_rule'] == 'checkpoint'
    assert summary['prior_adapted'] is False
    np.testing.assert_array_equal(
        layer['damage'].to_numpy()[ok].astype(int),
        (p >= summary['threshold']).astype(int),
    )
    assert f'threshold {summary["threshold"]:.3f} (expected-F1 of the town' in stdout
    with pytest.raises(ArgumentError, match="threshold='median'"):
        predict_buildings(
            [town['sar']],
            town['buildings'],
            sharp_model,
            tmp_path / 'x.gpkg',
            threshold='median',
        )
    assert not (tmp_path / 'x.gpkg').exists()


def test_adapted_threshold_rule(adapted: dict[str, Any]) -> None:
    assert adapted['summary']['threshold_rule'] == 'adapted-expected-f1'


def test_cli_threshold_choices_are_the_rules() -> None:
    """``--threshold`` offers exactly :data:`THRESHOLD_RULES` (the CLI imports lazily)."""
    base = ['predict', '--sar', 'a.tif', '--buildings', 'b.gpkg']
    base += ['--checkpoint', 'm.ckpt', '--out', 'o.gpkg']
    parser = build_parser()
    assert parser.parse_args(base).threshold == 'expected-f1'
    for rule in THRESHOLD_RULES:
        assert parser.parse_args([*base, '--threshold', rule]).threshold == rule
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        parser.parse_args([*base, '--threshold', 'median'])


def test_old_checkpoint_is_not_adapted(
    town: dict[str, Any], sharp_model: Path, unadapted: dict[str, Any], tmp_path: Path
) -> None:
    """A checkpoint without the validation town's rate: a warning, no adaptation."""
    raw = torch.load(sharp_model, weights_only=True)
    del raw['validation_prior'], raw['state_dict']['validation_prior']
    old = tmp_path / 'old.ckpt'
    torch.save(raw, old)
    out = tmp_path / 'town.gpkg'
    with pytest.warns(UserWarning, match='predates calibration records.*retrain'):
        summary = predict_buildings(
            [town['sar']],
            town['buildings'],
            old,
            out,
            dsm=town['dsm'],
            gem=town['gem'],
            admin=town['admin'],
            batch_size=16,
            adapt_prior=True,
            mc_samples=0,
            progress=False,
        )
    assert summary is not None
    assert summary.prior_adapted is False
    assert 'predates' in str(summary.reason)
    assert summary.threshold_rule == 'expected-f1'
    layer = gpd.read_file(out)
    written_p = layer['damage_prob'].to_numpy()[(layer['status'] == 'ok').to_numpy()]
    assert summary.threshold == pytest.approx(expected_f1_threshold(written_p))
    written = read_summary(summary_path(out))
    assert written['source_prior'] is None  # NaN in the checkpoint: null in JSON
    assert written['prior_adapted'] is False
    np.testing.assert_array_equal(
        gpd.read_file(out)['damage_prob'], unadapted['layer']['damage_prob']
    )


def test_too_few_buildings_fail_safe(
    town: dict[str, Any], sharp_model: Path, tmp_path: Path
) -> None:
    """Twelve buildings: not adapted, with a warning; --overwrite replaces all outputs."""
    few = tmp_path / 'few.gpkg'
    gpd.read_file(town['buildings']).iloc[:12].to_file(few)
    out = tmp_path / 'few_damage.gpkg'
    args: dict[str, Any] = {
        'dsm': town['dsm'],
        'gem': town['gem'],
        'admin': town['admin'],
        'batch_size': 16,
        'mc_samples': 0,
        'progress': False,
        'adapt_prior': True,
    }
    with pytest.warns(UserWarning, match='only 12 assessed buildings, fewer than'):
        summary = predict_buildings([town['sar']], few, sharp_model, out, **args)
    assert summary is not None
    assert summary.assessed == 12
    assert summary.prior_adapted is False
    assert summary.damaged_share_interval is None
    assert 'fewer than min_buildings' in str(summary.reason)
    assert summary.threshold_rule == 'expected-f1'
    assert summary.summary_file == tmp_path / 'few_damage.summary.json'
    written = read_summary(summary.summary_file)
    assert written['reason'] == summary.reason
    layer = gpd.read_file(out)
    ok = (layer['status'] == 'ok').to_numpy()
    assert written['damaged'] == int(
        (layer['damage_prob'].to_numpy()[ok] >= summary.threshold).sum()
    )
    # every output exists now: refused without overwrite, replaced with it
    with pytest.raises(OutputError, match='exists; pass --overwrite'):
        predict_buildings([town['sar']], few, sharp_model, out, **args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        again = predict_buildings(
            [town['sar']],
            few,
            sharp_model,
            out,
            overwrite=True,
            **{**args, 'adapt_prior': False},
        )
    assert again is not None
    assert not [w for w in caught if 'not adapted' in str(w.message)]  # turned off
    assert 'turned off' in read_summary(summary.summary_file)['reason']


def test_summary_file_is_not_replaced_without_overwrite(
    town: dict[str, Any],
    sharp_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An existing summary file is refused before anything is read."""
    existing = tmp_path / 'town.summary.json'
    existing.write_text('keep me')
    code, _ = cli(town, sharp_model, tmp_path / 'town.gpkg')
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith('sardamage predict: error:')
    assert f'{existing}: exists; pass --overwrite' in err
    assert existing.read_text() == 'keep me'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['town.summary.json']


def test_summary_json_has_no_nan(tmp_path: Path) -> None:
    """Values that are not numbers are written as null."""
    summary = PredictionSummary(
        out=tmp_path / 'town.gpkg',
        map=None,
        buildings=3,
        counts={'ok': 0, 'outside_sar': 3},
        threshold=0.4,
        temperature=1.0,
        damaged=0,
        damaged_share_estimate=math.nan,
        damaged_share_interval=(math.nan, math.nan),
        source_prior=math.nan,
        expected_damaged=0.0,
    )
    path = summary.write(summary_path(summary.out))
    assert path == tmp_path / 'town.summary.json'
    written = read_summary(path)
    assert written['damaged_share_estimate'] is None
    assert written['damaged_share_interval'] == [None, None]
    assert written['source_prior'] is None
    assert written['threshold'] == 0.4
    assert summary_path('a/damage.gpkg') == Path('a/damage.summary.json')
