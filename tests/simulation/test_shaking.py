# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import itertools
import math

import numpy as np
import pytest
from pyproj import Geod, Transformer

from torchgeo_sar_damage.simulation.shaking import (
    EVENTS,
    asb14_pga_g,
    rupture_distance_km,
    simulate_pga,
)

CRS = 'EPSG:32637'
TO_UTM = Transformer.from_crs('EPSG:4326', CRS, always_xy=True)
# Kahramanmaraş centre and its anchor (cities.py), Vs30 593 m/s.
KMARAS = TO_UTM.transform(36.937, 37.585)

# Median PGA (g) of ASB14 (Akkar, Sandıkkaya & Bommer 2014, BEE 12:359-387) for Mw 7.8
# strike-slip, computed from the equations and PGA coefficients of OpenQuake's
# AkkarEtAlRjb2014 (GitHub gem/oq-engine, openquake/hazardlib/gsim/akkar_2014.py):
# R_JB (km) -> (Vs30 400 m/s, Vs30 760 m/s).
ASB14_TABLE = {
    0: (0.55, 0.52),
    5: (0.47, 0.44),
    10: (0.35, 0.32),
    20: (0.22, 0.19),
    30: (0.16, 0.13),
    50: (0.10, 0.08),
    100: (0.05, 0.04),
}

# Town (lon, lat) -> distance (km) to the Mw 7.8 surface trace, computed on a
# flat earth from the USGS ShakeMap finite-fault trace (rounded to 0.1 km).
TOWN_DISTANCES = {
    'Antakya': (36.160, 36.202, 4.9),
    'Kırıkhan': (36.357, 36.499, 0.1),
    'Hassa': (36.517, 36.797, 0.1),
    'Kahramanmaraş': (36.937, 37.585, 16.1),
    'Nurdağı': (36.737, 37.176, 1.1),
    'İslahiye': (36.631, 37.026, 0.8),
    'Türkoğlu': (36.850, 37.383, 3.5),
    'Narlı': (37.14, 37.39, 1.9),
    'Pazarcık': (37.297, 37.487, 7.3),
    'Gölbaşı': (37.64, 37.78, 0.3),
    'Adıyaman': (38.276, 37.764, 26.6),
    'Malatya': (38.309, 38.355, 34.6),
}

