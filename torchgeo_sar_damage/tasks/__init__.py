# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Lightning tasks for post-event SAR damage assessment."""

from .damage import BinaryFocalLoss, DamageClassification, best_f1_threshold

__all__ = ['BinaryFocalLoss', 'DamageClassification', 'best_f1_threshold']
