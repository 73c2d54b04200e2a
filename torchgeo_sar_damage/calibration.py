# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Former name of :mod:`torchgeo_sar_damage.reliability` (temperature scaling, ECE).

.. deprecated:: 0.2
   Import from :mod:`torchgeo_sar_damage.reliability`; "calibration" in this package
   means the calibration of SAR digital numbers to sigma nought.
"""

import warnings

from .reliability import (
    INVERSE_TEMPERATURE_RANGE,
    expected_calibration_error,
    fit_temperature,
    plot_reliability_diagram,
    reliability_curve,
)

warnings.warn(
    'torchgeo_sar_damage.calibration is now torchgeo_sar_damage.reliability',
    FutureWarning,
    stacklevel=2,
)

__all__ = [
    'INVERSE_TEMPERATURE_RANGE',
    'expected_calibration_error',
    'fit_temperature',
    'plot_reliability_diagram',
    'reliability_curve',
]
