# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""What a checkpoint expects of the SAR, and prediction over other spacings."""

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from rasterio.warp import Resampling, calculate_default_transform, reproject

from torchgeo_sar_damage import predict as predict_module
from torchgeo_sar_damage.cli import main
from torchgeo_sar_damage.datasets import CALIBRATION_ATTRIBUTES
from torchgeo_sar_damage.errors import ArgumentError, InputFileError
from torchgeo_sar_damage.predict import load_checkpoint, predict_buildings

TOWN = 'adiyaman'


@pytest.fixture(scope='module')
def model(small_model: Path) -> Path:
    """A small model trained for one epoch on one town at 1 m, 16 m windows (the shared ``small_model``)."""
    return small_model


@pytest.fixture(scope='module')
def town(training_scene: Path, unseen_town: dict[str, Any]) -> dict[str, Any]:
    """The unseen town's files (``unseen_town``), its polarisation and the manifest."""
    manifest = json.loads((training_scene / 'scene.json').read_text())
    entry = manifest['cities'][TOWN]
    polarisation = entry['acquisition']['polarisation']
    return {**unseen_town, 'polarisation': polarisation, 'manifest': manifest}


def chunks(
    town: dict[str, Any], sar: Path, sensor: dict[str, Any] | None
) -> predict_module.BuildingChunks:
    return predict_module.BuildingChunks(
        [sar], town['buildings'], ('sar', 'osm'), 16.0, batch_size=8, sensor=sensor
    )


def test_checkpoint_records_the_training_sar(model: Path, town: dict[str, Any]) -> None:
    ckpt = load_checkpoint(model)
    cities = town['manifest']['cities']
    assert ckpt.sensor == {
        'pixel_m': 1.0,
        'window_px': 16,
        'sar_units': 'db',
        'polarisations': sorted(
            {cities[t]['acquisition']['polarisation'] for t in ('nurdagi', 'islahiye')}
        ),
        'product_types': ['CSG GTC'],
    }


def test_old_checkpoint_loads_with_a_warning(model: Path, tmp_path: Path) -> None:
    raw = torch.load(model, map_location='cpu', weights_only=True)
    del raw['SARDamageDataModule']['sensor']
    old = tmp_path / 'old.ckpt'
    torch.save(raw, old)
    with pytest.warns(UserWarning, match='does not record the pixel spacing'):
        ckpt = load_checkpoint(old)
    assert ckpt.sensor is None
    assert ckpt.statistics == load_checkpoint(model).statistics


def test_coarser_product_is_resampled_to_the_training_spacing(
    town: dict[str, Any],
    model: Path,
    tmp_path: Path,
    resampled_product: Callable[[Path, Path, int], Path],
) -> None:
    sensor = load_checkpoint(model).sensor
    assert sensor is not None
    coarse = resampled_product(town['sar'], tmp_path, 2)
    with rasterio.open(coarse) as src:
        assert src.res == (2.0, 2.0)
    # without what the checkpoint records, windows hold the product's own pixels
    assert chunks(town, coarse, None)[0]['image'].shape[-2:] == (8, 8)
    with pytest.warns(UserWarning, match=r'2 x 2 m is coarser than the 1 m'):
        resampled = chunks(town, coarse, sensor)[0]
    assert resampled['image'].shape[-2:] == (16, 16)
    native = chunks(town, town['sar'], sensor)[0]
    # resampled from 2 m: the same scene, a smoothed version of the 1 m chips
    valid = torch.isfinite(resampled['image']) & torch.isfinite(native['image'])
    a = resampled['image'][valid].numpy()
    b = native['image'][valid].numpy()
    assert np.corrcoef(a, b)[0, 1] > 0.5


def test_finer_product_is_resampled_without_warning(
    town: dict[str, Any], model: Path
) -> None:
    sensor = {**(load_checkpoint(model).sensor or {}), 'pixel_m': 2.0}
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        batch = chunks(town, town['sar'], sensor)[0]
    assert batch['image'].shape[-2:] == (8, 8)  # 16 m windows at 2 m


