# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""EMS-98 damage grades from lognormal PGA fragility curves chosen by GEM taxonomy.

Each building's GEM Building Taxonomy string is parsed with
:func:`torchgeo_sar_damage.taxonomy.parse_taxonomy`; its material, lateral
load-resisting system, height and seismic code level select a fragility curve

``P(DS >= ds | PGA) = Phi(ln(PGA / (s * median_ds)) / beta)``

for the four HAZUS damage states Slight, Moderate, Extensive and Complete.

* **Medians and beta**: HAZUS-MH "equivalent-PGA structural fragility" tables
  (pre-, low- and moderate-code), beta = 0.64 for every class, as tabulated in USGS
  ShakeCast V3 (``klin-usgs/ShakeCast_V3``, ``operator_appende.md``). The HAZUS building
  type standing in for each Turkish class, and CDN/CDL/CDM as pre/low/moderate code, are
  proxies chosen here [guess] (GEM's Türkiye files never write CDN for RC, so ``CDL+DUL``
  stands for pre-code and ``CDL+DUM`` for low code); rows marked [guess] below have no HAZUS counterpart.
* **Dispersion**: HAZUS's beta = 0.64 assumes the equivalent-PGA demand; PGA is a
  poor proxy of the spectral demand that damaged the 2023 building stock (the
  near-fault records of 1-2 g caused less damage than PGA-based curves predict,
  while Kahramanmaraş, at 0.3-0.5 g, lost many mid-rise blocks), so an intensity-
  measure dispersion of 0.5 is added in quadrature (:data:`BETA` = 0.81) [guess].
* **Calibration** ``s``: taken literally, the equivalent-PGA curves over-predict the
  2023 damage (at 0.5 g a low-code mid-rise RC frame would reach Complete with
  probability 0.49, against 19-26 % heavy-or-worse in the worst provinces). All medians
  are scaled by :data:`MEDIAN_SCALE`, chosen so that every built-in town's simulated
  share of grade >= 4 buildings falls in its observed range
  (:attr:`~torchgeo_sar_damage.simulation.cities.City.damage_range`); the test suite
  checks it.
* **EMS-98 grades**: none -> G0, Slight -> G1, Moderate -> G2, Extensive -> G3,
  Complete -> G4 or, with the class's collapse probability, G5. HAZUS gives the
  fraction of Complete that is collapse (5-15 % by class, Table 5.10, recalled);
  the 2023 province statistics (StEER) show total collapse at 20-25 % of
  severe+partial+total collapse, so the HAZUS fractions are doubled
  (:data:`COLLAPSE_FACTOR`) [guess, calibrated].
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import norm

from ..errors import ArgumentError
from ..taxonomy import Taxonomy, parse_taxonomy

#: Scale of every HAZUS median, calibrated on the observed town damage rates.
MEDIAN_SCALE = 2.3
#: Factor on HAZUS's collapse share of the Complete state.
COLLAPSE_FACTOR = 2.0
#: Lognormal dispersion of the HAZUS equivalent-PGA curves.
HAZUS_BETA = 0.64
#: Dispersion added for PGA standing in for the spectral demand that damages
#: buildings (ln Sa(0.3 s)/PGA scatters by about 0.5 between records) [guess].
IM_BETA = 0.5
#: Total dispersion used for every curve, sqrt(HAZUS_BETA² + IM_BETA²) = 0.81.
BETA = float(np.hypot(HAZUS_BETA, IM_BETA))


@dataclass(frozen=True)
class FragilityCurve:
    """Lognormal fragility of one building class.

    Attributes:
        name: class name (Turkish class and code level).
        hazus_proxy: HAZUS building type and design level standing in for it.
        medians_g: PGA medians (g) of Slight, Moderate, Extensive, Complete.
        beta: lognormal dispersion.
        collapse_share: HAZUS share of Complete that is collapse.
    """

    name: str
    hazus_proxy: str
    medians_g: tuple[float, float, float, float]
    beta: float
    collapse_share: float

    def exceedance(
        self, pga_g: np.ndarray, median_scale: float = MEDIAN_SCALE
    ) -> np.ndarray:
        """Probability of reaching or exceeding each damage state.

        Args:
            pga_g: PGA values in g, shape (N,).
            median_scale: factor applied to every median.

        Returns:
            Array (N, 4) of P(DS >= Slight, Moderate, Extensive, Complete).
        """
        medians = median_scale * np.asarray(self.medians_g)
        z = np.log(np.asarray(pga_g)[:, None] / medians[None, :]) / self.beta
        return np.asarray(norm.cdf(z))


def _curve(
    name: str, proxy: str, medians: tuple[float, float, float, float], collapse: float
) -> FragilityCurve:
    return FragilityCurve(name, proxy, medians, BETA, collapse)


