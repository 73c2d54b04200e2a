#!/usr/bin/env python3

# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Write tiny COSMO-SkyMed products that follow the real CSK/CSG layouts.

Written with h5py and rasterio directly (not with the simulator), following what
GDAL's HDF5 driver reads (``frmts/hdf5/hdf5imagedataset.cpp``, CSK/CSG branch, and
its autotest ``autotest/gdrivers/hdf5.py``) and the attributes SNAP's
``CosmoSkymedReader``/``CosmoSkymedCalibrator`` (s1tbx) calibrate with:

* HDF5: root attributes ``Mission ID`` (CSK/CSG), ``Product Type`` (``GTC_B``...),
  ``Projection ID`` (``UTM``), ``Map Projection Centre`` (lat of origin, central
  meridian), ``Map Projection Scale Factor``, ``Map Projection False East-North`` and
  the calibration attributes; group ``/S01`` (``/S02``) with ``Polarisation`` and
  ``Calibration Constant``; image ``/S01/SBI`` (CSK) or ``/S01/IMG`` (CSG) with
  ``Top Left East-North``, ``Line Spacing`` (x) and ``Column Spacing`` (y). Every
  number GDAL reads is float64 (GDAL ignores float32 ones); strings are fixed-length.
* GeoTIFF: the same metadata as tags under GDAL's names (spaces -> ``_``, group
  attributes prefixed ``S01_``), nodata 0, band description = polarisation.
* Real file names (CSK ``CSKS<i>_...``, CSG ``CSG_SSAR<i>_...``).

``calibration/`` holds products whose calibration attributes are not the defaults:
reference slant range exponents other than 1, other reference incidence angles and
compensation flags that leave terms out, in HDF5 and GeoTIFF, CSK and CSG (among them
a CSG HDF5 GTC whose ``/S01/IMG`` and ``/S02/IMG`` carry the geotransform attributes,
so that GDAL georeferences it). tests/datasets/test_cosmo_skymed.py lists the same
values and checks sigma nought against its own formula.

Run it from this directory: ``python data.py``.
"""

import os
import shutil

import h5py
import numpy as np
import rasterio
from rasterio.transform import from_origin

SIZE = 32

#: UTM 37N (central meridian 39 E), near Nurdağı: shared with tests/data/dsm.
CSK_ORIGIN = (300000.0, 4118064.0)
CSK_PIXEL = 2.0

#: Calibration attributes (test values, not those of a real product).
CALIBRATION = {
    'Rescaling Factor': 400.0,
    'Reference Slant Range': 1000.0,
    'Reference Slant Range Exponent': 1.0,
    'Reference Incidence Angle': 30.0,
}
GEOMETRY = 'DEFAULT'  # any value but NONE applies the compensation term
CALIBRATION_CONSTANT = {'S01': 2.5e5, 'S02': 4.0e5}


def dn_image(offset: int) -> np.ndarray:
    """DN = offset + 10 * column + row, with a 4 x 4 nodata (DN 0) top-left corner."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    dn = (offset + 10 * cols + rows).astype(np.float64)
    dn[:4, :4] = 0
    return dn


def root_attributes(
    mission: str,
    product_type: str,
    zone: int,
    mode: str,
    side: str,
    orbit: str,
    calibration: dict[str, object] | None = None,
) -> dict[str, object]:
    """Root attributes; ``calibration`` replaces calibration attributes (HDF5 names)."""
    attributes: dict[str, object] = {
        'Mission ID': np.bytes_(mission),
        'Satellite ID': np.bytes_('CSKS2' if mission == 'CSK' else 'CSG1'),
        'Product Type': np.bytes_(product_type),
        'Acquisition Mode': np.bytes_(mode),
        'Look Side': np.bytes_(side),
        'Orbit Direction': np.bytes_(orbit),
        'Ellipsoid Designator': np.bytes_('WGS84'),
        'Projection ID': np.bytes_('UTM'),
        'Map Projection Zone': np.int32(zone),
        'Map Projection Centre': np.array([0.0, zone * 6.0 - 183.0]),
        'Map Projection Scale Factor': np.float64(0.9996),
        'Map Projection False East-North': np.array([500000.0, 0.0]),
        **{k: np.float64(v) for k, v in CALIBRATION.items()},
        'Calibration Constant Compensation Flag': np.int32(0),
        'Range Spreading Loss Compensation Geometry': np.bytes_(GEOMETRY),
        'Incidence Angle Compensation Geometry': np.bytes_(GEOMETRY),
        'Range Antenna Pattern Compensation Geometry': np.bytes_(GEOMETRY),
    }
    for name, value in (calibration or {}).items():
        assert name in attributes, name
        attributes[name] = value
    return attributes


