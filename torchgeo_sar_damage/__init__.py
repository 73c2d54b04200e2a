# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""torchgeo-sar-damage: building damage from one post-event VHR SAR image and context."""

__version__ = '0.1.0.dev0'