#: Fragility per (structural group, height band, code level). Height bands: ``L`` 1-3
#: storeys, ``M`` 4-7, ``H`` 8 and more. Code levels: ``pre``, ``low``, ``moderate``.
CURVES: dict[tuple[str, str, str], FragilityCurve] = {
    ('RC_FRAME', 'L', 'low'): _curve(
        'RC infilled frame 1-3 st, low code', 'C3L low', (0.12, 0.17, 0.26, 0.44), 0.15
    ),
    ('RC_FRAME', 'L', 'pre'): _curve(
        'RC infilled frame 1-3 st, no code', 'C3L pre', (0.10, 0.14, 0.21, 0.35), 0.15
    ),
    ('RC_FRAME', 'L', 'moderate'): _curve(
        'RC infilled frame 1-3 st, moderate code',
        'C1L moderate',
        (0.16, 0.23, 0.41, 0.77),
        0.13,
    ),
    ('RC_FRAME', 'M', 'low'): _curve(
        'RC infilled frame 4-7 st, low code', 'C3M low', (0.11, 0.17, 0.32, 0.51), 0.13
    ),
    ('RC_FRAME', 'M', 'pre'): _curve(
        'RC infilled frame 4-7 st, no code', 'C3M pre', (0.09, 0.14, 0.25, 0.41), 0.13
    ),
    ('RC_FRAME', 'M', 'moderate'): _curve(
        'RC infilled frame 4-7 st, moderate code',
        'C1M moderate',
        (0.13, 0.21, 0.49, 0.89),
        0.10,
    ),
    ('RC_FRAME', 'H', 'low'): _curve(
        'RC infilled frame 8+ st, low code', 'C3H low', (0.09, 0.16, 0.33, 0.53), 0.10
    ),
    ('RC_FRAME', 'H', 'pre'): _curve(
        'RC infilled frame 8+ st, no code', 'C3H pre', (0.08, 0.13, 0.27, 0.43), 0.10
    ),
    ('RC_FRAME', 'H', 'moderate'): _curve(
        'RC infilled frame 8+ st, moderate code',
        'C1H moderate',
        (0.11, 0.18, 0.41, 0.74),
        0.05,
    ),
    ('RC_WALL', 'M', 'moderate'): _curve(
        'RC wall 4-7 st, moderate code', 'C2M moderate', (0.15, 0.26, 0.55, 1.02), 0.10
    ),
    # [guess] no HAZUS row: C2M moderate with medians x 0.8 for low/no code
    ('RC_WALL', 'M', 'low'): _curve(
        'RC wall, low code [guess]',
        'C2M moderate x 0.8',
        (0.12, 0.21, 0.44, 0.82),
        0.10,
    ),
    ('URM', 'L', 'low'): _curve(
        'URM 1-3 st, low code', 'URML low', (0.14, 0.20, 0.32, 0.46), 0.15
    ),
    ('URM', 'L', 'pre'): _curve(
        'URM 1-3 st, no code', 'URML pre', (0.13, 0.17, 0.26, 0.37), 0.15
    ),
    ('URM', 'M', 'pre'): _curve(
        'URM 4+ st, no code', 'URMM pre', (0.09, 0.13, 0.21, 0.38), 0.15
    ),
    ('ADOBE', 'L', 'pre'): _curve(
        'Adobe [guess: URML pre x 0.7]',
        'URML pre x 0.7',
        (0.09, 0.12, 0.18, 0.26),
        0.15,
    ),
    ('STEEL', 'L', 'moderate'): _curve(
        'Steel frame low-rise, moderate code',
        'S1L moderate',
        (0.15, 0.22, 0.42, 0.80),
        0.08,
    ),
    ('STEEL', 'L', 'low'): _curve(
        'Steel frame low-rise, low code', 'S1L low', (0.12, 0.17, 0.30, 0.48), 0.08
    ),
    ('PRECAST', 'L', 'low'): _curve(
        'Precast RC frame low-rise, low code',
        'PC2L low',
        (0.13, 0.15, 0.24, 0.44),
        0.15,
    ),
    ('PRECAST', 'L', 'moderate'): _curve(
        'Precast RC frame low-rise, moderate code',
        'PC2L moderate',
        (0.18, 0.25, 0.40, 0.74),
        0.15,
    ),
    ('PRECAST', 'M', 'low'): _curve(
        'Precast RC frame mid-rise, low code',
        'PC2M low',
        (0.11, 0.16, 0.31, 0.52),
        0.13,
    ),
}

