# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""TorchGeo weights as FusionNet encoders, the TorchGeo way: a fake weights file in a
temporary torch hub folder, the weights' URL patched, the network blocked."""

import socket
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import Tensor
from torchgeo.models import (
    CROMABase_Weights,
    DOFABase16_Weights,
    ResNet18_Weights,
    ResNet50_Weights,
    Swin_V2_B_Weights,
    ViTSmall16_Weights,
)
from torchvision.models._api import WeightsEnum

from torchgeo_sar_damage.errors import ArgumentError, InputFileError
from torchgeo_sar_damage.models import FusionNet
from torchgeo_sar_damage.models.pretrained import (
    SATLAS_DN_AT_0_DB,
    resolve_weights,
    weights_path,
)

from .test_fusion import make_batch

MOCO = ResNet50_Weights.SENTINEL1_ALL_MOCO
#: The families issue 16 asks for, small first.
SUPPORTED = [
    MOCO,
    ResNet50_Weights.SENTINEL1_ALL_DECUR,
    ResNet50_Weights.SENTINEL1_GRD_SOFTCON,
    ViTSmall16_Weights.SENTINEL1_GRD_MAE,
    ViTSmall16_Weights.SENTINEL1_GRD_FGMAE,
    Swin_V2_B_Weights.SENTINEL1_SI_SATLAS,
]
#: Training-town statistics of sigma nought (dB) for the tests.
MEAN_DB, STD_DB = -9.0, 4.0


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub folder, and no network: downloads and sockets fail."""
    folder = tmp_path / 'hub'
    monkeypatch.setattr(torch.hub, '_hub_dir', str(folder))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError('network access attempted')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    return folder


def classifier(weights: WeightsEnum) -> torch.nn.Module:
    """The whole model the weights are for, randomly initialised, as TorchGeo builds it."""
    name = weights.meta['model']
    in_chans = weights.meta['in_chans']
    if name == 'swin_v2_b':
        model = torchvision.models.swin_v2_b()
        model.features[0][0] = torch.nn.Conv2d(in_chans, 128, (4, 4), (4, 4))
        return model
    model = timm.create_model(name, in_chans=in_chans)
    assert isinstance(model, torch.nn.Module)
    return model


def fake_weights(
    weights: WeightsEnum, monkeypatch: pytest.MonkeyPatch, write: bool = True
) -> dict[str, Tensor]:
    """Patch the weights' URL and write a random state dict where the hub keeps it."""
    url = f'https://example.invalid/weights/fake-{weights.name.lower()}-0123abcd.pth'
    monkeypatch.setattr(weights.value, 'url', url)
    torch.manual_seed(0)
    state = classifier(weights).state_dict()
    if write:
        path = weights_path(weights)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
    return state


def with_statistics(model: FusionNet) -> FusionNet:
    model.set_sar_statistics(MEAN_DB, STD_DB)
    return model


def test_names_and_aliases_resolve() -> None:
    assert resolve_weights(MOCO) is MOCO
    assert resolve_weights('ResNet50_Weights.SENTINEL1_ALL_MOCO') is MOCO
    # an alias get_weight does not find
    assert resolve_weights('ResNet50_Weights.SENTINEL1_GRD_MOCO') is MOCO
    with pytest.raises(ArgumentError, match='neither an existing file nor'):
        resolve_weights('ResNet50_Weights.SENTINEL1_NOPE')
    with pytest.raises(ArgumentError, match='neither an existing file nor'):
        resolve_weights('Nothing_Weights.SENTINEL1_ALL_MOCO')


