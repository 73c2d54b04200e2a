# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Simulate whole scenes and write them, atomically, in the real products' formats.

``simulate(out, ...)`` builds every requested town (layout, shaking, damage, SAR, DSM,
OSM, GEM exposure, EMS grading, truth), writes everything into a temporary folder
beside ``out`` and only then moves it into place, so an interrupted or failed run
leaves nothing half-written. Every town gets its own random streams derived from the
seed and its slug, so a town's files do not depend on which other towns are simulated,
and the same seed gives byte-identical files. Large towns are rendered and written in
tiles (:func:`simulate_city`), so that a 100,000-building town at 0.5 m fits in memory.

GEM's exposure is written as GEM publishes Türkiye, per province
(``Exposure_*_Turkey_Adm1.csv``, ``admin_units.gpkg`` with the province polygon), unless
``gem_level=2`` asks for the simulated districts (``..._Adm2.csv``, the district
polygons); ``truth.gpkg`` keeps every building's district (``ID_2``) either way.
"""

import dataclasses
import datetime
import json
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS, Transformer
from tqdm.auto import tqdm

from .. import __version__
from ..errors import ArgumentError, OutputError
from ..taxonomy import Taxonomy, parse_taxonomy
from .cities import CITIES, City, get_city
from .dsm import render_dsm
from .exposure import admin_units, exposure_tables, write_exposure_csv
from .fragility import FragilityCurve, fragility_curve, sample_grades
from .grid import Grid
from .observation import ems_grading, osm_footprints
from .sar import SARGeometry, building_scatterers, render_sigma0, render_sigma0_tiles
from .scene import Scene, generate_scene, landcover, scene_from_footprints
from .shaking import Shaking, simulate_pga
from .writers import (
    Acquisition,
    Calibration,
    csg_geotiff_tiles,
    csk_hdf5_tiles,
    write_csg_geotiff,
    write_csk_hdf5,
    write_geotiff,
    write_vector,
)

#: Inclination of the COSMO-SkyMed sun-synchronous orbits (degrees).
ORBIT_INCLINATION_DEG = 97.86
#: Resolution of the simulated DSM (metres).
DSM_PIXEL_M = 1.0
#: SAR grids with more pixels than this are rendered and written tile by tile.
SAR_WHOLE_GRID_MAX_PIXELS = 64_000_000
#: Side, in pixels, of the tiles of a tiled SAR rendering (about 1 GB of memory each).
SAR_TILE_PX = 4096
#: Margin (m) kept inside the SAR swath around the outermost buildings.
SWATH_MARGIN_M = 40.0
#: File names inside each town's folder (SAR names follow the products' conventions).
OSM_NAME = 'hotosm_tur_buildings_polygons.gpkg'
DSM_NAME = 'dsm_pre_event_1m.tif'
ADMIN_NAME = 'admin_units.gpkg'
TRUTH_NAME = 'truth.gpkg'
#: GEM exposure CSVs: ``occupancy`` Res, Com or Ind, ``level`` 1 (provinces) or 2.
EXPOSURE_NAME = 'Exposure_{occupancy}_Turkey_Adm{level}.csv'
#: Administrative level of the GEM exposure by default: provinces, as GEM publishes
#: Türkiye (2: the simulated districts).
GEM_LEVEL = 1
LABELS_NAME = 'EMSR648_AOI{aoi:02d}_GRA_PRODUCT_builtUpA_r1_v1.json'

STREAMS = ('layout', 'shaking', 'fragility', 'sar', 'landcover', 'dsm', 'osm', 'ems')


def city_streams(seed: int, slug: str) -> dict[str, np.random.Generator]:
    """Independent random streams of one town, from the seed and the slug."""
    root = np.random.SeedSequence([seed, zlib.crc32(slug.encode())])
    return {
        name: np.random.default_rng(s)
        for name, s in zip(STREAMS, root.spawn(len(STREAMS)))
    }


def heading_deg(latitude_deg: float, orbit_direction: str) -> float:
    """Ground-track heading of a sun-synchronous orbit at a latitude.

    ``sin(heading) = cos(i) / cos(latitude)`` for the ascending pass (Earth rotation
    neglected); the descending pass heads the opposite way mirrored about north-south.
    """
    s = math.cos(math.radians(ORBIT_INCLINATION_DEG)) / math.cos(
        math.radians(latitude_deg)
    )
    asc = math.degrees(math.asin(max(-1.0, min(1.0, s)))) % 360.0
    return asc if orbit_direction == 'ASCENDING' else (180.0 - asc) % 360.0


def acquisitions(
    scene: Scene, lat: float, rng: np.random.Generator
) -> tuple[Acquisition, Acquisition]:
    """CSK and CSG acquisitions over a scene (same time and geometry).

    Descending passes cross Türkiye around 15:30 UTC (18:00 local solar time of the
    dawn-dusk orbit) on 8 February 2023, ascending ones around 03:30 UTC on
    9 February 2023; a spotlight takes about 8 s.
    """
    city = scene.city
    direction = city.orbit_direction if city is not None else 'DESCENDING'
    incidence = city.incidence_deg if city is not None else 35.0
    if direction == 'DESCENDING':
        base = datetime.datetime(2023, 2, 8, 15, 20, tzinfo=datetime.UTC)
    else:
        base = datetime.datetime(2023, 2, 9, 3, 20, tzinfo=datetime.UTC)
    start = base + datetime.timedelta(seconds=int(rng.integers(0, 1200)))
    stop = start + datetime.timedelta(seconds=8)
    heading = heading_deg(lat, direction)
    orbit_number = int(rng.integers(60000, 90000))
    beam = round((incidence - 20.0) / 1.1) + 1
    csk = Acquisition(
        mission='CSK',
        satellite=int(rng.integers(1, 5)),
        mode='S2',
        beam=f'{beam:02d}',
        polarisation='HH' if direction == 'DESCENDING' else 'VV',
        look_side='RIGHT',
        orbit_direction=direction,
        start=start,
        stop=stop,
        incidence_deg=incidence,
        heading_deg=round(heading, 3),
        orbit_number=orbit_number,
    )
    csg = dataclasses.replace(
        csk,
        mission='CSG',
        satellite=int(rng.integers(1, 3)),
        mode='S2B',
        beam=f'{beam:03d}',
    )
    return csk, csg


def _swath_mask(
    grid: Grid, centre: tuple[float, float], radius_m: float, heading: float
) -> np.ndarray:
    """True inside the acquisition footprint: a square aligned with the ground track."""
    x, y = grid.xy()
    dx = x[None, :] - centre[0]
    dy = y[:, None] - centre[1]
    a = math.radians(heading)
    along = dx * math.sin(a) + dy * math.cos(a)
    across = dx * math.cos(a) - dy * math.sin(a)
    half = radius_m + SWATH_MARGIN_M
    return (np.abs(along) <= half) & (np.abs(across) <= half)


@dataclasses.dataclass
class Damage:
    """Shaking and damage of every building of a scene.

    Attributes:
        shaking: PGA and distances per building.
        taxa: parsed GEM taxonomy per building.
        curves: fragility curve per building.
        grades: EMS-98 grade (0-5) per building.
    """

    shaking: Shaking
    taxa: list[Taxonomy]
    curves: list[FragilityCurve]
    grades: np.ndarray


def shake_and_damage(scene: Scene, streams: dict[str, np.random.Generator]) -> Damage:
    """Draw the PGA and the EMS-98 damage grade of every building of a scene.

    Built-in towns condition the shaking on the PGA recorded near them; scenes over
    user footprints use the unconditioned field with a Vs30 of 450 m/s.

    Args:
        scene: the scene.
        streams: the town's random streams (``city_streams``).

    Returns:
        Shaking, taxonomy, fragility and grades per building.
    """
    cent = scene.buildings.geometry.centroid
    x, y = cent.x.to_numpy(), cent.y.to_numpy()
    city = scene.city
    if city is not None:
        shaking = simulate_pga(
            x,
            y,
            scene.crs,
            streams['shaking'],
            vs30_m_s=city.vs30_m_s,
            anchor_xy=scene.centre,
            anchor_pga_g=city.anchor_pga_g,
        )
    else:
        shaking = simulate_pga(x, y, scene.crs, streams['shaking'], vs30_m_s=450.0)
    taxa = [parse_taxonomy(t) for t in scene.buildings['taxonomy']]
    curves = [fragility_curve(t) for t in taxa]
    grades = sample_grades(curves, shaking.pga_g, streams['fragility'])
    return Damage(shaking, taxa, curves, grades)


def _write_sar_tiles(
    h5_path: Path,
    tif_path: Path,
    grid: Grid,
    geometry: SARGeometry,
    buildings: gpd.GeoDataFrame,
    lc: np.ndarray,
    rng: np.random.Generator,
    *,
    swath: tuple[tuple[float, float], float],
    products: tuple[Acquisition, Acquisition],
    calibration: Calibration,
) -> None:
    """Render the SAR image tile by tile into the CSK HDF5 and the CSG GeoTIFF.

    The buildings' scatterers are drawn once for the whole scene from the first
    generator spawned from ``rng``, the tiles' textures and speckle from generators
    spawned from the second (:func:`~.sar.render_sigma0_tiles`); each tile is cut to
    the swath and written into both products before the next is rendered.
    """
    centre, radius = swath
    csk, csg = products
    scatterers_rng, tiles_rng = rng.spawn(2)
    scatterers = building_scatterers(
        geometry, buildings, scatterers_rng, pixel_m=grid.pixel_m
    )
    with (
        csk_hdf5_tiles(h5_path, grid, csk, calibration) as h5,
        csg_geotiff_tiles(tif_path, grid, csg, calibration) as tif,
    ):
        tiles = render_sigma0_tiles(
            grid, scatterers, lc, tiles_rng, tile_px=SAR_TILE_PX, looks=1.0
        )
        for row, col, image in tiles:
            height, width = image.sigma0.shape
            inside = _swath_mask(
                grid.window(row, col, height, width), centre, radius, csk.heading_deg
            )
            sigma0 = np.where(inside, image.sigma0, np.float32(np.nan))
            del image, inside
            h5.write(sigma0, row, col)
            tif.write(sigma0, row, col)
            del sigma0


@dataclasses.dataclass
class _SarFiles:
    """The SAR products written for a town.

    Attributes:
        acquisition: the CSK acquisition (the CSG one shares its geometry and time).
        hdf5: file name of the CSK HDF5 product.
        geotiff: file name of the CSG GeoTIFF product.
    """

    acquisition: Acquisition
    hdf5: str
    geotiff: str


@dataclasses.dataclass
class _Observations:
    """What the mappers' products say of each building, and the files written.

    Attributes:
        osm_id: ``osm_id`` of the OSM polygon that maps each building (0: unmapped).
        ems: Copernicus EMS ``damage_gra`` of each building (None: outside the AOI).
        labels: file name of the EMS grading layer.
        gem: file names of the GEM exposure CSVs.
        gem_level: their administrative level (1: provinces, 2: districts).
    """

    osm_id: np.ndarray
    ems: np.ndarray
    labels: str
    gem: list[str]
    gem_level: int


def _write_sar(
    scene: Scene,
    folder: Path,
    grid: Grid,
    lc: np.ndarray,
    grades: np.ndarray,
    lat: float,
    rng: np.random.Generator,
    *,
    tiled: bool,
) -> _SarFiles:
    """Draw the acquisitions, render the SAR image and write both products.

    The image is rendered and written whole, or tile by tile when ``tiled``.

    Args:
        scene: the scene.
        folder: the town's output folder.
        grid: the SAR grid.
        lc: land cover on ``grid``.
        grades: EMS-98 grade of each building.
        lat: latitude of the scene's centre.
        rng: the town's ``sar`` stream (acquisitions first, then the image).
        tiled: render and write tile by tile (:func:`_write_sar_tiles`).

    Returns:
        The CSK acquisition and the products' file names.
    """
    b = scene.buildings
    csk, csg = acquisitions(scene, lat, rng)
    geometry = SARGeometry(
        incidence_deg=csk.incidence_deg,
        heading_deg=csk.heading_deg,
        look_side=csk.look_side,
    )
    sar_input = gpd.GeoDataFrame(
        {'height_m': b['height_m'], 'grade': grades}, geometry=b.geometry, crs=scene.crs
    )
    cent = b.geometry.centroid
    radius = float(cent.distance(shapely.Point(scene.centre)).max())
    calibration = Calibration(reference_incidence_deg=csk.incidence_deg)
    utm_zone = CRS.from_user_input(scene.crs).utm_zone
    zone = int(utm_zone[:-1]) if utm_zone else 37
    sar_h5 = csk.csk_filename()
    sar_tif = csg.csg_filename('.tif', latitude_deg=lat, utm_zone=zone)
    if tiled:
        _write_sar_tiles(
            folder / sar_h5,
            folder / sar_tif,
            grid,
            geometry,
            sar_input,
            lc,
            rng,
            swath=(scene.centre, radius),
            products=(csk, csg),
            calibration=calibration,
        )
    else:
        image = render_sigma0(grid, geometry, sar_input, lc, rng, looks=1.0)
        sigma0 = np.where(
            _swath_mask(grid, scene.centre, radius, csk.heading_deg),
            image.sigma0,
            np.nan,
        )
        del image
        write_csk_hdf5(
            folder / sar_h5, sigma0.astype(np.float32), grid, csk, calibration
        )
        write_csg_geotiff(
            folder / sar_tif, sigma0.astype(np.float32), grid, csg, calibration
        )
    return _SarFiles(csk, sar_h5, sar_tif)


def _write_dsm(
    scene: Scene,
    folder: Path,
    grid: Grid,
    lc: np.ndarray,
    rng: np.random.Generator,
    *,
    low_memory: bool,
) -> None:
    """Render the pre-event DSM of a scene at :data:`DSM_PIXEL_M` and write it.

    Args:
        scene: the scene.
        folder: the town's output folder.
        grid: the SAR grid (the DSM grid is resampled from it).
        lc: land cover on ``grid``.
        rng: the town's ``dsm`` stream.
        low_memory: passed to :func:`~.dsm.render_dsm` (tiled towns).
    """
    dsm_grid = grid.resample(DSM_PIXEL_M)
    dsm = render_dsm(scene, dsm_grid, lc, grid, rng, low_memory=low_memory)
    write_geotiff(
        folder / DSM_NAME,
        dsm,
        dsm_grid,
        nodata=-9999.0,
        tags={'SOURCE': 'simulated pre-event DSM', 'UNITS': 'metre'},
        band_description='elevation_m',
    )


def _write_observations(
    scene: Scene,
    folder: Path,
    grades: np.ndarray,
    streams: dict[str, np.random.Generator],
    *,
    gem_level: int = GEM_LEVEL,
) -> _Observations:
    """Write the OSM footprints, the EMS grading, the admin units and GEM exposure.

    Args:
        scene: the scene.
        folder: the town's output folder.
        grades: EMS-98 grade of each building.
        streams: the town's random streams (``osm`` and ``ems`` are drawn from).
        gem_level: administrative level of the exposure rows and of the admin units:
            1 for provinces (the districts dissolved by ``ID_1``), 2 for districts.

    Returns:
        What each building became in OSM and EMS, and the files written.
    """
    b = scene.buildings
    osm, osm_id = osm_footprints(b, streams['osm'])
    write_vector(folder / OSM_NAME, osm, layer='hotosm_tur_buildings_polygons')
    labels, ems = ems_grading(b, grades, streams['ems'])
    aoi = scene.city.ems_aoi if scene.city is not None else 99
    labels_name = LABELS_NAME.format(aoi=aoi)
    write_vector(folder / labels_name, labels)
    units = admin_units(scene.districts, gem_level)
    write_vector(folder / ADMIN_NAME, units, layer='admin_units')
    gem_files = []
    for occupancy, table in exposure_tables(b, scene.districts, gem_level).items():
        name = EXPOSURE_NAME.format(occupancy=occupancy, level=gem_level)
        write_exposure_csv(folder / name, table, occupancy)
        gem_files.append(name)
    return _Observations(osm_id, ems, labels_name, gem_files, gem_level)


def _write_truth(
    scene: Scene, folder: Path, damage: Damage, observations: _Observations
) -> None:
    """Write ``truth.gpkg``: every building with its shaking, damage and mapping.

    Args:
        scene: the scene.
        folder: the town's output folder.
        damage: shaking and damage of every building.
        observations: the buildings' OSM ids and EMS grades.
    """
    b = scene.buildings
    shaking, grades = damage.shaking, damage.grades
    truth = gpd.GeoDataFrame(
        {
            'building_id': b['building_id'],
            'osm_id': observations.osm_id,
            'ID_2': b['ID_2'],
            'occupancy': b['occupancy'],
            'taxonomy': b['taxonomy'],
            'macro_class': [t.macro_class for t in damage.taxa],
            'fragility_class': [c.name for c in damage.curves],
            'storeys': b['storeys'],
            'height_m': b['height_m'],
            'rjb_km': shaking.rjb_km.round(3),
            'pga_g': shaking.pga_g.round(4),
            'grade': grades,
            'damaged': grades >= 4,
            'ems_damage_gra': [v if v is not None else None for v in observations.ems],
        },
        geometry=b.geometry,
        crs=scene.crs,
    )
    write_vector(folder / TRUTH_NAME, truth, layer='truth')


def _city_entry(
    scene: Scene,
    lonlat: tuple[float, float],
    damage: Damage,
    sar: _SarFiles,
    observations: _Observations,
    pixel_m: float,
) -> dict[str, Any]:
    """The town's entry of ``scene.json``.

    Args:
        scene: the scene.
        lonlat: longitude and latitude of the centre.
        damage: shaking and damage of every building.
        sar: the SAR acquisition and products.
        observations: the mappers' files.
        pixel_m: SAR pixel spacing in metres.

    Returns:
        The entry: scene, damage and shaking summary, acquisition, the GEM
        exposure's administrative level (``gem_level``) and file names.
    """
    city = scene.city
    lon, lat = lonlat
    shaking, grades = damage.shaking, damage.grades
    csk = sar.acquisition
    damaged = float(np.mean(grades >= 4))
    return {
        'name': scene.name,
        'crs': scene.crs,
        'bounds': list(scene.bounds),
        'centre': list(scene.centre),
        'centre_lonlat': [round(lon, 5), round(lat, 5)],
        'buildings': len(scene.buildings),
        'damage_rate': round(damaged, 4),
        'observed_damage_range': list(city.damage_range) if city is not None else None,
        'grade_counts': np.bincount(grades, minlength=6).tolist(),
        'pga_g': {
            'median': round(float(np.median(shaking.pga_g)), 4),
            'p05': round(float(np.percentile(shaking.pga_g, 5)), 4),
            'p95': round(float(np.percentile(shaking.pga_g, 95)), 4),
        },
        'acquisition': {
            'incidence_deg': csk.incidence_deg,
            'heading_deg': csk.heading_deg,
            'look_side': csk.look_side,
            'orbit_direction': csk.orbit_direction,
            'polarisation': csk.polarisation,
            'start_utc': csk.start.isoformat(),
            'stop_utc': csk.stop.isoformat(),
            'pixel_m': pixel_m,
        },
        'gem_level': observations.gem_level,
        'files': {
            'sar_hdf5': sar.hdf5,
            'sar_geotiff': sar.geotiff,
            'dsm': DSM_NAME,
            'osm': OSM_NAME,
            'gem': observations.gem,
            'admin': ADMIN_NAME,
            'labels': observations.labels,
            'truth': TRUTH_NAME,
        },
    }


def simulate_city(
    scene: Scene,
    folder: Path,
    seed: int,
    pixel_m: float,
    streams: dict[str, np.random.Generator],
    gem_level: int = GEM_LEVEL,
) -> dict[str, Any]:
    """Shake, damage, image and write one scene into ``folder``.

    SAR grids of up to :data:`SAR_WHOLE_GRID_MAX_PIXELS` pixels are rendered at once
    (:func:`~.sar.render_sigma0`, about 50 bytes per pixel). Larger ones (a town of
    100,000 buildings at 0.5 m is about 400-470 megapixels) are rendered and written in
    tiles of :data:`SAR_TILE_PX` pixels: the buildings' scatterers are drawn once for
    the whole town, each tile burns those that reach it, draws its own texture and
    speckle (from generators spawned from the town's ``sar`` stream in row-major
    order) and goes straight into both SAR products
    (:func:`~.writers.csk_hdf5_tiles`, :func:`~.writers.csg_geotiff_tiles`), so
    memory is bounded by one tile. Building returns, layover, shadow and double
    bounce cross tile edges unchanged; clutter texture and speckle are drawn per tile,
    with a margin that keeps the speckle's correlation whole inside each tile (speckle
    is not correlated across tile edges). The land cover and the DSM of such towns
    are computed with ``low_memory=True``. Tiled and whole-grid
    renderings of a town have the same statistics but not the same pixel values; the
    same seed gives the same bytes either way.

    Args:
        scene: the scene.
        folder: the town's output folder (exists).
        seed: the run's seed (the randomness comes from ``streams``, derived from it).
        pixel_m: SAR pixel spacing in metres.
        streams: the town's random streams (:func:`city_streams`).
        gem_level: administrative level of the GEM exposure: 1 for provinces, as GEM
            publishes Türkiye, 2 for the simulated districts.

    Returns:
        The town's entry of ``scene.json``.
    """
    to_ll = Transformer.from_crs(scene.crs, 'EPSG:4326', always_xy=True)
    lon, lat = to_ll.transform(*scene.centre)
    damage = shake_and_damage(scene, streams)
    grid = scene.grid(pixel_m)
    tiled = grid.width * grid.height > SAR_WHOLE_GRID_MAX_PIXELS
    lc = landcover(scene, grid, streams['landcover'], low_memory=tiled)
    sar = _write_sar(
        scene, folder, grid, lc, damage.grades, lat, streams['sar'], tiled=tiled
    )
    _write_dsm(scene, folder, grid, lc, streams['dsm'], low_memory=tiled)
    del lc
    observations = _write_observations(
        scene, folder, damage.grades, streams, gem_level=gem_level
    )
    _write_truth(scene, folder, damage, observations)
    return _city_entry(scene, (lon, lat), damage, sar, observations, pixel_m)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ArgumentError(f'--out {out}: exists and is not a folder')
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ArgumentError(
            f'--out {out}: folder exists and is not empty; pass --overwrite to replace '
            'the simulated files in it (other files are kept)'
        )
    parent = out if out.is_dir() else out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ArgumentError(f'--out {out}: {parent} is a file, not a folder')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ArgumentError(f'--out {out}: {parent} is not writable')


def _check_arguments(
    cities: Sequence[str] | None,
    n_buildings: int,
    seed: int,
    pixel_m: float,
    footprints: str | os.PathLike[str] | None,
    gem_level: int = GEM_LEVEL,
) -> list[str]:
    """Check the arguments of :func:`simulate` other than the output folder.

    Args:
        cities: slugs of built-in towns, or None for all of them.
        n_buildings: buildings per town.
        seed: random seed.
        pixel_m: SAR pixel spacing in metres.
        footprints: a footprint file, or None.
        gem_level: administrative level of the GEM exposure (1 or 2).

    Returns:
        The slugs of the built-in towns to simulate, without repeats (none with
        ``footprints``).

    Raises:
        ArgumentError: for a bad argument.
    """
    if n_buildings <= 0:
        raise ArgumentError(f'--buildings must be positive, not {n_buildings}')
    if not (math.isfinite(pixel_m) and 0.1 <= pixel_m <= 5.0):
        raise ArgumentError(f'--pixel-m must be between 0.1 and 5 m, not {pixel_m}')
    if seed < 0:
        raise ArgumentError(f'--seed must be non-negative, not {seed}')
    if isinstance(gem_level, bool) or gem_level not in (1, 2):
        raise ArgumentError(
            f'--gem-level must be 1 (provinces, as GEM publishes Türkiye) or 2 '
            f'(districts), not {gem_level!r}'
        )
    slugs: list[str] = []
    if footprints is None:
        slugs = list(CITIES) if not cities else list(dict.fromkeys(cities))
        for slug in slugs:
            try:
                get_city(slug)
            except KeyError as err:
                raise ArgumentError(f'--cities: {err.args[0]}') from None
    else:
        if not Path(footprints).is_file():
            raise ArgumentError(f'--footprints {footprints}: no such file')
    return slugs


def _temporary_folder(out: Path) -> Path:
    """Create the hidden folder beside ``out`` that a run is written into.

    Args:
        out: the output folder.

    Returns:
        The new, empty folder.

    Raises:
        OutputError: if it cannot be created.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f'.{out.name}.tmp-', dir=out.parent))
    except OSError as err:
        raise OutputError(
            out, f'cannot create a temporary folder beside it ({err.strerror})'
        ) from None


