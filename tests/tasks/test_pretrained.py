# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""DamageClassification and ``sardamage fit`` with TorchGeo weights (a fake file in a
temporary torch hub folder, the weights' URL patched, no network)."""

import socket
from pathlib import Path
from typing import Any

import lightning
import pytest
import timm
import torch
from lightning.pytorch import Trainer
from torchgeo.models import ResNet50_Weights

from torchgeo_sar_damage.cli import main
from torchgeo_sar_damage.datamodules import SARDamageDataModule
from torchgeo_sar_damage.models.pretrained import weights_path
from torchgeo_sar_damage.tasks import DamageClassification

CONFIGS = Path(__file__).parents[2] / 'experiments' / 'configs'
MOCO = ResNet50_Weights.SENTINEL1_ALL_MOCO


@pytest.fixture
def fake_moco(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, torch.Tensor]:
    """A random ResNet-50 (2 channels) as MoCo's file in an empty hub; no network."""
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError('network access attempted')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    url = 'https://example.invalid/weights/fake-moco-0123abcd.pth'
    monkeypatch.setattr(MOCO.value, 'url', url)
    torch.manual_seed(0)
    state = timm.create_model('resnet50', in_chans=2).state_dict()
    path = weights_path(MOCO)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def test_checkpoint_loads_without_the_weights_file(
    fake_moco: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    task = DamageClassification(
        modalities=['sar'], weights='ResNet50_Weights.SENTINEL1_GRD_MOCO', embed_dim=8
    )
    branch = task.model.fusion.branch('sar')
    assert torch.equal(
        branch.state_module.get_parameter('layer4.2.conv3.weight'),
        fake_moco['layer4.2.conv3.weight'],
    )
    task.model.set_sar_statistics(-9.0, 4.0)
    checkpoint: dict[str, Any] = {
        'state_dict': task.state_dict(),
        'hyper_parameters': dict(task.hparams),
        'pytorch-lightning_version': lightning.__version__,
    }
    task.on_save_checkpoint(checkpoint)
    assert checkpoint['hyper_parameters']['weights'] == str(MOCO)
    path = tmp_path / 'task.ckpt'
    torch.save(checkpoint, path)
    weights_path(MOCO).unlink()
    loaded = DamageClassification.load_from_checkpoint(path)
    assert loaded.model.weights_name == str(MOCO)
    for key, value in task.state_dict().items():
        # NaN == NaN for the buffers that record no value (validation_prior)
        torch.testing.assert_close(
            value, loaded.state_dict()[key], rtol=0, atol=0, equal_nan=True, msg=key
        )


def test_setup_gives_the_model_the_sar_statistics(
    fake_moco: dict[str, torch.Tensor], training_scene: Path, tmp_path: Path
) -> None:
    dm = SARDamageDataModule(
        training_scene,
        train_cities=['nurdagi'],
        val_cities=['islahiye'],
        test_cities=['adiyaman'],
        modalities=['sar'],
        size_m=16.0,
        batch_size=8,
        progress=False,
        chips_root=training_scene.parent / 'chips',
    )
    task = DamageClassification(modalities=['sar'], weights=MOCO, embed_dim=8)
    trainer = Trainer(
        default_root_dir=tmp_path,
        fast_dev_run=True,
        enable_progress_bar=False,
        logger=False,
        accelerator='cpu',
    )
    trainer.fit(task, dm)
    sar_input = task.model.sar_input
    assert sar_input is not None
    assert float(sar_input.sar_mean_db) == pytest.approx(dm.statistics.sar_mean_db)
    assert float(sar_input.sar_std_db) == pytest.approx(dm.statistics.sar_std_db)


@pytest.mark.usefixtures('fake_moco')
def test_cli_fit_sar_ssl4eo(training_scene: Path, tmp_path: Path) -> None:
    args = [
        'fit',
        '--config',
        str(CONFIGS / 'sar_ssl4eo.yaml'),
        '--data.root',
        str(training_scene),
        '--data.chips_root',
        str(training_scene.parent / 'chips'),
        '--data.train_cities',
        '[nurdagi]',
        '--data.val_cities',
        '[islahiye]',
        '--data.test_cities',
        '[adiyaman]',
        '--data.size_m',
        '16',
        '--data.batch_size',
        '8',
        '--data.num_workers',
        '0',
        '--data.progress',
        'false',
        '--model.embed_dim',
        '8',
        '--trainer.fast_dev_run',
        'true',
        '--trainer.enable_progress_bar',
        'false',
        '--trainer.default_root_dir',
        str(tmp_path),
    ]
    assert main(args) == 0