@pytest.mark.parametrize('weights', SUPPORTED, ids=str)
def test_encoder_equals_the_file(
    weights: WeightsEnum, hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = fake_weights(weights, monkeypatch)
    model = FusionNet(('sar',), weights=str(weights), embed_dim=8)
    branch = model.fusion.branch('sar')
    assert branch.backbone == weights.meta['model']
    own = branch.state_module.state_dict()
    bands = weights.meta['in_chans']
    first = next(k for k, v in own.items() if v.ndim == 4)
    for key, value in own.items():
        if key == first:  # the weights' bands, then the mask starting at zero
            assert value.shape[1] == bands + 1
            assert torch.equal(value[:, :bands], state[key]), key
            assert not value[:, bands:].any()
        else:
            assert torch.equal(value, state[key]), key
    # a forward pass at the project's chip size (resized for ViT and Swin)
    with torch.no_grad():
        out = with_statistics(model).eval()(make_batch(2, 32))
    assert out.shape == (2, 1)
    assert torch.isfinite(out).all()


def test_normalisation_is_the_weights(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_weights(MOCO, monkeypatch)
    model = with_statistics(FusionNet(('sar', 'osm'), 'attention', weights=MOCO))
    batch = make_batch(2, 32)
    batch['sar_valid'][:, :, :4] = 0
    batch['sar'][:, :, :4] = 0
    x = model.fusion.image(batch, 'sar')
    db = batch['sar'] * STD_DB + MEAN_DB
    valid = batch['sar_valid'].bool()
    # SSL4EO-S12's Sentinel-1 statistics, VV then VH, in dB
    for channel, (mean, std) in enumerate(((-12.59, 5.26), (-20.26, 5.91))):
        expected = torch.where(valid, (db - mean) / std, 0.0)
        torch.testing.assert_close(x[:, channel : channel + 1], expected)
    assert torch.equal(x[:, 2:], batch['sar_valid'])
    # what the encoder sees is that input
    seen: list[Tensor] = []
    branch = model.fusion.branch('sar')
    branch.encoder.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        model.eval()(batch)
    torch.testing.assert_close(seen[0], x)


def test_satlas_scale_and_band_order(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = Swin_V2_B_Weights.SENTINEL1_SI_SATLAS
    fake_weights(weights, monkeypatch, write=False)
    model = with_statistics(FusionNet(weights=weights, load_weights=False))
    assert model.sar_input is not None
    assert model.sar_input.bands == ('VH', 'VV')
    batch = make_batch(1, 16)
    x = model.fusion.image(batch, 'sar')
    db = batch['sar'] * STD_DB + MEAN_DB
    expected = (SATLAS_DN_AT_0_DB * 10 ** (db / 20) / 255).clamp(0, 1)
    torch.testing.assert_close(x[:, :2], expected.expand(-1, 2, -1, -1))
    # Swin sees the SatlasPretrain crop size
    assert model.fusion.branch('sar').input_size == (256, 256)


def test_vit_sees_its_input_size(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = ViTSmall16_Weights.SENTINEL1_GRD_MAE
    fake_weights(weights, monkeypatch, write=False)
    model = with_statistics(FusionNet(weights=weights, load_weights=False))
    branch = model.fusion.branch('sar')
    seen: list[tuple[int, ...]] = []
    patch = branch.state_module.get_submodule('patch_embed')
    patch.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        model.eval()(make_batch(2, 16))
    assert seen == [(2, 3, 224, 224)]


def test_missing_file_names_path_and_url(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_weights(MOCO, monkeypatch, write=False)
    path = hub / 'checkpoints' / 'fake-sentinel1_all_moco-0123abcd.pth'
    with pytest.raises(InputFileError, match='nothing is downloaded') as info:
        FusionNet(weights='ResNet50_Weights.SENTINEL1_ALL_MOCO')
    assert info.value.path == str(path)
    assert MOCO.url in str(info.value)


def test_backbone_must_agree(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_weights(MOCO, monkeypatch, write=False)
    with pytest.raises(ArgumentError, match=r"'resnet18' contradicts .*'resnet50'"):
        FusionNet(backbone='resnet18', weights=MOCO, load_weights=False)
    model = FusionNet(backbone='resnet50', weights=MOCO, load_weights=False)
    assert model.fusion.branch('sar').backbone == 'resnet50'


@pytest.mark.parametrize(
    ('weights', 'match'),
    [
        (DOFABase16_Weights.DOFA_MAE, 'DOFA models take the wavelength'),
        (CROMABase_Weights.CROMA_VIT, 'CROMA models take'),
        ('CopernicusFM_Base_Weights.CopernicusFM_ViT', 'CopernicusFM models take'),
        ('Panopticon_Weights.VIT_BASE14', 'Panopticon models take'),
        (ResNet18_Weights.SENTINEL2_ALL_MOCO, 'not SAR polarisations'),
        (ResNet50_Weights.SENTINEL1_GRD_CLOSP, 'input scaling .* not recorded'),
    ],
)
def test_unsupported_weights_are_refused(
    weights: WeightsEnum | str, match: str
) -> None:
    with pytest.raises(ArgumentError, match=match):
        FusionNet(weights=weights, load_weights=False)


def test_pretrained_branches(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = fake_weights(MOCO, monkeypatch)
    conv = state['conv1.weight']
    modalities = ('sar', 'osm', 'dsm')

    def conv1(model: FusionNet, name: str) -> Tensor:
        return model.fusion.branch(name).state_module.get_parameter('conv1.weight')

    default = FusionNet(modalities, weights=MOCO)
    assert torch.equal(conv1(default, 'sar')[:, :2], conv)
    assert not torch.equal(conv1(default, 'osm'), conv)  # from scratch
    assert conv1(default, 'dsm').shape[1] == 1
    every = FusionNet(modalities, weights=MOCO, pretrained=modalities)
    assert torch.equal(conv1(every, 'osm'), conv)
    assert torch.equal(conv1(every, 'dsm'), conv.sum(1, keepdim=True))
    # early fusion: SAR bands, mask, footprint; the last three start at zero
    early = FusionNet(('sar', 'osm'), 'early', weights=MOCO)
    image = conv1(early, 'image')
    assert image.shape[1] == 5
    assert torch.equal(image[:, :2], conv)
    assert not image[:, 2:].any()
    with pytest.raises(ArgumentError, match='pretrained'):
        FusionNet(('sar',), weights=MOCO, pretrained=('dsm',), load_weights=False)


def test_statistics_are_needed(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_weights(MOCO, monkeypatch, write=False)
    model = FusionNet(weights=MOCO, load_weights=False)
    with pytest.raises(ArgumentError, match='set_sar_statistics'):
        model(make_batch(2, 32))
    # the default model has no SAR input and ignores statistics
    plain = FusionNet(backbone='resnet10t')
    plain.set_sar_statistics(MEAN_DB, STD_DB)
    assert plain.sar_input is None
    assert not any('sar_input' in key for key in plain.state_dict())