def test_product_in_degrees_is_refused(
    town: dict[str, Any], model: Path, tmp_path: Path
) -> None:
    out = tmp_path / town['sar'].name
    with rasterio.open(town['sar']) as src:
        transform, width, height = calculate_default_transform(
            src.crs, 'EPSG:4326', src.width, src.height, *src.bounds
        )
        profile = {
            **src.profile,
            'crs': 'EPSG:4326',
            'transform': transform,
            'width': width,
            'height': height,
            'tiled': False,
        }
        profile.pop('blockxsize', None)
        profile.pop('blockysize', None)
        with rasterio.open(out, 'w', **profile) as dst:
            for i in range(1, src.count + 1):
                reproject(
                    rasterio.band(src, i),
                    rasterio.band(dst, i),
                    resampling=Resampling.nearest,
                )
                dst.update_tags(i, **src.tags(i))
                dst.set_band_description(i, src.descriptions[i - 1])
            dst.update_tags(**src.tags())
    with pytest.raises(
        InputFileError, match=r'EPSG:4326 \(not metres\).*trained at 1 m'
    ):
        chunks(town, out, load_checkpoint(model).sensor)


def test_other_polarisation_and_product_type_warn(
    town: dict[str, Any], model: Path
) -> None:
    sensor = {**(load_checkpoint(model).sensor or {})}
    other = 'HV' if town['polarisation'] != 'HV' else 'VH'
    with pytest.warns(
        UserWarning, match=f'polarisation {town["polarisation"]} differs'
    ):
        chunks(town, town['sar'], {**sensor, 'polarisations': [other]})
    with pytest.warns(UserWarning, match='product type CSG GTC differs.*CSK GTC'):
        chunks(town, town['sar'], {**sensor, 'product_types': ['CSK GTC']})


def test_admin_code_column(town: dict[str, Any], model: Path, tmp_path: Path) -> None:
    """--admin-code-column reads GEM's codes from a column of another name."""
    admin = gpd.read_file(town['admin'])
    gadm = tmp_path / 'gadm.gpkg'
    # the simulator's province polygon (GEM's Türkiye files are per province)
    assert 'ID_2' not in admin.columns
    admin.rename(columns={'ID_1': 'GID_1'}).to_file(gadm)
    common = {
        'dsm': town['dsm'],
        'gem': town['gem'],
        'progress': False,
        'batch_size': 16,
        'mc_samples': 0,
    }
    reference = tmp_path / 'reference.gpkg'
    predict_buildings(
        [town['sar']],
        town['buildings'],
        model,
        reference,
        admin=town['admin'],
        **common,
    )
    renamed = tmp_path / 'renamed.gpkg'
    argv = ['predict', '--sar', str(town['sar']), '--buildings', str(town['buildings'])]
    argv += ['--dsm', str(town['dsm']), '--gem', *map(str, town['gem'])]
    argv += ['--admin', str(gadm), '--checkpoint', str(model), '--quiet']
    argv += ['--mc-samples', '0', '--batch-size', '16']
    assert main([*argv, '--admin-code-column', 'GID_1', '--out', str(renamed)]) == 0
    a, b = gpd.read_file(reference), gpd.read_file(renamed)
    assert (a['status'] == 'ok').sum() > 0
    np.testing.assert_array_equal(a['damage_prob'], b['damage_prob'])
    explicit = tmp_path / 'explicit.gpkg'
    assert (
        main([*argv, '--admin-code-column', 'ID_1=GID_1', '--out', str(explicit)]) == 0
    )
    np.testing.assert_array_equal(
        gpd.read_file(explicit)['damage_prob'], a['damage_prob']
    )
    # a bad value, and a column that is not there: one line, exit code 2
    bad = tmp_path / 'bad.gpkg'
    assert main([*argv, '--admin-code-column', 'X_1=GID_1', '--out', str(bad)]) == 2
    assert main([*argv, '--admin-code-column', 'ID_1=nope', '--out', str(bad)]) == 2
    assert not bad.exists()


