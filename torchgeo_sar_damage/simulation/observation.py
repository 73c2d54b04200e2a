# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""What mappers see: OSM footprints and Copernicus EMS damage gradings, with their errors.

**OpenStreetMap footprints** are traced by volunteers on (mis-registered) imagery:
the simulator shifts every footprint of a town by one systematic offset of 0.3-1.5 m
plus a per-building jitter (sigma 0.4 m), leaves 4 % of the buildings unmapped, traces
about 3 % of the buildings together with a neighbour less than 5 m away as one outline,
tags ``building`` with the values seen in
HOT exports (``yes`` for most, ``apartments``, ``house``, ``residential``,
``commercial``, ``retail``, ``industrial``), ``building:levels`` on about one building in
five (sometimes off by one), ``height`` on a few. Rates are [guess] engineering values.

**Copernicus EMS grading** (EMSR648 built-up layer, ``damage_gra``) is produced by
photo-interpretation of post-event optical imagery from above. It covers only an area
of interest (65-85 % of the town here), misses some buildings, marks a few
``Not Analysed`` and confuses grades the way vertical imagery does: a pancake
collapse under an intact roof, or heavy damage of lower storeys, looks intact from
above, so grade-4 buildings are often graded lower; debris around an intact building
sometimes makes it ``Possibly damaged``. The CEMS classes were defined from EMS-98
(Ciriza Labiano et al. 2021) but cannot be applied one-to-one; the confusion matrix
:data:`EMS_CONFUSION` is a [guess] consistent with that reading and with the EMS-98
grade definitions (Grünthal, ed., 1998, *European Macroseismic Scale 1998*, Cahiers du
Centre Européen de Géodynamique et de Séismologie 15).
"""

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely import affinity

#: Copernicus EMS ``damage_gra`` values, most to least damaged.
EMS_GRADES = ('Destroyed', 'Damaged', 'Possibly damaged', 'No visible damage')
#: Value for buildings inside the area of interest that were not assessed.
NOT_ANALYSED = 'Not Analysed'

#: P(CEMS grade | EMS-98 grade): rows G0..G5, columns as :data:`EMS_GRADES`.
EMS_CONFUSION = np.array(
    [
        [0.000, 0.004, 0.026, 0.970],  # G0
        [0.000, 0.006, 0.034, 0.960],  # G1
        [0.000, 0.010, 0.060, 0.930],  # G2
        [0.000, 0.080, 0.300, 0.620],  # G3
        [0.100, 0.550, 0.200, 0.150],  # G4
        [0.880, 0.090, 0.025, 0.005],  # G5
    ]
)

#: Neighbours closer than this (m) may be traced as one building.
MERGE_GAP_M = 5.0
#: Probability that such a pair of neighbours is merged.
MERGE_PAIR_PROBABILITY = 0.04

_BUILDING_TAGS = {
    'RES_high': (('yes', 'apartments'), (0.6, 0.4)),
    'RES_low': (('yes', 'house', 'residential'), (0.6, 0.3, 0.1)),
    'COM': (('yes', 'commercial', 'retail'), (0.6, 0.3, 0.1)),
    'IND': (('yes', 'industrial'), (0.5, 0.5)),
}


def osm_footprints(
    buildings: gpd.GeoDataFrame, rng: np.random.Generator
) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Derive an OSM-like footprint layer from the true buildings.

    Args:
        buildings: true buildings (``building_id``, ``storeys``, ``height_m``,
            ``occupancy``, geometry).
        rng: random generator.

    Returns:
        The OSM layer (``osm_id``, ``osm_type``, ``building``, ``building:levels``,
        ``height``, geometry) and, per true building, the ``osm_id`` of the polygon that
        maps it (0 where it is not mapped).
    """
    n = len(buildings)
    geoms = np.array(buildings.geometry.values, dtype=object)
    # systematic shift of the whole town plus per-building jitter
    shift_m = rng.uniform(0.3, 1.5)
    shift_dir = rng.uniform(0, 2 * np.pi)
    dx = shift_m * np.cos(shift_dir) + rng.normal(0, 0.4, n)
    dy = shift_m * np.sin(shift_dir) + rng.normal(0, 0.4, n)
    missing = rng.random(n) < 0.04
    merged_into = _merge_neighbours(buildings, missing, rng)
    candidates = np.unique(rng.integers(100_000_000, 1_200_000_000, n + n // 10 + 16))
    osm_ids = np.sort(rng.choice(candidates, n, replace=False))
    rows = []
    mapped_id = np.zeros(n, dtype=np.int64)
    storeys = buildings['storeys'].to_numpy()
    height = buildings['height_m'].to_numpy()
    occupancy = buildings['occupancy'].to_numpy()
    for i in range(n):
        if missing[i] or merged_into[i] != i:
            continue
        members = np.flatnonzero(merged_into == i)
        geom = geoms[i]
        if len(members) > 1:
            # traced as one outline across the gap between them
            geom = shapely.union_all([geoms[k] for k in members]).convex_hull
        geom = affinity.translate(geom, dx[i], dy[i])
        tags = _osm_tags(occupancy[i], int(storeys[i]), float(height[i]), rng)
        rows.append(
            {'osm_id': int(osm_ids[i]), 'osm_type': 'ways', **tags, 'geometry': geom}
        )
        mapped_id[members] = osm_ids[i]
    frame = gpd.GeoDataFrame(rows, geometry='geometry', crs=buildings.crs)
    return frame, mapped_id


def _merge_neighbours(
    buildings: gpd.GeoDataFrame, missing: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Choose the pairs of close neighbours that are traced as one building.

    Each pair closer than :data:`MERGE_GAP_M` is merged with probability
    :data:`MERGE_PAIR_PROBABILITY` (one draw per pair, in order), unless one of the
    two is unmapped or already merged.

    Args:
        buildings: true buildings.
        missing: which buildings are not mapped.
        rng: random generator.

    Returns:
        For each building, the building whose outline it is traced with (itself when
        it is not merged).
    """
    merged_into = np.arange(len(buildings))
    near = gpd.sjoin(
        gpd.GeoDataFrame(
            geometry=buildings.geometry.buffer(MERGE_GAP_M / 2), crs=buildings.crs
        ),
        gpd.GeoDataFrame(geometry=buildings.geometry, crs=buildings.crs),
        predicate='intersects',
    )
    pairs = near[near.index < near['index_right']]
    pairs = pairs[~pairs.index.duplicated(keep='first')]
    for i, j in zip(pairs.index.to_numpy(), pairs['index_right'].to_numpy()):
        if (
            rng.random() < MERGE_PAIR_PROBABILITY
            and merged_into[i] == i
            and merged_into[j] == j
            and not missing[i]
            and not missing[j]
        ):
            merged_into[j] = i
    return merged_into


def _osm_tags(
    occupancy: str, storeys: int, height_m: float, rng: np.random.Generator
) -> dict[str, str | None]:
    """Draw the tags a mapper gives one building.

    Args:
        occupancy: the building's GEM occupancy.
        storeys: its number of storeys.
        height_m: its height.
        rng: random generator (levels, then height, then the ``building`` value).

    Returns:
        ``building``, ``building:levels`` and ``height`` (None where not tagged).
    """
    if occupancy == 'IND':
        kind = 'IND'
    elif occupancy in ('COM', 'MIX1'):
        kind = 'COM'
    else:
        kind = 'RES_high' if storeys >= 4 else 'RES_low'
    values, probs = _BUILDING_TAGS[kind]
    levels: str | None = None
    if rng.random() < 0.2:
        lv = storeys + (int(rng.choice([-1, 1])) if rng.random() < 0.1 else 0)
        levels = str(max(1, lv))
    tag_height = f'{round(height_m)}' if rng.random() < 0.03 else None
    return {
        'building': str(rng.choice(values, p=probs)),
        'building:levels': levels,
        'height': tag_height,
    }


def ems_grading(
    buildings: gpd.GeoDataFrame, grades: np.ndarray, rng: np.random.Generator
) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Simulate a Copernicus EMS grading product over part of the town.

    Args:
        buildings: true buildings.
        grades: EMS-98 grade (0-5) of each building.
        rng: random generator.

    Returns:
        The grading layer (CEMS built-up fields) and, per building, its ``damage_gra``
        value or None where the building is not in the layer.
    """
    n = len(buildings)
    left, bottom, right, top = buildings.total_bounds
    frac = rng.uniform(0.65, 0.85)
    w, h = (right - left) * np.sqrt(frac), (top - bottom) * np.sqrt(frac)
    x0 = rng.uniform(left, right - w)
    y0 = rng.uniform(bottom, top - h)
    cent = buildings.geometry.centroid
    inside = (
        (cent.x >= x0) & (cent.x <= x0 + w) & (cent.y >= y0) & (cent.y <= y0 + h)
    ).to_numpy()
    digitised = inside & (rng.random(n) >= 0.05)
    labels: np.ndarray = np.full(n, None, dtype=object)
    u = rng.random(n)
    cum = np.cumsum(EMS_CONFUSION, axis=1)[np.asarray(grades)]
    idx = (u[:, None] > cum).sum(axis=1).clip(0, 3)
    graded = np.array(EMS_GRADES, dtype=object)[idx]
    not_analysed = rng.random(n) < 0.02
    graded = np.where(not_analysed, NOT_ANALYSED, graded)
    labels[digitised] = graded[digitised]
    sel = np.flatnonzero(digitised)
    jitter = rng.normal(0, 0.5, (len(sel), 2))
    geoms = [
        affinity.translate(buildings.geometry.iloc[k], jx, jy)
        for k, (jx, jy) in zip(sel, jitter)
    ]
    occ = buildings['occupancy'].to_numpy()[sel]
    obj_type = np.where(
        occ == 'IND',
        '12-Industrial Buildings',
        np.where(
            occ == 'RES', '11-Residential Buildings', '12-Non-residential Buildings'
        ),
    )
    frame = gpd.GeoDataFrame(
        pd.DataFrame(
            {
                'obj_type': obj_type,
                'name': 'Unknown',
                'info': 'Not Applicable',
                'damage_gra': labels[sel].astype(str),
                'det_method': 'Photo-interpretation',
                'notation': 'Not Applicable',
                'or_src_id': np.int32(1),
                'dmg_src_id': np.int32(2),
            }
        ),
        geometry=geoms,
        crs=buildings.crs,
    )
    return frame, labels