# Where a (group, band, code) has no row, try these substitutes in order.
_FALLBACK_CODES = {
    'pre': ('pre', 'low', 'moderate'),
    'low': ('low', 'pre', 'moderate'),
    'moderate': ('moderate', 'low', 'pre'),
}
_FALLBACK_BANDS = {'L': ('L', 'M', 'H'), 'M': ('M', 'L', 'H'), 'H': ('H', 'M', 'L')}


def _group(tax: Taxonomy) -> str:
    macro = tax.macro_class
    if macro == 'RC':
        return 'RC_WALL' if tax.llrs == 'LWAL' else 'RC_FRAME'
    if macro == 'URM':
        return 'URM'
    if macro in ('ADOBE', 'STEEL', 'PRECAST'):
        return macro
    # wood, other and unknown materials: the most common Turkish class [guess]
    return 'RC_FRAME'


def _band(storeys: float | None) -> str:
    if storeys is None or storeys <= 3:
        return 'L'
    return 'M' if storeys <= 7 else 'H'


def _code(tax: Taxonomy) -> str:
    if tax.code_level in ('CDM', 'CDH'):
        return 'moderate'
    if tax.code_level == 'CDN' or tax.ductility == 'DNO':
        return 'pre'
    if tax.code_level == 'CDL':
        # GEM's Türkiye files write no CDN for RC: low code with low ductility stands
        # for the pre-1998-code frames [guess]
        return 'pre' if tax.ductility == 'DUL' else 'low'
    return 'low'  # code level not stated [guess]


def fragility_curve(tax: Taxonomy) -> FragilityCurve:
    """Select the fragility curve of a parsed GEM taxonomy.

    Args:
        tax: the building's parsed taxonomy.

    Returns:
        The curve of its structural group, height band and code level (the nearest
        available band and code where the table has no exact row).
    """
    group = _group(tax)
    band = _band(tax.storeys_mid)
    code = _code(tax)
    for b in _FALLBACK_BANDS[band]:
        for c in _FALLBACK_CODES[code]:
            if (group, b, c) in CURVES:
                return CURVES[group, b, c]
    raise AssertionError(f'no fragility curve for {group}')  # pragma: no cover


def sample_grades(
    curves: list[FragilityCurve],
    pga_g: np.ndarray,
    rng: np.random.Generator,
    *,
    median_scale: float = MEDIAN_SCALE,
    collapse_factor: float = COLLAPSE_FACTOR,
) -> np.ndarray:
    """Draw an EMS-98 damage grade (0-5) per building.

    Args:
        curves: fragility curve of each building.
        pga_g: PGA at each building (g).
        rng: random generator.
        median_scale: factor on every median (calibration).
        collapse_factor: factor on the HAZUS collapse share of Complete.

    Returns:
        Integer grades, shape (N,).
    """
    pga = np.asarray(pga_g, dtype=np.float64)
    n = len(curves)
    medians = median_scale * np.array([c.medians_g for c in curves]).reshape(n, 4)
    beta = np.array([c.beta for c in curves]).reshape(n, 1)
    exceed = norm.cdf(np.log(pga[:, None] / medians) / beta)
    u = rng.random(n)
    states = (u[:, None] < exceed).sum(axis=1)
    collapse = np.array([min(1.0, c.collapse_share * collapse_factor) for c in curves])
    collapsed = rng.random(n) < collapse
    grades = states.copy()
    grades[(states == 4) & collapsed] = 5
    return grades.astype(np.int64)


def heavy_damage_probability(
    taxonomies: Sequence[str],
    pga_g: npt.ArrayLike,
    *,
    median_scale: float = MEDIAN_SCALE,
) -> np.ndarray:
    """Each building's true probability of grade >= 4 (the fragility oracle).

    The probability the simulator itself draws from: reaching the Complete damage
    state (grades 4 and 5) on the building's own fragility curve at its true PGA.
    No model can know more about a building from its context alone (shaking and
    structure), so these probabilities are the ceiling of any context-only model;
    the grades drawn from them are what is left to chance.

    Args:
        taxonomies: GEM taxonomy string of each building (``truth.gpkg``'s
            ``taxonomy``).
        pga_g: PGA at each building in g (``truth.gpkg``'s ``pga_g``).
        median_scale: factor on every median (the simulator's calibration).

    Returns:
        Probabilities, shape (N,).

    Raises:
        ArgumentError: if the lengths differ.

    .. versionadded:: 0.3
    """
    pga = np.asarray(pga_g, dtype=np.float64).reshape(-1)
    if len(taxonomies) != len(pga):
        raise ArgumentError(
            f'{len(taxonomies)} taxonomies but {len(pga)} PGA values; give one each'
        )
    out = np.empty(len(pga))
    for i, (text, value) in enumerate(zip(taxonomies, pga)):
        curve = fragility_curve(parse_taxonomy(text))
        out[i] = curve.exceedance(np.array([value]), median_scale)[0, 3]
    return out
