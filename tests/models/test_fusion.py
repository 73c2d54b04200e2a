# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import itertools
import socket
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from torch import Tensor

from torchgeo_sar_damage.batch import IMAGE_INPUTS, image_channel_count, stack_images
from torchgeo_sar_damage.errors import ArgumentError, InputFileError
from torchgeo_sar_damage.models import FUSIONS, MODALITIES, FusionNet

TABULAR = 5

#: Every non-empty modality subset x fusion x with/without tabular features, where valid.
CONFIGS = [
    (subset, fusion, tabular)
    for n in range(1, len(MODALITIES) + 1)
    for subset in itertools.combinations(MODALITIES, n)
    for fusion in FUSIONS
    for tabular in (0, TABULAR)
    if FUSIONS[fusion].required <= set(subset) and not ('gem' in subset and not tabular)
]


def make_batch(
    size: int = 2, px: int = 32, tabular: int = TABULAR
) -> dict[str, Tensor]:
    footprint = torch.zeros(size, 2, px, px)
    footprint[:, 0, px // 4 : px // 2, px // 4 : px // 2] = 1
    footprint[:, 1, : px // 8, : px // 8] = 1
    return {
        'sar': torch.randn(size, 1, px, px),
        'sar_valid': torch.ones(size, 1, px, px),
        'footprint': footprint,
        'dsm': torch.rand(size, 1, px, px),
        'optical': torch.randn(size, 3, px, px),
        'tabular': torch.randn(size, tabular),
        'label': torch.zeros(size, dtype=torch.long),
    }


def conv1(model: FusionNet, name: str) -> Tensor:
    """First convolution weight of an image branch."""
    return next(model.fusion.branch(name).encoder.parameters())


def branch_params(model: FusionNet) -> dict[str, Tensor]:
    """One parameter of every branch the model uses."""
    params: dict[str, Tensor] = {'head': next(model.head.parameters())}
    for name in model.fusion.encoders:
        params[f'encoder {name}'] = conv1(model, name)
    if model.fusion.tabular is not None:
        params['tabular'] = model.fusion.tabular.get_parameter('1.weight')
    for name, module in model.fusion.named_children():
        if isinstance(module, torch.nn.MultiheadAttention):
            params[name] = module.in_proj_weight
    return params


@pytest.mark.parametrize(
    ('modalities', 'fusion', 'tabular'),
    CONFIGS,
    ids=['-'.join(c[0]) + f'-{c[1]}-tab{c[2]}' for c in CONFIGS],
)
def test_shapes_and_gradients(
    modalities: tuple[str, ...], fusion: str, tabular: int
) -> None:
    torch.manual_seed(0)
    model = FusionNet(modalities, fusion, tabular_features=tabular, num_outputs=2)
    expected = set(IMAGE_INPUTS) & set(modalities)
    if fusion == 'early' and expected:
        assert len(model.fusion.encoders) == 1
    elif fusion != 'early':
        assert set(model.fusion.encoders) == expected
    for px in (32, 64):
        model.train()
        model.zero_grad()
        out = model(make_batch(3, px, tabular))
        assert out.shape == (3, 2)
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters())
        for name, param in branch_params(model).items():
            assert param.grad is not None, name
            assert param.grad.abs().sum() > 0, name
        model.eval()
        with torch.no_grad():
            assert model(make_batch(1, px, tabular)).shape == (1, 2)


@pytest.mark.parametrize('fusion', sorted(FUSIONS))
def test_small_window_batch_of_one(fusion: str) -> None:
    model = FusionNet(('sar', 'osm', 'dsm'), fusion).eval()
    with torch.no_grad():
        assert model(make_batch(1, 16, 0)).shape == (1, 1)
    model.train()
    assert model(make_batch(2, 16, 0)).shape == (2, 1)


def test_training_batch_of_one_on_1x1_map() -> None:
    model = FusionNet(('sar',)).train()
    with pytest.raises(ArgumentError, match='drop_last'):
        model(make_batch(1, 32, 0))
    assert model(make_batch(1, 64, 0)).shape == (1, 1)


def test_context_only_tabular() -> None:
    model = FusionNet(('gem',), 'late', tabular_features=TABULAR)
    assert len(model.fusion.encoders) == 0
    batch = {'tabular': torch.randn(4, TABULAR)}
    assert model(batch).shape == (4, 1)


def test_extra_and_uint8_inputs() -> None:
    model = FusionNet(('sar', 'osm'), 'attention').eval()
    batch = make_batch(2, 32, 0)
    batch['footprint'] = batch['footprint'].to(torch.uint8)
    with torch.no_grad():
        assert model(batch).shape == (2, 1)


def test_attention_without_target_pixels() -> None:
    model = FusionNet(('sar', 'osm'), 'attention').eval()
    batch = make_batch(2, 32, 0)
    batch['footprint'].zero_()
    with torch.no_grad():
        assert torch.isfinite(model(batch)).all()


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'modalities': ('sar', 'lidar')}, r"unknown \['lidar'\].*'sar', 'osm'"),
        (
            {'modalities': ('sar', 'optical'), 'pretrained': ('optical',)},
            'optical encoder cannot start from TorchGeo weights',
        ),
        ({'modalities': ()}, 'empty'),
        ({'fusion': 'middle'}, r"unknown 'middle'.*\['attention', 'early', 'late'\]"),
        ({'modalities': ('sar',), 'fusion': 'attention'}, r"needs.*\['osm'\]"),
        ({'modalities': ('osm', 'dsm'), 'fusion': 'attention'}, r"\['sar'\]"),
        ({'modalities': ('sar', 'gem')}, 'tabular_features must be > 0'),
        ({'num_outputs': 0}, 'num_outputs'),
        ({'dropout': 1.0}, 'dropout'),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        FusionNet(**kwargs)


