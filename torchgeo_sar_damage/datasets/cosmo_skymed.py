# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""COSMO-SkyMed (CSK) and COSMO-SkyMed Second Generation (CSG) products."""

import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
import rasterio.errors
import rasterio.windows
import torch
from matplotlib.figure import Figure
from pyproj import CRS
from rasterio import features
from rasterio.errors import NotGeoreferencedWarning
from torchgeo.datasets.utils import Path, Sample

from ..errors import ArgumentError, InputFileError
from ._raster import UNREADABLE, Source, WindowedRasterDataset, check_georeferencing


def _number(meta: Mapping[str, str], key: str, path: str) -> float:
    try:
        return float(meta[key].split()[0])
    except KeyError:
        raise InputFileError(
            path, f'calibration attribute {key!r} is missing'
        ) from None
    except (ValueError, IndexError):
        raise InputFileError(
            path, f'calibration attribute {key}={meta[key]!r} is not a number'
        ) from None


def sigma0_per_dn2(meta: Mapping[str, str], path: str | os.PathLike[str]) -> float:
    """Linear sigma nought of one squared digital number of a detected product.

    The conversion is the one SNAP's ``CosmoSkymedCalibrator`` applies to detected
    CSK products, honouring the product's compensation flags::

        sigma0 = DN² · [Rref^(2·Rexp)] · [sin(alpha_ref)] / (F² · [K])

    The bracketed terms apply when ``Range_Spreading_Loss_Compensation_Geometry`` and
    ``Incidence_Angle_Compensation_Geometry`` are not ``NONE`` and when
    ``Calibration_Constant_Compensation_Flag`` is not 1.

    Args:
        meta: the product's metadata under GDAL's names (root attributes unprefixed,
            ``/S01`` attributes prefixed ``S01_``), from the HDF5 container or the
            GeoTIFF tags.
        path: the product file, for error messages.

    Returns:
        Factor that turns DN² into linear sigma nought.

    Raises:
        InputFileError: if a calibration attribute is missing or not a number.
    """
    path = os.fspath(path)
    factor = _number(meta, 'Rescaling_Factor', path) ** -2
    if meta.get('Range_Spreading_Loss_Compensation_Geometry', 'NONE').upper() != 'NONE':
        rref = _number(meta, 'Reference_Slant_Range', path)
        rexp = _number(meta, 'Reference_Slant_Range_Exponent', path)
        factor *= rref ** (2 * rexp)
    if meta.get('Incidence_Angle_Compensation_Geometry', 'NONE').upper() != 'NONE':
        factor *= math.sin(
            math.radians(_number(meta, 'Reference_Incidence_Angle', path))
        )
    if meta.get('Calibration_Constant_Compensation_Flag', '0').strip() != '1':
        factor /= _number(meta, 'S01_Calibration_Constant', path)
    return factor


#: Compensation flags read by :func:`sigma0_per_dn2`, with the value taken when absent.
COMPENSATION_FLAGS = {
    'Range_Spreading_Loss_Compensation_Geometry': 'NONE',
    'Incidence_Angle_Compensation_Geometry': 'NONE',
    'Calibration_Constant_Compensation_Flag': '0',
}

#: Attributes :func:`sigma0_per_dn2` reads (GDAL's names); ``S01_Calibration_Constant``
#: stands for the constant of each polarisation group (``S02_...`` for ``/S02``).
CALIBRATION_ATTRIBUTES = (
    'Rescaling_Factor',
    'Reference_Slant_Range',
    'Reference_Slant_Range_Exponent',
    'Reference_Incidence_Angle',
    'S01_Calibration_Constant',
    *COMPENSATION_FLAGS,
)

#: Calibration constants supplied by the user: attribute name -> value, for every
#: product, or file -> (attribute name -> value), per product (see
#: :class:`COSMOSkyMed`).
type Calibration = Mapping[str, float | str] | Mapping[str, Mapping[str, float | str]]


def missing_calibration(meta: Mapping[str, str]) -> list[str]:
    """Attributes :func:`sigma0_per_dn2` needs that a product's metadata lacks.

    Which are needed depends on the compensation flags (absent flags count as
    :data:`COMPENSATION_FLAGS`).

    Args:
        meta: the product's metadata, as for :func:`sigma0_per_dn2`.

    Returns:
        The missing attributes, in the order the formula reads them.
    """
    needed = ['Rescaling_Factor']
    flag = {k: meta.get(k, v).strip().upper() for k, v in COMPENSATION_FLAGS.items()}
    if flag['Range_Spreading_Loss_Compensation_Geometry'] != 'NONE':
        needed += ['Reference_Slant_Range', 'Reference_Slant_Range_Exponent']
    if flag['Incidence_Angle_Compensation_Geometry'] != 'NONE':
        needed.append('Reference_Incidence_Angle')
    if flag['Calibration_Constant_Compensation_Flag'] != '1':
        needed.append('S01_Calibration_Constant')
    return [key for key in needed if key not in meta]


def _attribute_name(key: str) -> str:
    """GDAL's name of a calibration attribute given by its HDF5 or GDAL name."""
    name = key.strip().replace(' ', '_')
    if name in CALIBRATION_ATTRIBUTES or re.fullmatch(
        r'S\d{2}_Calibration_Constant', name
    ):
        return name
    raise ArgumentError(
        f'calibration: {key!r} is not a calibration attribute; use '
        f'{", ".join(CALIBRATION_ATTRIBUTES)} (S02_Calibration_Constant... for other '
        'polarisation groups), HDF5 names with spaces also accepted'
    )


