# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""COSMO-SkyMed (CSK) and COSMO-SkyMed Second Generation (CSG) products."""

import math
import os
from collections.abc import Mapping

from ..errors import InputFileError


def _number(meta: Mapping[str, str], key: str, path: str) -> float:
    try:
        return float(meta[key].split()[0])
    except KeyError:
        raise InputFileError(
            path, f'calibration attribute {key!r} is missing'
        ) from None
    except (ValueError, IndexError):
        raise InputFileError(
            path, f'calibration attribute {key}={meta[key]!r} is not a number'
        ) from None


def sigma0_per_dn2(meta: Mapping[str, str], path: str | os.PathLike[str]) -> float:
    """Linear sigma nought of one squared digital number of a detected product.

    The conversion is the one SNAP's ``CosmoSkymedCalibrator`` applies to detected
    CSK products, honouring the product's compensation flags::

        sigma0 = DN² · [Rref^(2·Rexp)] · [sin(alpha_ref)] / (F² · [K])

    The bracketed terms apply when ``Range_Spreading_Loss_Compensation_Geometry`` and
    ``Incidence_Angle_Compensation_Geometry`` are not ``NONE`` and when
    ``Calibration_Constant_Compensation_Flag`` is not 1.

    Args:
        meta: the product's metadata under GDAL's names (root attributes unprefixed,
            ``/S01`` attributes prefixed ``S01_``), from the HDF5 container or the
            GeoTIFF tags.
        path: the product file, for error messages.

    Returns:
        Factor that turns DN² into linear sigma nought.

    Raises:
        InputFileError: if a calibration attribute is missing or not a number.
    """
    path = os.fspath(path)
    factor = _number(meta, 'Rescaling_Factor', path) ** -2
    if meta.get('Range_Spreading_Loss_Compensation_Geometry', 'NONE').upper() != 'NONE':
        rref = _number(meta, 'Reference_Slant_Range', path)
        rexp = _number(meta, 'Reference_Slant_Range_Exponent', path)
        factor *= rref ** (2 * rexp)
    if meta.get('Incidence_Angle_Compensation_Geometry', 'NONE').upper() != 'NONE':
        factor *= math.sin(
            math.radians(_number(meta, 'Reference_Incidence_Angle', path))
        )
    if meta.get('Calibration_Constant_Compensation_Flag', '0').strip() != '1':
        factor /= _number(meta, 'S01_Calibration_Constant', path)
    return factor