def test_unknown_backbone() -> None:
    with pytest.raises(RuntimeError, match='nonexistent_net'):
        FusionNet(backbone='nonexistent_net')


@pytest.fixture(scope='module')
def full_model() -> FusionNet:
    return FusionNet(('sar', 'osm', 'dsm', 'gem'), 'late', tabular_features=TABULAR)


@pytest.mark.parametrize('key', ['sar', 'sar_valid', 'footprint', 'dsm', 'tabular'])
def test_missing_batch_key(full_model: FusionNet, key: str) -> None:
    batch = make_batch()
    del batch[key]
    with pytest.raises(ArgumentError, match=f"no '{key}' key"):
        full_model(batch)


@pytest.mark.parametrize(
    ('key', 'shape', 'match'),
    [
        ('footprint', (2, 1, 32, 32), r"batch\['footprint'\].*\[B, 2, H, W\]"),
        ('sar', (2, 2, 32, 32), r"batch\['sar'\].*\[B, 1, H, W\]"),
        ('dsm', (2, 32, 32), r"batch\['dsm'\]"),
        ('tabular', (2, TABULAR + 1), r"batch\['tabular'\].*\[B, 5\]"),
        ('dsm', (3, 1, 32, 32), 'samples'),
    ],
)
def test_wrong_shape(
    full_model: FusionNet, key: str, shape: tuple[int, ...], match: str
) -> None:
    batch = make_batch()
    batch[key] = torch.zeros(shape)
    with pytest.raises(ArgumentError, match=match):
        full_model(batch)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: the hub is offline and sockets refuse to connect."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError('network access attempted')

    monkeypatch.setattr(socket.socket, 'connect', refuse)


@pytest.mark.usefixtures('offline')
def test_weights_whole_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config: dict[str, Any] = {
        'modalities': ('sar', 'osm', 'gem'),
        'fusion': 'attention',
        'tabular_features': TABULAR,
        'num_outputs': 4,
    }
    model = FusionNet(**config).eval()
    path = tmp_path / 'model.pt'
    torch.save(model.state_dict(), path)
    torch.manual_seed(1)
    loaded = FusionNet(**config, weights=path).eval()
    batch = make_batch(2, 32)
    with torch.no_grad():
        assert torch.equal(model(batch), loaded(batch))
    # a Lightning-style checkpoint with a prefix
    torch.save(
        {'state_dict': {f'model.{k}': v for k, v in model.state_dict().items()}}, path
    )
    loaded = FusionNet(**config, weights=str(path)).eval()
    with torch.no_grad():
        assert torch.equal(model(batch), loaded(batch))