def _calibration_for(
    calibration: Calibration | None, files: Sequence[str]
) -> dict[str, dict[str, str]]:
    """The supplied calibration attributes of each product file, as strings.

    Args:
        calibration: the ``calibration`` argument of :class:`COSMOSkyMed`.
        files: the product files.

    Returns:
        File -> (GDAL attribute name -> value) for the files given constants.

    Raises:
        ArgumentError: if the mapping mixes the two shapes, names an unknown
            attribute or a file that is not one of the products.
    """
    if not calibration:
        return {}
    nested = [isinstance(v, Mapping) for v in calibration.values()]
    if any(nested) and not all(nested):
        raise ArgumentError(
            'calibration must map attribute names to values (every product) or files '
            'to such mappings (per product), not mix both'
        )

    def attributes(values: Mapping[str, float | str]) -> dict[str, str]:
        return {_attribute_name(k): str(v) for k, v in values.items()}

    if not all(nested):
        flat = attributes(calibration)  # type: ignore[arg-type]
        return {f: dict(flat) for f in files}
    out: dict[str, dict[str, str]] = {}
    for key, values in calibration.items():
        hits = [
            f
            for f in files
            if os.path.basename(f) == key or os.path.abspath(f) == os.path.abspath(key)
        ]
        if not hits:
            raise ArgumentError(
                f'calibration names {key!r}, which is not one of the products '
                f'({", ".join(os.path.basename(f) for f in files) or "none"}); key '
                'per-product constants by file path or file name'
            )
        for f in hits:
            out[f] = attributes(values)  # type: ignore[arg-type]
    return out


# --------------------------------------------------------------------------------------
# COSMO-SkyMed
# --------------------------------------------------------------------------------------

#: Processing level of each product type (root ``Product Type`` prefix, file names).
PRODUCT_LEVELS = {'RAW': 'L0', 'SCS': 'L1A', 'DGM': 'L1B', 'GEC': 'L1C', 'GTC': 'L1D'}

#: Geocoded product types the dataset reads.
GEOCODED_PRODUCTS = ('GEC', 'GTC')

#: Image datasets of one polarisation group (``/S01``...) in GDAL subdataset names,
#: in order of preference: single-beam and multi-beam CSK, CSG.
IMAGE_DATASETS = ('SBI', 'MBI', 'IMG')

_NOT_GEOCODED = (
    'is a {level} {product} product in {geometry}, not geocoded; geocode it first '
    '(e.g. SNAP Radar > Geometric > Terrain Correction, exported as GeoTIFF) or order '
    "the L1C GEC / L1D GTC product from ASI's COSMO-SkyMed catalogue"
)
_GEOMETRY = {
    'RAW': 'raw signal',
    'SCS': 'slant range (complex)',
    'DGM': 'ground range (detected)',
}


@dataclass
class _Product:
    """What COSMOSkyMed needs to know about one product file."""

    #: GDAL source (file or HDF5 subdataset) and band index of each polarisation.
    sources: dict[str, tuple[str, int]]
    #: Product metadata under GDAL's names, per polarisation, with the calibration
    #: constant of the polarisation's group as ``S01_Calibration_Constant``.
    metadata: dict[str, dict[str, str]]
    #: Polarisation group (``S01``...) of each polarisation.
    groups: dict[str, str]
    #: The product's metadata as read (root and every group).
    tags: dict[str, str]
    #: Linear sigma nought of one DN², per requested polarisation.
    sigma0_per_dn2: dict[str, float] = field(default_factory=dict)


def _group_metadata(tags: Mapping[str, str], group: str) -> dict[str, str]:
    """Product metadata seen from one polarisation group (``S01``, ``S02``...).

    :func:`sigma0_per_dn2` reads the calibration constant as
    ``S01_Calibration_Constant``; for another group that key is replaced by the
    group's own constant (and dropped if the group has none, so that a missing
    constant is reported rather than another group's used).
    """
    meta = dict(tags)
    if group != 'S01':
        meta.pop('S01_Calibration_Constant', None)
        if f'{group}_Calibration_Constant' in tags:
            meta['S01_Calibration_Constant'] = tags[f'{group}_Calibration_Constant']
    return meta


def _open_hdf5(path: str) -> tuple[dict[str, str], list[str], bool]:
    """Root attributes and image datasets of an HDF5 product, as GDAL sees them.

    Args:
        path: the product file.

    Returns:
        The root attributes, the subdataset names, and whether GDAL opened the file
        as a single image (a file with one image dataset and no subdatasets).

    Raises:
        InputFileError: if GDAL cannot open the file.
    """
    try:
        with warnings.catch_warnings():
            # The container itself has no geotransform; its images have.
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            container = rasterio.open(path)
        with container:
            tags = container.tags()
            subdatasets = list(container.subdatasets)
            single_image = container.count > 0
    except rasterio.errors.RasterioIOError as err:
        raise InputFileError(
            path, f'cannot be opened by GDAL ({err}); {UNREADABLE}'
        ) from None
    return tags, subdatasets, single_image


