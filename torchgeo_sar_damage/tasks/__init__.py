# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Lightning tasks for post-event SAR damage assessment."""

from .damage import BinaryFocalLoss, DamageClassification, best_f1_threshold
from .resume import ResumableRandomness

__all__ = [
    'BinaryFocalLoss',
    'DamageClassification',
    'ResumableRandomness',
    'best_f1_threshold',
]
