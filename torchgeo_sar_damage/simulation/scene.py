# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Urban scenes: building footprints, storeys, construction and districts.

A town is laid out as a grid of street blocks oriented like its real street grid
(organic old towns get larger block-to-block rotation), each block divided into plots
along its two long sides; a plot holds at most one building with front and side
set-backs, as in Turkish apartment (``apartman``) blocks. The buildings nearest the
centre (with a random, irregular edge) are kept. The town is split into five
administrative units: the historic centre (``Merkez``) and four sectors (``Kuzey``,
``Doğu``, ``Güney``, ``Batı``); one sector is the new development area (taller, better
code, as TOKİ estates), the centre holds the oldest stock.

Per building the scene draws occupancy, storeys (the town's storey distribution,
shifted by district, capped on small footprints) and a GEM Building Taxonomy string in
the dialect of GEM's Türkiye exposure files (``CR/LFINF(MUR+CBH)+CDL+DUL/H:4/RES``,
``MUR+CBH/LWAL+DNO/H:2/RES``, ``HBET:7-9``...), from the district's construction mix
(shares from GEM's province files and the city inventories supplied to USGS, see
:mod:`~torchgeo_sar_damage.simulation.cities`). Height in metres is storeys times a
storey height of 2.9-3.2 m plus a taller ground floor and a parapet.

