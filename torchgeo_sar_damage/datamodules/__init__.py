# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Lightning data modules for post-event SAR damage assessment."""

from ..batch import MODALITIES, TOWN_MODALITIES, Normalisation, feature_names
from .catalogue import Catalogue, TownFiles
from .damage import (
    CityDatasets,
    SARDamageDataModule,
    holdout_blocks,
    leave_one_city_out,
)

__all__ = [
    'MODALITIES',
    'TOWN_MODALITIES',
    'Catalogue',
    'CityDatasets',
    'Normalisation',
    'SARDamageDataModule',
    'TownFiles',
    'feature_names',
    'holdout_blocks',
    'leave_one_city_out',
]
