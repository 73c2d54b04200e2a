# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Multimodal fusion network for per-building damage classification."""

import os
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models._api import WeightsEnum

from ..batch import IMAGE_INPUTS, MODALITIES
from ..errors import ArgumentError, InputFileError
from .encoders import (
    ImageBranch,
    TabularBranch,
    find_prefixes,
    image_channels,
    image_input,
    load_encoder_state,
    read_state_dict,
)
from .pretrained import (
    PretrainedSARInput,
    check_sar_weights,
    input_size,
    is_weights_name,
    read_weights,
    resolve_weights,
    weights_path,
)

#: Modalities with an image input (the others are tabular only).
IMAGE_MODALITIES = tuple(IMAGE_INPUTS)


class Fusion(nn.Module):
    """Base class of the fusion strategies in :data:`FUSIONS`.

    A fusion builds the encoders of the selected modalities and returns one fused
    embedding per building; :class:`FusionNet` validates the batch and adds the
    classification head. A new fusion is a subclass plus one entry in
    :data:`FUSIONS`.

    Subclasses fill :attr:`encoders` (image branches by name; the one that sees SAR
    is called ``'sar'``, or ``'image'`` when it also sees other modalities) and add to
    :attr:`out_features` in :meth:`build`, and implement :meth:`forward`.
    """

    #: Modalities the fusion cannot work without.
    required: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        modalities: Sequence[str],
        backbone: str,
        tabular_features: int,
        embed_dim: int,
        dropout: float,
        sar_input: PretrainedSARInput | None = None,
        img_size: int | None = None,
    ) -> None:
        """Initialise the tabular branch shared by every fusion.

        Args:
            modalities: the selected modalities, a non-empty subset of
                :data:`MODALITIES` in canonical order.
            backbone: timm name of the image encoders.
            tabular_features: number of tabular columns (0: no tabular branch).
            embed_dim: size of every branch embedding.
            dropout: dropout probability in the tabular branch.
            sar_input: the SAR input of TorchGeo weights (None: ``sar`` and
                ``sar_valid`` as they are).
            img_size: input size of vision transformer backbones (see
                :class:`~torchgeo_sar_damage.models.encoders.ImageBranch`).
        """
        super().__init__()
        self.modalities = tuple(modalities)
        self.images = tuple(m for m in IMAGE_MODALITIES if m in modalities)
        self.backbone = backbone
        self.embed_dim = embed_dim
        self.img_size = img_size
        self.sar_input = sar_input
        self.encoders = nn.ModuleDict()
        self.tabular = (
            TabularBranch(tabular_features, embed_dim, dropout)
            if tabular_features > 0
            else None
        )
        self.out_features = embed_dim if self.tabular is not None else 0
        self.dropout = dropout
        self.build()

    def build(self) -> None:
        """Create the image encoders and anything else the fusion needs.

        Called at the end of ``__init__`` (after the tabular branch, so random
        initialisation happens in the same order for every fusion); subclasses fill
        :attr:`encoders` and add their embedding sizes to :attr:`out_features`.
        """
        raise NotImplementedError

    def channels(self, modality: str) -> int:
        """Input channels of an image modality (the SAR's depend on :attr:`sar_input`)."""
        if modality == 'sar' and self.sar_input is not None:
            return self.sar_input.channels
        return image_channels(modality)

    def image(self, batch: Mapping[str, Tensor], modality: str) -> Tensor:
        """The encoder input [B, C, H, W] of an image modality."""
        if modality == 'sar' and self.sar_input is not None:
            x: Tensor = self.sar_input(batch['sar'], batch['sar_valid'])
            return x
        return image_input(batch, modality)

    def new_branch(self, in_chans: int) -> ImageBranch:
        """An image branch of this fusion's backbone."""
        return ImageBranch(self.backbone, in_chans, self.embed_dim, self.img_size)

    def branch(self, name: str) -> ImageBranch:
        """The image branch called ``name`` (a key of :attr:`encoders`)."""
        branch = self.encoders[name]
        assert isinstance(branch, ImageBranch)
        return branch

    @property
    def sar_encoder(self) -> ImageBranch | None:
        """The image branch that sees the SAR image, if any."""
        for name in ('sar', 'image'):
            if name in self.encoders and 'sar' in self.images:
                return self.branch(name)
        return None

    def tabular_embedding(self, batch: Mapping[str, Tensor]) -> list[Tensor]:
        """The tabular embedding as a one-element list, or no element."""
        return [] if self.tabular is None else [self.tabular(batch['tabular'])]


