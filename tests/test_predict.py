# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""City-scale prediction (``sardamage predict``) on a small simulated town."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import lightning
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
import torch

from torchgeo_sar_damage import predict as predict_module
from torchgeo_sar_damage.cli import main
from torchgeo_sar_damage.datamodules import SARDamageDataModule
from torchgeo_sar_damage.predict import STATUSES, load_checkpoint, predict_buildings
from torchgeo_sar_damage.prior_shift import adapt_to_town, expected_f1_threshold
from torchgeo_sar_damage.reliability import (
    expected_calibration_error,
    fit_temperature,
    plot_reliability_diagram,
    reliability_curve,
)
from torchgeo_sar_damage.tasks import DamageClassification

#: :func:`conftest.town_chunks`: opens a town's chunks for a checkpoint.
TownChunks = Callable[..., predict_module.BuildingChunks]


TOWN = 'adiyaman'  # never seen in training


@pytest.fixture(scope='module')
def model(small_model: Path) -> Path:
    """A small model trained for one epoch on two towns of the training scene (the shared ``small_model``)."""
    return small_model


@pytest.fixture(scope='module')
def town(unseen_town: dict[str, Any]) -> dict[str, Any]:
    """Paths of the unseen town's files (the shared ``unseen_town``)."""
    return unseen_town


def run(
    town: dict[str, Any], model: Path, out: Path, **kwargs: object
) -> predict_module.PredictionSummary:
    # the checkpoint's own probabilities: adapting them to the town's damage rate
    # (the default) is tested in test_predict_prior.py
    args: dict[str, Any] = {
        'dsm': town['dsm'],
        'gem': town['gem'],
        'admin': town['admin'],
        'progress': False,
        'batch_size': 16,
        'adapt_prior': False,
    }
    args.update(kwargs)
    sar = args.pop('sar', [town['sar']])
    buildings = args.pop('buildings', town['buildings'])
    summary = predict_buildings(sar, buildings, model, out, **args)
    assert summary is not None
    return summary


@pytest.fixture(scope='module')
def reference(
    town: dict[str, Any], model: Path, tmp_path_factory: pytest.TempPathFactory
) -> gpd.GeoDataFrame:
    """The single-process prediction of the unseen town."""
    out = tmp_path_factory.mktemp('reference') / 'town.gpkg'
    run(town, model, out)
    return gpd.read_file(out)