def test_clipped_product_with_calibration(
    town: dict[str, Any], model: Path, tmp_path: Path
) -> None:
    """A GTC GeoTIFF without its metadata tags, with --calibration: same layer."""
    clipped_dir = tmp_path / 'clipped'
    clipped_dir.mkdir()
    clipped = clipped_dir / town['sar'].name
    with rasterio.open(town['sar']) as src:
        tags = src.tags()
        profile = {**src.profile, 'tiled': False}
        profile.pop('blockxsize', None)
        profile.pop('blockysize', None)
        with rasterio.open(clipped, 'w', **profile) as dst:
            dst.write(src.read())  # pixels and georeferencing only: no tags
    cal = tmp_path / 'calibration.json'
    cal.write_text(json.dumps({k: tags[k] for k in CALIBRATION_ATTRIBUTES}))
    argv = ['predict', '--buildings', str(town['buildings'])]
    argv += ['--dsm', str(town['dsm']), '--gem', *map(str, town['gem'])]
    argv += ['--admin', str(town['admin']), '--checkpoint', str(model), '--quiet']
    argv += ['--mc-samples', '0', '--batch-size', '16']
    reference = tmp_path / 'reference.gpkg'
    assert main([*argv, '--sar', str(town['sar']), '--out', str(reference)]) == 0
    out = tmp_path / 'clipped.gpkg'
    # without the constants: refused, naming the file and the way forward
    assert main([*argv, '--sar', str(clipped), '--out', str(out)]) == 2
    assert not out.exists()
    args = [*argv, '--sar', str(clipped), '--calibration', str(cal)]
    assert main([*args, '--out', str(out)]) == 0
    a, b = gpd.read_file(reference), gpd.read_file(out)
    assert (a['status'] == 'ok').sum() > 0
    np.testing.assert_array_equal(a['damage_prob'], b['damage_prob'])
    # a wrong constant moves the probabilities: the constants are really used
    wrong = tmp_path / 'wrong.json'
    wrong.write_text(
        json.dumps(
            {**{k: tags[k] for k in CALIBRATION_ATTRIBUTES}, 'Rescaling_Factor': 60}
        )
    )
    moved = tmp_path / 'moved.gpkg'
    args = [*argv, '--sar', str(clipped), '--calibration', str(wrong)]
    assert main([*args, '--out', str(moved)]) == 0
    assert not np.allclose(gpd.read_file(moved)['damage_prob'], a['damage_prob'])


def test_sar_units_must_be_the_checkpoints(
    town: dict[str, Any],
    model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ['predict', '--sar', str(town['sar']), '--buildings', str(town['buildings'])]
    argv += ['--dsm', str(town['dsm']), '--gem', *map(str, town['gem'])]
    argv += ['--admin', str(town['admin']), '--checkpoint', str(model), '--quiet']
    out = tmp_path / 'out.gpkg'
    assert main([*argv, '--sar-units', 'dn', '--out', str(out)]) == 2
    assert "trained on 'db'" in capsys.readouterr().err
    assert not out.exists()
    bad = tmp_path / 'bad.json'
    bad.write_text('[1, 2]')
    assert main([*argv, '--calibration', str(bad), '--out', str(out)]) == 2
    assert 'must hold a JSON object' in capsys.readouterr().err


def test_optical_model_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / 'optical.ckpt'
    hparams = {'modalities': ['sar', 'osm', 'optical'], 'task': 'binary'}
    torch.save({'state_dict': {}, 'hyper_parameters': hparams}, path)
    with pytest.raises(
        InputFileError,
        match=r"optical\.ckpt: was trained with modalities \['optical'\].*no optical",
    ):
        load_checkpoint(path)
    args = ['predict', '--sar', str(tmp_path / 'sar.tif'), '--buildings']
    args += [str(tmp_path / 'b.gpkg'), '--checkpoint', str(path), '--quiet']
    assert main([*args, '--out', str(tmp_path / 'out.gpkg')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('sardamage predict: error:')
    assert "modalities ['optical']" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(ArgumentError, match=r"modalities \['optical'\].*no optical"):
        predict_module.BuildingChunks(
            [tmp_path / 'sar.tif'], tmp_path / 'b.gpkg', ('sar', 'optical'), 16.0
        )


def test_checkpoint_gives_the_calibration(model: Path, tmp_path: Path) -> None:
    """Prediction reads the temperature, bias and prior the task was fitted with."""
    raw = torch.load(model, map_location='cpu', weights_only=True)
    ckpt = load_checkpoint(model)
    assert ckpt.temperature == raw['temperature']
    assert ckpt.calibration_bias == raw['calibration_bias']
    assert ckpt.calibration_bias == float(raw['state_dict']['calibration_bias'])
    assert ckpt.calibration_bias != 0.0  # fitted with the default, 'bcts'
    assert 0 < ckpt.validation_prior < 1
    assert ckpt.validation_prior == raw['validation_prior']
    logits = torch.linspace(-3, 3, 7)[:, None]
    torch.testing.assert_close(
        ckpt.task.probabilities(logits),
        torch.sigmoid(logits[:, 0] / ckpt.temperature + ckpt.calibration_bias),
    )
    # a checkpoint written before the bias: bias 0, prior unknown
    for key in ('calibration_bias', 'validation_prior'):
        del raw[key]
        del raw['state_dict'][key]
    old = tmp_path / 'old.ckpt'
    torch.save(raw, old)
    before = load_checkpoint(old)
    assert before.calibration_bias == 0.0
    assert np.isnan(before.validation_prior)
    assert before.temperature == ckpt.temperature
