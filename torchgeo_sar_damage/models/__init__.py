# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Models: multimodal fusion of SAR with footprint, DSM, GEM and optical context."""

from ..batch import MODALITIES
from .fusion import FUSIONS, AttentionFusion, EarlyFusion, Fusion, FusionNet, LateFusion

__all__ = [
    'FUSIONS',
    'MODALITIES',
    'AttentionFusion',
    'EarlyFusion',
    'Fusion',
    'FusionNet',
    'LateFusion',
]
