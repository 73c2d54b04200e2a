# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import math

import pytest

from torchgeo_sar_damage.datasets.cosmo_skymed import sigma0_per_dn2
from torchgeo_sar_damage.errors import InputFileError

META = {
    'Rescaling_Factor': '600',
    'Reference_Slant_Range': '1000',
    'Reference_Slant_Range_Exponent': '1',
    'Reference_Incidence_Angle': '30',
    'S01_Calibration_Constant': '2',
    'Calibration_Constant_Compensation_Flag': '0',
    'Range_Spreading_Loss_Compensation_Geometry': 'DEFAULT',
    'Incidence_Angle_Compensation_Geometry': 'DEFAULT',
}


def test_all_terms() -> None:
    expected = 1000.0**2 * math.sin(math.radians(30)) / (600.0**2 * 2.0)
    assert sigma0_per_dn2(META, 'p.h5') == pytest.approx(expected)


@pytest.mark.parametrize(
    ('key', 'value', 'factor'),
    [
        ('Range_Spreading_Loss_Compensation_Geometry', 'NONE', 1 / 1000.0**2),
        ('Incidence_Angle_Compensation_Geometry', 'NONE', 1 / 0.5),
        ('Calibration_Constant_Compensation_Flag', '1', 2.0),
    ],
)
def test_flags_drop_terms(key: str, value: str, factor: float) -> None:
    meta = dict(META, **{key: value})
    assert sigma0_per_dn2(meta, 'p.h5') == pytest.approx(
        sigma0_per_dn2(META, 'p.h5') * factor
    )


def test_missing_and_malformed() -> None:
    meta = dict(META)
    del meta['S01_Calibration_Constant']
    with pytest.raises(
        InputFileError, match=r'p\.h5.*S01_Calibration_Constant.*missing'
    ):
        sigma0_per_dn2(meta, 'p.h5')
    with pytest.raises(InputFileError, match='not a number'):
        sigma0_per_dn2(dict(META, Rescaling_Factor='abc'), 'p.h5')