@pytest.mark.usefixtures('offline')
def test_weights_sar_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    timm_model = timm.create_model('resnet18', pretrained=False, in_chans=2)
    path = tmp_path / 'resnet18_sar.pt'
    torch.save(timm_model.state_dict(), path)
    model = FusionNet(('sar', 'osm'), 'late', weights=path)
    branch = model.fusion.sar_encoder
    assert branch is not None
    for key, value in branch.encoder.state_dict().items():
        assert torch.equal(value, timm_model.state_dict()[key]), key
    assert not torch.equal(
        conv1(model, 'osm'), timm_model.get_parameter('conv1.weight')
    )


@pytest.mark.usefixtures('offline')
def test_weights_sar_encoder_into_early(tmp_path: Path) -> None:
    late = FusionNet(('sar', 'osm'), 'late', num_outputs=4)
    path = tmp_path / 'late.pt'
    torch.save(late.state_dict(), path)
    early = FusionNet(('sar', 'osm', 'dsm'), 'early', weights=path)
    conv = conv1(early, 'image')
    sar_conv = conv1(late, 'sar')
    assert conv.shape[1] == 5
    assert torch.equal(conv[:, :2], sar_conv)
    assert not conv[:, 2:].any()
    # RGB weights are adapted by timm
    rgb = timm.create_model('resnet18', pretrained=False)
    torch.save(rgb.state_dict(), path)
    early = FusionNet(('sar', 'osm', 'dsm'), 'early', weights=path)
    assert conv1(early, 'image').shape[1] == 5


@pytest.mark.usefixtures('offline')
def test_weights_errors(tmp_path: Path) -> None:
    missing = tmp_path / 'missing.pt'
    with pytest.raises(InputFileError, match=r'missing\.pt.*does not exist'):
        FusionNet(weights=missing)
    path = tmp_path / 'resnet34.pt'
    torch.save(timm.create_model('resnet34', pretrained=False).state_dict(), path)
    with pytest.raises(InputFileError, match=r'resnet34\.pt'):
        FusionNet(weights=path)
    path = tmp_path / 'effnet.pt'
    torch.save(
        timm.create_model('efficientnet_b0', pretrained=False).state_dict(), path
    )
    with pytest.raises(InputFileError, match=r'effnet\.pt.*neither'):
        FusionNet(weights=path)
    path = tmp_path / 'junk.pt'
    torch.save({'a': 1}, path)
    with pytest.raises(InputFileError, match=r'junk\.pt.*not a state dict'):
        FusionNet(weights=path)
    path.write_text('not a checkpoint')
    with pytest.raises(InputFileError, match=r'junk\.pt.*torch.load'):
        FusionNet(weights=path)
    torch.save(FusionNet().state_dict(), path)
    with pytest.raises(InputFileError, match="no 'sar'"):
        FusionNet(('osm',), weights=path)


@pytest.mark.usefixtures('offline')
@pytest.mark.parametrize(
    ('backbone', 'fusion'), [('resnet34', 'late'), ('efficientnet_b0', 'attention')]
)
def test_any_timm_backbone(backbone: str, fusion: str) -> None:
    model = FusionNet(('sar', 'osm'), fusion, backbone=backbone).eval()
    with torch.no_grad():
        assert model(make_batch(2, 32, 0)).shape == (2, 1)


