# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Ground shaking of the 6 February 2023 earthquakes at every building.

Peak ground acceleration (PGA, in g) comes from a ground-motion model (GMM) with
magnitude, Joyner-Boore distance to the rupture and a site term, plus event and
within-event variability:

``ln PGA(x) = ln PGA_GMM(M, R_JB(x), Vs30) + delta_B + delta_W(x) + epsilon(x)``

* **GMM**: Akkar, Sandıkkaya & Bommer (2014), "Empirical ground-motion models for
  point- and extended-source crustal earthquake scenarios in Europe and the Middle East",
  Bull. Earthq. Eng. 12:359-387, R_JB form, PGA coefficients as in OpenQuake's
  ``AkkarEtAlRjb2014`` (geometric-mean horizontal; between-event tau = 0.3501,
  within-event phi = 0.6201). Strike-slip, so both style-of-faulting flags are zero.
* **Rupture**: the surface traces of the Mw 7.8 Pazarcık rupture (USGS ShakeMap finite
  fault, with its south-west extension towards Antakya after Reitman et al. 2023) and
  of the Mw 7.5 Elbistan rupture (hand-placed from field reports). Both ruptures are
  near-vertical strike-slip faults, so R_JB is the horizontal distance to the trace.
  Each building takes the larger PGA of the two events; cumulative damage from the
  second event is not modelled.
* **Event and within-event terms, conditioned on recordings**: a town's near-fault
  recordings lie well above the GMM median (0.6 to 1.35 g against a median of about
  0.5 g at R_JB = 0). As USGS ShakeMap does, the field is conditioned on the PGA
  recorded near the town (``City.anchor_pga_g``): ``delta_B + delta_W`` equals the
  town's residual at its centre and varies around it as a Gaussian random field with
  exponential correlation, whose variance grows with distance from the centre as
  ``sigma^2 (1 - rho^2)`` (simple kriging, Worden et al. 2018, BSSA 108(2)). Within a
  conditioned town the field has sigma :data:`TOWN_SIGMA` = 0.3 and a practical range
  of 5 km, the spread ShakeMap shows between the survey sites of one town
  (Kahramanmaraş 0.25-0.34 g, Türkoğlu 0.41-0.55 g). Scenes over user footprints far
  from any anchor use the unconditioned within-event field (phi, range about 10 km
  for PGA, Jayaram & Baker 2009, Earthq. Eng. Struct. Dyn. 38:1687-1708) with a
  calibrated event term.
* **Building-to-building term** ``epsilon``: independent, sigma 0.15 (local soil and
  soil-structure effects) [guess].
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import Transformer
from scipy.interpolate import RegularGridInterpolator

#: Surface trace of the Mw 7.8 Pazarcık rupture (lon, lat), south-west to north-east.
#: USGS ShakeMap finite-fault rupture of us6000jllz (2023-02-09), first vertex added
#: south-east of Antakya after the field mapping of Reitman et al. (2023).
PAZARCIK_TRACE: tuple[tuple[float, float], ...] = (
    (36.20, 36.15),
    (36.273, 36.369),
    (36.389, 36.547),
    (36.394, 36.612),
    (36.422, 36.671),
    (36.453, 36.679),
    (36.561, 36.874),
    (36.646, 37.086),
    (36.912, 37.400),
    (37.108, 37.501),
    (37.242, 37.537),
    (37.438, 37.630),
    (37.590, 37.738),
    (37.761, 37.870),
    (38.076, 37.950),
    (38.273, 38.036),
    (38.435, 38.056),
)

#: Narlı splay, the nucleation branch of the Mw 7.8 event (lon, lat).
NARLI_SPLAY: tuple[tuple[float, float], ...] = (
    (37.030, 37.170),
    (37.141, 37.333),
    (37.178, 37.431),
)

#: Surface trace of the Mw 7.5 Elbistan rupture on the Çardak fault (lon, lat),
#: hand-placed within 5-10 km from the epicentre and field reports [guess].
ELBISTAN_TRACE: tuple[tuple[float, float], ...] = (
    (36.45, 38.05),
    (36.75, 38.02),
    (37.00, 38.03),
    (37.20, 38.01),
    (37.45, 38.06),
    (37.70, 38.08),
    (37.90, 38.12),
    (38.05, 38.20),
)


