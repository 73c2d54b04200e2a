# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Writers of simulated products in the formats of the real ones.

The simulator renders sigma nought (linear power) on a :class:`~.grid.Grid`; the
functions here turn it into files that readers of real products open unchanged:

* :func:`write_csk_hdf5`: a COSMO-SkyMed (first generation, CSK) L1D GTC product in HDF5.
* :func:`write_csg_geotiff`: a COSMO-SkyMed Second Generation (CSG) GTC GeoTIFF.
* :func:`write_geotiff`: a generic single-band GeoTIFF (DSM, masks...).
* :func:`write_vector`: GeoPackage, GeoJSON or ESRI Shapefile layers.

Format facts and their sources
------------------------------

**GDAL's HDF5 driver** (``frmts/hdf5/hdf5imagedataset.cpp``, ``IdentifyProductType``,
``CaptureCSKGeoTransform``, ``CaptureCSKGeolocation``; ``hdf5dataset.cpp``
``HDF5AttrIterate``) recognises a CSK/CSG product by the root attribute ``Mission ID``
(``CSK``, ``CSG`` or ``KMPS``) and its level by the prefix of ``Product Type``
(``GEC`` = L1C, ``GTC`` = L1D). For L1C/L1D it georeferences the image dataset
(``HDF5:"file.h5"://S01/SBI``) from:

* on the image dataset: ``Top Left East-North`` (float64[2], corner of the top-left
  pixel), ``Line Spacing`` (float64, the **x** pixel size, geotransform[1]) and
  ``Column Spacing`` (float64, the **y** pixel size, geotransform[5] = -value);
* at the root: ``Projection ID`` (``UTM`` or ``UPS``; any other string gives geographic
  WGS84), ``Map Projection Centre`` (float64[2], latitude of origin and central
  meridian), ``Map Projection Scale Factor`` (float64) and ``Map Projection False
  East-North`` (float64[2]). The geographic CRS is always WGS84.

GDAL reads these with ``HDF5ReadDoubleAttr``, which rejects anything but native
float64: a float32 spacing silently gives an identity transform, a float32 centre no
CRS. Every numeric attribute GDAL reads is therefore written as float64. GDAL's
metadata keys replace spaces by ``_`` and prefix group attributes with the group path
(``/S01`` ``Calibration Constant`` -> ``S01_Calibration_Constant``); the attributes of
the opened image dataset become band metadata without prefix.

**Calibration** follows SNAP/s1tbx ``CosmoSkymedCalibrator`` (attributes mapped by
``CosmoSkymedReader``)::

    sigma0 = DN² · Rref^(2·Rexp) · sin(alpha_ref) / (F² · K)

where the ``Rref^(2·Rexp)`` term applies only if ``Range Spreading Loss Compensation
Geometry`` is not ``NONE``, ``sin(alpha_ref)`` only if ``Incidence Angle Compensation
Geometry`` is not ``NONE``, and ``K`` only if ``Calibration Constant Compensation Flag``
is not 1. nansat's ``mapper_csks.py`` applies the same product with no flags. The writers
set the flags so that every term applies (see :class:`Calibration`).

**File names.** CSK products are named
``CSKS<i>_<YYY_Z>_<MM>_<SS>_<PP>_<s><o>_<D><G>_<start>_<stop>.h5`` and must match
eoreader's ``CONSTELLATION_REGEX[Constellation.CSK]`` (``eoreader/reader.py``). CSG
products are named, per the SARscape CSG import help page (import-csg.htm),
``CSG_SSAR<i>_<YYY_Z>_<RR><AA>_<MMM>_<SSS>_<PP>_<s><o>_<Q>_<start>_<stop>_<j>_<S>_<ll><H>_Z<LL>_<AAA>.h5``
and must match eoreader's ``CONSTELLATION_REGEX[Constellation.CSG]`` (which expects
``.h5``; delivered GTC GeoTIFFs keep the same stem with ``.tif``). Long acquisition-mode
names come from eoreader's ``CskSensorMode`` and ``CsgSensorMode``.

Project assumptions (not verified against a real product)
---------------------------------------------------------

* The L1D image of a CSK product is a 2-D **float32** detected amplitude (DN) array at
  ``/S01/SBI``, with an 8-bit quick-look at ``/S01/QLK``. The real sample type of
  DGM/GEC/GTC products (float32 or uint16) is unverified.
* DN 0 marks pixels without data (outside the acquisition footprint). The GeoTIFF
  declares ``nodata=0``; HDF5 products have no nodata attribute.
* The calibration values in :class:`Calibration` are simulator choices, not values of
  real products. So are the value ``DEFAULT`` of the ``... Compensation Geometry``
  attributes (readers only test for ``NONE``), the int32 type of the compensation flag
  and of the look counts, ``Near``/``Far Incidence Angle`` on the image dataset, and the
  ``Lines Order``/``Columns Order`` values (those sarpy compares with).
* File-name fields without a documented meaning take the values of real names: CSK
  ``_B_`` and ``<D><G>`` = ``SF``; CSG ``_B_``, ``<Q>`` = ``F``, ``<j>`` = ``1``,
  ``<S>`` = ``F``, ``<AAA>`` = ``N00``. CSG ``<ll><H>`` is read as the scene-centre
  latitude (rounded, absolute) and hemisphere and ``Z<LL>`` as the UTM zone, which fits
  the real example ``..._22N_Z47_N00.tif`` (Mandalay, 21.97 N, 96.1 E, zone 47).
* CSG HDF5 GTC products (image at ``/S01/IMG``) are not written: whether they carry
  ``Top Left East-North`` is unknown, so CSG is written as a GTC GeoTIFF.