def _hdf5_images(
    path: str, tags: Mapping[str, str], subdatasets: Sequence[str], single_image: bool
) -> dict[str, str]:
    """The image dataset GDAL reads for each ``Snn`` group of an HDF5 product.

    Of a group's datasets, the first of :data:`IMAGE_DATASETS` present is taken.

    Args:
        path: the product file.
        tags: its root attributes.
        subdatasets: its subdataset names.
        single_image: whether GDAL opened the file as its only image.

    Returns:
        The GDAL name of each group's image dataset.
    """
    images: dict[str, str] = {}
    if not subdatasets and single_image:
        # GDAL opens a file with a single image dataset as that image.
        named = {k[:3] for k in tags if re.fullmatch(r'S\d{2}_Polarisation', k)}
        if len(named) == 1:
            images[named.pop()] = path
    for name in subdatasets:
        found = re.search(r'//(S\d{2})/([A-Z]{3})$', name)
        if found and found.group(2) in IMAGE_DATASETS:
            group, image = found.groups()
            current = images.get(group)
            if current is None or IMAGE_DATASETS.index(image) < IMAGE_DATASETS.index(
                current.rsplit('/', 1)[1]
            ):
                images[group] = name
    return images


def _check_hdf5_image(path: str, name: str, product: str) -> None:
    """Refuse an HDF5 image dataset that GDAL cannot georeference, with advice.

    Args:
        path: the product file.
        name: the GDAL name of the image dataset.
        product: mission and product type, e.g. ``'CSK GEC'`` (for the advice).

    Raises:
        InputFileError: as :func:`~._raster.check_georeferencing`, advising why the
            HDF5 driver failed and to export a GeoTIFF.
    """
    image = ' /' + name.rsplit('//', 1)[1] if '//' in name else ''
    with rasterio.open(name) as src:
        advice = ''
        if 'Top_Left_East-North' not in src.tags(1):
            advice = (
                f"the image dataset{image} has no 'Top Left East-North' "
                f"attribute, so GDAL's HDF5 driver cannot georeference this "
                f'{product} product; export a GeoTIFF '
                '(e.g. SNAP File > Export > GeoTIFF, or gdal_translate with '
                '-a_srs and -a_ullr from the product corners) and use that'
            )
        elif src.crs is None:
            advice = (
                "GDAL's HDF5 driver builds the CRS from the root attributes "
                "'Projection ID' (UTM or UPS), 'Map Projection Centre', 'Map "
                "Projection Scale Factor' and 'Map Projection False "
                "East-North' (float64), which are missing or malformed; "
                'export a GeoTIFF (e.g. SNAP File > Export > GeoTIFF) and use '
                'that'
            )
        check_georeferencing(src, path, advice)


