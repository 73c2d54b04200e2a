# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Simulator of post-earthquake scenes that writes files in the real products' formats."""
