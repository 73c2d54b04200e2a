# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""TorchGeo datasets for post-event SAR damage assessment."""

from .cosmo_skymed import sigma0_per_dn2

__all__ = ['sigma0_per_dn2']