# The Mw 7.8 rupture as published, written here independently of the package: the
# top edge (lon, lat, SW -> NE) of the USGS ShakeMap finite-fault rupture of
# us6000jllz (https://earthquake.usgs.gov/product/shakemap/us6000jllz/us/
# 1675660631596/download/rupture.json, copied in GitHub gem/earthquake-scenarios,
# Turkey/20230206_M7.8_KahramanmarasGaziantep/Rupture/rupture_USGS.json), with the
# south-west tip near Antakya mapped in the field (Reitman et al. 2023, The Seismic
# Record 3(4):289-298, doi:10.1785/0320230029), and the Narlı splay.
USGS_TRACE = (
    (36.20, 36.15),  # SW tip, field mapping
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
USGS_SPLAY = ((37.030, 37.170), (37.141, 37.333), (37.178, 37.431))


def geodesic_distance_km(
    lon: float, lat: float, traces: tuple[tuple[tuple[float, float], ...], ...]
) -> float:
    """Shortest distance on the WGS84 ellipsoid from a point to polylines.

    Each segment is followed as a geodesic, sampled every 20 m; no projection.
    """
    geod = Geod(ellps='WGS84')
    best = math.inf
    for trace in traces:
        for (lon1, lat1), (lon2, lat2) in itertools.pairwise(trace):
            length = geod.inv(lon1, lat1, lon2, lat2)[2]
            inner = geod.npts(lon1, lat1, lon2, lat2, max(1, int(length / 20)))
            lons, lats = np.array([(lon1, lat1), *inner, (lon2, lat2)]).T
            far = geod.inv(np.full(len(lons), lon), np.full(len(lons), lat), lons, lats)
            best = min(best, float(np.min(far[2])))
    return best / 1000.0


def _town_grid(
    half_m: float = 2000.0, step_m: float = 50.0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Square grid of points centred on Kahramanmaraş; also returns its side."""
    offsets = np.arange(-half_m, half_m + 1, step_m)
    xx, yy = np.meshgrid(offsets + KMARAS[0], offsets + KMARAS[1])
    return xx.ravel(), yy.ravel(), len(offsets)


@pytest.mark.parametrize('rjb_km', sorted(ASB14_TABLE))
def test_asb14_reproduces_reference_table(rjb_km: int) -> None:
    expected_400, expected_760 = ASB14_TABLE[rjb_km]
    rjb = np.array([float(rjb_km)])
    assert asb14_pga_g(7.8, rjb, 400.0)[0] == pytest.approx(expected_400, abs=0.01)
    assert asb14_pga_g(7.8, rjb, 760.0)[0] == pytest.approx(expected_760, abs=0.01)


def test_asb14_shape_and_site_effect() -> None:
    rjb = np.array([[0.0, 10.0], [50.0, 200.0]])
    soft = asb14_pga_g(7.8, rjb, 300.0)
    rock = asb14_pga_g(7.8, rjb, 760.0)
    assert soft.shape == rjb.shape
    # attenuation with distance; soft soil amplifies weak motion more than strong
    # motion (ASB14's non-linear site term)
    assert np.all(np.diff(soft.ravel()) < 0)
    amplification = (soft / rock).ravel()
    assert np.all(amplification[1:] > 1)
    assert np.all(np.diff(amplification) > 0)
    # the site term is capped at Vs30 = 1000 m/s
    hard = asb14_pga_g(7.8, rjb, 1000.0)
    np.testing.assert_allclose(asb14_pga_g(7.8, rjb, 1500.0), hard)
    assert np.all(hard < rock)


@pytest.mark.parametrize('town', sorted(TOWN_DISTANCES))
def test_rupture_distance_of_towns(town: str) -> None:
    lon, lat, expected_km = TOWN_DISTANCES[town]
    x, y = TO_UTM.transform(lon, lat)
    distance = rupture_distance_km(np.array([x]), np.array([y]), CRS, EVENTS[0])
    assert distance.shape == (1,)
    # the geodesic distance to the published trace, within 20 m (UTM scale error
    # and the 20 m sampling of the reference)
    reference = geodesic_distance_km(lon, lat, (USGS_TRACE, USGS_SPLAY))
    assert distance[0] == pytest.approx(reference, abs=0.02)
    # and the rounded flat-earth table
    assert distance[0] == pytest.approx(expected_km, abs=0.15)


def test_rupture_distance_zero_on_trace() -> None:
    lon, lat = np.array(EVENTS[0].traces[0][5:8]).T
    x, y = TO_UTM.transform(lon, lat)
    np.testing.assert_allclose(rupture_distance_km(x, y, CRS, EVENTS[0]), 0, atol=1e-6)


def test_anchored_pga_matches_anchor_near_centre() -> None:
    x, y, _ = _town_grid()
    near = np.hypot(x - KMARAS[0], y - KMARAS[1]) < 150
    anchor_pga_g = 0.38
    medians = []
    for seed in range(8):
        shaking = simulate_pga(
            x,
            y,
            CRS,
            np.random.default_rng(seed),
            vs30_m_s=593.0,
            anchor_xy=KMARAS,
            anchor_pga_g=anchor_pga_g,
        )
        medians.append(float(np.median(shaking.pga_g[near])))
    ratios = np.array(medians) / anchor_pga_g
    assert np.all(np.abs(np.log(ratios)) < np.log(1.25)), ratios
    assert np.median(ratios) == pytest.approx(1.0, abs=0.1)
    # the field is conditioned: the seeds scatter much less than sigma = 0.3 would
    assert np.std(np.log(ratios)) < 0.15


def test_anchored_pga_is_spatially_smooth() -> None:
    x, y, side = _town_grid()
    near_sq, far_sq = [], []
    for seed in range(3):
        shaking = simulate_pga(
            x,
            y,
            CRS,
            np.random.default_rng(seed),
            vs30_m_s=593.0,
            anchor_xy=KMARAS,
            anchor_pga_g=0.38,
            events=EVENTS[:1],
        )
        residual = np.log(shaking.pga_g / shaking.median_pga_g).reshape(side, side)
        # squared differences of points 50 m apart and 2 km apart (semivariogram)
        near_sq.append(np.mean((residual[:, 1:] - residual[:, :-1]) ** 2))
        far_sq.append(np.mean((residual[:, 40:] - residual[:, :-40]) ** 2))
    assert np.mean(near_sq) < 0.5 * np.mean(far_sq)


def test_simulate_pga_is_deterministic() -> None:
    x, y, _ = _town_grid(half_m=500.0, step_m=100.0)

    def draw(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return simulate_pga(
            x, y, CRS, rng, vs30_m_s=593.0, anchor_xy=KMARAS, anchor_pga_g=0.38
        ).pga_g

    first = draw(7)
    np.testing.assert_array_equal(first, draw(7))
    assert not np.array_equal(first, draw(8))
    assert np.all(np.isfinite(first))
    assert np.all(first > 0)


def test_unanchored_pga_decreases_with_distance() -> None:
    # a 60 km west-east line ending on the trace at Fevzipaşa (36.646, 37.086)
    x0, y0 = TO_UTM.transform(36.646, 37.086)
    x = np.arange(x0 - 60_000, x0 + 1, 200.0)
    y = np.full_like(x, y0)
    pga, rjb = [], []
    for seed in range(6):
        shaking = simulate_pga(
            x, y, CRS, np.random.default_rng(seed), vs30_m_s=760.0, events=EVENTS[:1]
        )
        pga.append(shaking.pga_g)
        rjb.append(shaking.rjb_km)
        np.testing.assert_allclose(
            shaking.median_pga_g, asb14_pga_g(7.8, shaking.rjb_km, 760.0)
        )
    all_pga, all_rjb = np.concatenate(pga), np.concatenate(rjb)
    assert all_rjb.min() < 1
    assert all_rjb.max() > 50
    bins = [(0, 5), (15, 30), (35, 60)]
    medians = [np.median(all_pga[(all_rjb >= lo) & (all_rjb < hi)]) for lo, hi in bins]
    assert medians[0] > 1.5 * medians[1]
    assert medians[1] > 1.5 * medians[2]
    # near the fault the unconditioned field sits above the GMM median (event term)
    assert medians[0] > asb14_pga_g(7.8, np.array([2.5]), 760.0)[0]
