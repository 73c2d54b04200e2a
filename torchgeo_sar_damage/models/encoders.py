# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Building blocks of :class:`~torchgeo_sar_damage.models.FusionNet`.

Image branches wrap any `timm <https://huggingface.co/docs/timm>`_ backbone created with
random initialisation (``pretrained=False``: nothing is ever downloaded); weights come
only from a local file through :func:`load_encoder_state`.
"""

import os
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.models import FeatureInfo, adapt_input_conv
from torch import Tensor, nn

from ..errors import InputFileError

#: Batch keys (and their channel counts) that feed each image modality, in the order
#: they are stacked. Tabular-only modalities (``gem``) are absent.
IMAGE_INPUTS: dict[str, tuple[tuple[str, int], ...]] = {
    'sar': (('sar', 1), ('sar_valid', 1)),
    'osm': (('footprint', 2),),
    'dsm': (('dsm', 1),),
}


def image_channels(modality: str) -> int:
    """Number of input channels of an image modality.

    Args:
        modality: ``'sar'``, ``'osm'`` or ``'dsm'``.

    Returns:
        The sum of the channels of the batch keys in :data:`IMAGE_INPUTS`.
    """
    return sum(channels for _, channels in IMAGE_INPUTS[modality])


def image_input(batch: Mapping[str, Tensor], modality: str) -> Tensor:
    """Stack the batch tensors of one image modality along the channel axis.

    Args:
        batch: the model batch (see ``docs/design/batch_contract.md``).
        modality: ``'sar'`` (``sar`` + ``sar_valid``), ``'osm'`` (``footprint``) or
            ``'dsm'`` (``dsm``).

    Returns:
        A float tensor [B, C, H, W].
    """
    tensors = [batch[key] for key, _ in IMAGE_INPUTS[modality]]
    x = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)
    return x if x.is_floating_point() else x.float()


class ImageBranch(nn.Module):
    """A timm backbone and a projection of its pooled last feature map.

    The backbone is ``timm.create_model(backbone, pretrained=False, features_only=True,
    in_chans=in_chans)``, so any timm model with feature extraction support works and
    its state dict keys are those of the timm classifier without its head.
    """

    def __init__(self, backbone: str, in_chans: int, embed_dim: int) -> None:
        """Initialise a new ImageBranch.

        Args:
            backbone: a timm model name, e.g. ``'resnet18'`` or ``'efficientnet_b0'``.
            in_chans: number of input channels.
            embed_dim: size of the embedding returned by :meth:`embed`.
        """
        super().__init__()
        self.backbone = backbone
        self.in_chans = in_chans
        self.encoder = timm.create_model(
            backbone, pretrained=False, features_only=True, in_chans=in_chans
        )
        info = self.encoder.feature_info
        assert isinstance(info, FeatureInfo)
        self.channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())
        self.proj = nn.Sequential(
            nn.Linear(self.channels[-1], embed_dim), nn.ReLU(inplace=True)
        )

    def features(self, x: Tensor) -> list[Tensor]:
        """Feature maps of every stage of the backbone.

        Args:
            x: input [B, in_chans, H, W].

        Returns:
            One [B, C_i, H / r_i, W / r_i] map per stage (see :attr:`channels` and
            :attr:`reductions`).
        """
        features: list[Tensor] = self.encoder(x)
        return features

    def embed(self, features: list[Tensor]) -> Tensor:
        """Global average pooling of the last feature map, then projection.

        Args:
            features: output of :meth:`features`.

        Returns:
            The embedding [B, embed_dim].
        """
        pooled = F.adaptive_avg_pool2d(features[-1], 1).flatten(1)
        out: Tensor = self.proj(pooled)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Embed an image.

        Args:
            x: input [B, in_chans, H, W].

        Returns:
            The embedding [B, embed_dim].
        """
        return self.embed(self.features(x))


