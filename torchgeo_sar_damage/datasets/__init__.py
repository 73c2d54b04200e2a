# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""TorchGeo datasets for post-event SAR damage assessment."""

from .chips import BuildingChips
from .cosmo_skymed import COSMOSkyMed, sigma0_per_dn2
from .dsm import DSM
from .gem import FEATURE_NAMES as GEM_FEATURE_NAMES
from .gem import GEMExposure
from .labels import DamageLabels
from .osm import OSMBuildings
from .utils import (
    ModalityIntersection,
    collate_buildings,
    extract,
    extract_batch,
    merge_batches,
    merge_modalities,
)

__all__ = [
    'DSM',
    'GEM_FEATURE_NAMES',
    'BuildingChips',
    'COSMOSkyMed',
    'DamageLabels',
    'GEMExposure',
    'ModalityIntersection',
    'OSMBuildings',
    'collate_buildings',
    'extract',
    'extract_batch',
    'merge_batches',
    'merge_modalities',
    'sigma0_per_dn2',
]
