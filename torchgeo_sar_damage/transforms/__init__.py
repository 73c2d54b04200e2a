# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Kornia augmentations for SAR: dB conversions, speckle, gain and SAR-aware geometry."""

from .sar import (
    GEOMETRIC_POLICIES,
    AmplitudeToDecibel,
    DecibelToAmplitude,
    DecibelToPower,
    PowerToDecibel,
    RandomDecibelGain,
    RandomSpeckle,
    SARGeometricAugmentation,
    sar_geometric_augmentation,
)

__all__ = [
    'GEOMETRIC_POLICIES',
    'AmplitudeToDecibel',
    'DecibelToAmplitude',
    'DecibelToPower',
    'PowerToDecibel',
    'RandomDecibelGain',
    'RandomSpeckle',
    'SARGeometricAugmentation',
    'sar_geometric_augmentation',
]
