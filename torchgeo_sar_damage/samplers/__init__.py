# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Samplers for per-building windows."""

from .building import BuildingSampler, footprint_centres

__all__ = ['BuildingSampler', 'footprint_centres']