class EarlyFusion(Fusion):
    """Early fusion: the selected image modalities are input channels of one encoder.

    SAR (``sar``, ``sar_valid``), footprint (2 channels), DSM and optical (red, green,
    blue) are stacked in that order (that of
    :func:`~torchgeo_sar_damage.batch.stack_images`) into one timm backbone, whose
    pooled embedding is concatenated with the tabular embedding. The image inputs
    must share one pixel grid.
    """

    def build(self) -> None:
        """Create the one encoder of the stacked images (called by :class:`Fusion`)."""
        embed_dim = self.embed_dim
        if self.images:
            name = 'sar' if self.images == ('sar',) else 'image'
            in_chans = sum(self.channels(m) for m in self.images)
            self.encoders[name] = self.new_branch(in_chans)
            self.out_features += embed_dim

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Fused embedding [B, out_features] of a model batch."""
        parts = self.tabular_embedding(batch)
        if self.images:
            x = torch.cat([self.image(batch, m) for m in self.images], dim=1)
            (branch,) = self.encoders.values()
            parts.insert(0, branch(x))
        return torch.cat(parts, dim=1)


class LateFusion(Fusion):
    """Late fusion: one encoder per image modality, embeddings concatenated.

    SAR, footprint, DSM and optical each have their own timm backbone (same
    architecture, separate weights); their pooled, projected embeddings and the
    tabular embedding are concatenated.
    """

    def build(self) -> None:
        """Create one encoder per image modality (called by :class:`Fusion`)."""
        embed_dim = self.embed_dim
        for m in self.images:
            self.encoders[m] = self.new_branch(self.channels(m))
            self.out_features += embed_dim

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Fused embedding [B, out_features] of a model batch."""
        parts = [self.encoders[m](self.image(batch, m)) for m in self.images]
        return torch.cat([*parts, *self.tabular_embedding(batch)], dim=1)