def geocoded_image_attributes(origin: tuple[float, float]) -> dict[str, object]:
    return {
        'Top Left East-North': np.array(origin, dtype=np.float64),
        'Line Spacing': np.float64(CSK_PIXEL),
        'Column Spacing': np.float64(CSK_PIXEL),
    }


def corner_attributes() -> dict[str, object]:
    """Geodetic (lat, lon, height) corners, as L0/L1A/L1B products carry."""
    return {
        'Top Left Geodetic Coordinates': np.array([37.19, 36.72, 0.0]),
        'Top Right Geodetic Coordinates': np.array([37.19, 36.73, 0.0]),
        'Bottom Left Geodetic Coordinates': np.array([37.18, 36.72, 0.0]),
        'Bottom Right Geodetic Coordinates': np.array([37.18, 36.73, 0.0]),
    }


def write_hdf5(
    path: str,
    root: dict[str, object],
    images: dict[str, tuple[str, np.ndarray, dict[str, object]]],
    image_name: str = 'SBI',
    quicklook: bool = False,
    constants: dict[str, float] | None = None,
) -> None:
    """Write a product: ``images`` maps group -> (polarisation, data, attributes).

    ``constants`` maps group -> ``Calibration Constant`` (default
    :data:`CALIBRATION_CONSTANT`).
    """
    constants = constants or CALIBRATION_CONSTANT
    with h5py.File(path, 'w', libver='earliest', track_order=True) as f:
        for name, value in root.items():
            f.attrs[name] = value
        for group_name, (polarisation, data, attributes) in images.items():
            group = f.create_group(group_name, track_order=True)
            group.attrs['Polarisation'] = np.bytes_(polarisation)
            group.attrs['Calibration Constant'] = np.float64(constants[group_name])
            image = group.create_dataset(image_name, data=data, track_times=False)
            for name, value in attributes.items():
                image.attrs[name] = value
            if quicklook:
                group.create_dataset(
                    'QLK', data=np.full((8, 8), 128, np.uint8), track_times=False
                )


def gdal_tags(root: dict[str, object]) -> dict[str, str]:
    """Root attributes as GDAL's HDF5 driver names and formats them."""
    tags = {}
    for name, value in root.items():
        if isinstance(value, bytes):
            text = value.decode()
        else:
            array = np.atleast_1d(np.asarray(value))
            if np.issubdtype(array.dtype, np.integer):
                text = ' '.join(str(int(v)) for v in array)
            else:
                text = ' '.join(f'{float(v):.15g}' for v in array)
        tags[name.replace(' ', '_')] = text
    return tags


def write_geotiff(
    path: str,
    dn: np.ndarray,
    origin: tuple[float, float],
    pixel: float,
    crs: str | None,
    tags: dict[str, str],
    polarisation: str,
) -> None:
    profile = {
        'driver': 'GTiff',
        'width': SIZE,
        'height': SIZE,
        'count': 1,
        'dtype': 'float32',
        'crs': crs,
        'transform': from_origin(*origin, pixel, pixel),
        'nodata': 0,
        'compress': 'deflate',
    }
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(dn.astype(np.float32), 1)
        dst.update_tags(**tags)
        dst.set_band_description(1, polarisation)


