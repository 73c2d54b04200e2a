# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""X-band VHR SAR backscatter renderer in ground-range geocoded (GTC) geometry.

The renderer turns a scene (land cover raster plus building footprints with heights and
EMS-98 damage grades) into calibrated sigma nought on a north-up grid, as a COSMO-SkyMed
Spotlight-2 GTC product would show it. All quantities are **linear** power unless a name
ends in ``_db``.

Geometry (flat terrain, plane-wave approximation, incidence ``θ`` from the vertical).
A scatterer at ground-range position ``x`` and height ``z`` is imaged at
``x_img = x − z·cot θ``: it is displaced *towards the sensor* by ``z / tan θ``; azimuth
positions are not displaced (zero-Doppler geometry). For a box building of height ``h``
this gives (Franceschetti, Iodice & Riccio, "SAR images of built areas: models and data
interpretation", CRC, doi:10.1201/9781420043754-23; Thiele et al. 2007, IEEE TGRS 45(11);
Brunner et al. 2010, IEEE TGRS 48(5)):

* **layover**: every wall facing the sensor is mapped onto the ground in front of it,
  a band of length ``L = h·cot θ``, where the returns of ground, facade and roof add;
* **roof**: the footprint translated towards the sensor by ``L``;
* **double bounce**: the wall–ground dihedral returns at the wall-foot range, i.e. a
  bright line on the *true* footprint edge facing the sensor (``x_img = 0``); its power
  falls off rapidly with the angle ``φ`` between the wall and the azimuth direction
  (Ferro, Brunner, Bruzzone & Lemoine 2011, IEEE GRSL 8(4):612–616);
* **shadow**: the ground behind the building, from the far footprint edge to
  ``S = h·tan θ`` away from the sensor, is not illuminated; together with the part of
  the footprint not covered by the displaced roof this forms the dark band
  ``x_img ∈ [max(0, w − L), w + S]``.

Radiometry. Ground clutter per land-cover class follows the constant-γ model at 10 GHz
(MathWorks Phased Array Toolbox ``surfacegamma``, citing Nathanson 1999 and Long 2001):
``σ0 = γ + 10·log10(cos θ)``; roof, facade, double-bounce and debris levels are
ranges chosen here, most of them guesses (marked [guess] below; that double bounce
depends strongly on wall orientation is from Ferro, Brunner, Bruzzone & Lemoine 2011,
IEEE GRSL 8(4):612-616). Every surface carries a mild log-normal texture so that it is
not flat.

Damage (EMS-98). Grades 0–2 look intact, grade 3 adds a little roof clutter, grade 4
collapses a random 30–70 % of the footprint to a rubble pile and breaks the
double-bounce line into fragments, grade 5 turns the whole building into a rubble pile
of 1/4–1/3 of its height: layover and shadow shrink in proportion, the continuous
double-bounce line disappears and the footprint and a few metres around it return
rough, heavy-tailed, bright debris (Balz & Liao 2010, Int. J. Remote Sens. 31(13)).
Per-building variability (roof material and rooftop clutter, walls not facing the
sensor, debris level overlapping intact roof levels) is deliberately large, so that
damage is only partly visible in the SAR image, as on real data.