:func:`scene_from_footprints` replaces the generated layout with real footprints (any
vector file OGR reads, any CRS), reprojected to their UTM zone.
"""

import math
import os
import re
import unicodedata
import warnings
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from pyproj import Transformer
from rasterio import features
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from ..errors import InputFileError
from .cities import CITIES, City, ConstructionMix
from .grid import Grid, zoom_rows
from .sar import LandCover

#: Names of the five administrative units of a town (centre, then four sectors).
DISTRICT_NAMES = ('Merkez', 'Kuzey', 'Doğu', 'Güney', 'Batı')
#: Margin (m) between the outermost buildings and the scene bounds.
SCENE_MARGIN_M = 80.0


@dataclass
class Scene:
    """A town ready to be shaken, damaged and imaged.

    Attributes:
        slug: lowercase ASCII name of the town.
        name: display name.
        city: the built-in city, or None for scenes over user footprints.
        crs: projected CRS of every geometry (a UTM zone).
        buildings: true footprints with ``building_id``, ``storeys``, ``height_m``,
            ``taxonomy``, ``occupancy``, ``ID_2`` and ``yard`` columns.
        districts: administrative units with GEM ``ID_0, NAME_0, ID_1, NAME_1, ID_2,
            NAME_2`` columns; they tile the scene bounds.
        centre: town centre (x, y) in ``crs``.
        bounds: scene bounds (left, bottom, right, top) in ``crs``.
        blocks: street-block polygons (empty for user footprints).
        elevation_m: terrain elevation at the centre.
    """

    slug: str
    name: str
    city: City | None
    crs: str
    buildings: gpd.GeoDataFrame
    districts: gpd.GeoDataFrame
    centre: tuple[float, float]
    bounds: tuple[float, float, float, float]
    blocks: list[Polygon]
    elevation_m: float

    def grid(self, pixel_m: float) -> Grid:
        """The raster grid over the scene at a given pixel size."""
        return Grid.from_bounds(*self.bounds, pixel_m, self.crs)


def slugify(text: str) -> str:
    """Lowercase ASCII slug of a name (``Kahramanmaraş`` -> ``kahramanmaras``)."""
    ascii_text = (
        unicodedata.normalize('NFKD', text.replace('ı', 'i').replace('İ', 'I'))
        .encode('ascii', 'ignore')
        .decode()
    )
    slug = re.sub(r'[^a-z0-9]+', '-', ascii_text.lower()).strip('-')
    return slug or 'scene'


def _rect(cx: float, cy: float, w: float, d: float, angle_deg: float) -> Polygon:
    """Rectangle of width w (along the angle) and depth d centred on (cx, cy)."""
    a = math.radians(angle_deg)
    ux, uy = math.sin(a), math.cos(a)  # along (azimuth angle, clockwise from north)
    vx, vy = uy, -ux
    hw, hd = w / 2, d / 2
    pts = [
        (cx - ux * hw - vx * hd, cy - uy * hw - vy * hd),
        (cx + ux * hw - vx * hd, cy + uy * hw - vy * hd),
        (cx + ux * hw + vx * hd, cy + uy * hw + vy * hd),
        (cx - ux * hw + vx * hd, cy - uy * hw + vy * hd),
    ]
    return Polygon(pts)


def _footprint(
    cx: float, cy: float, w: float, d: float, angle_deg: float, rng: np.random.Generator
) -> Polygon:
    """A building footprint: a rectangle, sometimes an L shape."""
    poly = _rect(cx, cy, w, d, angle_deg)
    if rng.random() < 0.15 and w > 9 and d > 9:
        # cut one corner: L-shaped plan
        cw, cd = w * rng.uniform(0.3, 0.5), d * rng.uniform(0.3, 0.5)
        sx, sy = rng.choice([-1, 1]), rng.choice([-1, 1])
        a = math.radians(angle_deg)
        ux, uy = math.sin(a), math.cos(a)
        vx, vy = uy, -ux
        ox = cx + sx * ux * (w - cw) / 2 + sy * vx * (d - cd) / 2
        oy = cy + sx * uy * (w - cw) / 2 + sy * vy * (d - cd) / 2
        cut = poly.difference(_rect(ox, oy, cw + 0.01, cd + 0.01, angle_deg))
        if isinstance(cut, Polygon):
            return cut
    return poly


def _non_overlapping(feet: list[Polygon]) -> np.ndarray:
    """Mask that drops every footprint overlapping an earlier one (touching is fine).

    Blocks are rotated and resized at random, so plots of neighbouring blocks can
    collide across a narrow street; the later plot is left empty.
    """
    geoms = np.asarray(feet, dtype=object)
    left, right = shapely.STRtree(geoms).query(geoms, predicate='intersects')
    pairs = left < right
    left, right = left[pairs], right[pairs]
    area = shapely.area(shapely.intersection(geoms[left], geoms[right]))
    keep = np.ones(len(feet), dtype=bool)
    for i, j in zip(left[area > 0.01], right[area > 0.01]):
        if keep[i]:
            keep[j] = False
    return keep


@dataclass
class _Block:
    """A street block of the layout.

    Attributes:
        index: position of the block in :attr:`_Plots.blocks`.
        cx: x of the block's centre.
        cy: y of the block's centre.
        width: length of the block along its street fronts (m).
        depth: depth of the block across them (m).
        angle_deg: azimuth of the street fronts (degrees clockwise from north).
        outer: whether the block lies on the outskirts, where industrial plots sit.
    """

    index: int
    cx: float
    cy: float
    width: float
    depth: float
    angle_deg: float
    outer: bool

    def axes(self) -> tuple[float, float, float, float]:
        """Unit vectors along the street fronts and across them, ``(ux, uy, vx, vy)``."""
        a = math.radians(self.angle_deg)
        ux, uy = math.sin(a), math.cos(a)
        return ux, uy, uy, -ux


@dataclass
class _Plots:
    """Footprints laid out so far, with what the scene needs of each one.

    Attributes:
        feet: the building footprints.
        dist: distance of each footprint from the town centre (m).
        yards: land cover (:class:`~.sar.LandCover`) of each plot's yard.
        industrial: whether each plot is industrial.
        block_of: index in ``blocks`` of each footprint's block.
        blocks: outlines of the street blocks.
    """

    feet: list[Polygon] = field(default_factory=list)
    dist: list[float] = field(default_factory=list)
    yards: list[int] = field(default_factory=list)
    industrial: list[bool] = field(default_factory=list)
    block_of: list[int] = field(default_factory=list)
    blocks: list[Polygon] = field(default_factory=list)

    def kept(self, keep: np.ndarray) -> '_Plots':
        """The footprints where ``keep`` is true (all the blocks stay).

        Args:
            keep: boolean mask, one value per footprint.

        Returns:
            The kept footprints, in the same order.
        """
        return _Plots(
            feet=[f for f, k in zip(self.feet, keep) if k],
            dist=[d for d, k in zip(self.dist, keep) if k],
            yards=[y for y, k in zip(self.yards, keep) if k],
            industrial=[i for i, k in zip(self.industrial, keep) if k],
            block_of=[b for b, k in zip(self.block_of, keep) if k],
            blocks=self.blocks,
        )


def _layout(
    city: City, centre: tuple[float, float], n: int, rng: np.random.Generator
) -> tuple[list[Polygon], list[Polygon], np.ndarray, np.ndarray]:
    """Lay out street blocks and plots, growing the grid until ``n`` footprints fit.

    Args:
        city: the town.
        centre: the town centre.
        n: number of buildings.
        rng: random generator (the layout's stream).

    Returns:
        The footprints, the blocks holding them, the land cover of each footprint's
        yard and whether each one is industrial.
    """
    bx, by = city.block_m
    street = city.street_m
    fmin, fmax = city.plot_frontage_m
    per_block = 2 * bx / ((fmin + fmax) / 2) * city.plot_fill
    side = max(2, math.ceil(math.sqrt(1.6 * n / per_block)))
    # industrial plots sit on the outer blocks of a town of the expected radius
    town_radius = math.sqrt(n / per_block * (bx + street) * (by + street) / math.pi)
    while True:
        plots = _lay_out_blocks(city, centre, side, town_radius, rng)
        keep = _non_overlapping(plots.feet)
        if int(keep.sum()) >= n:
            break
        side += 2
    plots = plots.kept(keep)
    order = _town_edge(plots, centre, n, rng)
    kept_blocks = sorted({plots.block_of[k] for k in order})
    return (
        [plots.feet[k] for k in order],
        [plots.blocks[b] for b in kept_blocks],
        np.asarray(plots.yards)[order],
        np.asarray(plots.industrial)[order],
    )


def _lay_out_blocks(
    city: City,
    centre: tuple[float, float],
    side: int,
    town_radius: float,
    rng: np.random.Generator,
) -> _Plots:
    """Lay out a square grid of street blocks and fill them with plots.

    Args:
        city: the town.
        centre: the town centre.
        side: the grid has ``2 side + 1`` blocks each way.
        town_radius: expected radius of the town (m); blocks beyond 0.7 of it are on
            the outskirts.
        rng: random generator.

    Returns:
        Every footprint laid out, overlapping ones included, and every block.
    """
    bx, by = city.block_m
    street = city.street_m
    a = math.radians(city.grid_azimuth_deg)
    ux, uy = math.sin(a), math.cos(a)
    vx, vy = uy, -ux
    plots = _Plots()
    for i in range(-side, side + 1):
        for j in range(-side, side + 1):
            sbx = bx * rng.uniform(0.85, 1.0)
            sby = by * rng.uniform(0.85, 1.0)
            ang = city.grid_azimuth_deg + rng.normal(0, city.grid_jitter_deg)
            cx = centre[0] + i * (bx + street) * ux + j * (by + street) * vx
            cy = centre[1] + i * (bx + street) * uy + j * (by + street) * vy
            r_block = math.hypot(cx - centre[0], cy - centre[1])
            plots.blocks.append(_rect(cx, cy, sbx, sby, ang))
            block = _Block(
                index=len(plots.blocks) - 1,
                cx=cx,
                cy=cy,
                width=sbx,
                depth=sby,
                angle_deg=ang,
                outer=r_block > 0.7 * town_radius,
            )
            for row in (-1, 1):
                _lay_out_row(city, centre, block, row, plots, rng)
    return plots


def _lay_out_row(
    city: City,
    centre: tuple[float, float],
    block: _Block,
    row: int,
    plots: _Plots,
    rng: np.random.Generator,
) -> None:
    """Divide one long side of a block into plots and build on some of them.

    Args:
        city: the town.
        centre: the town centre.
        block: the block.
        row: -1 or 1, the side of the block.
        plots: where the footprints go (appended in place).
        rng: random generator.
    """
    fmin, fmax = city.plot_frontage_m
    pos = -block.width / 2
    while True:
        front = rng.uniform(fmin, fmax)
        ind = block.outer and rng.random() < 0.12
        if ind:
            front *= rng.uniform(2.0, 3.0)
        if pos + front > block.width / 2:
            break
        pcx = pos + front / 2
        pos += front
        if rng.random() > city.plot_fill:
            continue
        _build_on_plot(centre, block, row, (pcx, front), ind, plots, rng)


def _build_on_plot(
    centre: tuple[float, float],
    block: _Block,
    row: int,
    plot: tuple[float, float],
    industrial: bool,
    plots: _Plots,
    rng: np.random.Generator,
) -> None:
    """Put a building on a plot, set back from the street, unless it is too small.

    Args:
        centre: the town centre.
        block: the plot's block.
        row: -1 or 1, the side of the block.
        plot: position of the plot's middle along the block from its centre, and the
            plot's frontage (m).
        industrial: whether the plot is industrial (deeper buildings).
        plots: where the footprint goes (appended in place).
        rng: random generator.
    """
    pcx, front = plot
    depth_plot = block.depth / 2
    w = front - rng.uniform(1.0, 4.0)
    d = min(depth_plot - rng.uniform(2.0, 5.0), rng.uniform(9.0, 18.0))
    if industrial:
        d = depth_plot - rng.uniform(1.5, 3.0)
    if w < 6 or d < 6:
        return
    setback = rng.uniform(1.0, 4.0)
    off = row * (block.depth / 2 - setback - d / 2)
    bux, buy, bvx, bvy = block.axes()
    fx = block.cx + bux * pcx + bvx * off
    fy = block.cy + buy * pcx + bvy * off
    plots.feet.append(_footprint(fx, fy, w, d, block.angle_deg, rng))
    plots.dist.append(math.hypot(fx - centre[0], fy - centre[1]))
    plots.yards.append(
        int(
            rng.choice(
                [
                    LandCover.PAVED,
                    LandCover.BARE_SOIL,
                    LandCover.GRASS,
                    LandCover.TREES,
                ],
                p=[0.45, 0.25, 0.2, 0.1],
            )
        )
    )
    plots.industrial.append(industrial)
    plots.block_of.append(block.index)


def _town_edge(
    plots: _Plots, centre: tuple[float, float], n: int, rng: np.random.Generator
) -> np.ndarray:
    """Keep the ``n`` footprints nearest the centre, behind an irregular town edge.

    Footprints are ranked by distance plus a smooth angular perturbation.

    Args:
        plots: the non-overlapping footprints.
        centre: the town centre.
        n: number of footprints to keep.
        rng: random generator.

    Returns:
        Indices of the kept footprints, in increasing order.
    """
    d_arr = np.asarray(plots.dist)
    xs = np.array([f.centroid.x for f in plots.feet]) - centre[0]
    ys = np.array([f.centroid.y for f in plots.feet]) - centre[1]
    theta = np.arctan2(ys, xs)
    phases = rng.uniform(0, 2 * np.pi, 3)
    wobble = 1 + 0.15 * sum(np.sin((k + 2) * theta + p) for k, p in enumerate(phases))
    order = np.argsort(d_arr / wobble, kind='stable')[:n]
    return np.sort(order)


def _districts(
    centre: tuple[float, float],
    radius_m: float,
    bounds: tuple[float, float, float, float],
    crs: str,
    province_id: str,
    province_name: str,
    town: str,
    code_base: int,
) -> gpd.GeoDataFrame:
    """Centre disc plus four sectors that tile the scene bounds."""
    cx, cy = centre
    scene_box = box(*bounds)
    core = shapely.Point(cx, cy).buffer(0.45 * radius_m, quad_segs=16)
    far = 10 * max(bounds[2] - bounds[0], bounds[3] - bounds[1])
    polys: list[BaseGeometry] = [core.intersection(scene_box)]
    for k in range(4):  # north, east, south, west sectors
        a0 = math.radians(90 * k - 45)
        a1 = a0 + math.pi / 2
        wedge = Polygon(
            [
                (cx, cy),
                (cx + far * math.sin(a0), cy + far * math.cos(a0)),
                (
                    cx + far * math.sin((a0 + a1) / 2) * 1.5,
                    cy + far * math.cos((a0 + a1) / 2) * 1.5,
                ),
                (cx + far * math.sin(a1), cy + far * math.cos(a1)),
            ]
        )
        polys.append(wedge.intersection(scene_box).difference(core))
    ids = [f'{province_id}-{code_base + k:03d}' for k in range(5)]
    names = [f'{town} {suffix}' for suffix in DISTRICT_NAMES]
    return gpd.GeoDataFrame(
        {
            'ID_0': 'TUR',
            'NAME_0': 'Turkey',
            'ID_1': province_id,
            'NAME_1': province_name,
            'ID_2': ids,
            'NAME_2': names,
        },
        geometry=polys,
        crs=crs,
    )


def _storey_draw(
    weights: tuple[float, ...], shift: float, rng: np.random.Generator, n: int
) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    k = np.arange(1, len(w) + 1)
    w = w * np.exp(shift * (k - k.mean()) / len(w) * 3)
    return rng.choice(k, size=n, p=w / w.sum())


def _height_token(storeys: int) -> str:
    if storeys <= 6:
        return f'H:{storeys}'
    if storeys <= 9:
        return 'HBET:7-9'
    return 'HBET:10+'


def _taxonomy(
    storeys: int,
    occupancy: str,
    industrial: bool,
    mix: ConstructionMix,
    rng: np.random.Generator,
) -> str:
    """One GEM taxonomy string in the dialect of GEM's Türkiye exposure files."""
    height = _height_token(storeys)
    occ = occupancy
    if industrial:
        if rng.random() < 0.5:
            return f'CR+PC/LFM+{rng.choice(["CDL", "CDM"])}+DUL/{height}/IND'
        return f'S/LFM+CDM+DUM/{height}/IND'
    shares = np.array([mix.rc_frame, mix.rc_wall, mix.urm, mix.adobe], dtype=np.float64)
    if storeys < 5:
        shares[1] = 0.0
    if storeys > 4:
        shares[2] = 0.0
    if storeys > 2:
        shares[3] = 0.0
    if shares.sum() == 0:
        shares[0] = 1.0
    kind = rng.choice(4, p=shares / shares.sum())
    # GEM's Türkiye files never write CDN for RC: pre-code frames are CDL+DUL there
    code = str(rng.choice(['CDL+DUL', 'CDL+DUM', 'CDM'], p=mix.code_shares))
    if code == 'CDM':
        code += '+DUM' if rng.random() < 0.7 else '+DUL'
    if kind == 0:
        infill = rng.choice(['CL', 'CBH', 'CBS'], p=[0.45, 0.35, 0.2])
        return f'CR/LFINF(MUR+{infill})+{code}/{height}/{occ}'
    if kind == 1:
        return f'CR/LWAL+{code}/{height}/{occ}'
    if kind == 2:
        unit = rng.choice(['CBH', 'CLBRS', 'STRUB'], p=[0.55, 0.25, 0.2])
        return f'MUR+{unit}/LWAL+DNO/{height}/{occ}'
    return f'MUR+ADO/LWAL+DNO/{height}/{occ}'


def _attributes(
    feet: gpd.GeoSeries,
    districts: gpd.GeoDataFrame,
    profiles: dict[str, tuple[ConstructionMix, float]],
    storey_weights: tuple[float, ...],
    industrial: np.ndarray,
    rng: np.random.Generator,
    tagged_levels: np.ndarray | None = None,
) -> pd.DataFrame:
    """Draw occupancy, storeys, height and taxonomy of every building."""
    n = len(feet)
    centroids = feet.centroid
    joined = gpd.sjoin(
        gpd.GeoDataFrame(geometry=centroids, crs=feet.crs),
        districts[['ID_2', 'geometry']],
        how='left',
        predicate='within',
    )
    joined = joined[~joined.index.duplicated(keep='first')]
    district = joined['ID_2'].fillna(districts['ID_2'].iloc[0]).to_numpy()
    area = feet.area.to_numpy()
    storeys = np.empty(n, dtype=np.int64)
    for d_id, (_, shift) in profiles.items():
        sel = district == d_id
        storeys[sel] = _storey_draw(storey_weights, shift, rng, int(sel.sum()))
    storeys = np.where(area < 90, np.minimum(storeys, 3), storeys)
    storeys = np.where(area < 140, np.minimum(storeys, 5), storeys)
    storeys = np.where(industrial, rng.integers(1, 3, n), storeys)
    if tagged_levels is not None:
        storeys = np.where(tagged_levels > 0, tagged_levels, storeys)
    occ_draw = rng.random(n)
    occupancy = np.where(
        occ_draw < 0.86, 'RES', np.where(occ_draw < 0.93, 'MIX1', 'COM')
    )
    occupancy = np.where(industrial, 'IND', occupancy)
    taxonomy = [
        _taxonomy(
            int(storeys[i]),
            str(occupancy[i]),
            bool(industrial[i]),
            profiles[district[i]][0],
            rng,
        )
        for i in range(n)
    ]
    storey_h = rng.uniform(2.9, 3.2, n)
    height = storeys * storey_h + rng.uniform(0.3, 1.0, n) + rng.uniform(0.0, 1.2, n)
    return pd.DataFrame(
        {
            'storeys': storeys,
            'height_m': height.round(2),
            'taxonomy': taxonomy,
            'occupancy': occupancy,
            'ID_2': district,
        }
    )


def _profiles(
    districts: gpd.GeoDataFrame, city: City, rng: np.random.Generator
) -> dict[str, tuple[ConstructionMix, float]]:
    """Construction mix and storey shift per district: old centre, one new sector."""
    ids = list(districts['ID_2'])
    new_sector = 1 + int(rng.integers(0, 4))
    out: dict[str, tuple[ConstructionMix, float]] = {}
    for k, d_id in enumerate(ids):
        if k == 0:
            out[d_id] = (city.old_town_mix, -0.3)
        elif k == new_sector:
            out[d_id] = (city.new_town_mix, 0.8)
        else:
            out[d_id] = (city.mix, 0.0)
    return out


def _scene_bounds(geoms: gpd.GeoSeries) -> tuple[float, float, float, float]:
    left, bottom, right, top = geoms.total_bounds
    m = SCENE_MARGIN_M
    return (
        math.floor((left - m) / 10) * 10,
        math.floor((bottom - m) / 10) * 10,
        math.ceil((right + m) / 10) * 10,
        math.ceil((top + m) / 10) * 10,
    )


def generate_scene(
    city: City, n_buildings: int, rng: np.random.Generator, crs: str = 'EPSG:32637'
) -> Scene:
    """Generate a built-in town.

    Args:
        city: the town.
        n_buildings: number of buildings.
        rng: random generator.
        crs: projected CRS (UTM 37N for every built-in town).

    Returns:
        The scene.
    """
    to_crs = Transformer.from_crs('EPSG:4326', crs, always_xy=True)
    cx, cy = to_crs.transform(city.lon, city.lat)
    centre = (round(cx, 1), round(cy, 1))
    feet, blocks, yards, industrial = _layout(city, centre, n_buildings, rng)
    geoms = gpd.GeoSeries(feet, crs=crs)
    bounds = _scene_bounds(geoms)
    radius = float(np.max(geoms.centroid.distance(shapely.Point(centre))))
    code_base = 10 * (list(CITIES).index(city.slug) + 1)
    districts = _districts(
        centre,
        radius,
        bounds,
        crs,
        city.province_id,
        city.province_name,
        city.name,
        code_base,
    )
    profiles = _profiles(districts, city, rng)
    attrs = _attributes(
        geoms, districts, profiles, city.storey_weights, industrial, rng
    )
    buildings = gpd.GeoDataFrame(attrs, geometry=geoms.values, crs=crs)
    buildings.insert(0, 'building_id', np.arange(1, len(buildings) + 1, dtype=np.int64))
    buildings['yard'] = yards.astype(np.uint8)
    return Scene(
        city.slug,
        city.name,
        city,
        crs,
        buildings,
        districts,
        centre,
        bounds,
        blocks,
        city.elevation_m,
    )


def _read_footprints(path: str) -> gpd.GeoDataFrame:
    """Read footprints, reproject them to their UTM zone and drop unusable ones."""
    try:
        frame = gpd.read_file(path)
    except (DataSourceError, DataLayerError, OSError, ValueError) as err:
        raise InputFileError(path, f'cannot be read as a vector file ({err})') from None
    if frame.crs is None:
        raise InputFileError(
            path, 'has no CRS; assign one (e.g. with ogr2ogr -a_srs) and retry'
        )
    if len(frame) == 0:
        raise InputFileError(path, 'holds no features')
    try:
        utm = frame.estimate_utm_crs()
    except (RuntimeError, ValueError) as err:
        raise InputFileError(
            path, f'has no usable geometries to locate a UTM zone ({err})'
        ) from None
    epsg = utm.to_epsg()
    frame = frame.to_crs(f'EPSG:{epsg}' if epsg else utm.to_wkt())
    geom = frame.geometry
    keep = (
        ~geom.isna() & ~geom.is_empty & geom.geom_type.isin(['Polygon', 'MultiPolygon'])
    )
    keep &= geom.is_valid & (geom.area > 0)
    dropped = int((~keep).sum())
    if dropped:
        warnings.warn(
            f'{path}: dropped {dropped} of {len(frame)} footprints that are empty, '
            'invalid, zero-area or not polygons',
            UserWarning,
            stacklevel=3,
        )
    frame = frame[keep]
    if len(frame) == 0:
        raise InputFileError(path, 'holds no valid polygon footprints')
    return frame.reset_index(drop=True)


def _tag_levels(frame: gpd.GeoDataFrame) -> np.ndarray:
    """Storeys from OSM ``building:levels`` where it is a positive number, else 0."""
    for col in ('building:levels', 'building_levels', 'levels'):
        if col in frame.columns:
            vals = pd.to_numeric(frame[col], errors='coerce').to_numpy(dtype=np.float64)
            vals = np.where(
                np.isfinite(vals) & (vals >= 1) & (vals <= 60), np.round(vals), 0
            )
            return vals.astype(np.int64)
    return np.zeros(len(frame), dtype=np.int64)


def nearest_city(lon: float, lat: float) -> tuple[City, float]:
    """Built-in city nearest to a point and its distance in km (flat earth)."""
    best = min(
        CITIES.values(),
        key=lambda c: (
            (c.lon - lon) ** 2 * math.cos(math.radians(lat)) ** 2 + (c.lat - lat) ** 2
        ),
    )
    km = 111.2 * math.hypot(
        (best.lon - lon) * math.cos(math.radians(lat)), best.lat - lat
    )
    return best, km


def scene_from_footprints(
    path: str, rng: np.random.Generator, n_buildings: int | None = None
) -> Scene:
    """Build a scene over real footprints.

    Invalid, empty, zero-area and non-polygon geometries are dropped with a counted
    warning. Footprints are reprojected to their UTM zone. Storeys come from OSM
    ``building:levels`` where tagged, otherwise from the storey distribution and
    construction mix of the nearest built-in town.

    Args:
        path: any vector file OGR reads, in any CRS.
        rng: random generator.
        n_buildings: keep only the buildings nearest the centre of the extent.

    Returns:
        The scene; ``city`` is None and the name comes from the file name.
    """
    frame = _read_footprints(path)
    epsg = frame.crs.to_epsg()
    crs_str = f'EPSG:{epsg}' if epsg else frame.crs.to_wkt()
    cent = frame.geometry.centroid
    centre = (float(cent.x.median()), float(cent.y.median()))
    if n_buildings is not None and n_buildings < len(frame):
        dist = cent.distance(shapely.Point(centre)).to_numpy()
        frame = frame.iloc[np.sort(np.argsort(dist, kind='stable')[:n_buildings])]
        frame = frame.reset_index(drop=True)
    geoms = gpd.GeoSeries(frame.geometry.values, crs=crs_str)
    to_ll = Transformer.from_crs(crs_str, 'EPSG:4326', always_xy=True)
    lon, lat = to_ll.transform(*centre)
    ref, _ = nearest_city(lon, lat)
    bounds = _scene_bounds(geoms)
    radius = float(np.max(geoms.centroid.distance(shapely.Point(centre)))) + 1.0
    stem = os.path.splitext(os.path.basename(path))[0]
    slug = slugify(stem)
    districts = _districts(
        centre, radius, bounds, crs_str, ref.province_id, ref.province_name, stem, 900
    )
    profiles = _profiles(districts, ref, rng)
    areas = geoms.area.to_numpy()
    industrial = (areas > 900) & (rng.random(len(geoms)) < 0.5)
    attrs = _attributes(
        geoms,
        districts,
        profiles,
        ref.storey_weights,
        industrial,
        rng,
        _tag_levels(frame),
    )
    buildings = gpd.GeoDataFrame(attrs, geometry=geoms.values, crs=crs_str)
    buildings.insert(0, 'building_id', np.arange(1, len(buildings) + 1, dtype=np.int64))
    yard_classes = np.array(
        [LandCover.PAVED, LandCover.BARE_SOIL, LandCover.GRASS, LandCover.TREES]
    )
    buildings['yard'] = yard_classes[rng.integers(0, 4, len(buildings))].astype(
        np.uint8
    )
    return Scene(
        slug,
        stem,
        None,
        crs_str,
        buildings,
        districts,
        centre,
        bounds,
        [],
        ref.elevation_m,
    )


#: Rows of the smooth land-cover field computed at once by ``landcover(low_memory=True)``.
LANDCOVER_BAND_ROWS = 512


def landcover(
    scene: Scene, grid: Grid, rng: np.random.Generator, *, low_memory: bool = False
) -> np.ndarray:
    """Rasterise the scene's surface classes.

    Outside the town: fields, grass and orchards in smooth patches. Inside: streets
    (``ROAD``) between blocks, each plot's yard class around its building, and the
    building footprints (``BUILDING``).

    Args:
        scene: the scene.
        grid: output grid.
        rng: random generator.
        low_memory: interpolate the smooth field in bands of
            :data:`LANDCOVER_BAND_ROWS` rows and burn the town straight into the
            result, so that memory stays near one byte per pixel instead of about
            ten (for grids of hundreds of megapixels). The field then differs from
            the whole-grid one by rounding only (about 1e-15), so classes agree except
            for pixels exactly at a class threshold.

    Returns:
        uint8 array of :class:`~torchgeo_sar_damage.simulation.sar.LandCover` values.
    """
    from scipy.ndimage import gaussian_filter, zoom

    coarse = max(1, round(40 / grid.pixel_m))
    small = rng.standard_normal((grid.height // coarse + 2, grid.width // coarse + 2))
    small = gaussian_filter(small, 1.5)
    if low_memory:
        lc = np.empty(grid.shape, dtype=np.uint8)
        for row in range(0, grid.height, LANDCOVER_BAND_ROWS):
            rows = min(LANDCOVER_BAND_ROWS, grid.height - row)
            band = zoom_rows(small, coarse, row, rows, grid.width)
            lc[row : row + rows] = _field_classes(band)
    else:
        field = zoom(small, coarse, order=1)[: grid.height, : grid.width]
        lc = _field_classes(field)
        del field
    feet = scene.buildings.geometry
    town: BaseGeometry
    if scene.blocks:
        town = shapely.union_all(scene.blocks).convex_hull.buffer(10)
        shapes: list[tuple[BaseGeometry, int]] = [(town, int(LandCover.ROAD))]
        shapes += [(b, int(LandCover.PAVED)) for b in scene.blocks]
    else:
        town = shapely.union_all(list(feet.buffer(12))).convex_hull
        shapes = [(town, int(LandCover.PAVED))]
    yard_geoms = feet.buffer(4.0, join_style='mitre')
    shapes += list(zip(yard_geoms, scene.buildings['yard'].astype(int)))
    shapes += [(g, int(LandCover.BUILDING)) for g in feet]
    if low_memory:
        # Burning in order over the field is what the where() below does.
        features.rasterize(shapes, out=lc, transform=grid.transform)
        return lc
    burned = features.rasterize(
        shapes, out_shape=grid.shape, transform=grid.transform, fill=255, dtype='uint8'
    )
    return np.where(burned == 255, lc, burned).astype(np.uint8)


def _field_classes(field: np.ndarray) -> np.ndarray:
    """Land-cover classes of the smooth field outside the town."""
    lc = np.full(field.shape, LandCover.BARE_SOIL, dtype=np.uint8)
    lc[field > 0.15] = LandCover.GRASS
    lc[field > 0.45] = LandCover.TREES
    return lc