def main() -> None:
    for directory in ('csk', 'csg', 'invalid', 'calibration'):
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)

    # CSK L1D GTC, HIMAGE, HH, float32 DN, with a quick-look.
    write_hdf5(
        'csk/CSKS2_GTC_B_HI_09_HH_RD_SF_20230208154312_20230208154320.h5',
        root_attributes('CSK', 'GTC_B', 37, 'HIMAGE', 'RIGHT', 'DESCENDING'),
        {
            'S01': (
                'HH',
                dn_image(100).astype(np.float32),
                geocoded_image_attributes(CSK_ORIGIN),
            )
        },
        quicklook=True,
    )
    # CSK L1C GEC, PingPong HH (S01) + HV (S02), uint16 DN, 16 pixels further east.
    east = (CSK_ORIGIN[0] + 16 * CSK_PIXEL, CSK_ORIGIN[1])
    write_hdf5(
        'csk/CSKS1_GEC_B_PP_05_CH_RA_SF_20230209034400_20230209034406.h5',
        root_attributes('CSK', 'GEC_B', 37, 'PINGPONG', 'RIGHT', 'ASCENDING'),
        {
            'S01': (
                'HH',
                dn_image(200).astype(np.uint16),
                geocoded_image_attributes(east),
            ),
            'S02': (
                'HV',
                dn_image(50).astype(np.uint16),
                geocoded_image_attributes(east),
            ),
        },
    )

    # CSG L1D GTC GeoTIFF (the project's real example name), UTM 47N near Mandalay.
    root = root_attributes('CSG', 'GTC_B', 47, 'SPOTLIGHT-2B', 'LEFT', 'DESCENDING')
    tags = gdal_tags(root)
    tags['S01_Polarisation'] = 'VV'
    tags['S01_Calibration_Constant'] = f'{CALIBRATION_CONSTANT["S01"]:.15g}'
    write_geotiff(
        'csg/CSG_SSAR2_GTC_F_0101_S2B_007_VV_LD_F_20250329114557_20250329114606_1_F_22N_Z47_N00.tif',
        dn_image(300),
        (199000.0, 2431032.0),
        1.0,
        'EPSG:32647',
        tags,
        'VV',
    )

    # L1B DGM (ground range, corner GCPs): refused.
    write_hdf5(
        'invalid/CSKS4_DGM_B_HI_19_HH_RA_SF_20110305110725_20110305110733.h5',
        root_attributes('CSK', 'DGM_B', 37, 'HIMAGE', 'RIGHT', 'ASCENDING'),
        {'S01': ('HH', dn_image(100).astype(np.float32), corner_attributes())},
    )
    # L1A SCS (slant range, complex int16 I/Q as the last dimension): refused.
    complex_dn = np.stack([dn_image(1), dn_image(2)], axis=-1).astype(np.int16)
    write_hdf5(
        'invalid/CSKS1_SCS_B_HI_15_HH_RA_SF_20201028224625_20201028224632.h5',
        root_attributes('CSK', 'SCS_B', 37, 'HIMAGE', 'RIGHT', 'ASCENDING'),
        {'S01': ('HH', complex_dn, corner_attributes())},
    )
    # CSG L1D GTC HDF5 whose /S01/IMG has no geotransform attributes: GDAL cannot
    # georeference it.
    write_hdf5(
        'invalid/CSG_SSAR1_GTC_B_0101_STR_012_HH_RA_F_20240101033000_20240101033007_1_F_37N_Z37_N00.h5',
        root_attributes('CSG', 'GTC_B', 37, 'STRIPMAP', 'RIGHT', 'ASCENDING'),
        {'S01': ('HH', dn_image(100).astype(np.float32), corner_attributes())},
        image_name='IMG',
    )
    # CSG GTC GeoTIFF with a geotransform but no CRS.
    write_geotiff(
        'invalid/CSG_SSAR1_GTC_B_0202_STR_005_VV_RD_F_20240102150000_20240102150007_1_F_37N_Z37_N00.tif',
        dn_image(300),
        CSK_ORIGIN,
        CSK_PIXEL,
        None,
        tags,
        'VV',
    )

    write_calibration_products()


def calibration_attributes(
    factor: float,
    slant_range: float,
    exponent: float,
    incidence: float,
    flag: int,
    spreading: str,
    incidence_geometry: str,
) -> dict[str, object]:
    """Calibration root attributes (HDF5 names and types)."""
    return {
        'Rescaling Factor': np.float64(factor),
        'Reference Slant Range': np.float64(slant_range),
        'Reference Slant Range Exponent': np.float64(exponent),
        'Reference Incidence Angle': np.float64(incidence),
        'Calibration Constant Compensation Flag': np.int32(flag),
        'Range Spreading Loss Compensation Geometry': np.bytes_(spreading),
        'Incidence Angle Compensation Geometry': np.bytes_(incidence_geometry),
    }