Speckle. Single-look intensity of a homogeneous area is exponential and ``L``-look
intensity is Gamma distributed with shape ``L`` and mean ``μ``; the equivalent number
of looks is ``ENL = μ² / σ²`` (SAR-ARD ``S1_NRB`` documentation, ``docs/general/enl.rst``).
Speckle is simulated as the squared modulus of circular complex Gaussian noise filtered
by the (Gaussian) impulse response, so neighbouring pixels are correlated when the pixel
spacing is finer than the resolution, then multiplied onto the mean sigma nought; the
noise-equivalent sigma zero (NESZ) is added before speckle and sets the floor of
shadows.
"""

import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import rasterio.features
import scipy.ndimage
import shapely
from rasterio.enums import MergeAlg

from ..errors import ArgumentError
from .grid import Grid

__all__ = [
    'CLUTTER_SIGMA0_DB',
    'LandCover',
    'SARGeometry',
    'SARImage',
    'Scatterers',
    'building_scatterers',
    'render_sigma0',
    'render_sigma0_tiles',
    'tile_margin_px',
]


class LandCover(enum.IntEnum):
    """Per-pixel surface class produced by the scene generator."""

    #: Asphalt streets.
    ROAD = 0
    #: Yards, squares, parking.
    PAVED = 1
    #: Bare soil and winter fields.
    BARE_SOIL = 2
    #: Grass and low vegetation.
    GRASS = 3
    #: Trees, olive and pistachio orchards.
    TREES = 4
    #: Calm water.
    WATER = 5
    #: Ground covered by a building footprint.
    BUILDING = 6


#: Mean sigma nought (dB) of each land-cover class, X-band co-polarisation, θ ≈ 35°.
#: Constant-γ clutter (``surfacegamma``: flatland −20, farmland −15, wooded hill −10,
#: sea state 3 −40 dB) plus ``10·log10(cos 35°) = −0.87`` dB sets the scale; each value
#: is chosen within a range around it [guess]. ``BUILDING`` is only used where the land
#: cover says building but no footprint in the building table covers the pixel
#: (buildings are rendered from their geometry); its value is the middle of the
#: flat-roof range [guess].
CLUTTER_SIGMA0_DB: dict[LandCover, float] = {
    LandCover.ROAD: -19.0,
    LandCover.PAVED: -17.0,
    LandCover.BARE_SOIL: -13.0,
    LandCover.GRASS: -11.0,
    LandCover.TREES: -8.0,
    LandCover.WATER: -25.0,
    LandCover.BUILDING: -11.0,
}

_LOOK_SIDES = ('RIGHT', 'LEFT')

# Radiometric ranges (dB) drawn per building, X-band co-polarisation, θ ≈ 30-40°.
_ROOF_DB = (-15.0, -8.0)  # flat RC roofs, diffuse part
_BRIGHT_ROOF_DB = (-8.0, -3.0)  # tiled/metal or cluttered roofs [guess]
_BRIGHT_ROOF_FRACTION = 0.15  # share of such roofs [guess]
_WALL_DB = (-12.0, -5.0)  # facade return spread over the layover band [guess]
_STOREY_GAIN_DB = (3.0, 8.0)  # balcony / window rows over the facade level [guess]
_ROOF_POINT_DB = (5.0, 15.0)  # parapets, water tanks, solar heaters
_ROOF_POINTS_PER_M2 = (0.002, 0.02)  # rooftop clutter density [guess]
_DOUBLE_BOUNCE_DB = (5.0, 20.0)  # wall–ground dihedral facing the sensor
_DEBRIS_DB = (-12.0, -2.0)  # mean level of rubble [guess], overlaps bright roofs
_DEBRIS_POINT_DB = (0.0, 12.0)  # slab edges, rebar, broken corners [guess]
_DEBRIS_POINTS_PER_M2 = 1 / 15  # [guess]
_SPILL_M = (1.0, 4.0)  # debris spilling around a collapsed footprint [guess]
_SPILL_GAIN_DB = -3.0  # spilled debris relative to the pile [guess]
_PILE_FRACTION = (0.25, 1 / 3)  # pancake collapse: pile height / original height
_PARTIAL_COLLAPSE = (0.3, 0.7)  # share of a grade-4 footprint that collapses
_PANCAKE_SHARE = 0.45  # collapses whose roof slab stays on top of the pile [guess]
_PANCAKE_DEBRIS = 0.2  # debris points and spill of a pancake relative to a rubble heap
_FRAGMENT_M = 2.0  # length of the pieces of a broken double-bounce line
_FRAGMENT_KEEP = 0.5  # probability that a piece survives [guess]

# Textures (standard deviation of a mean-one log-normal, dB).
_CLUTTER_TEXTURE_DB = 1.5
_ROOF_TEXTURE_DB = 1.5
_DEBRIS_TEXTURE_DB = 5.0

_STOREY_M = 3.0  # storey height
_DOUBLE_BOUNCE_TAPER_DEG = 6.0  # e-folding angle of the dihedral return [guess]
_DOUBLE_BOUNCE_WIDTH_PX = 1.5  # width of the double-bounce line in range
_EPS = 1e-9


@dataclass(frozen=True)
class SARGeometry:
    """Acquisition geometry of a side-looking SAR over a flat scene.

    Attributes:
        incidence_deg: incidence angle at the scene centre, from the vertical.
        heading_deg: platform ground-track heading, clockwise from north (a descending
            sun-synchronous pass over Türkiye ≈ 190, an ascending one ≈ 350).
        look_side: ``'RIGHT'`` or ``'LEFT'`` of the ground track.

    Raises:
        ArgumentError: (a :class:`ValueError`) if the look side is not ``'RIGHT'`` or
            ``'LEFT'`` or the incidence angle is not strictly between 0 and 90 degrees.
    """

    incidence_deg: float
    heading_deg: float
    look_side: str = 'RIGHT'

    def __post_init__(self) -> None:
        """Validate the geometry."""
        if self.look_side not in _LOOK_SIDES:
            msg = (
                f'look_side={self.look_side!r} is invalid: '
                f"use 'RIGHT' or 'LEFT' (upper case, as in the products' metadata)"
            )
            raise ArgumentError(msg)
        if not 0.0 < self.incidence_deg < 90.0:
            msg = (
                f'incidence_deg={self.incidence_deg} is invalid: it must lie strictly '
                'between 0 and 90 degrees (COSMO-SkyMed: 20-50)'
            )
            raise ArgumentError(msg)

    @property
    def look_azimuth_deg(self) -> float:
        """Azimuth of the ground-range direction pointing away from the sensor.

        ``heading + 90`` for a right-looking and ``heading − 90`` for a left-looking
        sensor, clockwise from north, in ``[0, 360)``.
        """
        offset = 90.0 if self.look_side == 'RIGHT' else -90.0
        return (self.heading_deg + offset) % 360.0

    @property
    def range_unit_vector(self) -> tuple[float, float]:
        """Ground-range unit vector ``(east, north)`` pointing away from the sensor."""
        azimuth = math.radians(self.look_azimuth_deg)
        return math.sin(azimuth), math.cos(azimuth)

    def layover_m(self, height_m: float) -> float:
        """Displacement towards the sensor of a scatterer at the given height.

        Args:
            height_m: height above ground (m).

        Returns:
            ``height_m / tan(incidence)`` in ground range (m).
        """
        return height_m / math.tan(math.radians(self.incidence_deg))

    def shadow_m(self, height_m: float) -> float:
        """Length of the ground shadow cast away from the sensor by a vertical object.

        Args:
            height_m: height of the object (m).

        Returns:
            ``height_m · tan(incidence)`` in ground range (m).
        """
        return height_m * math.tan(math.radians(self.incidence_deg))


@dataclass
class SARImage:
    """A rendered SAR image on a :class:`~.grid.Grid`.

    Attributes:
        sigma0: float32 ``(rows, cols)``, linear sigma nought with speckle, what the
            sensor delivers.
        mean_sigma0: float32, linear sigma nought before speckle (its expected value),
            noise floor included.
        layover: boolean mask of the facade layover bands of standing walls (roof
            excluded), or ``None``.
        shadow: boolean mask of the ground in radar shadow outside footprints, or
            ``None``.
        double_bounce: boolean mask of the double-bounce lines, or ``None``.
    """

    sigma0: npt.NDArray[np.float32]
    mean_sigma0: npt.NDArray[np.float32]
    layover: npt.NDArray[np.bool_] | None = None
    shadow: npt.NDArray[np.bool_] | None = None
    double_bounce: npt.NDArray[np.bool_] | None = None


@dataclass
class _Parts:
    """Building parts of uniform height, each one a Polygon."""

    polygons: npt.NDArray[np.object_]
    building: npt.NDArray[np.intp]
    height_m: npt.NDArray[np.float64]
    collapsed: npt.NDArray[np.bool_]
    #: 0: no double bounce, 1: continuous line, 2: broken into fragments.
    double_bounce: npt.NDArray[np.int8]


@dataclass
class _Edges:
    """Straight wall segments of the building parts."""

    start: npt.NDArray[np.float64]  # (n, 2)
    end: npt.NDArray[np.float64]  # (n, 2)
    part: npt.NDArray[np.intp]
    facing: npt.NDArray[np.float64]  # cosine between outward normal and the sensor


def _db_to_linear(value_db: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Convert decibels to linear power."""
    return np.power(10.0, np.asarray(value_db, dtype=np.float64) / 10.0)


def _lognormal_texture(
    rng: np.random.Generator, shape: tuple[int, int], sigma_db: float
) -> npt.NDArray[np.float32]:
    """Draw a mean-one log-normal texture field with the given spread in dB."""
    sigma = np.float32(sigma_db * math.log(10.0) / 10.0)
    field = rng.standard_normal(shape, dtype=np.float32)
    field *= sigma
    field -= sigma * sigma / 2
    return np.exp(field, out=field)


def _rasterize_add(
    geometries: npt.NDArray[np.object_], values: npt.NDArray[np.float64], grid: Grid
) -> npt.NDArray[np.float32]:
    """Burn geometries into a float32 raster, adding the values where they overlap."""
    if len(geometries) == 0:
        return np.zeros(grid.shape, dtype=np.float32)
    return rasterio.features.rasterize(
        zip(geometries, values.astype(np.float64)),
        out_shape=grid.shape,
        transform=grid.transform,
        fill=0.0,
        dtype='float32',
        merge_alg=MergeAlg.add,
    )


def _rasterize_mask(
    geometries: npt.NDArray[np.object_], grid: Grid
) -> npt.NDArray[np.bool_]:
    """Burn geometries into a boolean raster (pixel centres inside)."""
    if len(geometries) == 0:
        return np.zeros(grid.shape, dtype=bool)
    burnt = rasterio.features.rasterize(
        ((geometry, 1) for geometry in geometries),
        out_shape=grid.shape,
        transform=grid.transform,
        fill=0,
        dtype='uint8',
    )
    return burnt.astype(bool)


def _add_points(
    layer: npt.NDArray[np.float32],
    grid: Grid,
    xy: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
) -> None:
    """Add point scatterers to the pixels that contain them (in place)."""
    col = np.floor((xy[:, 0] - grid.transform.c) / grid.pixel_m).astype(np.intp)
    row = np.floor((grid.transform.f - xy[:, 1]) / grid.pixel_m).astype(np.intp)
    inside = (row >= 0) & (row < grid.height) & (col >= 0) & (col < grid.width)
    np.add.at(layer, (row[inside], col[inside]), values[inside].astype(np.float32))


