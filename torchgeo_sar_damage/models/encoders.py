# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Building blocks of :class:`~torchgeo_sar_damage.models.FusionNet`.

Image branches wrap any `timm <https://huggingface.co/docs/timm>`_ backbone, or one of
:data:`BACKBONES` (torchvision's Swin V2, for TorchGeo's SatlasPretrain weights), created
with random initialisation (``pretrained=False``: nothing is ever downloaded); weights
come from a local file or TorchGeo's weights through :func:`load_encoder_state`.
"""

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.models import FeatureInfo, adapt_input_conv
from timm.models._features import FeatureGetterNet
from torch import Tensor, nn

from ..batch import IMAGE_INPUTS
from ..errors import InputFileError


def image_channels(modality: str) -> int:
    """Number of input channels of an image modality.

    Args:
        modality: ``'sar'``, ``'osm'``, ``'dsm'`` or ``'optical'``.

    Returns:
        The sum of the channels of the batch keys in :data:`IMAGE_INPUTS`.
    """
    return sum(channels for _, channels in IMAGE_INPUTS[modality])


def image_input(batch: Mapping[str, Tensor], modality: str) -> Tensor:
    """Stack the batch tensors of one image modality along the channel axis.

    Args:
        batch: the model batch (see ``docs/design/batch_contract.md``).
        modality: ``'sar'`` (``sar`` + ``sar_valid``), ``'osm'`` (``footprint``),
            ``'dsm'`` (``dsm``) or ``'optical'`` (``optical``).

    Returns:
        A float tensor [B, C, H, W].
    """
    tensors = [batch[key] for key, _ in IMAGE_INPUTS[modality]]
    x = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)
    return x if x.is_floating_point() else x.float()


class SwinFeatures(nn.Module):
    """Feature maps of a torchvision Swin Transformer V2 (``swin_v2_t``, ``swin_v2_b``).

    Holds the classifier's ``features`` and ``norm`` under those names, so its state
    dict keys are those of the torchvision model without its ``head`` (TorchGeo's
    SatlasPretrain weights load into it as they do into
    :func:`torchgeo.models.swin_v2_b`). The first convolution takes ``in_chans``
    channels. Swin attends within fixed windows of tokens, so chips are resized to
    :attr:`input_size` (256 px, the SatlasPretrain crop) by :class:`ImageBranch`.
    """

    def __init__(self, name: str, in_chans: int, img_size: int | None = None) -> None:
        """Initialise a new SwinFeatures.

        Args:
            name: ``'swin_v2_t'`` or ``'swin_v2_b'`` (a torchvision builder).
            in_chans: number of input channels.
            img_size: side of the input the chips are resized to (default 256).
        """
        super().__init__()
        model = getattr(torchvision.models, name)(weights=None)
        conv = model.features[0][0]
        assert isinstance(conv, nn.Conv2d)
        if conv.in_channels != in_chans:
            k, stride = conv.kernel_size, conv.stride
            model.features[0][0] = nn.Conv2d(
                in_chans, conv.out_channels, (k[0], k[-1]), (stride[0], stride[-1])
            )
        self.features = model.features
        self.norm = model.norm
        #: Indices of ``features`` after which a stage ends.
        self.stages = (1, 3, 5, 7)
        self.channels = [
            int(model.features[i][0].norm1.normalized_shape[0]) for i in self.stages
        ]
        self.reductions = [4, 8, 16, 32]
        self.input_size = (img_size or 256, img_size or 256)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps [B, C_i, H / r_i, W / r_i] of the four stages."""
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.stages:
                y = self.norm(x) if i == self.stages[-1] else x
                out.append(y.permute(0, 3, 1, 2))
        return out


def _swin(name: str) -> Callable[..., nn.Module]:
    def build(in_chans: int, img_size: int | None = None) -> nn.Module:
        return SwinFeatures(name, in_chans, img_size)

    return build