@pytest.fixture(scope='module')
def model_t1(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model with temperature 1 and bias 0 (probabilities: its own sigmoid).

    The one-epoch model's fitted temperature is large (here the search's upper
    bound, 50): its calibrated probabilities all lie close together, and a wrong
    input moves them 50 times less than it moves the model's own sigmoid. Tests
    that compare probabilities at a tight tolerance use this copy too.
    """
    raw = torch.load(model, weights_only=True)
    raw['state_dict']['temperature'] = torch.tensor(1.0)
    raw['temperature'] = 1.0
    raw['state_dict']['calibration_bias'] = torch.tensor(0.0)
    raw['calibration_bias'] = 0.0
    path = tmp_path_factory.mktemp('predict_model_t1') / 'model_t1.ckpt'
    torch.save(raw, path)
    return path


@pytest.fixture(scope='module')
def reference_t1(
    town: dict[str, Any], model_t1: Path, tmp_path_factory: pytest.TempPathFactory
) -> gpd.GeoDataFrame:
    """The single-process prediction of the unseen town with :func:`model_t1`."""
    out = tmp_path_factory.mktemp('reference_t1') / 'town.gpkg'
    run(town, model_t1, out)
    return gpd.read_file(out)


def test_end_to_end_keeps_every_footprint(
    town: dict[str, Any], model: Path, reference: gpd.GeoDataFrame
) -> None:
    source = gpd.read_file(town['buildings'])
    assert len(reference) == len(source)
    assert list(reference.columns) == [
        *[c for c in source.columns if c != 'geometry'],
        'damage_prob',
        'damage',
        'uncertainty',
        'status',
        'geometry',
    ]
    assert reference.crs == source.crs
    assert (reference['osm_id'].to_numpy() == source['osm_id'].to_numpy()).all()
    assert reference.geometry.geom_equals_exact(source.geometry, 1e-6).all()
    assert set(reference['status']) <= set(STATUSES)
    ok = reference['status'] == 'ok'
    assert ok.sum() > 0.9 * len(reference)
    assert reference.loc[ok, 'damage_prob'].between(0, 1).all()
    assert reference.loc[~ok, 'damage_prob'].isna().all()
    assert (reference.loc[ok, 'uncertainty'] >= 0).all()
    # the town's own expected-F1 threshold (the default), not the checkpoint's
    threshold = expected_f1_threshold(reference.loc[ok, 'damage_prob'].to_numpy())
    expected = (reference.loc[ok, 'damage_prob'] >= threshold).astype(int)
    assert (reference.loc[ok, 'damage'].astype(int) == expected).all()


def test_probabilities_match_the_task(
    town: dict[str, Any],
    model: Path,
    reference: gpd.GeoDataFrame,
    town_chunks: TownChunks,
) -> None:
    """The streamed path gives the task's own probabilities on the same windows."""
    checkpoint = load_checkpoint(model)
    chunks = town_chunks(town, checkpoint, batch_size=1000)
    item = chunks[0]
    predictor = predict_module.CityPredictor(checkpoint, chunks.raw_names)
    probability, _ = predictor(item)
    expected = reference['damage_prob'].to_numpy()[item['assessed'].numpy()]
    np.testing.assert_allclose(probability.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize('temperature', ['fitted', 'one'])
def test_prediction_matches_the_training_pipeline(
    temperature: str,
    training_scene: Path,
    model: Path,
    model_t1: Path,
    reference: gpd.GeoDataFrame,
    reference_t1: gpd.GeoDataFrame,
    tmp_path: Path,
) -> None:
    """``predict_buildings`` gives, building by building, ``trainer.predict``'s answer.

    The training pipeline (the data module's chip store of the town, its
    normalisation, the task's ``predict_step``) and the streamed path (raw files,
    :class:`~torchgeo_sar_damage.predict.BuildingChunks`, the checkpoint's
    statistics) read the same windows: the same sampler, snapped to the same SAR
    grid, the same footprints rasterised. So the probabilities must agree to float
    rounding, not to a tolerance that a shifted input or a wrong statistic would
    still meet. It runs with the checkpoint as trained (both paths must apply its
    temperature and bias) and with the copy of temperature 1 and bias 0 (see
    :func:`model_t1`), whose probabilities show a wrong input 50 times better.
    """
    if temperature == 'fitted':
        checkpoint, layer = model, reference
        assert load_checkpoint(checkpoint).temperature != 1.0
        assert load_checkpoint(checkpoint).calibration_bias != 0.0
    else:
        checkpoint, layer = model_t1, reference_t1
        assert load_checkpoint(checkpoint).temperature == 1.0
        assert load_checkpoint(checkpoint).calibration_bias == 0.0
    data = SARDamageDataModule(
        training_scene,
        train_cities=['nurdagi'],
        val_cities=['islahiye'],
        test_cities=[TOWN],
        size_m=16.0,
        batch_size=16,
        progress=False,
        chips_root=tmp_path / 'chips',
    )
    task = DamageClassification.load_from_checkpoint(checkpoint, map_location='cpu')
    trainer = lightning.Trainer(
        accelerator='cpu',
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    batches = trainer.predict(task, datamodule=data, ckpt_path=checkpoint)
    assert batches is not None
    # the data module's statistics came from the checkpoint, as predict's do
    assert data.statistics == load_checkpoint(checkpoint).statistics
    outputs = [b for b in batches if isinstance(b, dict)]
    assert len(outputs) == len(batches)
    ids = torch.cat([b['building_id'] for b in outputs]).numpy()
    probability = torch.cat([b['probability'] for b in outputs]).double().numpy()
    damaged = torch.cat([b['prediction'] for b in outputs]).numpy()
    # every window's target building is the building it was sampled for
    np.testing.assert_array_equal(ids, data.chips(TOWN, labelled=False).building_ids)
    assert len(np.unique(ids)) == len(ids)

    osm_id = layer['osm_id'].to_numpy()
    ok = osm_id[(layer['status'] == 'ok').to_numpy()]
    streamed = pd.Series(layer['damage_prob'].to_numpy(), index=osm_id).loc[ok]
    trained = pd.Series(probability, index=ids)
    # both assess every building of the town (each has its centre on valid SAR)
    assert sorted(ok) == sorted(ids)
    spread = float(np.ptp(trained.to_numpy()))
    assert spread > (1e-4 if temperature == 'fitted' else 1e-3)
    # float32 probabilities through the same layers (the stream runs them
    # channels-last): equal to a few float32 roundings (6e-8 near 0.5); +3 dB on
    # the SAR moves them by up to 2e-5 (temperature 50) and 9e-4 (temperature 1)
    np.testing.assert_allclose(
        streamed.to_numpy(), trained.loc[ok].to_numpy(), rtol=0, atol=1e-6
    )
    # the task decides at the checkpoint's threshold; the layer, by default, at the
    # town's own expected-F1 threshold (test_end_to_end_keeps_every_footprint)
    threshold = load_checkpoint(checkpoint).threshold
    trained_damage = pd.Series(damaged, index=ids).loc[ok]
    np.testing.assert_array_equal(
        (streamed.to_numpy() >= threshold).astype(np.int64), trained_damage.to_numpy()
    )


def test_channels_last_gives_the_same_probabilities(
    town: dict[str, Any], model: Path, town_chunks: TownChunks
) -> None:
    """The predictor's channels-last layout changes speed, not probabilities."""
    checkpoint = load_checkpoint(model)
    chunks = town_chunks(town, checkpoint, batch_size=64)
    item = chunks[0]
    fast = predict_module.CityPredictor(checkpoint, chunks.raw_names, 4).eval()
    plain = predict_module.CityPredictor(load_checkpoint(model), chunks.raw_names, 4)
    plain.task.to(memory_format=torch.contiguous_format)
    plain.eval()
    weights = [p for p in fast.task.parameters() if p.dim() == 4]
    assert weights
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    torch.manual_seed(0)
    p_fast, u_fast = fast(item)
    torch.manual_seed(0)
    p_plain, u_plain = plain(item)
    torch.testing.assert_close(p_fast, p_plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(u_fast, u_plain, rtol=1e-4, atol=1e-5)


def test_gdal_block_cache_while_predicting(
    town: dict[str, Any], model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading runs with a 64 MB block cache (not 64 bytes: rasterio takes bytes)."""
    seen: list[object] = []
    original = predict_module.BuildingChunks.__getitem__

    def getitem(self: predict_module.BuildingChunks, index: int) -> dict[str, Any]:
        seen.append(rasterio.env.getenv().get('GDAL_CACHEMAX'))
        return original(self, index)

    monkeypatch.setattr(predict_module.BuildingChunks, '__getitem__', getitem)
    run(town, model, tmp_path / 'out.gpkg')
    assert seen
    assert set(seen) == {predict_module.GDAL_CACHEMAX_MB * 1024 * 1024}


def test_cli_writes_layer_and_map(
    town: dict[str, Any],
    model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, png = tmp_path / 'town.gpkg', tmp_path / 'town.png'
    args = ['predict', '--sar', str(town['sar']), '--buildings']
    args += [str(town['buildings']), '--dsm', str(town['dsm']), '--gem']
    args += [*map(str, town['gem']), '--admin', str(town['admin'])]
    args += ['--checkpoint', str(model), '--out', str(out), '--map', str(png)]
    args += ['--quiet', '--batch-size', '8', '--mc-samples', '4']
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert 'predicted damaged at threshold' in stdout
    assert 'estimated damaged share' in stdout
    assert len(gpd.read_file(out)) == len(gpd.read_file(town['buildings']))
    assert png.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'town.gpkg',
        'town.png',
        'town.summary.json',
    ]


def test_other_crs_gives_the_same_probabilities(
    town: dict[str, Any], model_t1: Path, reference_t1: gpd.GeoDataFrame, tmp_path: Path
) -> None:
    """Footprints in lon/lat and the HDF5 product give the GeoTIFF's probabilities."""
    reference = reference_t1  # temperature 1: differences are not squashed
    lonlat = tmp_path / 'footprints.geojson'
    gpd.read_file(town['buildings']).to_crs(4326).to_file(lonlat)
    out = tmp_path / 'lonlat.gpkg'
    run(town, model_t1, out, buildings=lonlat, sar=[town['sar_hdf5']])
    result = gpd.read_file(out)
    assert result.crs.to_epsg() == 4326
    assert (result['status'] == reference['status']).all()
    ok = (result['status'] == 'ok').to_numpy()
    # Every building, to float rounding: the footprints come back to the SAR's UTM
    # zone within nanometres of where they were, and the HDF5 product holds the same
    # DN on the same grid as the GeoTIFF, so each window is snapped to the same
    # pixels and reads the same values. Only a window edge within about 1e-9 px of a
    # half pixel (where snapping rounds) could move by one pixel; the nearest in this
    # scene is far from it (checked here, so that a new scene that breaks the premise
    # fails on it, not on the probabilities).
    source = gpd.read_file(town['buildings'])
    with rasterio.open(town['sar']) as src:
        assert source.crs == src.crs
        origin, res = np.array([src.transform.c, src.transform.f]), src.res[0]
    size_m = load_checkpoint(model_t1).size_m
    centroid = source.geometry.centroid
    centre = centroid.where(
        source.geometry.contains(centroid), source.geometry.representative_point()
    )
    edges = np.column_stack([centre.x - size_m / 2, centre.y + size_m / 2])
    offset = (edges - origin) / res
    assert np.abs(np.abs(offset - np.floor(offset)) - 0.5).min() > 1e-4
    np.testing.assert_allclose(
        result['damage_prob'].to_numpy()[ok],
        reference['damage_prob'].to_numpy()[ok],
        rtol=0,
        atol=1e-6,
    )


def test_unassessable_buildings_get_a_status(
    town: dict[str, Any], model: Path, tmp_path: Path
) -> None:
    footprints = gpd.read_file(town['buildings'])
    geoms = footprints.geometry.to_numpy().copy()
    geoms[1] = shapely.affinity.translate(geoms[1], 50_000, 0)  # off the image
    x0, y0 = geoms[2].centroid.x, geoms[2].centroid.y
    geoms[2] = shapely.Polygon(  # bow-tie
        [(x0, y0), (x0 + 5, y0 + 5), (x0 + 5, y0), (x0, y0 + 5)]
    )
    footprints = footprints.set_geometry(geoms)
    path = tmp_path / 'footprints.gpkg'
    footprints.to_file(path)
    # blank the SAR over building 3 (DN 0 is the nodata value)
    sar = tmp_path / 'sar' / town['sar'].name
    sar.parent.mkdir()
    shutil.copy(town['sar'], sar)
    with rasterio.open(sar, 'r+') as src:
        window = (
            rasterio.windows.from_bounds(
                *shapely.buffer(geoms[3], 20).bounds, transform=src.transform
            )
            .round_offsets()
            .round_lengths()
        )
        src.write(
            np.zeros((1, window.height, window.width), src.dtypes[0]), window=window
        )
    out = tmp_path / 'out.gpkg'
    summary = run(town, model, out, buildings=path, sar=[sar])
    result = gpd.read_file(out)
    assert list(result['status'][1:4]) == [
        'outside_sar',
        'invalid_geometry',
        'sar_nodata',
    ]
    assert result['damage_prob'][1:4].isna().all()
    assert result['damage'][1:4].isna().all()
    assert summary.counts['outside_sar'] == summary.counts['invalid_geometry'] == 1
    assert summary.counts['sar_nodata'] >= 1  # building 3 and its close neighbours
    assert sum(summary.counts.values()) == len(result)
    assert (result['status'] == 'ok').sum() == summary.counts['ok']


@pytest.mark.parametrize(
    ('change', 'message'),
    [
        ({'dsm': None}, "'dsm' modality"),
        ({'gem': []}, "'gem' modality"),
        ({'dsm': Path('nowhere/dsm.tif')}, 'nowhere/dsm.tif: DSM file does not exist'),
        ({'buildings': Path('nowhere.gpkg')}, 'nowhere.gpkg: footprint file'),
        ({'checkpoint': 'buildings'}, 'cannot be read as a PyTorch checkpoint'),
        ({'out': 'existing'}, 'exists; pass --overwrite'),
        ({'out': 'town.shp'}, 'must be a GeoPackage'),
        ({'buildings': 'far'}, 'covers none of the'),
    ],
)
def test_refusals_exit_2(
    change: dict[str, Any],
    message: str,
    town: dict[str, Any],
    model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    values: dict[str, Any] = {
        'dsm': town['dsm'],
        'gem': town['gem'],
        'buildings': town['buildings'],
        'checkpoint': model,
        'out': tmp_path / 'out.gpkg',
    }
    values.update(change)
    if values['checkpoint'] == 'buildings':
        values['checkpoint'] = town['buildings']
    if values['out'] == 'existing':
        values['out'] = tmp_path / 'out.gpkg'
        values['out'].write_text('keep me')
    elif isinstance(values['out'], str):
        values['out'] = tmp_path / values['out']
    if values['buildings'] == 'far':
        far = gpd.read_file(town['buildings']).translate(0, 100_000)
        values['buildings'] = tmp_path / 'far.gpkg'
        gpd.GeoDataFrame(geometry=far).to_file(values['buildings'])
    args = ['predict', '--sar', str(town['sar']), '--buildings']
    args += [str(values['buildings']), '--checkpoint', str(values['checkpoint'])]
    args += ['--out', str(values['out']), '--quiet']
    if values['dsm'] is not None:
        args += ['--dsm', str(values['dsm'])]
    if values['gem']:
        args += ['--gem', *map(str, values['gem']), '--admin', str(town['admin'])]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith('sardamage predict: error:')
    assert message in err
    assert len(err.strip().splitlines()) == 1
    if change.get('out') == 'existing':
        assert values['out'].read_text() == 'keep me'
    else:
        assert not values['out'].exists()


@pytest.mark.parametrize('where', ['reading', 'writing'])
def test_interrupted_run_leaves_nothing(
    where: str,
    town: dict[str, Any],
    model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = {'n': 0}
    if where == 'reading':
        original = predict_module.BuildingChunks.__getitem__

        def getitem(self: predict_module.BuildingChunks, index: int) -> dict[str, Any]:
            if index == 1:  # the second chunk, read while the first is predicted
                raise KeyboardInterrupt
            return original(self, index)

        monkeypatch.setattr(predict_module.BuildingChunks, '__getitem__', getitem)
    else:
        monkeypatch.setattr(predict_module.output, 'WRITE_CHUNK', 10)
        write = pyogrio.write_dataframe

        def write_dataframe(*args: object, **kwargs: object) -> None:
            calls['n'] += 1
            if calls['n'] == 3:
                raise KeyboardInterrupt
            write(*args, **kwargs)

        monkeypatch.setattr(pyogrio, 'write_dataframe', write_dataframe)
    # an interrupt inside Trainer.predict stays one (Lightning would exit with 1)
    with pytest.raises(KeyboardInterrupt):
        run(town, model, tmp_path / 'out.gpkg')
    assert list(tmp_path.iterdir()) == []
    if where == 'writing':
        assert calls['n'] == 3  # it had started writing


def test_cli_interrupt_exits_130(
    town: dict[str, Any],
    model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    original = predict_module.BuildingChunks.__getitem__

    def getitem(self: predict_module.BuildingChunks, index: int) -> dict[str, Any]:
        if index == 1:
            raise KeyboardInterrupt
        return original(self, index)

    monkeypatch.setattr(predict_module.BuildingChunks, '__getitem__', getitem)
    out = tmp_path / 'town.gpkg'
    args = ['predict', '--sar', str(town['sar']), '--buildings']
    args += [str(town['buildings']), '--dsm', str(town['dsm']), '--gem']
    args += [*map(str, town['gem']), '--admin', str(town['admin'])]
    args += ['--checkpoint', str(model), '--out', str(out), '--quiet']
    args += ['--batch-size', '8']
    assert main(args) == 130
    assert 'interrupted' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


DDP_SCRIPT = """
import sys
from torchgeo_sar_damage.predict import predict_buildings

sar, buildings, model, out, dsm, admin, *gem = sys.argv[1:]
predict_buildings(
    [sar], buildings, model, out, dsm=dsm, gem=gem, admin=admin,
    batch_size=16, devices=2, strategy='ddp', accelerator='cpu', progress=False,
    adapt_prior=True,
)
"""


def test_two_processes_give_the_same_layer(
    town: dict[str, Any], model: Path, reference: gpd.GeoDataFrame, tmp_path: Path
) -> None:
    """Two processes give the single process's layer, adapted on the first process.

    The script adapts to the town's damage rate (``adapt_prior=True``) after merging the
    processes' parts; the single-process ``reference`` is not adapted, so the
    expected layer adapts its probabilities here, with the same function (or keeps
    them, where adaptation fails safe on this weak model).
    """
    checkpoint = load_checkpoint(model)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        shift = adapt_to_town(
            reference['damage_prob'].to_numpy(), checkpoint.validation_prior
        )
    expected = reference.copy()
    ok = (reference['status'] == 'ok').to_numpy()
    if shift.adapted:
        probability = shift.probabilities.astype(np.float32).astype(np.float64)
        expected['damage_prob'] = probability
        expected.loc[ok, 'damage'] = (probability[ok] >= shift.threshold).astype(int)
    # else this weak one-epoch model fails safe (EM at the boundary): unadapted
    script = tmp_path / 'ddp_predict.py'
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    out = tmp_path / 'ddp.gpkg'
    args = [str(town['sar']), str(town['buildings']), str(model), str(out)]
    args += [str(town['dsm']), str(town['admin']), *map(str, town['gem'])]
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore', 'OMP_NUM_THREADS': '1'}
    subprocess.run(
        [sys.executable, str(script), *args],
        check=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
        capture_output=True,
    )
    merged = gpd.read_file(out)
    assert list(merged.columns) == list(expected.columns)
    for column in merged.columns:
        a, b = merged[column], expected[column]
        if column == 'geometry':
            assert merged.geometry.geom_equals_exact(expected.geometry, 0).all()
        elif column in ('damage_prob', 'uncertainty'):
            # float32 results of the same windows, to rounding: the processes run
            # with one thread each (OMP_NUM_THREADS=1), the reference with several,
            # and the convolutions may sum in another order; EM's sums too, which
            # moves this one-epoch model's estimate (3e-5, reached after 300 slow
            # iterations) by about 1e-6 of itself
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=column)
        else:
            assert ((a == b) | (a.isna() & b.isna())).all(), column
    summary = json.loads((tmp_path / 'ddp.summary.json').read_text())
    assert summary['prior_adapted'] is shift.adapted
    assert summary['damaged_share_estimate'] == pytest.approx(shift.estimate, rel=1e-5)
    # adapted or not, the expected-F1 threshold of what is written (the default)
    assert summary['threshold'] == pytest.approx(shift.threshold, rel=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'ddp.gpkg',
        'ddp.summary.json',
        'ddp_predict.py',
    ]


def test_temperature_scaling_and_calibration_error(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, generator=generator) * 2
    targets = (torch.rand(4000, generator=generator) < torch.sigmoid(logits)).long()
    # over-confident logits (x3) are fixed by T close to 3
    temperature = fit_temperature(logits * 3, targets)
    assert temperature == pytest.approx(3, rel=0.1)
    over = torch.sigmoid(logits * 3)
    fixed = torch.sigmoid(logits * 3 / temperature)
    assert expected_calibration_error(fixed, targets) < 0.03
    assert expected_calibration_error(over, targets) > expected_calibration_error(
        fixed, targets
    )
    mean_p, freq, count = reliability_curve(fixed, targets, bins=10)
    assert count.sum() == 4000
    assert np.nanmax(np.abs(mean_p - freq)) < 0.1
    assert fit_temperature(logits, torch.zeros(4000)) == 1.0
    png = plot_reliability_diagram(fixed, targets, tmp_path / 'rel.png', 'test')
    assert png.stat().st_size > 5_000


def test_checkpoint_keeps_temperature(model: Path) -> None:
    checkpoint = torch.load(model, weights_only=True)
    assert checkpoint['temperature'] == pytest.approx(
        float(checkpoint['state_dict']['temperature'])
    )
    del checkpoint['state_dict']['temperature']
    task = DamageClassification(backbone='resnet10t', embed_dim=16)
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint['state_dict'])
    assert float(task.temperature) == 1.0