class COSMOSkyMed(WindowedRasterDataset):
    r"""COSMO-SkyMed (CSK) and COSMO-SkyMed Second Generation (CSG) dataset.

    `COSMO-SkyMed <https://www.asi.it/en/earth-science/cosmo-skymed/>`_ is the Italian
    Space Agency's (ASI) X-band (9.6 GHz, 3.1 cm) synthetic aperture radar
    constellation: four first generation satellites (CSK, CSKS1-4, from 2007) and the
    Second Generation (CSG, CSG-1 and CSG-2, from 2019). Spotlight modes reach below
    1 m and Stripmap about 3 m, day and night through clouds, which makes the data a
    main source for mapping building damage after earthquakes.

    Data can be obtained from:

    * `ASI's COSMO-SkyMed catalogue and data portal
      <https://www.asi.it/en/earth-science/cosmo-skymed/>`_ (scientific licence on
      an approved project proposal; commercial licence through e-GEOS)
    * `ESA Third Party Missions <https://earth.esa.int/eogateway/missions/cosmo-skymed>`_
      (archive and new acquisitions on an accepted project proposal)
    * the International Charter Space and Major Disasters and Copernicus EMS, which
      task COSMO-SkyMed after disasters (products for the activation's users)

    Product levels (root attribute ``Product Type``, file-name field ``<YYY>``):

    * L0 RAW: raw signal
    * L1A SCS: Single-look Complex Slant, focused, slant range
    * L1B DGM: Detected Ground Multi-look, ground range, not geocoded
    * L1C GEC: Geocoded Ellipsoid Corrected, map projected on the ellipsoid
    * L1D GTC: Geocoded Terrain Corrected, map projected with a DEM

    This dataset reads the geocoded L1C GEC and L1D GTC products (use GTC over
    built-up terrain). L0/L1A/L1B products are refused with a message that says how
    to geocode them.

    Formats:

    * HDF5, as delivered for CSK and CSG. The file is opened through GDAL's HDF5
      driver, which recognises the root attribute ``Mission ID`` (``CSK``, ``CSG``)
      and georeferences the L1C/L1D image from its own attributes
      (``Top Left East-North``, ``Line Spacing``, ``Column Spacing`` on the image
      dataset, ``Projection ID`` and ``Map Projection ...`` at the root). The image of
      polarisation group ``/S01`` is the subdataset ``HDF5:"file.h5"://S01/SBI``
      (CSK single-beam), ``//S01/MBI`` (CSK multi-beam ScanSAR) or ``//S01/IMG``
      (CSG); a second polarisation lives in ``/S02``, and so on. The quick-look
      ``/S01/QLK`` is ignored.
    * GeoTIFF: GTC products delivered or exported as GeoTIFF, with the product's
      metadata as GeoTIFF tags under GDAL's names (root attributes unprefixed, group
      attributes prefixed ``S01_``...). The polarisation of each band is its
      description or ``S01_Polarisation``... tag, else the file name's.

    File names (CSK, first generation)::

        CSKS<i>_<YYY>_<Z>_<MM>_<SS>_<PP>_<s><o>_<D><G>_<start>_<stop>.h5
        e.g. CSKS1_GEC_B_HI_16_HH_LD_SN_20080108105558_20080108105604.h5

    File names (CSG, second generation; ``.tif`` for GeoTIFF GTC products)::

        CSG_SSAR<i>_<YYY>_<Z>_<RR><AA>_<MMM>_<SSS>_<PP>_<s><o>_<Q>_<start>_<stop>_<j>_<S>_<ll><H>_Z<LL>_<AAA>.h5
        e.g. CSG_SSAR2_GTC_F_0101_S2B_007_VV_LD_F_20250329114557_20250329114606_1_F_22N_Z47_N00.tif

    Each field is explained beside :attr:`filename_regex`. The file's time interval
    is [``start``, ``stop``] (UTC) from the name, parsed by TorchGeo's
    :class:`~torchgeo.datasets.RasterDataset` from the regex's ``start`` and ``stop``
    groups. A directory in ``paths`` is searched for :attr:`filename_glob`; a product
    named in ``paths`` whose name does not follow the convention is refused (the
    product type, polarisation and time come from the name).

    Polarisations are the dataset's bands (:attr:`all_bands`); a product that lacks a
    requested polarisation is refused, naming the file and the polarisation.

    Samples are dicts with:

    * ``image``: float32 ``[bands, H, W]`` (``[T, bands, H, W]`` with
      ``time_series=True``) sigma nought, linear power (``units='linear'``) or
      decibels (``units='db'``, ``10·log10(linear)``), or the digital numbers as
      stored (``units='dn'``), NaN where the product has no data (DN 0 or the
      declared nodata value) or does not cover the window
    * ``bounds`` and ``transform``: the window, as TorchGeo's

    Calibration follows SNAP's ``CosmoSkymedCalibrator`` with the product's own
    attributes and compensation flags (:func:`sigma0_per_dn2`), per polarisation
    group (``S01_Calibration_Constant``, ``S02_Calibration_Constant``...)::

        sigma0 = DN² · [Rref^(2·Rexp)] · [sin(alpha_ref)] / (F² · [K])

    The conversion is the one per-file hook of :class:`WindowedRasterDataset`,
    :meth:`_convert`. A product without the attributes (e.g. a GTC GeoTIFF clipped
    without its tags) is refused naming the file and the missing attributes, unless
    ``units='dn'`` (digital numbers, no calibration) or ``calibration=`` (the
    attributes, one mapping for every product or one per file) is given; a dataset
    mixing calibrated and uncalibrated products is refused.

    ``&`` with another dataset of this package keeps one key per modality (SAR
    ``image``, ``dsm``, ``footprint``...), unlike TorchGeo's channel concatenation;
    ``COSMOSkyMed & Sentinel1`` (both ``image``) is refused with a message pointing
    to :class:`~torchgeo.datasets.IntersectionDataset` for TorchGeo's behaviour.

    .. note::
       GDAL georeferences CSK/CSG HDF5 L1C/L1D products only from the image
       dataset's ``Top Left East-North``, ``Line Spacing`` and ``Column Spacing``
       attributes (float64). Whether CSG HDF5 products carry them on ``/S01/IMG`` is
       not documented; a product without them has no geotransform in GDAL and is
       refused: export it to GeoTIFF (e.g. SNAP File > Export > GeoTIFF, or ASI's GTC
       GeoTIFF delivery) and use that.

    .. note::
       GDAL derives the level of an HDF5 product from ``Product Type`` but, when
       placing GCPs, tests the prefix ``SSC`` instead of ``SCS``, so L1A SCS products
       get no GCPs. They are slant-range products and refused here anyway.

    .. note::
       HDF5 products declare no nodata value: DN 0 marks pixels outside the
       acquisition and becomes NaN, as the declared nodata of a GeoTIFF does. Windows
       that are not aligned on a product's pixel grid are resampled (bilinear, on DN
       amplitude) before calibration, as TorchGeo resamples any raster; pixels next to
       nodata then mix with it.

    .. note::
       Mixing sigma nought in linear power and in dB, or calibrated and
       uncalibrated products, is not meaningful: the ``units`` argument makes the
       scale explicit and applies to every product of the dataset.

    If you use this dataset in your research, please cite the product's licence
    statement, e.g.:

    * "COSMO-SkyMed Product ©ASI - Agenzia Spaziale Italiana - (year) - All Rights
      Reserved"
    * Covello, F., et al. (2010). COSMO-SkyMed an existing opportunity for observing
      the Earth. Journal of Geodynamics, 49(3-4), 171-180.
      https://doi.org/10.1016/j.jog.2010.01.001

    .. versionadded:: 0.1

    .. versionchanged:: 0.2
       ``units='dn'``, *calibration* and *time_series*; the regex's ``date`` group is
       now ``start`` (TorchGeo's name); a named file off the convention is refused.
    """

    # Sources of the file-name fields: eoreader's CONSTELLATION_REGEX (CSK and CSG),
    # the SARscape CSG import help page (template) and real product names. The regex
    # has one branch per generation, selected by the `csk` group; both fill the same
    # named groups.
    #
    # CSK  CSKS<i>_<YYY>_<Z>_<MM>_<SS>_<PP>_<s><o>_<D><G>_<start>_<stop>.h5
    # CSG  CSG_SSAR<i>_<YYY>_<Z>_<RR><AA>_<MMM>_<SSS>_<PP>_<s><o>_<Q>_<start>_<stop>
    #          _<j>_<S>_<ll><H>_Z<LL>_<AAA>.h5
    filename_glob = 'CS*'
    filename_regex = r"""
        # mission: CSK (first generation) or CSG (second generation)
        ^(?P<mission>(?P<csk>CSK)|CSG)
        # <i>: satellite, CSKS1-4 or CSG_SSAR1-2
        (?(csk)S(?=[1-4])|_SSAR(?=[12]))(?P<satellite>\d)
        # <YYY>: product type, RAW (L0), SCS (L1A), DGM (L1B), GEC (L1C), GTC (L1D)
        _(?P<product>[A-Z]{3})
        # <Z>: product variant, CSK B or U (SNAP refuses to calibrate SCS_U);
        # CSG U, B, F or FQLK_B
        _(?P<variant>(?(csk)[BU]|(?:FQLK_B|[UBF])))
        # <RR><AA> (CSG only): 4 digits, meaning not documented
        (?(csk)|_\d{4})
        # <MM>/<MMM>: acquisition mode. CSK: HI HIMAGE, PP PINGPONG, WR WIDEREGION,
        # HR HUGEREGION, S2 ENHANCED SPOTLIGHT. CSG: S2A/S2B/S2C SPOTLIGHT-2A/B/C,
        # D2R/D2S/D2J SPOTLIGHT-2 MSOR/MSOS/MSJN, OQR/OQS SPOTLIGHT-1/2-OQR/OQS,
        # STR STRIPMAP, SC1/SC2 SCANSAR-1/2, PPS PINGPONG, QPS QUADPOL
        _(?P<mode>(?(csk)(?:HI|PP|WR|HR|S2)|(?:S2[ABC]|D2[RSJ]|OQ[RS]|STR|SC[12]|PPS|QPS)))
        # <SS>/<SSS>: beam (CSK, 2 characters) or swath (CSG, 3 digits)
        _(?P<beam>(?(csk)[0-9A-Z]{2}|\d{3}))
        # <PP>: polarisation, HH HV VH VV; CSK dual-polarisation (PingPong) codes
        # CO (HH+VV), CH (HH+HV), CV (VV+VH)
        _(?P<polarisation>(?(csk)(?:HH|HV|VH|VV|CO|CH|CV)|(?:HH|HV|VH|VV)))
        # <s><o>: look side, Left or Right; orbit direction, Ascending or Descending
        _(?P<look_side>[LR])(?P<orbit>[AD])
        # CSK <D><G>: F or S, then N or F (probably delivery mode and selective
        # availability). CSG <Q>: one of D, P, F, R
        _(?(csk)(?P<delivery>[FS][NF])|(?P<quality>[DPFR]))
        # <start>, <stop>: acquisition start and stop, UTC, YYYYMMDDhhmmss
        _(?P<start>\d{14})
        _(?P<stop>\d{14})
        # CSG only: <j> digit, <S> F or C, <ll><H> scene latitude band and
        # hemisphere, Z<LL> UTM zone, <AAA> N, F or B and 2 digits
        (?(csk)|_\d_[FC]_(?P<latitude>\d{2})(?P<hemisphere>[NS])_Z(?P<zone>\d{2})
            _[NFB]\d{2})
        # optional subdataset suffix of a GDAL export (.S01.SBI), then the format
        (?:\.S\d{2}\.(?:SBI|MBI|IMG))?
        \.(?P<format>h5|tiff?)$
    """
    date_format = '%Y%m%d%H%M%S'

    #: Polarisations (transmit, receive).
    all_bands = ('HH', 'HV', 'VH', 'VV')

    def __init__(
        self,
        paths: Path | Iterable[Path] = 'data',
        crs: CRS | None = None,
        res: float | tuple[float, float] | None = None,
        bands: Sequence[str] | None = None,
        units: Literal['linear', 'db', 'dn'] = 'linear',
        transforms: Callable[[Sample], Sample] | None = None,
        cache: bool = True,
        time_series: bool = False,
        calibration: Calibration | None = None,
    ) -> None:
        """Initialize a new COSMOSkyMed instance.

        Args:
            paths: one or more root directories to search or files to load
            crs: :term:`coordinate reference system (CRS)` to warp to
                (defaults to the CRS of the first file found)
            res: resolution of the dataset in units of CRS
                (defaults to the resolution of the first file found)
            bands: polarisations to return (defaults to those every product has)
            units: ``'linear'`` for sigma nought in linear power, ``'db'`` for
                decibels, ``'dn'`` for the products' digital numbers as they are
                (no calibration attribute needed)
            transforms: a function/transform that takes an input sample
                and returns a transformed version
            cache: if True, cache file handles to speed up repeated sampling
            time_series: if True, stack the products of a window along a time
                dimension (``[T, bands, H, W]``, in index order) instead of
                mosaicking them
            calibration: calibration attributes for products that lack them (or to
                replace theirs), under the names of :data:`CALIBRATION_ATTRIBUTES`
                (HDF5 names with spaces also accepted), values as numbers or
                strings: either one mapping for every product, e.g.
                ``{'Rescaling_Factor': 1.9e-4, 'S01_Calibration_Constant': 2.2e5,
                ...}``, or a mapping from product file (path or file name) to such a
                mapping, e.g. ``{'CSG_..._N00.tif': {...}}``; a value given here
                wins over the product's own

        Raises:
            ArgumentError: if *bands*, *units* or *calibration* are invalid (or
                *calibration* is given with ``units='dn'``), or the products share
                no polarisation and *bands* is not given.
            InputFileError: if a product is not geocoded (L0/L1A/L1B), of an
                unknown type, named explicitly but not by the CSK/CSG convention,
                lacks a requested polarisation or calibration attributes (or some
                products are calibrated and others not), or GDAL cannot
                georeference it.
            DatasetNotFoundError: if no product is found.

        .. versionchanged:: 0.2
           *units* ``'dn'``, *calibration* and *time_series*.
        """
        if units not in ('linear', 'db', 'dn'):
            raise ArgumentError(f"units must be 'linear', 'db' or 'dn', not {units!r}")
        if calibration and units == 'dn':
            raise ArgumentError(
                "calibration has no effect with units='dn' (digital numbers are read "
                "as they are); give units='linear' or 'db', or leave calibration out"
            )
        if bands is not None:
            unknown = [b for b in bands if b not in self.all_bands]
            if unknown or not bands or len(set(bands)) != len(bands):
                raise ArgumentError(
                    f'bands must be distinct polarisations of {self.all_bands}, '
                    f'not {tuple(bands)!r}'
                )
        self.units = units
        self.paths = paths
        regex = re.compile(self.filename_regex, re.VERBOSE)
        named = set(self.named_files)
        self._products: dict[str, _Product] = {}
        for filepath in self.files:
            match = regex.match(os.path.basename(filepath))
            if match is not None:
                self._products[filepath] = self._inspect(filepath, match)
            elif filepath in named:
                raise InputFileError(
                    filepath,
                    'is named explicitly but its name does not follow the CSK/CSG '
                    'convention (CSKS<i>_<YYY>_..._<start>_<stop>.h5 or CSG_SSAR<i>_'
                    '<YYY>_..._<start>_<stop>_..._<AAA>.h5|.tif, see '
                    'COSMOSkyMed.filename_regex), from which the product type, '
                    'polarisation and acquisition time are read; give it its '
                    "product's original name",
                )

        if bands is None and self._products:
            common = set.intersection(
                *(set(p.sources) for p in self._products.values())
            )
            bands = [b for b in self.all_bands if b in common]
            if not bands:
                raise ArgumentError(
                    'the products share no polarisation; choose bands=(...) and give '
                    'only products that have them'
                )
        for filepath, product in self._products.items():
            for band in bands or ():
                if band not in product.sources:
                    raise InputFileError(
                        filepath,
                        f'has no {band} polarisation (it has '
                        f'{", ".join(product.sources) or "none"}); choose other bands '
                        'or leave this product out',
                    )
        if units != 'dn':
            self._calibrate(bands or (), calibration)

        super().__init__(paths, crs, res, bands, transforms, cache, time_series)

    def _calibrate(self, bands: Sequence[str], calibration: Calibration | None) -> None:
        """Find each product's sigma nought per DN², or refuse uncalibrated ones.

        Args:
            bands: the requested polarisations.
            calibration: the ``calibration`` argument.

        Raises:
            ArgumentError: if *calibration* is malformed.
            InputFileError: if a product lacks calibration attributes (naming the
                file, the attributes and the options), or a value is not a number.
        """
        supplied = _calibration_for(calibration, list(self._products))
        missing: dict[str, list[str]] = {}
        for filepath, product in self._products.items():
            for band in bands:
                meta = product.metadata[band]
                if filepath in supplied:
                    tags = {**product.tags, **supplied[filepath]}
                    meta = _group_metadata(tags, product.groups[band])
                group = product.groups[band]
                lacking = [
                    f'{group}_Calibration_Constant'
                    if key == 'S01_Calibration_Constant'
                    else key
                    for key in missing_calibration(meta)
                ]
                if lacking:
                    missing.setdefault(filepath, [])
                    missing[filepath] += [
                        k for k in lacking if k not in missing[filepath]
                    ]
                    continue
                product.sigma0_per_dn2[band] = sigma0_per_dn2(meta, filepath)
        if not missing:
            return
        filepath, lacking = next(iter(missing.items()))
        absent = [
            k for k in COMPENSATION_FLAGS if k not in self._products[filepath].tags
        ]
        flags = (
            f' (its compensation flags {", ".join(absent)} are absent too, taken as '
            f'{", ".join(COMPENSATION_FLAGS[k] for k in absent)})'
            if absent and filepath not in supplied
            else ''
        )
        calibrated = [f for f in self._products if f not in missing]
        mixed = (
            f'; the other products ({", ".join(map(os.path.basename, calibrated))}) are '
            'calibrated, and calibrated and uncalibrated products are not mixed in one '
            'dataset'
            if calibrated
            else ''
        )
        raise InputFileError(
            filepath,
            f'cannot be calibrated: calibration attributes {", ".join(lacking)} '
            f"missing{flags}{mixed}; give them from the product's metadata with "
            "calibration={'Rescaling_Factor': ..., ...} (or {file name: {...}} per "
            "product), or read every product's digital numbers with units='dn'",
        )

    @property
    def product_types(self) -> list[str]:
        """Mission and product type of the products, from their names (``'CSG GTC'``).

        Returns:
            The distinct ones, sorted.

        .. versionadded:: 0.2
        """
        regex = re.compile(self.filename_regex, re.VERBOSE)
        found = {
            f'{match.group("mission")} {match.group("product")}'
            for path in self.files
            if (match := regex.match(os.path.basename(path))) is not None
        }
        return sorted(found)

    def _inspect(self, path: str, match: re.Match[str]) -> _Product:
        """Check a product and find its polarisations and metadata.

        Args:
            path: the product file.
            match: its file name's match of :attr:`filename_regex`.

        Returns:
            The product's sources and metadata.

        Raises:
            InputFileError: if the product cannot be read by this dataset.
        """
        self._check_level(path, match.group('product'), 'its file name')
        if match.group('format') == 'h5':
            return self._inspect_hdf5(path, match)
        sources: dict[str, tuple[str, int]] = {}
        metadata: dict[str, dict[str, str]] = {}
        groups: dict[str, str] = {}
        try:
            with rasterio.open(path) as src:
                check_georeferencing(src, path)
                tags = src.tags()
                for i, description in enumerate(src.descriptions, start=1):
                    group = f'S{i:02d}'
                    polarisation = description or tags.get(f'{group}_Polarisation')
                    if not polarisation and src.count == 1:
                        polarisation = match.group('polarisation')
                    if polarisation in self.all_bands:
                        sources[polarisation] = (path, i)
                        metadata[polarisation] = _group_metadata(tags, group)
                        groups[polarisation] = group
        except rasterio.errors.RasterioIOError as err:
            raise InputFileError(
                path, f'cannot be opened by GDAL ({err}); {UNREADABLE}'
            ) from None
        return _Product(sources, metadata, groups, tags)

    def _check_level(self, path: str, product: str, where: str) -> None:
        """Refuse products that are not geocoded L1C/L1D ones."""
        product = product.upper()[:3]
        if product in GEOCODED_PRODUCTS:
            return
        if product in PRODUCT_LEVELS:
            raise InputFileError(
                path,
                _NOT_GEOCODED.format(
                    level=PRODUCT_LEVELS[product],
                    product=product,
                    geometry=_GEOMETRY[product],
                ),
            )
        raise InputFileError(
            path,
            f'has an unknown product type {product!r} in {where} (expected one of '
            f'{", ".join(PRODUCT_LEVELS)}); only geocoded GEC/GTC products are read',
        )

    def _inspect_hdf5(self, path: str, match: re.Match[str]) -> _Product:
        """Check an HDF5 product and find its polarisation groups.

        Args:
            path: the product file.
            match: its file name's match of :attr:`filename_regex`.

        Returns:
            The product's sources (one image dataset per polarisation) and metadata.

        Raises:
            InputFileError: if the product cannot be read by this dataset.
        """
        tags, subdatasets, single_image = _open_hdf5(path)
        mission = tags.get('Mission_ID', '')
        if mission.upper() not in ('CSK', 'CSG'):
            raise InputFileError(
                path,
                f"root attribute 'Mission ID' is {mission or 'missing'!r}, not CSK or "
                "CSG, so GDAL's HDF5 driver cannot georeference it; export a GeoTIFF "
                'with SNAP (File > Export > GeoTIFF) and use that',
            )
        if 'Product_Type' in tags:
            self._check_level(
                path, tags['Product_Type'], "its root attribute 'Product Type'"
            )
            if tags['Product_Type'].upper()[:3] != match.group('product'):
                raise InputFileError(
                    path,
                    f'file name says {match.group("product")} but the root attribute '
                    f"'Product Type' is {tags['Product_Type']!r}; rename the file",
                )
        images = _hdf5_images(path, tags, subdatasets, single_image)
        product = self._hdf5_product(path, tags, images)
        for name, _ in product.sources.values():
            _check_hdf5_image(path, name, f'{mission} {match.group("product")}')
        return product

    def _hdf5_product(
        self, path: str, tags: dict[str, str], images: Mapping[str, str]
    ) -> _Product:
        """The polarisations of an HDF5 product's image datasets.

        Args:
            path: the product file.
            tags: its root attributes.
            images: the image dataset of each ``Snn`` group (:func:`_hdf5_images`).

        Returns:
            The product's sources and metadata, by polarisation.

        Raises:
            InputFileError: if a group's polarisation is not one of
                :attr:`all_bands`, or the product has no image dataset.
        """
        sources: dict[str, tuple[str, int]] = {}
        metadata: dict[str, dict[str, str]] = {}
        groups: dict[str, str] = {}
        for group, name in sorted(images.items()):
            polarisation = tags.get(f'{group}_Polarisation', '').strip().upper()
            if polarisation not in self.all_bands:
                raise InputFileError(
                    path,
                    f"group /{group} has 'Polarisation' {polarisation or 'missing'!r}, "
                    f'not one of {", ".join(self.all_bands)}',
                )
            sources[polarisation] = (name, 1)
            metadata[polarisation] = _group_metadata(tags, group)
            groups[polarisation] = group
        if not sources:
            raise InputFileError(
                path,
                'has no image dataset (/S01/SBI, /S01/MBI or /S01/IMG); is it a '
                'complete CSK/CSG product?',
            )
        return _Product(sources, metadata, groups, tags)

    def _load_warp_file(self, filepath: Path, crs: CRS | None = None) -> Source:
        """Open the image of a product's first requested polarisation (for indexing).

        Args:
            filepath: the product file.
            crs: CRS to warp to.

        Returns:
            The opened (warped) image.
        """
        product = self._products.get(os.fspath(filepath))
        name = product.sources[self.bands[0]][0] if product else os.fspath(filepath)
        return super()._load_warp_file(name, crs)

    def _source_names(self, path: str) -> list[str]:
        """The GDAL sources of a product's requested polarisations.

        Args:
            path: the product file.

        Returns:
            One GDAL name per band (an HDF5 subdataset, or the GeoTIFF).
        """
        sources = self._products[path].sources
        return [sources[band][0] for band in self.bands]

    def _read_raw(self, path: str, x: slice, y: slice) -> npt.NDArray[np.float64]:
        """Read the DN of every requested polarisation of a product over a query.

        Args:
            path: the product file.
            x: ``xmin:xmax:xres`` of the query.
            y: ``ymin:ymax:yres`` of the query.

        Returns:
            DN ``[bands, rows, columns]``, NaN outside the product and at nodata.
        """
        sources = self._products[path].sources
        return np.concatenate(
            [
                self._source_window(sources[band][0], x, y, [sources[band][1]])
                for band in self.bands
            ]
        )

    def _convert(
        self, path: str, raw: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float32]:
        """Calibrate DN to sigma nought in the dataset's units; DN 0 becomes NaN.

        The per-file calibration hook of :class:`WindowedRasterDataset`: every read
        (``__getitem__``, :meth:`extract`, :meth:`extract_batch`) converts a
        product's DN through it, with the product's own factor
        (:func:`sigma0_per_dn2` of its metadata and the ``calibration`` argument).

        Args:
            path: the product file.
            raw: DN ``[..., bands, rows, columns]``.

        Returns:
            Sigma nought, linear or dB, or the DN themselves (``units='dn'``),
            float32.
        """
        if self.units == 'dn':
            return np.where(raw == 0, np.nan, raw).astype(np.float32)
        product = self._products[path]
        factors = np.array([product.sigma0_per_dn2[b] for b in self.bands])
        sigma0 = np.where(raw == 0, np.nan, raw**2 * factors[:, None, None])
        if self.units == 'db':
            sigma0 = 10 * np.log10(sigma0)
        return sigma0.astype(np.float32)

    def plot(
        self, sample: Sample, show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Plot a sample from the dataset: sigma nought in dB, one panel per band.

        Args:
            sample: a sample returned by :meth:`__getitem__`
            show_titles: flag indicating whether to show titles above each panel
            suptitle: optional string to use as a suptitle

        Returns:
            a matplotlib Figure with the rendered sample
        """
        image = sample['image'].detach().cpu().double()
        if self.units == 'linear':
            image = 10 * torch.log10(image.clamp(min=1e-10))
        elif self.units == 'dn':
            image = 20 * torch.log10(image.clamp(min=1e-10))
        values = image[torch.isfinite(image)]
        vmin, vmax = (
            (float(values.quantile(0.02)), float(values.quantile(0.98)))
            if values.numel()
            else (-25.0, 5.0)
        )
        n = image.shape[0]
        fig, axs = plt.subplots(1, n, figsize=(4 * n, 4), squeeze=False)
        for ax, band, layer in zip(axs[0], self.bands, image, strict=True):
            ax.imshow(layer.numpy(), cmap='gray', vmin=vmin, vmax=vmax)
            ax.axis('off')
            if show_titles:
                what = 'DN²' if self.units == 'dn' else 'sigma0'
                ax.set_title(f'{band} {what} (dB)')
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig


def read_sigma0(
    path: str | os.PathLike[str],
) -> tuple[np.ndarray, rasterio.Affine, dict[str, str]]:
    """Read a detected CSK/CSG GeoTIFF product as linear sigma nought.

    Args:
        path: GTC GeoTIFF carrying the calibration metadata tags.

    Returns:
        Linear sigma nought (float64, NaN where nodata), the pixel transform and the
        product's metadata tags.

    Raises:
        InputFileError: if the file cannot be read or lacks calibration metadata.
    """
    try:
        with rasterio.open(path) as src:
            dn = src.read(1).astype(np.float64)
            tags = src.tags()
            nodata = src.nodata
            transform = src.transform
    except rasterio.errors.RasterioIOError as err:
        raise InputFileError(path, f'cannot be read as a raster ({err})') from None
    sigma0 = dn**2 * sigma0_per_dn2(tags, path)
    sigma0[dn == (nodata if nodata is not None else 0)] = np.nan
    return sigma0, transform, tags


def footprint_sigma0_statistics(
    path: str | os.PathLike[str], footprints: gpd.GeoDataFrame, buffer_m: float = 0.0
) -> pd.DataFrame:
    """Per-footprint statistics of sigma nought in dB.

    Args:
        path: GTC GeoTIFF product (in the footprints' CRS).
        footprints: building polygons.
        buffer_m: grow each footprint by this many metres first.

    Returns:
        One row per footprint, in order, with ``mean_db``, ``std_db``, ``p90_db``,
        ``max_db`` and ``bright_fraction`` (share of pixels above 0 dB); NaN where a
        footprint covers no valid pixel.
    """
    sigma0, transform, _ = read_sigma0(path)
    db = 10 * np.log10(np.maximum(sigma0, 1e-6))
    geoms = footprints.geometry.buffer(buffer_m) if buffer_m else footprints.geometry
    labels = features.rasterize(
        ((g, i + 1) for i, g in enumerate(geoms)),
        out_shape=db.shape,
        transform=transform,
        fill=0,
        dtype='int32',
    )
    sel = (labels > 0) & np.isfinite(sigma0)
    values = db[sel]
    frame = pd.DataFrame({'id': labels[sel] - 1, 'v': values, 'bright': values > 0})
    grouped = frame.groupby('id')
    stats = pd.DataFrame(
        {
            'mean_db': grouped['v'].mean(),
            'std_db': grouped['v'].std(),
            'p90_db': grouped['v'].quantile(0.9),
            'max_db': grouped['v'].max(),
            'bright_fraction': grouped['bright'].mean(),
        }
    )
    return stats.reindex(range(len(footprints)))