class AttentionFusion(LateFusion):
    """Footprint-guided cross-attention of the target building over SAR features.

    Encoders are those of :class:`LateFusion`. In addition:

    * **Keys and values** are SAR spatial tokens: the deepest SAR feature map with
      stride at most 8 (``layer2`` of a ResNet, 4 × 4 tokens for a 32 px window,
      8 × 8 for 64 px), projected to ``embed_dim`` by a 1 × 1 convolution, plus a
      1 × 1 convolution of the footprint averaged onto the token grid (a positional
      code telling each token how much target and neighbour it covers).
    * **The query** is a linear map of the target-mask-pooled SAR tokens (tokens
      weighted by the fraction of target footprint they cover; uniform weights when the
      target covers no token) concatenated with the footprint encoder's embedding.
    * ``nn.MultiheadAttention`` (4 heads, or 2 or 1 when ``embed_dim`` is not a
      multiple of 4) gives the attended token, added to the query and layer-normed.

    The fused embedding concatenates the attended token with the SAR, footprint and
    (if selected) DSM and optical embeddings and the tabular embedding: the optical
    image has its own encoder, as in :class:`LateFusion`, and takes no part in the
    attention. It needs both ``sar`` and ``osm``; choose ``late`` or ``early`` for
    other modality sets.
    """

    required = frozenset({'sar', 'osm'})

    def build(self) -> None:
        """Create the encoders and the attention (called by :class:`Fusion`)."""
        super().build()
        embed_dim, dropout = self.embed_dim, self.dropout
        sar = self.branch('sar')
        small = [i for i, r in enumerate(sar.reductions) if r <= 8]
        self.token_stage = small[-1] if small else 0
        self.token_proj = nn.Conv2d(sar.channels[self.token_stage], embed_dim, 1)
        self.footprint_code = nn.Conv2d(self.channels('osm'), embed_dim, 1)
        self.query = nn.Linear(2 * embed_dim, embed_dim)
        heads = next(h for h in (4, 2, 1) if embed_dim % h == 0)
        self.attention = nn.MultiheadAttention(
            embed_dim, heads, dropout=dropout, batch_first=True
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.out_features += embed_dim

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Fused embedding [B, out_features] of a model batch."""
        sar = self.branch('sar')
        footprint = self.image(batch, 'osm')
        features = sar.features(self.image(batch, 'sar'))
        parts = {'sar': sar.embed(features)}
        for m in self.images[1:]:
            parts[m] = self.encoders[m](self.image(batch, m))

        grid = features[self.token_stage]
        area = F.adaptive_avg_pool2d(footprint, (grid.shape[-2], grid.shape[-1]))
        tokens = self.token_proj(grid) + self.footprint_code(area)
        tokens = tokens.flatten(2).transpose(1, 2)  # [B, N, E]
        weight = area[:, 0].flatten(1)  # target fraction per token, [B, N]
        weight = torch.where(
            weight.sum(1, keepdim=True) > 0, weight, torch.ones_like(weight)
        )
        weight = weight / weight.sum(1, keepdim=True)
        pooled = torch.einsum('bn,bne->be', weight, tokens)
        query = self.query(torch.cat([pooled, parts['osm']], dim=1)).unsqueeze(1)
        attended, _ = self.attention(query, tokens, tokens, need_weights=False)
        attended = self.norm(query + attended).squeeze(1)
        return torch.cat(
            [attended, *parts.values(), *self.tabular_embedding(batch)], dim=1
        )


#: Fusion strategies by name: a new fusion is one entry.
FUSIONS: dict[str, type[Fusion]] = {
    'early': EarlyFusion,
    'late': LateFusion,
    'attention': AttentionFusion,
}


class FusionNet(nn.Module):
    """Per-building damage classifier fusing SAR with footprint, DSM, GEM and optical.

    Each sample is a window centred on one building (batch contract:
    ``docs/design/batch_contract.md``). The selected
    modalities are encoded and fused by a strategy from :data:`FUSIONS`:

    * ``'early'``: :class:`EarlyFusion`, SAR, footprint, DSM and optical stacked as
      channels of one encoder;
    * ``'late'``: :class:`LateFusion`, one encoder per image modality;
    * ``'attention'``: :class:`AttentionFusion`, footprint-guided cross-attention over
      SAR tokens (needs ``sar`` and ``osm``).

    Every fusion adds the tabular branch (LayerNorm, Linear, ReLU, Dropout, Linear)
    when ``tabular_features > 0``, and works without ``sar`` (a context-only baseline)
    unless it requires it. The head is Linear, ReLU, Dropout, Linear.

    ``'optical'`` is the pre-event optical image (``optical``, red, green, blue,
    standardised per channel; see the batch contract) of the benchmark datasets with
    optical imagery: its encoder is one more image branch of the same backbone, with
    3 input channels.

    Image encoders are timm backbones with random initialisation; nothing is
    downloaded. ``weights`` is TorchGeo weights (a ``WeightsEnum`` member or its name,
    see below) or names a local file read with ``torch.load(weights_only=True)``,
    holding either

    * a state dict of a whole ``FusionNet`` of the same configuration (same keys and
      shapes; or a Lightning checkpoint whose ``state_dict`` contains one under a
      prefix such as ``model.``), loaded as is; or
    * a state dict of the SAR encoder's backbone: a timm model of the same
      architecture (``timm.create_model(backbone).state_dict()``; its classifier keys
      are ignored), or any state dict that contains one under a prefix (a
      ``FusionNet`` of another fusion or head, say). Only the encoder that sees SAR is
      loaded; its first convolution is adapted when the input channels differ (see
      :func:`~torchgeo_sar_damage.models.encoders.load_encoder_state`).

    **TorchGeo weights** (``ResNet50_Weights.SENTINEL1_ALL_MOCO``, ...; see
    :mod:`~torchgeo_sar_damage.models.pretrained` for which are supported and how the
    SAR is fed to them) decide the backbone (``meta['model']``; a ``backbone`` that
    says otherwise is an error) and the SAR input: the encoder of each modality in
    ``pretrained`` (``'sar'`` by default) starts from them, the others from scratch
    (the optical encoder always: the supported weights are Sentinel-1 SAR weights).
    The file is read from torch hub's cache, never downloaded. The SAR standardisation
    needs the training towns' statistics: :meth:`set_sar_statistics`.

    .. note::

       Backbones keep timm's BatchNorm. A stride-32 backbone on 32 px windows ends in
       a 1 × 1 map, so *training* on a batch of one fails in BatchNorm; drop the last
       incomplete training batch or use windows of at least 64 px. Evaluation works
       with any batch size.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        modalities: Sequence[str] = ('sar',),
        fusion: str = 'late',
        backbone: str | None = None,
        tabular_features: int = 0,
        num_outputs: int = 1,
        weights: WeightsEnum | str | os.PathLike[str] | None = None,
        embed_dim: int = 128,
        dropout: float = 0.2,
        pretrained: Sequence[str] = ('sar',),
        load_weights: bool = True,
    ) -> None:
        """Initialise a new FusionNet.

        Args:
            modalities: non-empty subset of ``'sar'``, ``'osm'``, ``'dsm'``, ``'gem'``,
                ``'optical'``.
            fusion: a key of :data:`FUSIONS`.
            backbone: timm model name of the image encoders (``'resnet18'``,
                ``'resnet34'``, ``'efficientnet_b0'``...) or a key of
                :data:`~torchgeo_sar_damage.models.encoders.BACKBONES`; default
                that of TorchGeo ``weights``, else ``'resnet18'``.
            tabular_features: number of columns of ``batch['tabular']`` (the
                datamodule selects those of the chosen modalities); 0 means no
                tabular branch.
            num_outputs: number of logits (1 for binary damage, 4 for EMS grades).
            weights: TorchGeo weights (a ``WeightsEnum`` member or its name, e.g.
                ``'ResNet50_Weights.SENTINEL1_ALL_MOCO'``), the local path of a state
                dict (see above), or None for random initialisation.
            embed_dim: size of every branch embedding and of the head's hidden layer.
            dropout: dropout probability of the tabular branch, attention and head.
            pretrained: image modalities whose encoder starts from TorchGeo
                ``weights`` (an ``early`` fusion's one encoder does when any of its
                modalities is listed); the others start from scratch. Not
                ``'optical'``: the weights are SAR weights.
            load_weights: read the TorchGeo weights file; False builds the same
                architecture without it (a checkpoint's state dict fills it).

        Raises:
            ArgumentError: if an argument is invalid.
            InputFileError: if ``weights`` is missing or incompatible.
        """
        super().__init__()
        if isinstance(modalities, str):
            modalities = (modalities,)
        selected = _check_arguments(
            modalities, fusion, tabular_features, num_outputs, embed_dim, dropout
        )
        torchgeo = resolve_weights(weights) if is_weights_name(weights) else None
        if isinstance(pretrained, str):
            pretrained = (pretrained,)
        backbone, sar_input, img_size = _torchgeo_inputs(
            torchgeo, backbone, selected, pretrained
        )
        self.modalities = selected
        self.fusion_name = fusion
        self.tabular_features = tabular_features
        self.weights_name = None if torchgeo is None else str(torchgeo)
        self.fusion = FUSIONS[fusion](
            selected,
            backbone or 'resnet18',
            tabular_features,
            embed_dim,
            dropout,
            sar_input,
            img_size,
        )
        self.head = nn.Sequential(
            nn.Linear(self.fusion.out_features, embed_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(embed_dim, num_outputs),
        )
        self._inputs: dict[str, int] = {
            key: channels
            for m in self.fusion.images
            for key, channels in IMAGE_INPUTS[m]
        }
        if torchgeo is not None:
            if load_weights:
                self.load_torchgeo_weights(torchgeo, pretrained)
        elif weights is not None:
            assert not isinstance(weights, WeightsEnum)
            self.load_weights(weights)

    @property
    def sar_input(self) -> PretrainedSARInput | None:
        """The SAR input of TorchGeo weights, or None."""
        return self.fusion.sar_input

    def set_sar_statistics(self, mean_db: float, std_db: float) -> None:
        """Tell the SAR input of TorchGeo weights how ``sar`` was standardised.

        Does nothing without TorchGeo weights (the batch's ``sar`` is used as is).

        Args:
            mean_db: mean of the training towns' sigma nought (dB), e.g.
                ``datamodule.statistics.sar_mean_db``.
            std_db: its standard deviation (dB).
        """
        if self.fusion.sar_input is not None:
            self.fusion.sar_input.set_statistics(mean_db, std_db)

    def load_torchgeo_weights(
        self, weights: WeightsEnum, pretrained: Sequence[str] = ('sar',)
    ) -> None:
        """Load TorchGeo weights into the encoders of some modalities.

        Args:
            weights: the weights (file in torch hub's cache).
            pretrained: modalities whose encoder is loaded.

        Raises:
            InputFileError: if the file is missing or does not fit the backbone.
        """
        state = read_weights(weights)
        path = weights_path(weights)
        for name in self.fusion.encoders:
            seen = self.fusion.images if name == 'image' else (name,)
            if any(m in pretrained for m in seen):
                load_encoder_state(self.fusion.branch(name), state, '', path)

    def load_weights(self, path: str | os.PathLike[str]) -> None:
        """Load a whole model or its SAR encoder from a local state dict file.

        Args:
            path: the file (see the class docstring for what it may hold).

        Raises:
            InputFileError: if the file is missing, unreadable or incompatible.
        """
        state = read_state_dict(path)
        own = self.state_dict()
        for prefix in find_prefixes(state, own):
            keys = {k[len(prefix) :] for k in state if k.startswith(prefix)}
            if keys == set(own) and all(
                state[prefix + k].shape == v.shape for k, v in own.items()
            ):
                self.load_state_dict({k: state[prefix + k] for k in own})
                return

        branch = self.fusion.sar_encoder
        if branch is None:
            raise InputFileError(
                path,
                'is not a state dict of this model, and its SAR encoder weights '
                f'cannot be used because modalities {list(self.modalities)} have '
                "no 'sar'",
            )
        prefixes = find_prefixes(state, branch.state_module.state_dict())
        # Prefer the SAR branch of a saved FusionNet over its other encoders.
        prefixes.sort(key=lambda p: ('encoders.sar.' not in p, len(p), p))
        if not prefixes:
            sample = list(state)[:3]
            raise InputFileError(
                path,
                f'holds neither this model nor a {type(branch.encoder).__name__} '
                f'backbone of the SAR encoder (first keys: {sample}); was it '
                'saved from another backbone?',
            )
        load_encoder_state(branch, state, prefixes[0], path)

    def _check_batch(self, batch: Mapping[str, Tensor]) -> None:
        """Raise ArgumentError if the batch lacks a key or has a wrong shape."""
        size: int | None = None
        for key, channels in self._inputs.items():
            if key not in batch:
                raise ArgumentError(
                    f'batch has no {key!r} key, which modalities '
                    f'{list(self.modalities)} need; keys present: {sorted(batch)}'
                )
            x = batch[key]
            if x.ndim != 4 or x.shape[1] != channels:
                raise ArgumentError(
                    f'batch[{key!r}] has shape {tuple(x.shape)}; expected '
                    f'[B, {channels}, H, W]'
                )
            if size is not None and x.shape[0] != size:
                raise ArgumentError(
                    f'batch[{key!r}] has {x.shape[0]} samples but other inputs {size}'
                )
            size = x.shape[0]
        if self.tabular_features > 0:
            if 'tabular' not in batch:
                raise ArgumentError(
                    f"batch has no 'tabular' key, which tabular_features="
                    f'{self.tabular_features} needs; keys present: {sorted(batch)}'
                )
            x = batch['tabular']
            if x.ndim != 2 or x.shape[1] != self.tabular_features:
                raise ArgumentError(
                    f"batch['tabular'] has shape {tuple(x.shape)}; expected "
                    f'[B, {self.tabular_features}] (tabular_features)'
                )
            if size is not None and x.shape[0] != size:
                raise ArgumentError(
                    f"batch['tabular'] has {x.shape[0]} samples but the images {size}"
                )

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Compute damage logits.

        Args:
            batch: the model batch (``sar``, ``sar_valid``, ``footprint``, ``dsm``,
                ``optical``, ``tabular`` as needed by the selected modalities); other
                keys are ignored.

        Returns:
            Logits [B, num_outputs].

        Raises:
            ArgumentError: if a needed key is missing or has a wrong shape.
        """
        self._check_batch(batch)
        try:
            fused = self.fusion(batch)
        except ValueError as err:
            if self.training and 'more than 1 value per channel' in str(err):
                raise ArgumentError(
                    'a training batch of one sample reaches a 1 x 1 feature map, '
                    'where BatchNorm has no statistics; drop the last incomplete '
                    'batch (drop_last=True), use a larger batch or larger windows'
                ) from err
            raise
        logits: Tensor = self.head(fused)
        return logits


def _check_arguments(
    modalities: Sequence[str],
    fusion: str,
    tabular_features: int,
    num_outputs: int,
    embed_dim: int,
    dropout: float,
) -> tuple[str, ...]:
    """Refuse invalid :class:`FusionNet` arguments; the modalities in canonical order."""
    unknown = sorted(set(modalities) - set(MODALITIES))
    if unknown:
        raise ArgumentError(
            f'modalities: unknown {unknown}; choose from {list(MODALITIES)}'
        )
    if not modalities:
        raise ArgumentError(
            f'modalities: empty; choose a non-empty subset of {list(MODALITIES)}'
        )
    if fusion not in FUSIONS:
        raise ArgumentError(
            f'fusion: unknown {fusion!r}; choose from {sorted(FUSIONS)}'
        )
    if tabular_features < 0 or num_outputs < 1 or embed_dim < 1:
        raise ArgumentError(
            'tabular_features must be >= 0, num_outputs and embed_dim >= 1; got '
            f'{tabular_features}, {num_outputs}, {embed_dim}'
        )
    if not 0 <= dropout < 1:
        raise ArgumentError(f'dropout must be in [0, 1); got {dropout}')
    selected = tuple(m for m in MODALITIES if m in modalities)
    missing = sorted(FUSIONS[fusion].required - set(selected))
    if missing:
        raise ArgumentError(
            f'fusion {fusion!r} needs modalities {sorted(FUSIONS[fusion].required)}'
            f' but {missing} are not selected; use one of '
            f'{sorted(k for k, v in FUSIONS.items() if v.required <= set(selected))}'
        )
    if 'gem' in selected and tabular_features == 0:
        raise ArgumentError(
            "modality 'gem' has only tabular features, so tabular_features must "
            'be > 0 (the number of columns of batch["tabular"])'
        )
    return selected


def _torchgeo_inputs(
    torchgeo: WeightsEnum | None,
    backbone: str | None,
    selected: Sequence[str],
    pretrained: Sequence[str],
) -> tuple[str | None, PretrainedSARInput | None, int | None]:
    """Backbone, SAR input and input size that TorchGeo weights decide (or None)."""
    images = tuple(m for m in IMAGE_MODALITIES if m in selected)
    sar_input = None
    img_size = None
    if 'optical' in pretrained:
        raise ArgumentError(
            f'pretrained {list(pretrained)}: the optical encoder cannot start from '
            'TorchGeo weights here (only Sentinel-1 SAR weights are supported, and they '
            "load into the SAR encoder); leave 'optical' out of pretrained, its "
            'encoder starts from scratch'
        )
    if torchgeo is not None:
        check_sar_weights(torchgeo)
        model = torchgeo.meta['model']
        if backbone is not None and backbone != model:
            raise ArgumentError(
                f'backbone {backbone!r} contradicts weights {torchgeo}, which are '
                f'for a {model!r}; leave backbone out or set it to {model!r}'
            )
        backbone = model
        wrong = sorted(set(pretrained) - set(images))
        if wrong or not pretrained:
            raise ArgumentError(
                f'pretrained {list(pretrained)}: choose a non-empty subset of the '
                f'selected image modalities {list(images)}'
            )
        if 'sar' in images:
            sar_input = PretrainedSARInput(torchgeo)
        img_size = input_size(torchgeo)
    return backbone, sar_input, img_size