@dataclass(frozen=True)
class Earthquake:
    """One event of the sequence.

    Attributes:
        name: event name.
        magnitude: moment magnitude.
        traces: surface traces (lon, lat) of its rupture segments.
    """

    name: str
    magnitude: float
    traces: tuple[tuple[tuple[float, float], ...], ...]


#: The two main shocks of 6 February 2023 (USGS us6000jllz and us6000jlqa).
EVENTS: tuple[Earthquake, ...] = (
    Earthquake('Pazarcık', 7.8, (PAZARCIK_TRACE, NARLI_SPLAY)),
    Earthquake('Elbistan', 7.5, (ELBISTAN_TRACE,)),
)

# Akkar, Sandıkkaya & Bommer (2014), R_JB model, PGA row (OpenQuake AkkarEtAlRjb2014).
_ASB14 = {
    'a1': 1.85329,
    'a2': 0.0029,
    'a3': -0.02807,
    'a4': -1.23452,
    'a5': 0.2529,
    'a6': 7.5,
    'a7': -0.5096,
    'a8': -0.1091,
    'a9': 0.0937,
    'c1': 6.75,
    'b1': -0.41997,
    'b2': -0.28846,
    'c': 2.5,
    'n': 3.2,
}
#: Between-event standard deviation of ln PGA (ASB14).
TAU = 0.3501
#: Within-event standard deviation of ln PGA (ASB14).
PHI = 0.6201
#: Practical range (km) of the exponential correlation of within-event PGA residuals.
CORRELATION_RANGE_KM = 10.0
#: Standard deviation of ln PGA within a town conditioned on a recording.
TOWN_SIGMA = 0.3
#: Practical range (km) of the correlation of that within-town field.
TOWN_RANGE_KM = 5.0
#: Standard deviation of the independent building-to-building term [guess].
SIGMA_BUILDING = 0.15
#: Event term used where no recording anchors the field: near-fault recordings of the
#: Mw 7.8 event lie about one between-event sigma above the ASB14 median.
DEFAULT_EVENT_TERM = TAU


def asb14_pga_g(magnitude: float, rjb_km: np.ndarray, vs30_m_s: float) -> np.ndarray:
    """Median PGA of Akkar, Sandıkkaya & Bommer (2014) for a strike-slip event.

    Args:
        magnitude: moment magnitude.
        rjb_km: Joyner-Boore distances in km.
        vs30_m_s: Vs30 of the site in m/s.

    Returns:
        Median geometric-mean horizontal PGA in g, same shape as ``rjb_km``.
    """
    k = _ASB14
    rjb = np.asarray(rjb_km, dtype=np.float64)
    slope = k['a2'] if magnitude <= k['c1'] else k['a7']
    ln_ref = (
        k['a1']
        + slope * (magnitude - k['c1'])
        + k['a3'] * (8.5 - magnitude) ** 2
        + (k['a4'] + k['a5'] * (magnitude - k['c1'])) * np.log(np.hypot(rjb, k['a6']))
    )
    pga_ref = np.exp(ln_ref)
    if vs30_m_s < 750:
        ratio = (vs30_m_s / 750.0) ** k['n']
        ln_site = k['b1'] * np.log(vs30_m_s / 750.0) + k['b2'] * np.log(
            (pga_ref + k['c'] * ratio) / ((pga_ref + k['c']) * ratio)
        )
    else:
        ln_site = k['b1'] * np.log(min(vs30_m_s, 1000.0) / 750.0) * np.ones_like(rjb)
    return np.exp(ln_ref + ln_site)


def rupture_distance_km(
    x: np.ndarray, y: np.ndarray, crs: str, event: Earthquake
) -> np.ndarray:
    """Joyner-Boore distance from points to a vertical rupture's surface trace.

    Args:
        x: easting of the points in ``crs`` (metres).
        y: northing of the points.
        crs: projected CRS of the points.
        event: the earthquake.

    Returns:
        Distance in km.
    """
    to_crs = Transformer.from_crs('EPSG:4326', crs, always_xy=True)
    lines: list[shapely.Geometry] = []
    for trace in event.traces:
        lon, lat = np.array(trace).T
        ex, ey = to_crs.transform(lon, lat)
        lines.append(shapely.LineString(np.column_stack([ex, ey])))
    fault = shapely.union_all(lines)
    points = shapely.points(np.asarray(x), np.asarray(y))
    return np.asarray(shapely.distance(points, fault)) / 1000.0


