# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Shared fixtures: small simulated scenes made once per test session."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rasterio
from rasterio.enums import Resampling

from torchgeo_sar_damage.predict import BuildingChunks, Checkpoint
from torchgeo_sar_damage.simulation.run import simulate

#: Towns and size of the shared tiny scene.
TINY_CITIES = ('kahramanmaras', 'nurdagi')
TINY_BUILDINGS = 150
TINY_PIXEL_M = 1.0


@pytest.fixture(scope='session')
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two towns of 150 buildings at 1 m, simulated once (seed 0)."""
    out = tmp_path_factory.mktemp('scene') / 'tiny'
    simulate(
        out,
        cities=TINY_CITIES,
        n_buildings=TINY_BUILDINGS,
        seed=0,
        pixel_m=TINY_PIXEL_M,
        progress=False,
    )
    return out


@pytest.fixture(scope='session')
def tiny_manifest(tiny_scene: Path) -> dict[str, Any]:
    """The tiny scene's ``scene.json``."""
    manifest: dict[str, Any] = json.loads(
        (tiny_scene / 'scene.json').read_text(encoding='utf-8')
    )
    return manifest


#: Towns of the shared training scene (three towns of 70 buildings at 1 m).
TRAINING_CITIES = ('nurdagi', 'islahiye', 'adiyaman')


@pytest.fixture(scope='session')
def training_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three towns of 70 buildings at 1 m for datamodule and task tests (seed 0).

    Tests must not modify it: copy it first (chip stores go beside it, in ``chips``).
    """
    out = tmp_path_factory.mktemp('training') / 'scene'
    simulate(
        out, cities=TRAINING_CITIES, n_buildings=70, seed=0, pixel_m=1.0, progress=False
    )
    return out


def _resampled_product(src_path: Path, out_dir: Path, factor: int) -> Path:
    """A copy of a CSG GTC GeoTIFF with pixels ``factor`` times larger, same tags."""
    out = out_dir / src_path.name
    with rasterio.open(src_path) as src:
        height, width = src.height // factor, src.width // factor
        data = src.read(
            out_shape=(src.count, height, width), resampling=Resampling.average
        )
        profile = {
            **src.profile,
            'height': height,
            'width': width,
            'transform': src.transform * src.transform.scale(factor, factor),
            'tiled': False,
        }
        profile.pop('blockxsize', None)
        profile.pop('blockysize', None)
        with rasterio.open(out, 'w', **profile) as dst:
            dst.write(data)
            dst.update_tags(**src.tags())
            for i in range(1, src.count + 1):
                dst.update_tags(i, **src.tags(i))
                dst.set_band_description(i, src.descriptions[i - 1])
    return out


@pytest.fixture
def resampled_product() -> Callable[[Path, Path, int], Path]:
    """Write a coarser copy of a CSG GTC GeoTIFF: ``(product, folder, factor)``."""
    return _resampled_product


@pytest.fixture(scope='session')
def small_model(training_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model (resnet10t) trained for one epoch on nurdagi at 1 m, 16 m windows.

    Its threshold is chosen on islahiye; adiyaman is never seen. Tests must not
    modify the file (copy it first).
    """
    import lightning

    from torchgeo_sar_damage.datamodules import SARDamageDataModule
    from torchgeo_sar_damage.tasks import DamageClassification

    out = tmp_path_factory.mktemp('small_model')
    lightning.seed_everything(0, verbose=False)
    data = SARDamageDataModule(
        training_scene,
        train_cities=['nurdagi'],
        val_cities=['islahiye'],
        test_cities=['adiyaman'],
        size_m=16.0,
        batch_size=16,
        progress=False,
        chips_root=out / 'chips',
    )
    task = DamageClassification(backbone='resnet10t', embed_dim=16)
    trainer = lightning.Trainer(
        max_epochs=1,
        accelerator='cpu',
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    trainer.fit(task, datamodule=data)
    trainer.save_checkpoint(out / 'model.ckpt')
    return out / 'model.ckpt'


@pytest.fixture(scope='session')
def unseen_town(training_scene: Path) -> dict[str, Any]:
    """Paths of the files of adiyaman, the town :func:`small_model` never saw."""
    manifest = json.loads((training_scene / 'scene.json').read_text())
    files = manifest['cities']['adiyaman']['files']
    folder = training_scene / 'adiyaman'
    return {
        'sar': folder / files['sar_geotiff'],
        'sar_hdf5': folder / files['sar_hdf5'],
        'buildings': folder / files['osm'],
        'dsm': folder / files['dsm'],
        'gem': [folder / f for f in files['gem']],
        'admin': folder / files['admin'],
    }


@pytest.fixture(scope='session')
def town_chunks() -> Callable[[dict[str, Any], Checkpoint, int], BuildingChunks]:
    """Opens a town's chunks (paths as :func:`unseen_town`) for a checkpoint."""

    def make(
        town: dict[str, Any], checkpoint: Checkpoint, batch_size: int
    ) -> BuildingChunks:
        return BuildingChunks(
            [town['sar']],
            town['buildings'],
            checkpoint.modalities,
            checkpoint.size_m,
            dsm=town['dsm'],
            gem=town['gem'],
            admin=town['admin'],
            batch_size=batch_size,
        )

    return make