def test_same_seed_same_initialisation() -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(42)
        states.append(FusionNet(('sar', 'osm', 'dsm'), 'attention').state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    torch.manual_seed(43)
    other = FusionNet(('sar', 'osm', 'dsm'), 'attention').state_dict()
    assert not all(torch.equal(states[0][k], other[k]) for k in other)


#: Modality sets with the optical image and the fusions each can use.
OPTICAL_SETS = [(('sar', 'optical'), fusion) for fusion in ('early', 'late')] + [
    (('sar', 'osm', 'optical'), fusion) for fusion in sorted(FUSIONS)
]
OPTICAL_IDS = ['-'.join(m) + f'-{f}' for m, f in OPTICAL_SETS]


def optical_weight(model: FusionNet) -> tuple[Tensor, slice]:
    """The first convolution that sees the optical image, and its optical channels."""
    if model.fusion_name == 'early':
        return conv1(model, 'image'), slice(-3, None)
    return conv1(model, 'optical'), slice(None)


def blind_to_optical(model: FusionNet) -> None:
    """Zero the weights through which the optical image reaches the output."""
    with torch.no_grad():
        if model.fusion_name == 'early':
            conv1(model, 'image')[:, -3:] = 0
        else:
            for param in model.fusion.branch('optical').proj.parameters():
                param.zero_()


@pytest.mark.parametrize(('modalities', 'fusion'), OPTICAL_SETS, ids=OPTICAL_IDS)
def test_optical_input_changes_the_output(
    modalities: tuple[str, ...], fusion: str
) -> None:
    torch.manual_seed(0)
    model = FusionNet(modalities, fusion).eval()
    weight, channels = optical_weight(model)
    assert weight[:, channels].shape[1] == 3
    batch = make_batch(2, 32, 0)
    other = {**batch, 'optical': torch.randn_like(batch['optical'])}
    with torch.no_grad():
        assert not torch.allclose(model(batch), model(other))
        # the difference goes through the optical weights: without them there is none
        blind_to_optical(model)
        assert torch.allclose(model(batch), model(other), rtol=0, atol=1e-6)
        # and the other modalities still count
        sar = {**batch, 'sar': torch.randn_like(batch['sar'])}
        assert not torch.allclose(model(batch), model(sar))


@pytest.mark.parametrize(('modalities', 'fusion'), OPTICAL_SETS, ids=OPTICAL_IDS)
def test_gradients_reach_the_optical_encoder(
    modalities: tuple[str, ...], fusion: str
) -> None:
    torch.manual_seed(0)
    model = FusionNet(modalities, fusion, num_outputs=4).train()
    out = model(make_batch(3, 32, 0))
    assert out.shape == (3, 4)
    out.sum().backward()
    weight, channels = optical_weight(model)
    assert weight.grad is not None
    assert weight.grad[:, channels].abs().sum() > 0
    if fusion != 'early':
        assert set(model.fusion.encoders) == set(modalities) & set(IMAGE_INPUTS)
        assert conv1(model, 'optical').shape[1] == 3


def test_early_fusion_stacks_optical_last() -> None:
    modalities = ('sar', 'osm', 'dsm', 'optical')
    model = FusionNet(modalities, 'early').eval()
    assert conv1(model, 'image').shape[1] == image_channel_count(modalities) == 8
    seen: list[Tensor] = []
    model.fusion.branch('image').register_forward_pre_hook(
        lambda module, args: seen.append(args[0])
    )
    batch = make_batch(2, 32, 0)
    with torch.no_grad():
        model(batch)
    (x,) = seen
    assert torch.equal(x, stack_images(batch, modalities[::-1]))
    assert torch.equal(x[:, -3:], batch['optical'])
    assert torch.equal(x[:, :2], torch.cat([batch['sar'], batch['sar_valid']], 1))


def test_optical_batch_key_is_checked() -> None:
    model = FusionNet(('sar', 'optical'), 'late')
    batch = make_batch()
    del batch['optical']
    with pytest.raises(ArgumentError, match="no 'optical' key"):
        model(batch)
    batch['optical'] = torch.zeros(2, 1, 32, 32)
    with pytest.raises(ArgumentError, match=r"batch\['optical'\].*\[B, 3, H, W\]"):
        model(batch)