def _translate(
    polygons: npt.NDArray[np.object_], offsets: npt.NDArray[np.float64]
) -> npt.NDArray[np.object_]:
    """Translate every geometry by its own ``(dx, dy)`` offset (vectorised)."""
    counts = shapely.get_num_coordinates(polygons)
    per_coordinate = np.repeat(offsets, counts, axis=0)
    return shapely.transform(polygons, lambda xy: xy + per_coordinate)


def _parallelograms(
    start: npt.NDArray[np.float64],
    end: npt.NDArray[np.float64],
    offset_near: npt.NDArray[np.float64],
    offset_far: npt.NDArray[np.float64],
) -> npt.NDArray[np.object_]:
    """Areas swept by segments between two offsets (arrays of ``(n, 2)``)."""
    if len(start) == 0:
        return np.empty(0, dtype=object)
    corners = np.stack(
        [start + offset_near, end + offset_near, end + offset_far, start + offset_far],
        axis=1,
    )
    return np.asarray(shapely.polygons(corners), dtype=object)


def _sample_in_polygons(
    rng: np.random.Generator,
    polygons: npt.NDArray[np.object_],
    counts: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Draw uniform points inside polygons by rejection from their bounding boxes.

    Args:
        rng: random generator.
        polygons: the polygons.
        counts: number of points wanted in each polygon; fewer are returned where
            three candidates per wanted point were not enough.

    Returns:
        The points ``(n, 2)`` and the index of the polygon of each one.
    """
    candidates = 3 * counts
    owner = np.repeat(np.arange(len(polygons)), candidates)
    bounds = shapely.bounds(polygons)[owner]
    u = rng.random((len(owner), 2))
    x = bounds[:, 0] + u[:, 0] * (bounds[:, 2] - bounds[:, 0])
    y = bounds[:, 1] + u[:, 1] * (bounds[:, 3] - bounds[:, 1])
    inside = shapely.contains_xy(polygons[owner], x, y)
    # Keep the first `counts` candidates that fall inside each polygon.
    inside_before = np.concatenate([[0], np.cumsum(inside)])
    group_start = np.cumsum(candidates) - candidates
    rank = inside_before[1:] - inside_before[group_start][owner]
    keep = inside & (rank <= counts[owner])
    return np.column_stack([x[keep], y[keep]]), owner[keep]


def _speckle(
    rng: np.random.Generator,
    shape: tuple[int, int],
    looks: float,
    correlation_px: float,
) -> npt.NDArray[np.float32]:
    """Draw multiplicative speckle: Gamma(shape=looks, mean=1), spatially correlated.

    Each integer look is ``|h * c|²`` of white circular complex Gaussian noise ``c``
    filtered by a Gaussian impulse response ``h`` whose intensity response is
    ``correlation_px`` wide at −3 dB, normalised to an exponential law of mean 1; the
    fractional part of ``looks`` adds an uncorrelated Gamma variate, so the marginal law
    is exactly Gamma with shape ``looks`` (sum of independent Gammas of equal scale).
    """
    whole = math.floor(looks)
    fraction = looks - whole
    # Intensity response exp(-d²/s²) of an amplitude response exp(-d²/(2 s²)) is
    # -3 dB wide at 2 s sqrt(ln 2) = 1.665 s.
    sigma_px = correlation_px / (2.0 * math.sqrt(math.log(2.0)))
    variance = 1.0
    if sigma_px > 0:
        delta = np.zeros((1, 8 * math.ceil(sigma_px) + 11), dtype=np.float64)
        delta[0, delta.shape[1] // 2] = 1.0
        kernel = scipy.ndimage.gaussian_filter1d(delta, sigma_px, axis=1, mode='wrap')
        variance = float(np.sum(kernel**2)) ** 2  # separable: 1-D variance squared
    total = np.zeros(shape, dtype=np.float32)
    for _ in range(whole):
        for _component in range(2):
            field = rng.standard_normal(shape, dtype=np.float32)
            if sigma_px > 0:
                scipy.ndimage.gaussian_filter(
                    field, sigma_px, output=field, mode='wrap'
                )
            field *= field
            total += field
    total /= np.float32(2.0 * variance)
    if fraction > 0:
        total += rng.gamma(fraction, 1.0, size=shape).astype(np.float32)
    total /= np.float32(looks)
    return total


def _split_parts(
    buildings: gpd.GeoDataFrame,
    height_m: npt.NDArray[np.float64],
    grade: npt.NDArray[np.int64],
    pile_fraction: npt.NDArray[np.float64],
    rng: np.random.Generator,
) -> _Parts:
    """Split the buildings into parts of uniform height according to their damage."""
    footprints = np.asarray(buildings.geometry.values, dtype=object)
    polygons: list[npt.NDArray[np.object_]] = []
    owners: list[npt.NDArray[np.intp]] = []
    heights: list[npt.NDArray[np.float64]] = []
    collapsed: list[npt.NDArray[np.bool_]] = []

    whole = np.flatnonzero(grade != 4)
    parts, index = shapely.get_parts(footprints[whole], return_index=True)
    owner = whole[index]
    is_rubble = grade[owner] == 5
    polygons.append(parts)
    owners.append(owner)
    heights.append(np.where(is_rubble, pile_fraction[owner], 1.0) * height_m[owner])
    collapsed.append(is_rubble)

    # Grade 4: a random straight cut splits the footprint; one side collapses.
    for b in np.flatnonzero(grade == 4):
        footprint = footprints[b]
        angle = rng.uniform(0.0, 2.0 * math.pi)
        share = rng.uniform(*_PARTIAL_COLLAPSE)
        direction = np.array([math.cos(angle), math.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        xy = shapely.get_coordinates(footprint)
        along = xy @ direction
        cut = along.min() + share * (along.max() - along.min())
        reach = float(np.ptp(xy, axis=0).max()) + 10.0
        across = float(np.mean(xy @ normal))
        base = cut * direction + across * normal
        far = (along.min() - 1.0) * direction + across * normal
        corners = [base + reach * normal, base - reach * normal]
        corners += [far - reach * normal, far + reach * normal]
        half_plane = shapely.Polygon(corners)
        fallen = shapely.get_parts(shapely.intersection(footprint, half_plane))
        standing = shapely.get_parts(shapely.difference(footprint, half_plane))
        fallen = fallen[shapely.get_type_id(fallen) == 3]
        standing = standing[shapely.get_type_id(standing) == 3]
        for pieces, is_fallen in ((standing, False), (fallen, True)):
            polygons.append(pieces)
            owners.append(np.full(len(pieces), b, dtype=np.intp))
            scale = pile_fraction[b] if is_fallen else 1.0
            heights.append(np.full(len(pieces), scale * height_m[b]))
            collapsed.append(np.full(len(pieces), is_fallen))

    all_owners = np.concatenate(owners)
    all_collapsed = np.concatenate(collapsed)
    double_bounce = np.where(
        all_collapsed, 0, np.where(grade[all_owners] == 4, 2, 1)
    ).astype(np.int8)
    return _Parts(
        polygons=shapely.orient_polygons(np.concatenate(polygons), exterior_cw=False),
        building=all_owners,
        height_m=np.concatenate(heights),
        collapsed=all_collapsed,
        double_bounce=double_bounce,
    )


def _edges(parts: _Parts, away: tuple[float, float]) -> _Edges:
    """Extract the wall segments of all parts with their orientation to the sensor."""
    rings, ring_part = shapely.get_rings(parts.polygons, return_index=True)
    xy, xy_ring = shapely.get_coordinates(rings, return_index=True)
    same_ring = xy_ring[:-1] == xy_ring[1:]
    start, end = xy[:-1][same_ring], xy[1:][same_ring]
    part = ring_part[xy_ring[:-1][same_ring]]
    delta = end - start
    length = np.hypot(delta[:, 0], delta[:, 1])
    valid = length > _EPS
    # Exteriors are counter-clockwise and holes clockwise, so the outward normal of
    # the solid is on the right of each segment: (dy, -dx).
    normal = (
        np.column_stack([delta[:, 1], -delta[:, 0]]) / np.maximum(length, _EPS)[:, None]
    )
    facing = -(normal[:, 0] * away[0] + normal[:, 1] * away[1])
    return _Edges(start[valid], end[valid], part[valid], facing[valid])


def _fragment(
    rng: np.random.Generator,
    start: npt.NDArray[np.float64],
    end: npt.NDArray[np.float64],
    index: npt.NDArray[np.intp],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Cut segments into pieces of about ``_FRAGMENT_M`` and drop pieces at random."""
    length = np.hypot(*(end - start).T)
    pieces = np.maximum(1, np.ceil(length / _FRAGMENT_M)).astype(np.intp)
    owner = np.repeat(np.arange(len(start)), pieces)
    k = np.arange(len(owner)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    t0 = (k / pieces[owner])[:, None]
    t1 = ((k + 1) / pieces[owner])[:, None]
    delta = end[owner] - start[owner]
    keep = rng.random(len(owner)) < _FRAGMENT_KEEP
    return (
        (start[owner] + t0 * delta)[keep],
        (start[owner] + t1 * delta)[keep],
        index[owner][keep],
    )


@dataclass
class _Layer:
    """Geometries to burn into a raster, with their values and bounding boxes."""

    geometries: npt.NDArray[np.object_]
    values: npt.NDArray[np.float64]
    bounds: npt.NDArray[np.float64]  # (n, 4): left, bottom, right, top

    @classmethod
    def of(
        cls,
        geometries: npt.NDArray[np.object_],
        values: npt.NDArray[np.float64] | None = None,
    ) -> '_Layer':
        """Make a layer; without values every geometry burns 1 (masks)."""
        geometries = np.asarray(geometries, dtype=object)
        if values is None:
            values = np.ones(len(geometries), dtype=np.float64)
        bounds = np.asarray(shapely.bounds(geometries), dtype=np.float64).reshape(-1, 4)
        return cls(geometries, np.asarray(values, dtype=np.float64), bounds)

    def within(self, bounds: tuple[float, float, float, float]) -> '_Layer':
        """The geometries whose bounding box meets ``bounds``, in the same order."""
        left, bottom, right, top = bounds
        b = self.bounds
        keep = (b[:, 0] <= right) & (b[:, 2] >= left)
        keep &= (b[:, 1] <= top) & (b[:, 3] >= bottom)
        return _Layer(self.geometries[keep], self.values[keep], b[keep])


@dataclass
class Scatterers:
    """The buildings of a scene as SAR scatterers in map coordinates.

    Everything random about the buildings (levels, collapse, rooftop clutter, debris,
    broken double-bounce lines) is drawn once, by :func:`building_scatterers`; what is
    left to render a raster is burning these geometries into a grid, plus the textures
    and the speckle. Any window of a grid therefore gets exactly the building returns
    of the whole grid, which is what tiled rendering (:func:`render_sigma0_tiles`)
    relies on.

    Attributes:
        n_buildings: number of buildings of the scene.
        occupied: true footprints (ground under them does not return clutter).
        elevated: roofs, walls and storey rows (textured like roofs), with their
            linear sigma nought.
        layover: facade layover bands of standing walls.
        debris: rubble-pile tops and their layover (heavy-tailed texture).
        spill: debris spilled around collapsed footprints (ground level).
        points_xy: ``(n, 2)`` positions of point scatterers (rooftop clutter, debris
            points), already displaced by their layover.
        points_value: linear sigma nought of each point scatterer.
        shadow: ground swept by the shadows of the walls.
        double_bounce: double-bounce lines at wall feet, with their sigma nought.
    """

    n_buildings: int
    occupied: _Layer
    elevated: _Layer
    layover: _Layer
    debris: _Layer
    spill: _Layer
    points_xy: npt.NDArray[np.float64]
    points_value: npt.NDArray[np.float64]
    shadow: _Layer
    double_bounce: _Layer

    def within(self, bounds: tuple[float, float, float, float]) -> 'Scatterers':
        """The scatterers that can reach a window, in their original order.

        Args:
            bounds: ``(left, bottom, right, top)`` of the window in map units.

        Returns:
            The scatterers whose bounding box meets ``bounds`` (``n_buildings`` stays
            the number of buildings of the scene).
        """
        left, bottom, right, top = bounds
        x, y = self.points_xy[:, 0], self.points_xy[:, 1]
        keep = (x >= left) & (x <= right) & (y >= bottom) & (y <= top)
        return Scatterers(
            n_buildings=self.n_buildings,
            occupied=self.occupied.within(bounds),
            elevated=self.elevated.within(bounds),
            layover=self.layover.within(bounds),
            debris=self.debris.within(bounds),
            spill=self.spill.within(bounds),
            points_xy=self.points_xy[keep],
            points_value=self.points_value[keep],
            shadow=self.shadow.within(bounds),
            double_bounce=self.double_bounce.within(bounds),
        )


@dataclass
class _Draws:
    """Per-building random draws of :func:`building_scatterers` (linear powers).

    Attributes:
        roof: roof sigma nought.
        wall: facade sigma nought.
        double_bounce: sigma nought of the wall–ground dihedral.
        debris: mean sigma nought of rubble.
        pile_fraction: height of a rubble pile over the building's height.
        pancake: whether a collapse keeps its roof slab on top of the pile.
        spill_m: how far debris spills around a collapsed footprint.
        point_density: rooftop point scatterers per square metre.
    """

    roof: npt.NDArray[np.float64]
    wall: npt.NDArray[np.float64]
    double_bounce: npt.NDArray[np.float64]
    debris: npt.NDArray[np.float64]
    pile_fraction: npt.NDArray[np.float64]
    pancake: npt.NDArray[np.bool_]
    spill_m: npt.NDArray[np.float64]
    point_density: npt.NDArray[np.float64]


@dataclass
class _View:
    """The buildings' parts and walls as the sensor sees them.

    Attributes:
        footprints: the true footprints, one per building.
        parts: the buildings split into parts of uniform height.
        edges: the wall segments of the parts.
        owner: building of each edge.
        layover_m: horizontal layover of the top of each part (towards the sensor).
        shadow_m: horizontal length of the shadow of each part (away from it).
        away_xy: unit ground vector pointing away from the sensor.
        cot: cotangent of the incidence angle.
    """

    footprints: npt.NDArray[np.object_]
    parts: _Parts
    edges: _Edges
    owner: npt.NDArray[np.intp]
    layover_m: npt.NDArray[np.float64]
    shadow_m: npt.NDArray[np.float64]
    away_xy: npt.NDArray[np.float64]
    cot: float


@dataclass
class _Facades:
    """Roofs and the facades laid over in front of them, before sorting by damage.

    Attributes:
        roofs: every part's top, shifted towards the sensor (one per part).
        roof_value: linear sigma nought of each roof.
        facing: which edges are walls facing the sensor with some height.
        walls: the layover band of each facing wall.
        wall_value: linear sigma nought of each wall.
        standing: which of ``walls`` belong to a part that still stands.
    """

    roofs: npt.NDArray[np.object_]
    roof_value: npt.NDArray[np.float64]
    facing: npt.NDArray[np.bool_]
    walls: npt.NDArray[np.object_]
    wall_value: npt.NDArray[np.float64]
    standing: npt.NDArray[np.bool_]


def _draw_buildings(
    height_m: npt.NDArray[np.float64],
    grade: npt.NDArray[np.int64],
    rng: np.random.Generator,
) -> _Draws:
    """Draw every building's levels, always in the same order (determinism).

    Args:
        height_m: height of each building.
        grade: EMS-98 grade of each building.
        rng: random generator of the building draws.

    Returns:
        The draws, one value per building in each array.
    """
    n = len(height_m)
    roof_db = np.where(
        rng.random(n) < _BRIGHT_ROOF_FRACTION,
        rng.uniform(*_BRIGHT_ROOF_DB, n),
        rng.uniform(*_ROOF_DB, n),
    )
    wall_lin = _db_to_linear(rng.uniform(*_WALL_DB, n))
    double_bounce_lin = _db_to_linear(rng.uniform(*_DOUBLE_BOUNCE_DB, n))
    debris_lin = _db_to_linear(rng.uniform(*_DEBRIS_DB, n))
    pile_fraction = rng.uniform(*_PILE_FRACTION, n)
    pancake = rng.random(n) < _PANCAKE_SHARE
    spill_m = rng.uniform(*_SPILL_M, n) * np.where(pancake, 0.5, 1.0)
    point_density = rng.uniform(*_ROOF_POINTS_PER_M2, n) * np.where(grade == 3, 2, 1)
    return _Draws(
        roof=_db_to_linear(roof_db),
        wall=wall_lin,
        double_bounce=double_bounce_lin,
        debris=debris_lin,
        pile_fraction=pile_fraction,
        pancake=pancake,
        spill_m=spill_m,
        point_density=point_density,
    )


def _no_scatterers() -> Scatterers:
    """The scatterers of a scene without buildings."""
    empty = _Layer.of(np.empty(0, dtype=object))
    no_xy = np.empty((0, 2), dtype=np.float64)
    return Scatterers(
        0, empty, empty, empty, empty, empty, no_xy, no_xy[:, 0], empty, empty
    )


def _view(
    geometry: SARGeometry,
    buildings: gpd.GeoDataFrame,
    height_m: npt.NDArray[np.float64],
    grade: npt.NDArray[np.int64],
    draws: _Draws,
    rng: np.random.Generator,
) -> _View:
    """Split the buildings into parts and find their walls and displacements.

    Args:
        geometry: the acquisition geometry.
        buildings: the footprints.
        height_m: height of each building.
        grade: EMS-98 grade of each building.
        draws: the per-building draws.
        rng: random generator (cuts of partly collapsed buildings).

    Returns:
        The parts and walls as the sensor sees them.
    """
    away = geometry.range_unit_vector
    cot = 1.0 / math.tan(math.radians(geometry.incidence_deg))
    tan = math.tan(math.radians(geometry.incidence_deg))
    parts = _split_parts(buildings, height_m, grade, draws.pile_fraction, rng)
    edges = _edges(parts, away)
    return _View(
        footprints=np.asarray(buildings.geometry.values, dtype=object),
        parts=parts,
        edges=edges,
        owner=parts.building[edges.part],
        layover_m=parts.height_m * cot,
        shadow_m=parts.height_m * tan,
        away_xy=np.array(away, dtype=np.float64),
        cot=cot,
    )


def _facades(view: _View, draws: _Draws) -> _Facades:
    """Shift roofs towards the sensor and lay the walls facing it over the ground.

    Args:
        view: the parts and walls.
        draws: the per-building draws.

    Returns:
        Roofs (rubble-pile tops included) and facing walls with their values.
    """
    parts, edges = view.parts, view.edges
    edge_layover = view.layover_m[edges.part][:, None] * view.away_xy
    zero = np.zeros_like(edge_layover)
    roofs = _translate(parts.polygons, -view.layover_m[:, None] * view.away_xy)
    facing = (edges.facing > _EPS) & (view.layover_m[edges.part] > _EPS)
    walls = _parallelograms(
        edges.start[facing], edges.end[facing], zero[facing], -edge_layover[facing]
    )
    rubble = parts.collapsed[edges.part]
    return _Facades(
        roofs=roofs,
        roof_value=draws.roof[parts.building],
        facing=facing,
        walls=walls,
        wall_value=draws.wall[view.owner[facing]] * edges.facing[facing],
        standing=~rubble[facing],
    )


def _storey_rows(
    view: _View, facades: _Facades, draws: _Draws, rng: np.random.Generator
) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float64]]:
    """Bright lines of the storey rows (balconies, window rows) of standing walls.

    Args:
        view: the parts and walls.
        facades: the facing walls.
        draws: the per-building draws.
        rng: random generator (gain of each row).

    Returns:
        The rows as line strings and their linear sigma nought.
    """
    edges = view.edges
    rubble = view.parts.collapsed[edges.part]
    wall_index = np.flatnonzero(facades.facing & ~rubble)
    wall_height = view.parts.height_m[edges.part[wall_index]]
    storeys = np.floor(np.maximum(wall_height - 0.5, 0.0) / _STOREY_M).astype(np.intp)
    row_edge = np.repeat(wall_index, storeys)
    level = np.arange(len(row_edge)) - np.repeat(np.cumsum(storeys) - storeys, storeys)
    row_offset = (-(level + 1) * _STOREY_M * view.cot)[:, None] * view.away_xy
    rows: npt.NDArray[np.object_] = np.empty(0, dtype=object)
    if len(row_edge):
        ends = [edges.start[row_edge] + row_offset, edges.end[row_edge] + row_offset]
        rows = np.asarray(shapely.linestrings(np.stack(ends, axis=1)), dtype=object)
    row_value = (
        draws.wall[view.owner[row_edge]]
        * edges.facing[row_edge]
        * _db_to_linear(rng.uniform(*_STOREY_GAIN_DB, len(row_edge)))
    )
    return rows, row_value