def write_calibration_products() -> None:
    """Products with exponents other than 1, other angles and terms left out."""
    # CSK GTC HDF5: every term applies; exponent 0.75, reference angle 42.5 deg.
    write_hdf5(
        'calibration/CSKS3_GTC_B_HI_11_HH_RA_SF_20230210031500_20230210031508.h5',
        root_attributes(
            'CSK',
            'GTC_B',
            37,
            'HIMAGE',
            'RIGHT',
            'ASCENDING',
            calibration_attributes(
                850.0, 650000.0, 0.75, 42.5, 0, 'DEFAULT', 'DEFAULT'
            ),
        ),
        {
            'S01': (
                'HH',
                dn_image(120).astype(np.float32),
                geocoded_image_attributes(CSK_ORIGIN),
            )
        },
        constants={'S01': 4.9e7},
    )
    # CSK GEC HDF5, HH + VV: no range spreading loss term (its exponent 1.4 must be
    # ignored), incidence term at 23 deg, calibration constants already compensated
    # (flag 1: K is not applied).
    write_hdf5(
        'calibration/CSKS4_GEC_B_PP_03_CO_LA_FN_20230211150000_20230211150006.h5',
        root_attributes(
            'CSK',
            'GEC_B',
            37,
            'PINGPONG',
            'LEFT',
            'ASCENDING',
            calibration_attributes(310.0, 700000.0, 1.4, 23.0, 1, 'NONE', 'DEFAULT'),
        ),
        {
            'S01': (
                'HH',
                dn_image(150).astype(np.uint16),
                geocoded_image_attributes(CSK_ORIGIN),
            ),
            'S02': (
                'VV',
                dn_image(90).astype(np.uint16),
                geocoded_image_attributes(CSK_ORIGIN),
            ),
        },
        constants={'S01': 7.7e5, 'S02': 2.2e6},
    )
    # CSG GTC HDF5 whose images carry the geotransform: VV (S01) + VH (S02), every
    # term, exponent 0.9, reference angle 33.1 deg, one constant per group.
    write_hdf5(
        'calibration/CSG_SSAR2_GTC_B_0101_S2C_009_VV_RA_F_20240305031000_20240305031006_1_F_37N_Z37_N00.h5',
        root_attributes(
            'CSG',
            'GTC_B',
            37,
            'SPOTLIGHT-2C',
            'RIGHT',
            'ASCENDING',
            calibration_attributes(520.0, 710000.0, 0.9, 33.1, 0, 'DEFAULT', 'DEFAULT'),
        ),
        {
            'S01': (
                'VV',
                dn_image(110).astype(np.float32),
                geocoded_image_attributes(CSK_ORIGIN),
            ),
            'S02': (
                'VH',
                dn_image(40).astype(np.float32),
                geocoded_image_attributes(CSK_ORIGIN),
            ),
        },
        image_name='IMG',
        constants={'S01': 2.1e7, 'S02': 6.4e6},
    )
    # CSG GTC GeoTIFF: range spreading loss with exponent 1.25, no incidence term
    # (its 55 deg must be ignored), K applied.
    root = root_attributes(
        'CSG',
        'GTC_B',
        37,
        'SPOTLIGHT-2A',
        'RIGHT',
        'DESCENDING',
        calibration_attributes(1200.0, 550000.0, 1.25, 55.0, 0, 'DEFAULT', 'NONE'),
    )
    tags = gdal_tags(root)
    tags['S01_Polarisation'] = 'HH'
    tags['S01_Calibration_Constant'] = f'{1.56e13:.15g}'
    write_geotiff(
        'calibration/CSG_SSAR1_GTC_B_0303_S2A_004_HH_RD_F_20240306150000_20240306150005_1_F_37N_Z37_N00.tif',
        dn_image(260),
        CSK_ORIGIN,
        CSK_PIXEL,
        'EPSG:32637',
        tags,
        'HH',
    )


if __name__ == '__main__':
    main()
