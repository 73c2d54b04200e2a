# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The stacked sample mode: TorchGeo's Classification task on the same chips."""

import json
import shutil
from pathlib import Path
from typing import Any

import geopandas as gpd
import lightning
import pytest
import torch
from torchgeo.tasks import Classification

from torchgeo_sar_damage.batch import image_channel_count, stack_images
from torchgeo_sar_damage.cli import main
from torchgeo_sar_damage.datamodules import SARDamageDataModule
from torchgeo_sar_damage.errors import ArgumentError

CONFIG = (
    Path(__file__).parents[2] / 'experiments' / 'configs' / 'torchgeo_resnet18.yaml'
)
SPLIT: dict[str, Any] = {
    'train_cities': ['nurdagi'],
    'val_cities': ['islahiye'],
    'test_cities': ['adiyaman'],
}


def make(scene: Path, chips: Path, **kwargs: object) -> SARDamageDataModule:
    args: dict[str, Any] = {
        **SPLIT,
        'size_m': 16.0,
        'batch_size': 8,
        'progress': False,
        'chips_root': chips,
    }
    args.update(kwargs)
    return SARDamageDataModule(scene, **args)


@pytest.mark.parametrize(
    ('modalities', 'channels'),
    [
        (['sar'], 2),
        (['sar', 'osm'], 4),
        (['sar', 'osm', 'dsm'], 5),
        (['sar', 'gem'], 2),
    ],
)
def test_num_channels(modalities: list[str], channels: int) -> None:
    assert image_channel_count(modalities) == channels


def test_stacked_batch_holds_the_model_batch_channels(
    training_scene: Path, tmp_path: Path
) -> None:
    modalities = ['sar', 'osm', 'dsm']
    plain = make(training_scene, tmp_path / 'chips', modalities=modalities)
    stacked = make(
        training_scene, tmp_path / 'chips', modalities=modalities, stacked=True
    )
    plain.setup('fit')
    stacked.load_state_dict(plain.state_dict())
    stacked.setup('fit')
    raw = next(iter(plain.val_dataloader()))
    model_batch = plain.on_after_batch_transfer(raw, 0)
    sample = stacked.on_after_batch_transfer(raw, 0)
    assert set(sample) == {'image', 'label', 'building_id'}
    assert stacked.num_channels == 5
    assert sample['image'].shape == (len(raw['label']), 5, 16, 16)
    # documented order: sar, sar_valid, footprint (target, neighbours), dsm
    expected = [
        model_batch['sar'],
        model_batch['sar_valid'],
        model_batch['footprint'][:, :1],
        model_batch['footprint'][:, 1:],
        model_batch['dsm'],
    ]
    for channel, tensor in enumerate(expected):
        torch.testing.assert_close(sample['image'][:, channel : channel + 1], tensor)
    torch.testing.assert_close(sample['label'], model_batch['label'])
    with pytest.raises(ArgumentError, match='no image to stack'):
        stack_images(model_batch, ['gem'])
    with pytest.raises(ArgumentError, match='needs an image modality'):
        make(training_scene, tmp_path / 'chips', modalities=['gem'], stacked=True)


def trainer(root: Path) -> lightning.Trainer:
    return lightning.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        accelerator='cpu',
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )


def test_torchgeo_classification_trains_and_tests(
    training_scene: Path, tmp_path: Path
) -> None:
    data = make(training_scene, tmp_path / 'chips', modalities=['sar'], stacked=True)
    lightning.seed_everything(0, verbose=False)
    task = Classification(
        model='resnet18',
        weights=None,
        in_channels=data.num_channels,
        task='binary',
        loss='bce',
    )
    before = [p.detach().clone() for p in task.parameters()]
    run = trainer(tmp_path)
    run.fit(task, datamodule=data)
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters()))
    results = run.test(task, datamodule=data, verbose=False)
    assert 'test_loss' in results[0]
    assert 0.0 <= results[0]['test_OverallF1Score'] <= 1.0


def test_torchgeo_classification_needs_the_stacked_mode(
    training_scene: Path, tmp_path: Path
) -> None:
    data = make(training_scene, tmp_path / 'chips', modalities=['sar'])
    task = Classification(
        model='resnet18', weights=None, in_channels=2, task='binary', loss='bce'
    )
    with pytest.raises(ArgumentError, match=r'--data\.stacked true'):
        trainer(tmp_path).fit(task, datamodule=data)


def test_cli_fits_torchgeo_classification(training_scene: Path, tmp_path: Path) -> None:
    argv = ['fit', '--config', str(CONFIG), '--data.root', str(training_scene)]
    argv += ['--data.train_cities', '[nurdagi]', '--data.val_cities', '[islahiye]']
    argv += ['--data.test_cities', '[adiyaman]', '--data.num_workers', '0']
    argv += ['--data.size_m', '16', '--data.chips_root', str(tmp_path / 'chips')]
    argv += ['--trainer.fast_dev_run', 'true', '--trainer.default_root_dir']
    argv += [str(tmp_path / 'runs')]
    # in_channels comes from data.modalities (5 for sar, osm, dsm): a wrong count
    # fails the first convolution
    assert main(argv) == 0


def test_cli_config_sets_in_channels(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(['fit', '--config', str(CONFIG), '--print_config'])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert 'class_path: torchgeo.tasks.Classification' in text
    assert 'stacked: true' in text


def test_stacked_mode_leaves_out_unlabelled_chips(
    training_scene: Path, tmp_path: Path
) -> None:
    # label polygons turned into rings: they overlap their footprint (the building
    # is labelled) but not the window centre, so its chip's label is -1
    scene = tmp_path / 'scene'
    shutil.copytree(training_scene, scene, ignore=shutil.ignore_patterns('chips'))
    manifest = json.loads((scene / 'scene.json').read_text())
    for city in ('nurdagi', 'islahiye', 'adiyaman'):
        path = scene / city / manifest['cities'][city]['files']['labels']
        graded = gpd.read_file(path)
        rings = graded.geometry.iloc[:6].boundary.buffer(0.4)
        graded.loc[graded.index[:6], 'geometry'] = rings.to_numpy()
        graded.to_file(path, driver='GeoJSON')
    plain = make(scene, tmp_path / 'chips', modalities=['sar'])
    stacked = make(scene, tmp_path / 'chips', modalities=['sar'], stacked=True)
    for data in (plain, stacked):
        data.setup('fit')
        data.setup('test')

    def labels(dataset: Any) -> torch.Tensor:  # noqa: ANN401
        return torch.tensor([int(dataset[i]['label']) for i in range(len(dataset))])

    for name in ('train_dataset', 'val_dataset'):
        before = labels(getattr(plain, name))
        after = labels(getattr(stacked, name))
        assert (before == -1).sum() >= 3, name  # the rings took effect
        assert (after >= 0).all(), name
        assert len(after) == int((before >= 0).sum()), name
    for before_set, after_set in zip(plain.test_datasets, stacked.test_datasets):
        before, after = labels(before_set), labels(after_set)
        assert (after >= 0).all()
        assert torch.equal(after, before[before >= 0])
