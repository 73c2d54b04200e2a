# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Training resumed from a checkpoint ends where an uninterrupted run ends."""

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from torchgeo_sar_damage.datamodules import TOWN_MODALITIES, SARDamageDataModule
from torchgeo_sar_damage.tasks import DamageClassification, ResumableRandomness

SPLIT: dict[str, Any] = {
    'train_cities': ['nurdagi'],
    'val_cities': ['islahiye'],
    'test_cities': ['adiyaman'],
}


def _run(
    scene: Path, root: Path, epochs: int, ckpt_path: Path | None = None
) -> tuple[dict[str, float], DamageClassification]:
    """One seeded run, as ``sardamage fit`` (with seed_everything) would do it."""
    seed_everything(0, workers=True)
    dm = SARDamageDataModule(
        scene,
        **SPLIT,
        size_m=16.0,
        batch_size=16,
        num_workers=0,
        progress=False,
        chips_root=scene.parent / 'chips',
    )
    model = DamageClassification(
        modalities=TOWN_MODALITIES, fusion='late', backbone='resnet10t', embed_dim=16
    )
    trainer = Trainer(
        accelerator='cpu',
        devices=1,
        max_epochs=epochs,
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[
            ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0),
            ResumableRandomness(),
        ],
    )
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    results = trainer.test(model, dm, verbose=False)[0]
    return {k: float(v) for k, v in results.items()}, model


def test_resume_gives_the_metrics_of_an_uninterrupted_run(
    training_scene: Path, tmp_path: Path
) -> None:
    full, full_model = _run(training_scene, tmp_path / 'full', epochs=2)
    _run(training_scene, tmp_path / 'first', epochs=1)
    last = tmp_path / 'first' / 'last.ckpt'
    assert last.is_file()
    resumed, resumed_model = _run(
        training_scene, tmp_path / 'resumed', epochs=2, ckpt_path=last
    )
    assert resumed.keys() == full.keys()
    for name, value in full.items():
        assert resumed[name] == value or abs(resumed[name] - value) < 1e-6, name
    assert float(resumed_model.threshold) == float(full_model.threshold)
    for (name, a), (_, b) in zip(
        full_model.state_dict().items(), resumed_model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_generator_states_round_trip(tmp_path: Path) -> None:
    callback = ResumableRandomness()
    seed_everything(3)
    torch.save(callback.state_dict(), tmp_path / 'states.pt')
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(4)
    callback.load_state_dict(torch.load(tmp_path / 'states.pt', weights_only=True))
    again = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert first == again