def _swin_classifier(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        model: nn.Module = getattr(torchvision.models, name)(weights=None)
        return model

    return build


#: Backbones that are not timm models, by name: a builder
#: ``(in_chans, img_size) -> module`` whose module returns a list of feature maps and
#: has ``channels``, ``reductions`` and ``input_size`` attributes, and a builder of the
#: whole classifier (whose extra keys, such as a head, weights files may hold). Every
#: other name is a timm model. A new backbone is one entry.
BACKBONES: dict[str, tuple[Callable[..., nn.Module], Callable[[], nn.Module]]] = {
    name: (_swin(name), _swin_classifier(name)) for name in ('swin_v2_t', 'swin_v2_b')
}


def backbone_exists(name: str) -> bool:
    """Whether :class:`ImageBranch` can build a backbone called ``name``."""
    return name in BACKBONES or bool(timm.is_model(name))


class ImageBranch(nn.Module):
    """A backbone and a projection of its pooled last feature map.

    The backbone is ``timm.create_model(backbone, pretrained=False, features_only=True,
    in_chans=in_chans)``, so any timm model with feature extraction support works and
    its state dict keys (of :attr:`state_module`) are those of the timm classifier
    without its head; or an entry of :data:`BACKBONES`.

    Backbones that need a fixed input size (timm vision transformers, whose position
    embeddings are learnt for one token grid, and Swin, whose windows would be mostly
    padding on a 16-64 px chip) have an :attr:`input_size`: every input is resized
    to it (bilinear) before the backbone, so the feature maps cover the same ground as
    the chip at a finer grid. Convolutional backbones take the chip as it is.
    """

    def __init__(
        self, backbone: str, in_chans: int, embed_dim: int, img_size: int | None = None
    ) -> None:
        """Initialise a new ImageBranch.

        Args:
            backbone: a timm model name, e.g. ``'resnet18'`` or ``'efficientnet_b0'``,
                or a key of :data:`BACKBONES`.
            in_chans: number of input channels.
            embed_dim: size of the embedding returned by :meth:`embed`.
            img_size: input size of backbones that take one (timm's ``img_size`` of
                vision transformers, Swin's resize; the model's default when None).
                Convolutional backbones, which take any size, ignore it.
        """
        super().__init__()
        self.backbone = backbone
        self.in_chans = in_chans
        self.img_size = img_size
        #: Side of the input the backbone needs ((H, W); None: any size).
        self.input_size: tuple[int, int] | None = None
        self.encoder: nn.Module
        if backbone in BACKBONES:
            encoder: Any = BACKBONES[backbone][0](in_chans, img_size)
            self.encoder = encoder
            self.channels: list[int] = list(encoder.channels)
            self.reductions: list[int] = list(encoder.reductions)
            self.input_size = encoder.input_size
        else:
            self.encoder = self._create_timm(features_only=True, in_chans=in_chans)
            info = self.encoder.feature_info
            assert isinstance(info, FeatureInfo)
            self.channels = list(info.channels())
            self.reductions = list(info.reduction())
            patch = getattr(self.state_module, 'patch_embed', None)
            if getattr(patch, 'strict_img_size', False):
                size = patch.img_size  # type: ignore[union-attr]
                self.input_size = (int(size[0]), int(size[1]))
        self.proj = nn.Sequential(
            nn.Linear(self.channels[-1], embed_dim), nn.ReLU(inplace=True)
        )

    def _create_timm(self, **kwargs: int | bool) -> nn.Module:
        """``timm.create_model(backbone, pretrained=False)`` with ``img_size`` if taken."""
        options: dict[str, Any] = dict(kwargs)
        if self.img_size is not None:
            try:
                model: nn.Module = timm.create_model(
                    self.backbone, pretrained=False, img_size=self.img_size, **options
                )
                return model
            except TypeError:  # a convolutional backbone takes any size
                pass
        model = timm.create_model(self.backbone, pretrained=False, **options)
        return model

    @property
    def state_module(self) -> nn.Module:
        """The module whose state dict keys are the classifier's (without its head).

        timm wraps vision transformers for feature extraction (``FeatureGetterNet``,
        keys under ``model.``); this is the wrapped model. Others are the encoder.
        """
        if isinstance(self.encoder, FeatureGetterNet):
            model = self.encoder.model
            assert isinstance(model, nn.Module)
            return model
        return self.encoder

    def classifier_keys(self) -> set[str]:
        """State dict keys of the whole classifier of this backbone (head included).

        Built on the ``meta`` device: nothing is allocated or initialised.
        """
        with torch.device('meta'):
            if self.backbone in BACKBONES:
                full = BACKBONES[self.backbone][1]()
            else:
                full = self._create_timm()
        return set(full.state_dict())

    def features(self, x: Tensor) -> list[Tensor]:
        """Feature maps of every stage of the backbone.

        Args:
            x: input [B, in_chans, H, W] (resized to :attr:`input_size` if needed).

        Returns:
            One [B, C_i, H' / r_i, W' / r_i] map per stage (see :attr:`channels` and
            :attr:`reductions`), H', W' the input size the backbone sees.
        """
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode='bilinear')
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

    Keys of the classifier that feature extraction drops (e.g. ``fc``, ``head`` or
    ``conv_head``) are ignored; any other extra key under ``prefix`` means another
    architecture and is an error. The first convolution may have a different number of
    input channels: 3-channel (RGB) weights are adapted by timm's ``adapt_input_conv``;
    weights with fewer channels fill the first input channels and the others start at
    zero (so SAR encoder weights load into an ``early`` encoder whose extra channels
    are the footprint and DSM, and TorchGeo's VV/VH weights into a SAR encoder whose
    last channel is the valid-pixel mask); a one-channel encoder gets the sum over the
    weights' channels (timm's rule).

    Args:
        branch: the branch whose backbone (:attr:`ImageBranch.state_module`) is filled.
        state: the loaded state dict.
        prefix: prefix of the backbone's keys in ``state``.
        path: the file ``state`` came from (for error messages).

    Raises:
        InputFileError: if the keys or a tensor's shape do not fit the backbone.
    """
    module = branch.state_module
    own = module.state_dict()
    extra = {k[len(prefix) :] for k in state if k.startswith(prefix)} - set(own)
    if extra:
        extra -= branch.classifier_keys()
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
    module.load_state_dict(new)


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
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    raise InputFileError(
        path,
        f'{key} takes {have} input channels but the encoder takes {in_chans}; only '
        '3-channel weights, weights with fewer channels or a one-channel encoder can '
        'be adapted',
    )
