# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""TorchGeo datasets for post-event SAR damage assessment."""

from ._vector import drop_bad_geometries, unusable_geometries
from .bright import BRIGHTBuildings
from .chips import BuildingChips
from .cosmo_skymed import (
    CALIBRATION_ATTRIBUTES,
    COSMOSkyMed,
    missing_calibration,
    sigma0_per_dn2,
)
from .dsm import DSM
from .gem import FEATURE_NAMES as GEM_FEATURE_NAMES
from .gem import GEMExposure
from .labels import DamageLabels
from .osm import OSMBuildings
from .qqb import QuickQuakeBuildings
from .utils import (
    ModalityIntersection,
    collate_buildings,
    extract,
    extract_batch,
    merge_batches,
    merge_modalities,
)

__all__ = [
    'CALIBRATION_ATTRIBUTES',
    'DSM',
    'GEM_FEATURE_NAMES',
    'BRIGHTBuildings',
    'BuildingChips',
    'COSMOSkyMed',
    'DamageLabels',
    'GEMExposure',
    'ModalityIntersection',
    'OSMBuildings',
    'QuickQuakeBuildings',
    'collate_buildings',
    'drop_bad_geometries',
    'extract',
    'extract_batch',
    'merge_batches',
    'merge_modalities',
    'missing_calibration',
    'sigma0_per_dn2',
    'unusable_geometries',
]