def _correlated_field(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    anchor: tuple[float, float] | None,
    range_km: float = CORRELATION_RANGE_KM,
    spacing_m: float = 250.0,
) -> np.ndarray:
    """Sample a unit-variance Gaussian field with exponential correlation.

    The field is drawn on a coarse grid by Cholesky factorisation and interpolated to
    the points. With ``anchor``, it is conditioned to zero there (simple kriging).
    """
    margin = spacing_m
    gx = np.arange(x.min() - margin, x.max() + 2 * margin, spacing_m)
    gy = np.arange(y.min() - margin, y.max() + 2 * margin, spacing_m)
    mx, my = np.meshgrid(gx, gy, indexing='ij')
    nodes = np.column_stack([mx.ravel(), my.ravel()])
    if anchor is not None:
        nodes = np.vstack([nodes, anchor])
    dist = np.hypot(
        nodes[:, None, 0] - nodes[None, :, 0], nodes[:, None, 1] - nodes[None, :, 1]
    )
    cov = np.exp(-3.0 * dist / (range_km * 1000.0))
    chol = np.linalg.cholesky(cov + 1e-9 * np.eye(len(nodes)))
    values = chol @ rng.standard_normal(len(nodes))
    if anchor is not None:
        rho = cov[-1, :-1]
        values = values[:-1] - rho * values[-1]
    grid_values = values.reshape(len(gx), len(gy))
    interp = RegularGridInterpolator((gx, gy), grid_values)
    return np.asarray(interp(np.column_stack([x, y])))


@dataclass
class Shaking:
    """PGA and distances at a set of points.

    Attributes:
        pga_g: PGA in g (the larger of the two events).
        rjb_km: Joyner-Boore distance to the Mw 7.8 rupture in km.
        median_pga_g: GMM median PGA of the Mw 7.8 event in g (no variability).
    """

    pga_g: np.ndarray
    rjb_km: np.ndarray
    median_pga_g: np.ndarray


def simulate_pga(
    x: np.ndarray,
    y: np.ndarray,
    crs: str,
    rng: np.random.Generator,
    *,
    vs30_m_s: float,
    anchor_xy: tuple[float, float] | None = None,
    anchor_pga_g: float | None = None,
    events: Sequence[Earthquake] = EVENTS,
) -> Shaking:
    """Draw the PGA of the earthquake sequence at every point.

    Args:
        x: easting of the points (building centroids) in ``crs``.
        y: northing of the points.
        crs: projected CRS (metres).
        rng: random generator (the only source of randomness).
        vs30_m_s: Vs30 of the town.
        anchor_xy: point where the PGA is known (the town centre), in ``crs``.
        anchor_pga_g: PGA recorded or mapped at ``anchor_xy``; without it the field is
            not conditioned and the calibrated event term is used.
        events: the earthquakes; the first one is the main shock.

    Returns:
        PGA, distance and median PGA of the main shock per point.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    main = events[0]
    rjb_main = rupture_distance_km(x, y, crs, main)
    median_main = asb14_pga_g(main.magnitude, rjb_main, vs30_m_s)

    pga = np.zeros_like(x)
    for i, event in enumerate(events):
        rjb = rjb_main if i == 0 else rupture_distance_km(x, y, crs, event)
        median = median_main if i == 0 else asb14_pga_g(event.magnitude, rjb, vs30_m_s)
        if i == 0 and anchor_xy is not None and anchor_pga_g is not None:
            rjb_anchor = rupture_distance_km(
                np.array([anchor_xy[0]]), np.array([anchor_xy[1]]), crs, event
            )
            median_anchor = asb14_pga_g(event.magnitude, rjb_anchor, vs30_m_s)[0]
            residual = np.log(anchor_pga_g / median_anchor)
            field = TOWN_SIGMA * _correlated_field(x, y, rng, anchor_xy, TOWN_RANGE_KM)
        else:
            residual = DEFAULT_EVENT_TERM if i == 0 else TAU * rng.standard_normal()
            field = PHI * _correlated_field(x, y, rng, None)
        ln_pga = (
            np.log(median)
            + residual
            + field
            + SIGMA_BUILDING * rng.standard_normal(len(x))
        )
        pga = np.maximum(pga, np.exp(ln_pga))
    return Shaking(pga_g=pga, rjb_km=rjb_main, median_pga_g=median_main)
