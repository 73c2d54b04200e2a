# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Models: multimodal fusion of SAR with footprint, DSM and GEM context."""

from .fusion import (
    FUSIONS,
    MODALITIES,
    AttentionFusion,
    EarlyFusion,
    Fusion,
    FusionNet,
    LateFusion,
)

__all__ = [
    'FUSIONS',
    'MODALITIES',
    'AttentionFusion',
    'EarlyFusion',
    'Fusion',
    'FusionNet',
    'LateFusion',
]