def _sort_by_damage(
    view: _View,
    facades: _Facades,
    draws: _Draws,
    rows: tuple[npt.NDArray[np.object_], npt.NDArray[np.float64]],
) -> tuple[_Layer, _Layer, _Layer]:
    """Sort roofs and walls into elevated returns, layover bands and rubble heaps.

    A pancake collapse keeps its roof slab on top of the pile: it images like a low
    roof with a short, dim facade rather than as a rough rubble heap.

    Args:
        view: the parts and walls.
        facades: roofs and facing walls.
        draws: the per-building draws.
        rows: the storey rows and their values (:func:`_storey_rows`).

    Returns:
        The elevated, layover and debris layers.
    """
    parts = view.parts
    pancake = draws.pancake
    intact = ~parts.collapsed
    standing_wall = facades.standing
    wall_owner = view.owner[facades.facing]
    slab = parts.collapsed & pancake[parts.building]
    heap = parts.collapsed & ~pancake[parts.building]
    slab_wall = ~standing_wall & pancake[wall_owner]
    heap_wall = ~standing_wall & ~pancake[wall_owner]
    roofs, walls = facades.roofs, facades.walls
    elevated = _Layer.of(
        np.concatenate(
            [roofs[intact | slab], walls[standing_wall], walls[slab_wall], rows[0]]
        ),
        np.concatenate(
            [
                facades.roof_value[intact | slab],
                facades.wall_value[standing_wall],
                0.5 * facades.wall_value[slab_wall],
                rows[1],
            ]
        ),
    )
    layover = _Layer.of(walls[standing_wall])
    debris = _Layer.of(
        np.concatenate([roofs[heap], walls[heap_wall]]),
        np.concatenate(
            [draws.debris[parts.building[heap]], draws.debris[wall_owner][heap_wall]]
        ),
    )
    return elevated, layover, debris