def _town_scene(
    slug: str,
    city: City | None,
    footprints: str | os.PathLike[str] | None,
    seed: int,
    n_buildings: int,
) -> tuple[Scene, dict[str, np.random.Generator]]:
    """Lay out one town (built-in or over footprints) and derive its random streams.

    Args:
        slug: the built-in town's slug (ignored with ``footprints``).
        city: the built-in town, or None to use ``footprints``.
        footprints: the footprint file (when ``city`` is None).
        seed: the run's seed.
        n_buildings: buildings per town.

    Returns:
        The scene and the town's streams (:func:`city_streams`; the streams of a
        footprint file derive from its name's stem).
    """
    if city is not None:
        streams = city_streams(seed, slug)
        return generate_scene(city, n_buildings, streams['layout']), streams
    stem = Path(str(footprints)).stem
    streams = city_streams(seed, stem)
    scene = scene_from_footprints(str(footprints), streams['layout'], n_buildings)
    return scene, streams


def simulate(
    out: str | os.PathLike[str],
    cities: Sequence[str] | None = None,
    n_buildings: int = 3000,
    seed: int = 0,
    pixel_m: float = 0.5,
    footprints: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    gem_level: int = GEM_LEVEL,
) -> dict[str, Any]:
    """Simulate post-earthquake scenes and write them into ``out``.

    Towns whose SAR grid has more than :data:`SAR_WHOLE_GRID_MAX_PIXELS` pixels (about
    14,000 Antakya buildings at 0.5 m) are rendered and written in tiles, with memory
    bounded by a tile: a 100,000-building town at 0.5 m peaks at about 3 GB (see
    :func:`simulate_city`). Smaller towns are rendered whole, as before.

    Args:
        out: output folder; created if missing. It receives ``scene.json`` and one
            folder per town.
        cities: slugs of built-in towns; all of them when None (ignored with
            ``footprints``).
        n_buildings: buildings per town (with ``footprints``: at most this many, the
            ones nearest the centre).
        seed: random seed; the same seed gives byte-identical files.
        pixel_m: SAR pixel spacing in metres.
        footprints: simulate over these real footprints instead of a built-in town.
        overwrite: replace the simulated entries of a non-empty ``out``.
        progress: show progress bars.
        gem_level: administrative level of the GEM exposure. 1 (default): per
            province, as GEM publishes Türkiye: ``Exposure_*_Turkey_Adm1.csv`` with
            ``ID_1`` rows and ``admin_units.gpkg`` with the province polygon (the
            districts dissolved). 2: per simulated district, ``..._Adm2.csv`` with
            ``ID_2`` rows and the district polygons, context finer than GEM gives
            for Türkiye. Recorded as ``gem_level`` in ``scene.json`` and in each
            town's entry.

    Returns:
        The content of ``scene.json``.

    Raises:
        ArgumentError: for a bad argument or an output that cannot be written.
        OutputError: if writing fails (e.g. a full disk); nothing is left behind.
    """
    out = Path(out)
    slugs = _check_arguments(cities, n_buildings, seed, pixel_m, footprints, gem_level)
    _check_out(out, overwrite)
    tmp = _temporary_folder(out)
    try:
        manifest: dict[str, Any] = {
            'generator': f'torchgeo-sar-damage {__version__}',
            'seed': seed,
            'buildings_per_city': n_buildings,
            'pixel_m': pixel_m,
            'gem_level': gem_level,
            'event': 'Mw 7.8 Pazarcık and Mw 7.5 Elbistan, 2023-02-06',
            'cities': {},
        }
        jobs: list[tuple[str, City | None]] = [(s, get_city(s)) for s in slugs]
        if footprints is not None:
            jobs = [('', None)]
        bar = tqdm(jobs, desc='simulate', unit='city', disable=not progress)
        for slug, city in bar:
            if city is not None:
                bar.set_postfix_str(slug)
            scene, streams = _town_scene(slug, city, footprints, seed, n_buildings)
            if city is None:
                bar.set_postfix_str(scene.slug)
            folder = tmp / scene.slug
            folder.mkdir()
            manifest['cities'][scene.slug] = simulate_city(
                scene, folder, seed, pixel_m, streams, gem_level
            )
        with open(tmp / 'scene.json', 'w', encoding='utf-8') as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False)
            f.write('\n')
        _move_into_place(tmp, out)
    except OutputError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as err:  # e.g. ENOSPC: no space left on device
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(
            out,
            f'writing failed ({err.strerror or err}); nothing was written, '
            'free some space or choose another folder',
        ) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _move_into_place(tmp: Path, out: Path) -> None:
    """Move the finished entries of ``tmp`` into ``out``, replacing same-name entries."""
    if not out.exists():
        os.replace(tmp, out)
        return
    backup = Path(tempfile.mkdtemp(prefix=f'.{out.name}.old-', dir=out.parent))
    moved: list[str] = []
    try:
        for entry in sorted(os.listdir(tmp)):
            if (out / entry).exists():
                os.replace(out / entry, backup / entry)
            os.replace(tmp / entry, out / entry)
            moved.append(entry)
    except OSError as err:  # pragma: no cover - rename failures within one folder
        for entry in os.listdir(backup):
            os.replace(backup / entry, out / entry)
        raise OutputError(out, f'could not move results into place ({err})') from None
    shutil.rmtree(backup, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