class TabularBranch(nn.Sequential):
    """MLP for standardised tabular features: LayerNorm, Linear, ReLU, Dropout, Linear."""

    def __init__(self, in_features: int, embed_dim: int, dropout: float) -> None:
        """Initialise a new TabularBranch.

        Args:
            in_features: number of tabular columns.
            embed_dim: size of the output embedding.
            dropout: dropout probability after the first layer.
        """
        super().__init__(
            nn.LayerNorm(in_features),
            nn.Linear(in_features, embed_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(embed_dim, embed_dim),
            nn.ReLU(inplace=True),
        )


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict from a local file with ``torch.load(weights_only=True)``.

    A Lightning checkpoint (a dict with a ``state_dict`` entry) is accepted too.

    Args:
        path: the file.

    Returns:
        The tensors by name.

    Raises:
        InputFileError: if the file is missing, unreadable or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(
            path,
            'weights file does not exist; pass the path of a local state dict '
            '(weights are never downloaded)',
        )
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:
        raise InputFileError(
            path,
            f'cannot be read by torch.load(weights_only=True): {err}; save a plain '
            'state dict with torch.save(module.state_dict(), path)',
        ) from err
    if isinstance(obj, Mapping) and isinstance(obj.get('state_dict'), Mapping):
        obj = obj['state_dict']
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise InputFileError(
            path, 'is not a state dict (a mapping of parameter names to tensors)'
        )
    return dict(obj)


def find_prefixes(
    state: Mapping[str, Tensor], target: Mapping[str, Tensor]
) -> list[str]:
    """Prefixes under which ``state`` holds every key of ``target``.

    Args:
        state: a loaded state dict, e.g. of a whole model or Lightning module.
        target: the state dict of the module to fill.

    Returns:
        Every prefix ``p`` (``''`` or ending with ``'.'``) such that ``p + key`` is in
        ``state`` for every key of ``target``, shortest first.
    """
    if not target:
        return ['']
    first = next(iter(target))
    candidates = {
        key[: -len(first)]
        for key in state
        if key.endswith(first)
        and (len(key) == len(first) or key[-len(first) - 1] == '.')
    }
    found = [p for p in candidates if all(p + key in state for key in target)]
    return sorted(found, key=lambda p: (len(p), p))


def load_encoder_state(
    branch: ImageBranch,
    state: Mapping[str, Tensor],
    prefix: str,
    path: str | os.PathLike[str],
) -> None:
    """Load the backbone of an image branch from a (sub) state dict.

    Keys of the timm classifier that feature extraction drops (e.g. ``fc`` or
    ``conv_head``) are ignored; any other extra key under ``prefix`` means another
    architecture and is an error. The first convolution may have a different number of input
    channels: 3-channel (RGB) weights are adapted by timm's ``adapt_input_conv``;
    weights with fewer channels fill the first input channels and the others start at
    zero (so SAR encoder weights load into an ``early`` encoder whose extra channels
    are the footprint and DSM).

    Args:
        branch: the branch whose ``encoder`` is filled.
        state: the loaded state dict.
        prefix: prefix of the backbone's keys in ``state``.
        path: the file ``state`` came from (for error messages).

    Raises:
        InputFileError: if the keys or a tensor's shape do not fit the backbone.
    """
    own = branch.encoder.state_dict()
    extra = {k[len(prefix) :] for k in state if k.startswith(prefix)} - set(own)
    if extra:
        full = timm.create_model(branch.backbone, pretrained=False)
        extra -= set(full.state_dict())
    if extra:
        raise InputFileError(
            path,
            f'has keys {sorted(extra)[:3]} that a {branch.backbone} backbone lacks; '
            'was it saved from another backbone?',
        )
    first_conv = next((k for k, v in own.items() if v.ndim == 4), None)
    new: dict[str, Tensor] = {}
    for key, target in own.items():
        value = state[prefix + key]
        if value.shape != target.shape:
            if key == first_conv and value.shape[:1] + value.shape[2:] == (
                target.shape[:1] + target.shape[2:]
            ):
                value = _adapt_first_conv(value, target.shape[1], path, key)
            else:
                raise InputFileError(
                    path,
                    f'{prefix + key} has shape {tuple(value.shape)} but the '
                    f'{type(branch.encoder).__name__} backbone expects '
                    f'{tuple(target.shape)}; was it saved from another backbone?',
                )
        new[key] = value.to(target.dtype)
    branch.encoder.load_state_dict(new)


def _adapt_first_conv(
    weight: Tensor, in_chans: int, path: str | os.PathLike[str], key: str
) -> Tensor:
    """Adapt the input channels of a first convolution (see load_encoder_state)."""
    have = weight.shape[1]
    if have == 3:
        adapted: Tensor = adapt_input_conv(in_chans, weight)
        return adapted
    if have < in_chans:
        pad = weight.new_zeros((weight.shape[0], in_chans - have, *weight.shape[2:]))
        return torch.cat([weight, pad], dim=1)
    raise InputFileError(
        path,
        f'{key} takes {have} input channels but the encoder takes {in_chans}; only '
        '3-channel weights or weights with fewer channels can be adapted',
    )