def _spill(view: _View, draws: _Draws) -> _Layer:
    """Debris spilled around collapsed footprints (ground level).

    Args:
        view: the parts and walls.
        draws: the per-building draws.

    Returns:
        The spill areas with their linear sigma nought.
    """
    parts = view.parts
    rubble_index = np.flatnonzero(parts.collapsed)
    spill = shapely.difference(
        shapely.buffer(
            parts.polygons[rubble_index], draws.spill_m[parts.building[rubble_index]]
        ),
        view.footprints[parts.building[rubble_index]],
    )
    spill_lin = draws.debris[parts.building[rubble_index]] * _db_to_linear(
        _SPILL_GAIN_DB
    )
    return _Layer.of(spill, spill_lin)


def _roof_points(
    view: _View, draws: _Draws, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Point scatterers on intact roofs, shifted with the roof.

    Args:
        view: the parts and walls.
        draws: the per-building draws.
        rng: random generator (number, position and level of the points).

    Returns:
        The points ``(n, 2)`` and their linear sigma nought.
    """
    parts = view.parts
    area = shapely.area(parts.polygons)
    intact_index = np.flatnonzero(~parts.collapsed)
    counts = rng.poisson(
        draws.point_density[parts.building[intact_index]] * area[intact_index]
    )
    roof_xy, which = _sample_in_polygons(rng, parts.polygons[intact_index], counts)
    part = intact_index[which]
    roof_xy -= view.layover_m[part][:, None] * view.away_xy
    return roof_xy, _db_to_linear(rng.uniform(*_ROOF_POINT_DB, len(roof_xy)))


def _debris_points(
    view: _View, draws: _Draws, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Bright debris points over the pile and the spill, at random heights.

    Args:
        view: the parts and walls.
        draws: the per-building draws.
        rng: random generator (number, position, height and level of the points).

    Returns:
        The points ``(n, 2)``, displaced by their layover, and their linear sigma
        nought.
    """
    parts = view.parts
    area = shapely.area(parts.polygons)
    rubble_index = np.flatnonzero(parts.collapsed)
    buffered = shapely.buffer(
        parts.polygons[rubble_index], draws.spill_m[parts.building[rubble_index]]
    )
    density = _DEBRIS_POINTS_PER_M2 * np.where(
        draws.pancake[parts.building[rubble_index]], _PANCAKE_DEBRIS, 1.0
    )
    counts = rng.poisson(density * area[rubble_index])
    debris_xy, which = _sample_in_polygons(rng, buffered, counts)
    part = rubble_index[which]
    debris_xy -= (rng.random(len(debris_xy)) * view.layover_m[part])[
        :, None
    ] * view.away_xy
    return debris_xy, _db_to_linear(rng.uniform(*_DEBRIS_POINT_DB, len(debris_xy)))


def _shadows(view: _View) -> _Layer:
    """Ground not illuminated: swept away from the sensor by the walls behind.

    Args:
        view: the parts and walls.

    Returns:
        The shadow areas (a mask layer).
    """
    edges = view.edges
    edge_shadow = view.shadow_m[edges.part][:, None] * view.away_xy
    zero = np.zeros_like(edge_shadow)
    behind = (edges.facing < -_EPS) & (view.shadow_m[edges.part] > _EPS)
    return _Layer.of(
        _parallelograms(
            edges.start[behind], edges.end[behind], zero[behind], edge_shadow[behind]
        )
    )


def _double_bounce(
    view: _View, draws: _Draws, rng: np.random.Generator, pixel_m: float
) -> _Layer:
    """Double bounce at the true wall foot of standing walls facing the sensor.

    Args:
        view: the parts and walls.
        draws: the per-building draws.
        rng: random generator (pieces of broken lines that survive).
        pixel_m: pixel size (sets the width of the lines).

    Returns:
        The double-bounce lines as thin polygons with their linear sigma nought.
    """
    parts, edges = view.parts, view.edges
    edge_height = parts.height_m[edges.part]
    angle_deg = np.degrees(np.arccos(np.clip(edges.facing, -1.0, 1.0)))
    strength = np.exp(-((angle_deg / _DOUBLE_BOUNCE_TAPER_DEG) ** 2))
    candidate = (edges.facing > _EPS) & (strength > 1e-3) & (edge_height > _EPS)
    mode = parts.double_bounce[edges.part]
    continuous = np.flatnonzero(candidate & (mode == 1))
    broken = np.flatnonzero(candidate & (mode == 2))
    # Only the original outline of a partly collapsed building keeps a wall foot.
    midpoint = (edges.start[broken] + edges.end[broken]) / 2
    outline = shapely.boundary(view.footprints[view.owner[broken]])
    on_outline = shapely.distance(shapely.points(midpoint), outline) < 1e-6
    broken = broken[on_outline]
    start_b, end_b, broken = _fragment(
        rng, edges.start[broken], edges.end[broken], broken
    )
    start = np.concatenate([edges.start[continuous], start_b])
    end = np.concatenate([edges.end[continuous], end_b])
    which = np.concatenate([continuous, broken])
    half = (
        np.full((len(which), 1), 0.5 * _DOUBLE_BOUNCE_WIDTH_PX * pixel_m) * view.away_xy
    )
    lines = _parallelograms(start, end, -half, half)
    return _Layer.of(lines, draws.double_bounce[view.owner[which]] * strength[which])


def building_scatterers(
    geometry: SARGeometry,
    buildings: gpd.GeoDataFrame,
    rng: np.random.Generator,
    *,
    pixel_m: float,
) -> Scatterers:
    """Draw the scatterers of every building (the vector half of the renderer).

    The steps draw from ``rng`` in a fixed order (per-building levels, partial
    collapses, storey rows, roof points, debris points, broken double-bounce lines),
    so the same generator gives the same scatterers.

    Args:
        geometry: the acquisition geometry.
        buildings: footprints with ``height_m`` and ``grade`` (see
            :func:`render_sigma0`).
        rng: random generator of the building draws.
        pixel_m: pixel size of the grids they will be rendered on (sets the width of
            the double-bounce lines).

    Returns:
        The scatterers, in map coordinates.

    Raises:
        ArgumentError: (a :class:`ValueError`) if a building lacks a valid height or
            grade.
    """
    _check_buildings(buildings)
    height_m = buildings['height_m'].to_numpy(dtype=np.float64)
    grade = buildings['grade'].to_numpy(dtype=np.int64)
    draws = _draw_buildings(height_m, grade, rng)
    if len(buildings) == 0:
        return _no_scatterers()
    view = _view(geometry, buildings, height_m, grade, draws, rng)
    facades = _facades(view, draws)
    rows = _storey_rows(view, facades, draws, rng)
    elevated, layover, debris = _sort_by_damage(view, facades, draws, rows)
    spill = _spill(view, draws)
    roof_xy, roof_points = _roof_points(view, draws, rng)
    debris_xy, debris_points = _debris_points(view, draws, rng)
    shadow = _shadows(view)
    double_bounce = _double_bounce(view, draws, rng, pixel_m)
    return Scatterers(
        n_buildings=len(buildings),
        occupied=_Layer.of(view.footprints),
        elevated=elevated,
        layover=layover,
        debris=debris,
        spill=spill,
        points_xy=np.concatenate([roof_xy, debris_xy]),
        points_value=np.concatenate([roof_points, debris_points]),
        shadow=shadow,
        double_bounce=double_bounce,
    )


def _textured_clutter(
    landcover: npt.NDArray[np.uint8], rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Mean ground clutter of every pixel from its land cover, with texture."""
    lut = np.zeros(256, dtype=np.float32)
    for cover, level_db in CLUTTER_SIGMA0_DB.items():
        lut[int(cover)] = np.float32(_db_to_linear(level_db))
    ground = lut[landcover]
    ground *= _lognormal_texture(rng, landcover.shape, _CLUTTER_TEXTURE_DB)
    return ground


def _compose(
    grid: Grid,
    ground: npt.NDArray[np.float32],
    scatterers: Scatterers,
    rng: np.random.Generator,
    *,
    looks: float,
    nesz_db: float,
    speckle_correlation_px: float,
) -> SARImage:
    """Burn the scatterers into the grid over the ground clutter, then add speckle."""
    shape = grid.shape
    if scatterers.n_buildings > 0:
        s = scatterers
        occupied = _rasterize_mask(s.occupied.geometries, grid)
        elevated = _rasterize_add(s.elevated.geometries, s.elevated.values, grid)
        layover_mask = _rasterize_mask(s.layover.geometries, grid)
        debris = _rasterize_add(s.debris.geometries, s.debris.values, grid)
        ground_debris = _rasterize_add(s.spill.geometries, s.spill.values, grid)
        points = np.zeros(shape, dtype=np.float32)
        _add_points(points, grid, s.points_xy, s.points_value)
        shadow_mask = _rasterize_mask(s.shadow.geometries, grid) & ~occupied
        double_bounce = _rasterize_add(
            s.double_bounce.geometries, s.double_bounce.values, grid
        )
        ground += ground_debris * _lognormal_texture(rng, shape, _DEBRIS_TEXTURE_DB)
        del ground_debris
    else:
        occupied = np.zeros(shape, dtype=bool)
        layover_mask = np.zeros(shape, dtype=bool)
        shadow_mask = np.zeros(shape, dtype=bool)
        elevated = np.zeros(shape, dtype=np.float32)
        debris = np.zeros(shape, dtype=np.float32)
        points = np.zeros(shape, dtype=np.float32)
        double_bounce = np.zeros(shape, dtype=np.float32)

    ground[shadow_mask | occupied] = 0.0
    mean = ground
    mean += elevated * _lognormal_texture(rng, shape, _ROOF_TEXTURE_DB)
    mean += debris * _lognormal_texture(rng, shape, _DEBRIS_TEXTURE_DB)
    mean += points
    mean += double_bounce
    mean += np.float32(_db_to_linear(nesz_db))
    sigma0 = mean * _speckle(rng, shape, looks, speckle_correlation_px)
    return SARImage(
        sigma0=sigma0,
        mean_sigma0=mean,
        layover=layover_mask,
        shadow=shadow_mask,
        double_bounce=double_bounce > 0,
    )


def render_sigma0(
    grid: Grid,
    geometry: SARGeometry,
    buildings: gpd.GeoDataFrame,
    landcover: npt.NDArray[np.uint8],
    rng: np.random.Generator,
    *,
    looks: float = 1.0,
    nesz_db: float = -20.0,
    speckle_correlation_px: float = 2.0,
) -> SARImage:
    """Render the sigma nought of a VHR X-band SAR image of a scene.

    The whole grid is rendered at once (about 50 bytes of memory per pixel); see
    :func:`render_sigma0_tiles` for grids too large for that.

    Args:
        grid: the output grid (north-up, ground-range geocoded like a GTC product).
        geometry: the acquisition geometry.
        buildings: footprints in ``grid.crs`` with columns ``geometry`` (true footprint,
            Polygon or MultiPolygon), ``height_m`` (pre-event height) and ``grade``
            (EMS-98 damage grade, 0–5).
        landcover: ``(grid.height, grid.width)`` array of :class:`LandCover` values.
        rng: the only source of randomness (same seed, same image).
        looks: equivalent number of looks of the product (single-look spotlight: 1).
        nesz_db: noise-equivalent sigma zero (dB), the floor of shadows.
        speckle_correlation_px: −3 dB width of the intensity impulse response in
            pixels (about 2 when the pixel spacing is half the resolution); 0 gives
            uncorrelated speckle.

    Returns:
        The image: linear sigma nought with and without speckle, plus diagnostic masks.

    Raises:
        ArgumentError: (a :class:`ValueError`) if an argument is inconsistent with the
            grid or out of range.
    """
    _check_inputs(grid, buildings, landcover, looks, speckle_correlation_px)
    ground = _textured_clutter(landcover, rng)
    scatterers = building_scatterers(geometry, buildings, rng, pixel_m=grid.pixel_m)
    return _compose(
        grid,
        ground,
        scatterers,
        rng,
        looks=looks,
        nesz_db=nesz_db,
        speckle_correlation_px=speckle_correlation_px,
    )


def tile_margin_px(speckle_correlation_px: float = 2.0) -> int:
    """Pixels rendered around each tile and cropped.

    Building returns are burnt from vectors drawn for the whole scene and the
    textures are white, so only the speckle's impulse response reaches across a tile
    edge. The margin is the radius of its Gaussian filter (4 standard deviations) plus
    one pixel, at least 8: every pixel of a tile gets speckle filtered over a full
    neighbourhood, and the filter's wrap-around stays in the cropped margin. (Speckle
    of neighbouring tiles comes from different draws: it is not correlated across a
    tile edge.)

    Args:
        speckle_correlation_px: as in :func:`render_sigma0`.

    Returns:
        The margin in pixels.
    """
    sigma_px = speckle_correlation_px / (2.0 * math.sqrt(math.log(2.0)))
    return max(8, int(4.0 * sigma_px + 0.5) + 1)


def render_sigma0_tiles(
    grid: Grid,
    scatterers: Scatterers,
    landcover: npt.NDArray[np.uint8],
    rng: np.random.Generator,
    *,
    tile_px: int,
    looks: float = 1.0,
    nesz_db: float = -20.0,
    speckle_correlation_px: float = 2.0,
) -> Iterator[tuple[int, int, SARImage]]:
    """Render a large grid tile by tile, with bounded memory.

    Each tile of ``tile_px`` x ``tile_px`` pixels (smaller at the right and bottom
    edges) is rendered with :func:`tile_margin_px` pixels around it, from the
    scatterers that reach it, its slice of the land cover and its own random
    generator, and the margin is cropped. Tiles come in row-major order, with
    generators spawned from ``rng`` in that order, so the same ``rng`` state gives
    the same tiles. Building returns and the masks are those of a whole-grid
    rendering of the same scatterers pixel for pixel; clutter texture and speckle
    are drawn per tile (same statistics, other values).

    Args:
        grid: the output grid.
        scatterers: the scene's buildings (:func:`building_scatterers`, drawn with
            ``pixel_m=grid.pixel_m``).
        landcover: ``grid.shape`` array of :class:`LandCover` values (it may be a
            memory map; only one tile of it is read at a time).
        rng: source of the per-tile generators.
        tile_px: side of the tiles in pixels, positive.
        looks: as in :func:`render_sigma0`.
        nesz_db: as in :func:`render_sigma0`.
        speckle_correlation_px: as in :func:`render_sigma0`.

    Returns:
        An iterator of ``(row, col, image)``: the tile's first row and column in
        ``grid`` and its image (arrays are views into the rendering with margin).
        Tiles are rendered as the iterator is consumed.

    Raises:
        ArgumentError: (a :class:`ValueError`) if the land cover does not match the
            grid, ``tile_px`` is not positive or an argument is out of range (when
            called; land-cover values are checked tile by tile).
    """
    if landcover.shape != grid.shape:
        msg = (
            f'landcover has shape {landcover.shape} but the grid is {grid.shape}: '
            'render the land cover on the same grid'
        )
        raise ArgumentError(msg)
    if tile_px <= 0:
        raise ArgumentError(f'tile_px={tile_px} must be positive')
    _check_options(looks, speckle_correlation_px)
    return _tiles(
        grid,
        scatterers,
        landcover,
        rng,
        tile_px=tile_px,
        looks=looks,
        nesz_db=nesz_db,
        speckle_correlation_px=speckle_correlation_px,
    )


def _tiles(
    grid: Grid,
    scatterers: Scatterers,
    landcover: npt.NDArray[np.uint8],
    rng: np.random.Generator,
    *,
    tile_px: int,
    looks: float,
    nesz_db: float,
    speckle_correlation_px: float,
) -> Iterator[tuple[int, int, SARImage]]:
    """The generator behind :func:`render_sigma0_tiles` (arguments checked)."""
    margin = tile_margin_px(speckle_correlation_px)
    origins = [
        (row, col)
        for row in range(0, grid.height, tile_px)
        for col in range(0, grid.width, tile_px)
    ]
    for (row, col), tile_rng in zip(origins, rng.spawn(len(origins))):
        height = min(tile_px, grid.height - row)
        width = min(tile_px, grid.width - col)
        r0, c0 = max(0, row - margin), max(0, col - margin)
        r1 = min(grid.height, row + height + margin)
        c1 = min(grid.width, col + width + margin)
        sub = grid.window(r0, c0, r1 - r0, c1 - c0)
        cover = np.ascontiguousarray(landcover[r0:r1, c0:c1])
        _check_landcover(sub, cover)
        ground = _textured_clutter(cover, tile_rng)
        del cover
        left, bottom, right, top = sub.bounds
        slack = sub.pixel_m
        image = _compose(
            sub,
            ground,
            scatterers.within(
                (left - slack, bottom - slack, right + slack, top + slack)
            ),
            tile_rng,
            looks=looks,
            nesz_db=nesz_db,
            speckle_correlation_px=speckle_correlation_px,
        )
        del ground
        crop = (slice(row - r0, row - r0 + height), slice(col - c0, col - c0 + width))
        yield (
            row,
            col,
            SARImage(
                sigma0=image.sigma0[crop],
                mean_sigma0=image.mean_sigma0[crop],
                layover=None if image.layover is None else image.layover[crop],
                shadow=None if image.shadow is None else image.shadow[crop],
                double_bounce=(
                    None if image.double_bounce is None else image.double_bounce[crop]
                ),
            ),
        )
        del image


def _check_landcover(grid: Grid, landcover: npt.NDArray[np.uint8]) -> None:
    """Raise :class:`ArgumentError` unless the land cover fits the grid."""
    if landcover.shape != grid.shape:
        msg = (
            f'landcover has shape {landcover.shape} but the grid is {grid.shape}: '
            'render the land cover on the same grid'
        )
        raise ArgumentError(msg)
    valid = np.array([int(cover) for cover in LandCover])
    if not np.isin(landcover, valid).all():
        msg = f'landcover holds values outside LandCover {valid.tolist()}'
        raise ArgumentError(msg)


def _check_options(looks: float, speckle_correlation_px: float) -> None:
    """Raise :class:`ArgumentError` for a bad number of looks or speckle width."""
    if not looks > 0:
        msg = f'looks={looks} is invalid: the number of looks must be positive'
        raise ArgumentError(msg)
    if not speckle_correlation_px >= 0:
        msg = f'speckle_correlation_px={speckle_correlation_px} must be >= 0'
        raise ArgumentError(msg)


def _check_inputs(
    grid: Grid,
    buildings: gpd.GeoDataFrame,
    landcover: npt.NDArray[np.uint8],
    looks: float,
    speckle_correlation_px: float,
) -> None:
    """Raise :class:`ArgumentError` for inputs that cannot be rendered."""
    _check_landcover(grid, landcover)
    _check_options(looks, speckle_correlation_px)
    _check_buildings(buildings)
    if buildings.crs is not None and len(buildings) and buildings.crs != grid.crs:
        msg = (
            f'buildings are in {buildings.crs} but the grid is in {grid.crs}: '
            'reproject them with GeoDataFrame.to_crs first'
        )
        raise ArgumentError(msg)


def _check_buildings(buildings: gpd.GeoDataFrame) -> None:
    """Raise :class:`ArgumentError` unless every building has a height and a grade."""
    missing = {'height_m', 'grade'} - set(buildings.columns)
    if missing:
        msg = f'buildings lacks the column(s) {sorted(missing)}'
        raise ArgumentError(msg)
    grade = buildings['grade'].to_numpy()
    if len(grade) and ((grade < 0) | (grade > 5)).any():
        msg = 'buildings.grade must hold EMS-98 damage grades 0 to 5'
        raise ArgumentError(msg)
    height_m = buildings['height_m'].to_numpy(dtype=np.float64)
    if not (np.isfinite(height_m) & (height_m >= 0)).all():
        msg = 'buildings.height_m must be finite and non-negative (metres)'
        raise ArgumentError(msg)