Determinism: HDF5 files are written without object timestamps (``track_times=False``,
fixed ``libver``), GeoTIFFs without ``TIFFTAG_DATETIME``, and vector files with GDAL's
current date fixed to :data:`VECTOR_CURRENT_DATE`, so the same inputs give the same
bytes.
"""

import datetime
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import geopandas
import h5py
import numpy as np
import numpy.typing as npt
import pyogrio
import pyogrio.errors
import rasterio
from pyproj import CRS, Transformer
from rasterio.io import DatasetWriter
from rasterio.windows import Window

from ..errors import ArgumentError, OutputError
from .grid import Grid

__all__ = [
    'CSG_MODES',
    'CSK_MODES',
    'Acquisition',
    'Calibration',
    'TileSink',
    'csg_geotiff_tiles',
    'csk_hdf5_tiles',
    'geotiff_tiles',
    'write_csg_geotiff',
    'write_csk_hdf5',
    'write_geotiff',
    'write_vector',
]

#: CSK file-name mode code -> ``Acquisition Mode`` attribute (eoreader ``CskSensorMode``).
CSK_MODES: dict[str, str] = {
    'HI': 'HIMAGE',
    'PP': 'PINGPONG',
    'WR': 'WIDEREGION',
    'HR': 'HUGEREGION',
    'S2': 'ENHANCED SPOTLIGHT',
}

#: CSG file-name mode code -> ``Acquisition Mode`` (eoreader ``CsgSensorMode``). Only the
#: codes whose long name is unambiguous are listed.
CSG_MODES: dict[str, str] = {
    'S2A': 'SPOTLIGHT-2A',
    'S2B': 'SPOTLIGHT-2B',
    'S2C': 'SPOTLIGHT-2C',
    'OQR': 'SPOTLIGHT-1-OQR',
    'OQS': 'SPOTLIGHT-2-OQS',
    'STR': 'STRIPMAP',
    'PPS': 'PINGPONG',
    'QPS': 'QUADPOL',
    'SC1': 'SCANSAR-1',
    'SC2': 'SCANSAR-2',
}

#: Centre frequency of the COSMO-SkyMed X-band radars, in Hz.
RADAR_FREQUENCY_HZ = 9.6e9

#: Speed of light in vacuum, in m/s.
SPEED_OF_LIGHT_M_S = 299_792_458.0

#: Nominal orbit altitude used to spread incidence angles across the scene, in metres.
ORBIT_ALTITUDE_M = 620_000.0

#: Longest side of the ``/S01/QLK`` quick-look, in pixels.
QUICKLOOK_MAX_SIZE = 512

#: sigma0 range (dB) stretched over the quick-look's 1-255 grey levels.
QUICKLOOK_RANGE_DB = (-25.0, 5.0)

#: Value of ``OGR_CURRENT_DATE`` while vector files are written (fixes the
#: ``last_change`` column of GeoPackage's ``gpkg_contents``).
VECTOR_CURRENT_DATE = '2023-02-09T00:00:00Z'

_POLARISATIONS = ('HH', 'VV', 'HV', 'VH')
_PRODUCT_TYPES = ('GTC', 'GEC')


def _format_utc(time: datetime.datetime) -> str:
    """Format a time as CSK's ``Scene Sensing Start UTC``: ``YYYY-MM-DD hh:mm:ss.fffffffff``.

    Args:
        time: a tz-aware time.

    Returns:
        The UTC time with nanosecond digits.
    """
    utc = time.astimezone(datetime.UTC)
    return f'{utc:%Y-%m-%d %H:%M:%S}.{utc.microsecond:06d}000'


def _compact_utc(time: datetime.datetime) -> str:
    """Format a time as in product file names: ``YYYYMMDDhhmmss`` (UTC)."""
    return f'{time.astimezone(datetime.UTC):%Y%m%d%H%M%S}'


@dataclass(frozen=True)
class Acquisition:
    """The acquisition a simulated product claims to come from.

    The fields fill the product's file name and its metadata attributes.

    Attributes:
        mission: ``'CSK'`` (first generation) or ``'CSG'`` (second generation).
        satellite: CSK 1-4 (``CSKS1``-``CSKS4``), CSG 1-2 (``SSAR1``, ``SSAR2``).
        mode: file-name mode code, a key of :data:`CSK_MODES` or :data:`CSG_MODES`.
        beam: CSK two-character beam id (e.g. ``'09'``); CSG three-digit swath
            (e.g. ``'007'``).
        polarisation: ``'HH'``, ``'VV'``, ``'HV'`` or ``'VH'``.
        look_side: ``'RIGHT'`` or ``'LEFT'``.
        orbit_direction: ``'ASCENDING'`` or ``'DESCENDING'``.
        start: start of the scene sensing, tz-aware.
        stop: end of the scene sensing, tz-aware, after ``start``.
        incidence_deg: incidence angle at the scene centre, in degrees.
        heading_deg: platform heading, clockwise from north, in degrees.
        product_type: ``'GTC'`` (L1D, terrain corrected) or ``'GEC'`` (L1C).
        range_looks: number of looks in range.
        azimuth_looks: number of looks in azimuth.
        orbit_number: absolute orbit number.
    """

    mission: str
    satellite: int
    mode: str
    beam: str
    polarisation: str
    look_side: str
    orbit_direction: str
    start: datetime.datetime
    stop: datetime.datetime
    incidence_deg: float
    heading_deg: float
    product_type: str = 'GTC'
    range_looks: int = 1
    azimuth_looks: int = 1
    orbit_number: int = 1

    def __post_init__(self) -> None:
        """Check the fields.

        Raises:
            ArgumentError: if a field has a value that real products never have.
        """
        if self.mission == 'CSK':
            modes, satellites, beam_pattern = CSK_MODES, range(1, 5), r'\w{2}'
        elif self.mission == 'CSG':
            modes, satellites, beam_pattern = CSG_MODES, range(1, 3), r'\d{3}'
        else:
            raise ArgumentError(f"mission must be 'CSK' or 'CSG', not {self.mission!r}")
        if self.satellite not in satellites:
            raise ArgumentError(
                f'{self.mission} satellite must be in {list(satellites)}, '
                f'not {self.satellite!r}'
            )
        if self.mode not in modes:
            raise ArgumentError(
                f'{self.mission} mode must be one of {sorted(modes)}, not {self.mode!r}'
            )
        if not re.fullmatch(beam_pattern, self.beam):
            raise ArgumentError(
                f'{self.mission} beam must match {beam_pattern}, not {self.beam!r}'
            )
        if self.polarisation not in _POLARISATIONS:
            raise ArgumentError(
                f'polarisation must be one of {_POLARISATIONS}, not {self.polarisation!r}'
            )
        if self.look_side not in ('RIGHT', 'LEFT'):
            raise ArgumentError(
                f"look_side must be 'RIGHT' or 'LEFT', not {self.look_side!r}"
            )
        if self.orbit_direction not in ('ASCENDING', 'DESCENDING'):
            raise ArgumentError(
                "orbit_direction must be 'ASCENDING' or 'DESCENDING', "
                f'not {self.orbit_direction!r}'
            )
        if self.start.tzinfo is None or self.stop.tzinfo is None:
            raise ArgumentError('start and stop must be tz-aware (UTC) datetimes')
        if self.stop <= self.start:
            raise ArgumentError(f'stop {self.stop} must be after start {self.start}')
        if not 0 < self.incidence_deg < 90:
            raise ArgumentError(
                f'incidence_deg must be in (0, 90), not {self.incidence_deg!r}'
            )
        if not math.isfinite(self.heading_deg):
            raise ArgumentError(f'heading_deg must be finite, not {self.heading_deg!r}')
        if self.product_type not in _PRODUCT_TYPES:
            raise ArgumentError(
                f'product_type must be one of {_PRODUCT_TYPES}, not {self.product_type!r}'
            )
        for name in ('range_looks', 'azimuth_looks'):
            looks = getattr(self, name)
            if not 1 <= looks <= 99:
                raise ArgumentError(f'{name} must be in 1..99, not {looks!r}')
        if self.orbit_number < 0:
            raise ArgumentError(
                f'orbit_number must be non-negative, not {self.orbit_number!r}'
            )

    @property
    def acquisition_mode(self) -> str:
        """Long mode name written in the ``Acquisition Mode`` attribute."""
        modes = CSK_MODES if self.mission == 'CSK' else CSG_MODES
        return modes[self.mode]

    @property
    def satellite_id(self) -> str:
        """Satellite name: ``CSKS<i>`` (CSK) or ``SSAR<i>`` (CSG, as in file names)."""
        prefix = 'CSKS' if self.mission == 'CSK' else 'SSAR'
        return f'{prefix}{self.satellite}'

    @property
    def side_orbit(self) -> str:
        """The ``<s><o>`` file-name field: look side and orbit direction, e.g. ``RD``."""
        return self.look_side[0] + self.orbit_direction[0]

    def _require(self, mission: str) -> None:
        """Raise ArgumentError unless the acquisition is of ``mission``."""
        if self.mission != mission:
            raise ArgumentError(
                f'a {mission} product needs a {mission} acquisition, '
                f'not {self.mission!r} (mode codes differ between missions)'
            )

    def csk_filename(self) -> str:
        """Return the CSK product file name.

        ``CSKS<i>_<YYY>_B_<MM>_<SS>_<PP>_<s><o>_SF_<start>_<stop>.h5``. ``B`` and ``SF``
        are the values of most real names.

        Returns:
            e.g. ``CSKS2_GTC_B_S2_09_HH_RD_SF_20230208154312_20230208154320.h5``.

        Raises:
            ArgumentError: if the acquisition is not a CSK one.
        """
        self._require('CSK')
        return (
            f'{self.satellite_id}_{self.product_type}_B_{self.mode}_{self.beam}_'
            f'{self.polarisation}_{self.side_orbit}_SF_'
            f'{_compact_utc(self.start)}_{_compact_utc(self.stop)}.h5'
        )

    def csg_filename(
        self, suffix: str = '.tif', latitude_deg: float = 37.0, utm_zone: int = 37
    ) -> str:
        """Return the CSG product file name.

        ``CSG_SSAR<i>_<YYY>_B_<RR><AA>_<MMM>_<SSS>_<PP>_<s><o>_F_<start>_<stop>_1_F_``
        ``<ll><H>_Z<LL>_N00<suffix>``. ``<RR><AA>`` are the range and azimuth looks,
        ``<ll><H>`` the rounded absolute scene latitude and hemisphere and ``<LL>`` the
        UTM zone; ``B``, ``F``, ``1``, ``F`` and ``N00`` are those of the project's
        real example name.

        Args:
            suffix: file extension, ``'.tif'`` (GTC GeoTIFF) or ``'.h5'``.
            latitude_deg: scene-centre latitude, in degrees (negative south).
            utm_zone: UTM zone number of the scene, 1-60.

        Returns:
            e.g. ``CSG_SSAR1_GTC_B_0101_S2B_007_VV_RD_F_20230208154312_``
            ``20230208154320_1_F_37N_Z37_N00.tif``.

        Raises:
            ArgumentError: if the acquisition is not a CSG one or an argument is
                out of range.
        """
        self._require('CSG')
        if not -90 <= latitude_deg <= 90:
            raise ArgumentError(
                f'latitude_deg must be in [-90, 90], not {latitude_deg}'
            )
        if not 1 <= utm_zone <= 60:
            raise ArgumentError(f'utm_zone must be in 1..60, not {utm_zone}')
        hemisphere = 'N' if latitude_deg >= 0 else 'S'
        latitude = min(round(abs(latitude_deg)), 90)
        return (
            f'CSG_{self.satellite_id}_{self.product_type}_B_'
            f'{self.range_looks:02d}{self.azimuth_looks:02d}_{self.mode}_{self.beam}_'
            f'{self.polarisation}_{self.side_orbit}_F_'
            f'{_compact_utc(self.start)}_{_compact_utc(self.stop)}_1_F_'
            f'{latitude:02d}{hemisphere}_Z{utm_zone:02d}_N00{suffix}'
        )


@dataclass(frozen=True)
class Calibration:
    """Calibration constants of a product and the DN <-> sigma0 conversion.

    The conversion is SNAP's ``CosmoSkymedCalibrator`` with every term applied::

        sigma0_linear = DN² · Rref^(2·Rexp) · sin(alpha_ref) / (F² · K)

    Products written with it carry ``Calibration Constant Compensation Flag = 0`` (so
    SNAP and sarpy divide by K), ``Range Spreading Loss Compensation Geometry =
    'DEFAULT'`` and ``Incidence Angle Compensation Geometry = 'DEFAULT'`` (anything but
    ``'NONE'`` applies the term).

    The defaults are simulator choices, not values of real products: with them
    sigma0 = 1 (0 dB) gives DN ≈ 1000, -20 dB gives DN ≈ 100 and +20 dB DN ≈ 10000.

    Attributes:
        rescaling_factor: F, root ``Rescaling Factor``.
        calibration_constant: K, ``/S01`` ``Calibration Constant``.
        reference_slant_range_m: Rref, root ``Reference Slant Range``, in metres.
        reference_slant_range_exponent: Rexp, root ``Reference Slant Range Exponent``.
        reference_incidence_deg: alpha_ref, root ``Reference Incidence Angle``, degrees.
    """

    rescaling_factor: float = 600.0
    calibration_constant: float = 1.6e6
    reference_slant_range_m: float = 1000.0
    reference_slant_range_exponent: float = 1.0
    reference_incidence_deg: float = 35.0

    #: Value of ``Calibration Constant Compensation Flag`` (0: K must be applied).
    CALIBRATION_CONSTANT_COMPENSATION_FLAG: ClassVar[int] = 0
    #: Value of the three ``... Compensation Geometry`` attributes (not ``NONE``).
    COMPENSATION_GEOMETRY: ClassVar[str] = 'DEFAULT'

    def __post_init__(self) -> None:
        """Check the constants.

        Raises:
            ArgumentError: if a constant is not finite and positive.
        """
        for name in (
            'rescaling_factor',
            'calibration_constant',
            'reference_slant_range_m',
            'reference_incidence_deg',
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ArgumentError(
                    f'{name} must be finite and positive, not {value!r}'
                )
        if not math.isfinite(self.reference_slant_range_exponent):
            raise ArgumentError('reference_slant_range_exponent must be finite')
        if not self.reference_incidence_deg < 90:
            raise ArgumentError('reference_incidence_deg must be below 90')

    @property
    def sigma0_per_dn2(self) -> float:
        """Linear sigma0 of one DN², ``Rref^(2·Rexp) · sin(alpha_ref) / (F² · K)``."""
        return (
            self.reference_slant_range_m ** (2 * self.reference_slant_range_exponent)
            * math.sin(math.radians(self.reference_incidence_deg))
            / (self.rescaling_factor**2 * self.calibration_constant)
        )

    def sigma0_to_dn(self, sigma0_linear: np.ndarray) -> np.ndarray:
        """Convert linear sigma nought to detected amplitude DN.

        Args:
            sigma0_linear: sigma0 in linear power units, >= 0; NaN marks nodata.

        Returns:
            DN as float64, 0 where the input is NaN. Note that sigma0 = 0 also gives DN
            0, which readers take as nodata.

        Raises:
            ArgumentError: if a value is negative or infinite.
        """
        sigma0 = np.asarray(sigma0_linear, dtype=np.float64)
        valid = ~np.isnan(sigma0)
        if np.any(sigma0[valid] < 0) or np.any(np.isinf(sigma0)):
            raise ArgumentError(
                'sigma0_linear must be linear power >= 0 and finite (NaN for nodata); '
                'convert dB with 10 ** (sigma0_db / 10)'
            )
        dn = np.zeros_like(sigma0)
        dn[valid] = np.sqrt(sigma0[valid] / self.sigma0_per_dn2)
        return dn

    def dn_to_sigma0(self, dn: np.ndarray) -> np.ndarray:
        """Convert detected amplitude DN to linear sigma nought (SNAP's formula).

        Args:
            dn: amplitude DN; 0 marks nodata.

        Returns:
            sigma0 in linear power units as float64, NaN where DN is 0.
        """
        dn64 = np.asarray(dn, dtype=np.float64)
        sigma0 = dn64**2 * self.sigma0_per_dn2
        return np.where(dn64 == 0, np.nan, sigma0)

    def hdf5_root_attributes(self) -> dict[str, Any]:
        """Calibration attributes of the product root (HDF5 names and types)."""
        geometry = np.bytes_(self.COMPENSATION_GEOMETRY)
        return {
            'Rescaling Factor': np.float64(self.rescaling_factor),
            'Reference Slant Range': np.float64(self.reference_slant_range_m),
            'Reference Slant Range Exponent': np.float64(
                self.reference_slant_range_exponent
            ),
            'Reference Incidence Angle': np.float64(self.reference_incidence_deg),
            'Calibration Constant Compensation Flag': np.int32(
                self.CALIBRATION_CONSTANT_COMPENSATION_FLAG
            ),
            'Range Spreading Loss Compensation Geometry': geometry,
            'Incidence Angle Compensation Geometry': geometry,
            'Range Antenna Pattern Compensation Geometry': geometry,
        }


# ----------------------------------------------------------------------------- helpers


def _check_output(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` can be created.

    Args:
        path: the output file.

    Returns:
        ``path`` as a Path.

    Raises:
        OutputError: if the parent directory is missing or not writable, or ``path``
            is a directory.
    """
    target = Path(path)
    parent = target.absolute().parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(path, f'parent {parent} is not a directory')
    if not parent.is_dir():
        raise OutputError(
            path, f'parent directory {parent} does not exist; create it first'
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(path, f'parent directory {parent} is not writable')
    if target.is_dir():
        raise OutputError(path, 'is a directory; give a file name')
    return target


def _check_sigma0(sigma0_linear: np.ndarray, grid: Grid) -> None:
    """Raise ArgumentError unless ``sigma0_linear`` is a 2-D array of the grid's shape."""
    if np.shape(sigma0_linear) != grid.shape:
        raise ArgumentError(
            f'sigma0_linear has shape {np.shape(sigma0_linear)}, '
            f'the grid has shape {grid.shape}'
        )


def _utm_zone(crs: str) -> tuple[int, bool]:
    """Return the WGS84 UTM zone of a CRS.

    Args:
        crs: a CRS understood by pyproj.

    Returns:
        The zone number and whether it is a southern-hemisphere zone.

    Raises:
        ArgumentError: if the CRS is not a WGS84 / UTM one (EPSG:326xx or 327xx).
    """
    epsg = CRS.from_user_input(crs).to_epsg()
    if epsg is not None and (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        return epsg % 100, epsg > 32700
    raise ArgumentError(
        f'COSMO-SkyMed products are written in WGS84 / UTM (EPSG:326xx or 327xx), '
        f'not {crs!r}'
    )


def _north_up(grid: Grid) -> None:
    """Raise ArgumentError unless the grid is north-up with square-ish positive pixels."""
    t = grid.transform
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        raise ArgumentError(f'the grid must be north-up, not {tuple(t)[:6]}')


def _geodetic_corners(grid: Grid) -> dict[str, np.ndarray]:
    """Geodetic (lat, lon, height) of the four outer corners and the centre of a grid."""
    left, bottom, right, top = grid.bounds
    to_wgs84 = Transformer.from_crs(grid.crs, 'EPSG:4326', always_xy=True)
    points = {
        'Top Left': (left, top),
        'Top Right': (right, top),
        'Bottom Left': (left, bottom),
        'Bottom Right': (right, bottom),
        'Centre': ((left + right) / 2, (bottom + top) / 2),
    }
    corners = {}
    for name, (x, y) in points.items():
        lon, lat = to_wgs84.transform(x, y)
        corners[name] = np.array([lat, lon, 0.0], dtype=np.float64)
    return corners


def _incidence_range_deg(grid: Grid, acquisition: Acquisition) -> tuple[float, float]:
    """Approximate near and far incidence angles of a scene.

    Flat-earth geometry at :data:`ORBIT_ALTITUDE_M`: the grid's extent across track
    (perpendicular to the heading) spans ``d_theta = extent · cos²(theta) / H``
    around the scene-centre incidence.

    Returns:
        Near and far incidence angles in degrees.
    """
    heading = math.radians(acquisition.heading_deg)
    across_m = grid.width * grid.pixel_m * abs(math.cos(heading)) + (
        grid.height * grid.pixel_m * abs(math.sin(heading))
    )
    theta = math.radians(acquisition.incidence_deg)
    half_deg = math.degrees(across_m / 2 * math.cos(theta) ** 2 / ORBIT_ALTITUDE_M)
    return acquisition.incidence_deg - half_deg, acquisition.incidence_deg + half_deg


def _quicklook_step(shape: tuple[int, int]) -> int:
    """Decimation of the quick-look: every ``step``-th row and column are kept."""
    return max(1, math.ceil(max(shape) / QUICKLOOK_MAX_SIZE))


def _quicklook(sigma0_linear: np.ndarray) -> np.ndarray:
    """8-bit quick-look: decimated sigma0, dB stretched over 1-255, 0 for nodata."""
    step = _quicklook_step(np.shape(sigma0_linear))
    return _quicklook_of(np.asarray(sigma0_linear[::step, ::step], dtype=np.float64))


def _quicklook_of(sub: np.ndarray) -> np.ndarray:
    """8-bit quick-look of already decimated float64 sigma0."""
    low_db, high_db = QUICKLOOK_RANGE_DB
    valid = np.isfinite(sub) & (sub > 0)
    sigma0_db = np.full(sub.shape, low_db)
    sigma0_db[valid] = 10 * np.log10(sub[valid])
    scaled = 1 + 254 * np.clip((sigma0_db - low_db) / (high_db - low_db), 0, 1)
    return np.where(valid, np.round(scaled), 0).astype(np.uint8)


def _h5_value(value: object) -> object:
    """Convert a Python attribute value to the HDF5 type the products use.

    str -> fixed-length ASCII string, float -> float64, int -> int32, sequences of
    numbers -> float64 arrays.
    """
    if isinstance(value, str):
        return np.bytes_(value.encode('ascii'))
    if isinstance(value, bool | np.bool_):
        raise TypeError('boolean attributes are not used by the products')
    if isinstance(value, int | np.integer) and not isinstance(value, np.floating):
        return np.int32(value)
    if isinstance(value, float):
        return np.float64(value)
    return value


def _set_attrs(obj: h5py.HLObject, attributes: Mapping[str, Any]) -> None:
    """Write attributes in a fixed order (their order is part of the file bytes)."""
    for name, value in attributes.items():
        obj.attrs.create(name, _h5_value(value))


def _no_times_gcpl() -> h5py.h5p.PropGCID:
    """Group creation property list that records no object timestamps."""
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return gcpl


def _gdal_value(value: object) -> str:
    """Format an attribute value as GDAL's HDF5 driver exposes it in metadata.

    Numbers use C's ``%.15g`` and arrays are joined by spaces.
    """
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode('ascii')
    if isinstance(value, str):
        return value
    array = np.atleast_1d(np.asarray(value))
    if np.issubdtype(array.dtype, np.integer):
        return ' '.join(str(int(v)) for v in array)
    return ' '.join(f'{float(v):.15g}' for v in array)


def _product_attributes(
    acquisition: Acquisition, grid: Grid, product_filename: str
) -> dict[str, Any]:
    """Root attributes shared by CSK and CSG products (HDF5 names)."""
    zone, south = _utm_zone(grid.crs)
    return {
        'Mission ID': acquisition.mission,
        'Satellite ID': acquisition.satellite_id,
        'Product Type': f'{acquisition.product_type}_B',
        'Product Filename': product_filename,
        'Acquisition Mode': acquisition.acquisition_mode,
        'Look Side': acquisition.look_side,
        'Orbit Direction': acquisition.orbit_direction,
        'Orbit Number': acquisition.orbit_number,
        'Scene Sensing Start UTC': _format_utc(acquisition.start),
        'Scene Sensing Stop UTC': _format_utc(acquisition.stop),
        'Radar Frequency': RADAR_FREQUENCY_HZ,
        'Radar Wavelength': SPEED_OF_LIGHT_M_S / RADAR_FREQUENCY_HZ,
        'Range Processing Number of Looks': acquisition.range_looks,
        'Azimuth Processing Number of Looks': acquisition.azimuth_looks,
        'Lines Order': 'EARLY-LATE',
        'Columns Order': 'NEAR-FAR',
        'Ellipsoid Designator': 'WGS84',
        'Projection ID': 'UTM',
        'Map Projection Zone': zone,
        'Map Projection Centre': np.array([0.0, zone * 6.0 - 183.0]),
        'Map Projection Scale Factor': 0.9996,
        'Map Projection False East-North': np.array(
            [500000.0, 10000000.0 if south else 0.0]
        ),
    }


def _image_attributes(grid: Grid, acquisition: Acquisition) -> dict[str, Any]:
    """Attributes of the image dataset (``/S01/SBI``), HDF5 names."""
    near_deg, far_deg = _incidence_range_deg(grid, acquisition)
    corners = _geodetic_corners(grid)
    attributes: dict[str, Any] = {
        'Top Left East-North': np.array(
            [grid.transform.c, grid.transform.f], dtype=np.float64
        ),
        'Line Spacing': float(grid.transform.a),
        'Column Spacing': float(-grid.transform.e),
    }
    for name in ('Top Left', 'Top Right', 'Bottom Left', 'Bottom Right', 'Centre'):
        attributes[f'{name} Geodetic Coordinates'] = corners[name]
    attributes['Near Incidence Angle'] = near_deg
    attributes['Far Incidence Angle'] = far_deg
    return attributes


# ----------------------------------------------------------------------------- writers


def write_csk_hdf5(
    path: str | os.PathLike[str],
    sigma0_linear: np.ndarray,
    grid: Grid,
    acquisition: Acquisition,
    calibration: Calibration,
    *,
    quicklook: bool = True,
) -> None:
    """Write a CSK L1D GTC (or L1C GEC) product in HDF5.

    Layout: root attributes (product, projection, calibration), group ``/S01`` with
    ``Polarisation`` and ``Calibration Constant``, the float32 DN image ``/S01/SBI``
    with its georeferencing attributes, and the uint8 quick-look ``/S01/QLK``. GDAL
    opens the image as ``HDF5:"<path>"://S01/SBI`` with the grid's CRS and transform.
    The file has no timestamps: the same inputs give the same bytes.

    Args:
        path: the output file, written in place (overwritten if it exists).
        sigma0_linear: sigma0 in linear power of shape ``grid.shape``; NaN = nodata.
        grid: north-up grid in a WGS84 / UTM CRS.
        acquisition: a CSK acquisition.
        calibration: the calibration constants to write and apply.
        quicklook: also write ``/S01/QLK``.

    Raises:
        ArgumentError: if the inputs do not describe a CSK product on a UTM grid.
        OutputError: if ``path`` cannot be written.
    """
    _check_output(path)
    acquisition._require('CSK')
    _check_sigma0(sigma0_linear, grid)
    _north_up(grid)
    dn = calibration.sigma0_to_dn(sigma0_linear).astype(np.float32)
    with csk_hdf5_tiles(
        path, grid, acquisition, calibration, quicklook=quicklook
    ) as sink:
        sink._write_dn(dn, sigma0_linear, 0, 0)


@contextmanager
def csk_hdf5_tiles(
    path: str | os.PathLike[str],
    grid: Grid,
    acquisition: Acquisition,
    calibration: Calibration,
    *,
    quicklook: bool = True,
) -> Iterator['TileSink']:
    """Write a CSK product tile by tile (:func:`write_csk_hdf5` for large grids).

    Opens the product, yields a :class:`TileSink` that takes linear sigma0 tiles
    (NaN = nodata), and completes the file (image attributes, quick-look computed from
    the tiles as they pass) when the block ends. Only one tile is held in memory at a
    time. The file has the same layout, types and attributes as one written by
    :func:`write_csk_hdf5`, and the same bytes for the same pixels.

    Args:
        path: the output file, written in place (overwritten if it exists).
        grid: north-up grid in a WGS84 / UTM CRS.
        acquisition: a CSK acquisition.
        calibration: the calibration constants to write and apply.
        quicklook: also write ``/S01/QLK``.

    Yields:
        The sink; its tiles must not overlap and must cover the grid.

    Raises:
        ArgumentError: if the inputs do not describe a CSK product on a UTM grid, or
            the tiles do not cover the grid.
        OutputError: if ``path`` cannot be written. If the block raises, the
            partly written file is removed.
    """
    target = _check_output(path)
    acquisition._require('CSK')
    _north_up(grid)
    root_attributes = _product_attributes(acquisition, grid, acquisition.csk_filename())
    root_attributes.update(calibration.hdf5_root_attributes())
    image_attributes = _image_attributes(grid, acquisition)
    with _output_errors(path, 'HDF5'):
        f = h5py.File(target, 'w', libver=('earliest', 'v110'))
    try:
        with _output_errors(path, 'HDF5'):
            _set_attrs(f, root_attributes)
            group = h5py.Group(h5py.h5g.create(f.id, b'S01', gcpl=_no_times_gcpl()))
            _set_attrs(
                group,
                {
                    'Polarisation': acquisition.polarisation,
                    'Calibration Constant': calibration.calibration_constant,
                },
            )
            # Written before its attributes, as create_dataset(data=...) does.
            image = group.create_dataset(
                'SBI', shape=grid.shape, dtype=np.float32, track_times=False
            )
        sink = _CskSink(path, grid, image, calibration, quicklook)
        yield sink
        sink._check_complete()
        with _output_errors(path, 'HDF5'):
            _set_attrs(image, image_attributes)
            if quicklook:
                group.create_dataset('QLK', data=sink.quicklook(), track_times=False)
            f.close()
    except BaseException:
        _discard(f, target)
        raise


def write_geotiff(
    path: str | os.PathLike[str],
    array: np.ndarray,
    grid: Grid,
    *,
    nodata: float | None,
    tags: dict[str, str] | None = None,
    band_description: str | None = None,
    band_tags: dict[str, str] | None = None,
) -> None:
    """Write a single-band GeoTIFF, tiled 256 x 256 and DEFLATE compressed.

    The file has no TIFFTAG_DATETIME: the same inputs give the same bytes.

    Args:
        path: the output file, written in place (overwritten if it exists).
        array: 2-D array of shape ``grid.shape``; its dtype is kept (bool becomes
            uint8).
        grid: the grid (CRS and transform).
        nodata: the nodata value to declare, or None.
        tags: dataset metadata items (GDAL default domain).
        band_description: description of the band.
        band_tags: band metadata items.

    Raises:
        ArgumentError: if the array does not match the grid.
        OutputError: if ``path`` cannot be written.
    """
    _check_output(path)
    if np.shape(array) != grid.shape:
        raise ArgumentError(
            f'array has shape {np.shape(array)}, the grid has shape {grid.shape}'
        )
    data = np.asarray(array)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    with geotiff_tiles(
        path,
        grid,
        data.dtype,
        nodata=nodata,
        tags=tags,
        band_description=band_description,
        band_tags=band_tags,
    ) as sink:
        sink.write(data, 0, 0)


@contextmanager
def geotiff_tiles(
    path: str | os.PathLike[str],
    grid: Grid,
    dtype: npt.DTypeLike,
    *,
    nodata: float | None,
    tags: dict[str, str] | None = None,
    band_description: str | None = None,
    band_tags: dict[str, str] | None = None,
    convert: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator['TileSink']:
    """Write a single-band GeoTIFF tile by tile (:func:`write_geotiff` for large grids).

    Same profile as :func:`write_geotiff` (256 x 256 blocks, DEFLATE, floating-point
    or horizontal predictor, no TIFFTAG_DATETIME); only one tile is held in memory at
    a time, plus GDAL's block cache.

    Args:
        path: the output file, written in place (overwritten if it exists).
        grid: the grid (CRS and transform).
        dtype: the band's data type (not bool).
        nodata: the nodata value to declare, or None.
        tags: dataset metadata items (GDAL default domain).
        band_description: description of the band.
        band_tags: band metadata items.
        convert: applied to every tile before it is written (e.g. sigma0 to DN).

    Yields:
        The sink; its tiles must not overlap and must cover the grid.

    Raises:
        ArgumentError: if the tiles do not cover the grid.
        OutputError: if ``path`` cannot be written. If the block raises, the
            partly written file is removed.
    """
    target = _check_output(path)
    dtype = np.dtype(dtype)
    predictor = 3 if np.issubdtype(dtype, np.floating) else 2
    profile = {
        'driver': 'GTiff',
        'width': grid.width,
        'height': grid.height,
        'count': 1,
        'dtype': dtype.name,
        'crs': grid.crs,
        'transform': grid.transform,
        'nodata': nodata,
        'tiled': True,
        'blockxsize': 256,
        'blockysize': 256,
        'compress': 'DEFLATE',
        'predictor': predictor,
    }
    with _output_errors(path, 'GeoTIFF'):
        dst = rasterio.open(target, 'w', **profile)
    try:
        sink = _GeoTiffSink(path, grid, dst, dtype, convert)
        yield sink
        sink._check_complete()
        with _output_errors(path, 'GeoTIFF'):
            if tags:
                dst.update_tags(**tags)
            if band_tags:
                dst.update_tags(1, **band_tags)
            if band_description is not None:
                dst.set_band_description(1, band_description)
            dst.close()
    except BaseException:
        _discard(dst, target)
        raise


def write_csg_geotiff(
    path: str | os.PathLike[str],
    sigma0_linear: np.ndarray,
    grid: Grid,
    acquisition: Acquisition,
    calibration: Calibration,
) -> None:
    """Write a CSG GTC product as a GeoTIFF.

    One float32 DN band (nodata 0, description = polarisation). The product and
    calibration attributes are GeoTIFF metadata under the names GDAL's HDF5 driver
    gives the HDF5 ones: root attributes unprefixed (``Rescaling_Factor``,
    ``Mission_ID``...), ``/S01`` ones prefixed (``S01_Calibration_Constant``,
    ``S01_Polarisation``) in the dataset metadata, and the image dataset's attributes
    (``Line_Spacing``, ``Top_Left_Geodetic_Coordinates``...) in the band metadata, as
    for an opened HDF5 subdataset. Values are formatted as GDAL does (``%.15g``,
    arrays joined by spaces).

    Args:
        path: the output file, written in place (overwritten if it exists).
        sigma0_linear: sigma0 in linear power of shape ``grid.shape``; NaN = nodata.
        grid: north-up grid in a WGS84 / UTM CRS.
        acquisition: a CSG acquisition.
        calibration: the calibration constants to write and apply.

    Raises:
        ArgumentError: if the inputs do not describe a CSG product on a UTM grid.
        OutputError: if ``path`` cannot be written.
    """
    _check_output(path)
    acquisition._require('CSG')
    _check_sigma0(sigma0_linear, grid)
    _north_up(grid)
    dn = calibration.sigma0_to_dn(sigma0_linear).astype(np.float32)
    with csg_geotiff_tiles(path, grid, acquisition, calibration) as sink:
        sink._write_dn(dn, sigma0_linear, 0, 0)


@contextmanager
def csg_geotiff_tiles(
    path: str | os.PathLike[str],
    grid: Grid,
    acquisition: Acquisition,
    calibration: Calibration,
) -> Iterator['TileSink']:
    """Write a CSG GTC GeoTIFF tile by tile (:func:`write_csg_geotiff` for large grids).

    Yields a :class:`TileSink` that takes linear sigma0 tiles (NaN = nodata); the file
    has the same profile and metadata as one written by :func:`write_csg_geotiff`.

    Args:
        path: the output file, written in place (overwritten if it exists).
        grid: north-up grid in a WGS84 / UTM CRS.
        acquisition: a CSG acquisition.
        calibration: the calibration constants to write and apply.

    Yields:
        The sink; its tiles must not overlap and must cover the grid.

    Raises:
        ArgumentError: if the inputs do not describe a CSG product on a UTM grid, or
            the tiles do not cover the grid.
        OutputError: if ``path`` cannot be written.
    """
    _check_output(path)
    acquisition._require('CSG')
    _north_up(grid)
    zone, _ = _utm_zone(grid.crs)
    centre_latitude_deg = float(_geodetic_corners(grid)['Centre'][0])
    product_filename = acquisition.csg_filename(
        suffix='.tif', latitude_deg=centre_latitude_deg, utm_zone=zone
    )
    root_attributes = _product_attributes(acquisition, grid, product_filename)
    root_attributes.update(calibration.hdf5_root_attributes())
    root_attributes['S01 Polarisation'] = acquisition.polarisation
    root_attributes['S01 Calibration Constant'] = np.float64(
        calibration.calibration_constant
    )
    tags = {
        name.replace(' ', '_'): _gdal_value(_h5_value(value))
        for name, value in root_attributes.items()
    }
    band_tags = {
        name.replace(' ', '_'): _gdal_value(_h5_value(value))
        for name, value in _image_attributes(grid, acquisition).items()
    }

    def to_dn(sigma0: np.ndarray) -> np.ndarray:
        return calibration.sigma0_to_dn(sigma0).astype(np.float32)

    with geotiff_tiles(
        path,
        grid,
        np.float32,
        nodata=0,
        tags=tags,
        band_description=acquisition.polarisation,
        band_tags=band_tags,
        convert=to_dn,
    ) as sink:
        yield sink


class TileSink:
    """A raster file being written tile by tile.

    Made by :func:`csk_hdf5_tiles`, :func:`csg_geotiff_tiles` and
    :func:`geotiff_tiles`; :meth:`write` takes one tile at a time. The tiles must not
    overlap, and must cover the grid when the block ends.
    """

    _format = 'raster'

    def __init__(self, path: str | os.PathLike[str], grid: Grid) -> None:
        """Prepare a sink over a grid (the file is opened by its context manager)."""
        self.path = path
        self.grid = grid
        self._covered = 0

    def write(self, array: np.ndarray, row: int, col: int) -> None:
        """Write one tile.

        Args:
            array: 2-D tile (linear sigma0 with NaN for nodata for the SAR products).
            row: the tile's first row in the grid.
            col: the tile's first column.

        Raises:
            ArgumentError: if the tile does not lie inside the grid or its values
                cannot be written (e.g. negative sigma0).
            OutputError: if the file cannot be written.
        """
        self._check_window(array, row, col)
        self._write_dn(self._convert(np.asarray(array)), array, row, col)

    def _convert(self, array: np.ndarray) -> np.ndarray:
        """The values stored for a tile (identity by default)."""
        return array

    def _check_window(self, array: np.ndarray, row: int, col: int) -> None:
        """Raise ArgumentError unless the tile is 2-D and lies inside the grid."""
        shape = np.shape(array)
        if (
            len(shape) != 2
            or row < 0
            or col < 0
            or row + shape[0] > self.grid.height
            or col + shape[1] > self.grid.width
        ):
            raise ArgumentError(
                f'a tile of shape {shape} at row {row}, column {col} does not fit in '
                f'the grid of shape {self.grid.shape}'
            )

    def _write_dn(
        self, stored: np.ndarray, source: np.ndarray, row: int, col: int
    ) -> None:
        """Write converted values; ``source`` is the tile as given (for quick-looks)."""
        self._check_window(stored, row, col)
        with _output_errors(self.path, self._format):
            self._store(stored, source, row, col)
        self._covered += stored.shape[0] * stored.shape[1]

    def _store(
        self, stored: np.ndarray, source: np.ndarray, row: int, col: int
    ) -> None:
        raise NotImplementedError

    def _check_complete(self) -> None:
        """Raise ArgumentError unless the tiles written cover the grid."""
        total = self.grid.width * self.grid.height
        if self._covered != total:
            raise ArgumentError(
                f'{self.path}: the tiles written cover {self._covered} pixels, the '
                f'grid has {total}'
            )


class _GeoTiffSink(TileSink):
    """Tiles into band 1 of an open rasterio dataset."""

    _format = 'GeoTIFF'

    def __init__(
        self,
        path: str | os.PathLike[str],
        grid: Grid,
        dataset: DatasetWriter,
        dtype: np.dtype[Any],
        convert: Callable[[np.ndarray], np.ndarray] | None,
    ) -> None:
        super().__init__(path, grid)
        self._dataset = dataset
        self._dtype = dtype
        self._converter = convert

    def _convert(self, array: np.ndarray) -> np.ndarray:
        data = self._converter(array) if self._converter is not None else array
        return data.astype(self._dtype, copy=False)

    def _store(
        self, stored: np.ndarray, source: np.ndarray, row: int, col: int
    ) -> None:
        height, width = stored.shape
        window = Window(col, row, width, height)
        self._dataset.write(stored, 1, window=window)


class _CskSink(TileSink):
    """DN tiles into ``/S01/SBI``, and the decimated sigma0 of the quick-look."""

    _format = 'HDF5'

    def __init__(
        self,
        path: str | os.PathLike[str],
        grid: Grid,
        image: h5py.Dataset,
        calibration: Calibration,
        quicklook: bool,
    ) -> None:
        super().__init__(path, grid)
        self._image = image
        self._calibration = calibration
        self._step = _quicklook_step(grid.shape)
        self._decimated: np.ndarray | None = None
        if quicklook:
            self._decimated = np.zeros(
                (-(-grid.height // self._step), -(-grid.width // self._step))
            )

    def _convert(self, array: np.ndarray) -> np.ndarray:
        return self._calibration.sigma0_to_dn(array).astype(np.float32)

    def _store(
        self, stored: np.ndarray, source: np.ndarray, row: int, col: int
    ) -> None:
        height, width = stored.shape
        self._image[row : row + height, col : col + width] = stored
        if self._decimated is not None:
            step = self._step
            first_row, first_col = -row % step, -col % step
            sub = np.asarray(source[first_row::step, first_col::step], dtype=np.float64)
            r, c = (row + first_row) // step, (col + first_col) // step
            self._decimated[r : r + sub.shape[0], c : c + sub.shape[1]] = sub

    def quicklook(self) -> np.ndarray:
        """The 8-bit quick-look of the tiles written."""
        if self._decimated is None:
            raise ArgumentError('this product is written without a quick-look')
        return _quicklook_of(self._decimated)


@contextmanager
def _output_errors(path: str | os.PathLike[str], kind: str) -> Iterator[None]:
    """Turn OSError (full disk, permissions) into OutputError for ``path``."""
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        raise OutputError(path, f'cannot write {kind}: {error}') from error


def _discard(file: h5py.File | DatasetWriter, target: Path) -> None:
    """Close a half-written file, ignoring errors, and remove it."""
    with suppress(Exception):
        file.close()
    target.unlink(missing_ok=True)


_VECTOR_DRIVERS = {
    '.gpkg': 'GPKG',
    '.geojson': 'GeoJSON',
    '.json': 'GeoJSON',
    '.shp': 'ESRI Shapefile',
}


@contextmanager
def _gdal_config(options: Mapping[str, str]) -> Iterator[None]:
    """Set GDAL config options of pyogrio's GDAL for the duration of a block."""
    old = {name: pyogrio.get_gdal_config_option(name) for name in options}
    pyogrio.set_gdal_config_options(dict(options))
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options(old)


def write_vector(
    path: str | os.PathLike[str],
    frame: geopandas.GeoDataFrame,
    *,
    layer: str | None = None,
    driver: str | None = None,
) -> None:
    """Write a vector layer with bytes that depend only on the inputs.

    GeoPackage stores a ``last_change`` time in ``gpkg_contents`` and a shapefile's
    ``.dbf`` header a last-update date; both are fixed to :data:`VECTOR_CURRENT_DATE`
    (GDAL config option ``OGR_CURRENT_DATE`` while writing, layer creation option
    ``DBF_DATE_LAST_UPDATE``). GeoJSON has no time. The GeoJSON ``name`` member and the
    GeoPackage table are the layer name, so the default layer (the file stem) makes
    files of different names differ.

    Args:
        path: the output file. For a multi-layer format (GeoPackage) an existing file
            keeps its other layers and ``layer`` is replaced.
        frame: the features, with a CRS.
        layer: layer name (default: the file stem).
        driver: OGR driver; by default from the extension (``.gpkg`` GPKG,
            ``.geojson``/``.json`` GeoJSON, ``.shp`` ESRI Shapefile).

    Raises:
        ArgumentError: if the driver cannot be inferred.
        OutputError: if ``path`` cannot be written.
    """
    target = _check_output(path)
    if driver is None:
        driver = _VECTOR_DRIVERS.get(target.suffix.lower())
        if driver is None:
            raise ArgumentError(
                f'{path}: cannot infer the vector format from the extension; use one '
                f'of {sorted(_VECTOR_DRIVERS)} or pass driver='
            )
    layer_options = {}
    if driver == 'ESRI Shapefile':
        layer_options['DBF_DATE_LAST_UPDATE'] = VECTOR_CURRENT_DATE[:10]
    try:
        with _gdal_config({'OGR_CURRENT_DATE': VECTOR_CURRENT_DATE}):
            pyogrio.write_dataframe(
                frame,
                target,
                layer=layer or target.stem,
                driver=driver,
                layer_options=layer_options,
            )
    except (OSError, pyogrio.errors.DataSourceError) as error:
        raise OutputError(path, f'cannot write {driver}: {error}') from error
