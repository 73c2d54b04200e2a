# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import datetime
import math
import re
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path

import geopandas
import h5py
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.errors import NotGeoreferencedWarning

from torchgeo_sar_damage.errors import ArgumentError, OutputError
from torchgeo_sar_damage.simulation.grid import Grid
from torchgeo_sar_damage.simulation.writers import (
    Acquisition,
    Calibration,
    csg_geotiff_tiles,
    csk_hdf5_tiles,
    geotiff_tiles,
    write_csg_geotiff,
    write_csk_hdf5,
    write_geotiff,
    write_vector,
)

# eoreader (GitHub sertit/eoreader), eoreader/reader.py,
# CONSTELLATION_REGEX[Constellation.CSK] and [CSG], copied verbatim.
CSK_REGEX = (
    r'CSKS\d_(RAW|SCS|DGM|GEC|GTC)_[UB]_(HI|PP|WR|HR|S2)_\w{2}_'
    r'(HH|VV|VH|HV|CO|CH|CV)_[LR][AD]_[FS][NF]_\d{14}_\d{14}\.h5'
)
CSG_REGEX = (
    r'CSG_SSAR\d_(RAW|SCS|DGM|GEC|GTC)_([UBF]|FQLK_B)_\d{4}_'
    r'(S2[ABC]|D2[RSJ]|OQ[RS]|STR|SC[12]|PPS|QPS)_\d{3}_(HH|VV|VH|HV)_[LR][AD]_'
    r'[DPFR]_\d{14}_\d{14}\_\d_[FC]_\d{2}[NS]_Z\d{2}_[NFB]\d{2}.h5'
)
REAL_CSK_NAMES = [
    'CSKS3_RAW_B_HI_03_HH_RD_SF_20111226151216_20111226151223.h5',
    'CSKS1_SCS_B_HI_06_HH_RA_SF_20080210220247_20080210220252.h5',
    'CSKS1_GEC_B_HI_16_HH_LD_SN_20080108105558_20080108105604.h5',
    'CSKS4_DGM_B_HI_19_HH_RA_SF_20110305110725_20110305110733.h5',
    'CSKS1_DGM_B_HI_24_HH_RA_SF_20091113111415_20091113111422.h5',
    'CSKS1_SCS_B_HI_15_HH_RA_SF_20201028224625_20201028224632.h5',
]
REAL_CSG_GEOTIFF = 'CSG_SSAR2_GTC_F_0101_S2B_007_VV_LD_F_20250329114557_20250329114606_1_F_22N_Z47_N00.tif'

START = datetime.datetime(2023, 2, 8, 15, 43, 12, tzinfo=datetime.UTC)
STOP = START + datetime.timedelta(seconds=8)


@pytest.fixture
def grid() -> Grid:
    # Kahramanmaraş, UTM 37N; 300 x 200 pixels of 1 m (not a multiple of the tiles).
    return Grid.from_bounds(318000, 4160000, 318300, 4160200, 1.0)


@pytest.fixture
def sigma0_linear(grid: Grid) -> np.ndarray:
    rng = np.random.default_rng(0)
    sigma0 = rng.gamma(1.0, 0.1, grid.shape)
    sigma0[:5] *= 1000  # bright (+20 dB) rows
    sigma0[-20:, :30] = np.nan  # nodata corner
    return sigma0


def csk_acquisition() -> Acquisition:
    return Acquisition(
        'CSK', 2, 'S2', '09', 'HH', 'RIGHT', 'DESCENDING', START, STOP, 35.0, 190.0
    )


def csg_acquisition() -> Acquisition:
    return Acquisition(
        'CSG', 1, 'S2B', '007', 'HH', 'RIGHT', 'DESCENDING', START, STOP, 35.0, 190.0
    )


def snap_sigma0(dn: np.ndarray, meta: Mapping[str, str]) -> np.ndarray:
    """SNAP CosmoSkymedCalibrator, from GDAL-style metadata names (spaces -> _)."""
    sigma0 = dn.astype(np.float64) ** 2
    if meta['Range_Spreading_Loss_Compensation_Geometry'] != 'NONE':
        sigma0 *= float(meta['Reference_Slant_Range']) ** (
            2 * float(meta['Reference_Slant_Range_Exponent'])
        )
    if meta['Incidence_Angle_Compensation_Geometry'] != 'NONE':
        sigma0 *= math.sin(math.radians(float(meta['Reference_Incidence_Angle'])))
    k = 1.0
    if int(meta['Calibration_Constant_Compensation_Flag']) != 1:
        k = float(meta['S01_Calibration_Constant'])
    return sigma0 / (float(meta['Rescaling_Factor']) ** 2 * k)


def h5_metadata(path: Path) -> dict[str, str]:
    """Calibration metadata read with h5py, renamed as GDAL names it."""
    meta = {}
    with h5py.File(path, 'r') as f:
        for name, value in [*f.attrs.items(), *f['S01'].attrs.items()]:
            key = name.replace(' ', '_')
            if name in f['S01'].attrs:
                key = 'S01_' + key
            meta[key] = value.decode() if isinstance(value, bytes) else str(value)
    return meta


def write_both(
    tmp_path: Path, sigma0_linear: np.ndarray, grid: Grid
) -> tuple[Path, Path]:
    h5 = tmp_path / csk_acquisition().csk_filename()
    tif = tmp_path / csg_acquisition().csg_filename()
    write_csk_hdf5(h5, sigma0_linear, grid, csk_acquisition(), Calibration())
    write_csg_geotiff(tif, sigma0_linear, grid, csg_acquisition(), Calibration())
    return h5, tif


def test_same_georeferencing(
    tmp_path: Path, sigma0_linear: np.ndarray, grid: Grid
) -> None:
    h5, tif = write_both(tmp_path, sigma0_linear, grid)
    with rasterio.open(f'HDF5:"{h5}"://S01/SBI') as a, rasterio.open(tif) as b:
        assert a.crs.to_epsg() == b.crs.to_epsg() == 32637
        assert a.transform == b.transform == grid.transform
        assert tuple(a.bounds) == tuple(b.bounds) == grid.bounds
        assert a.shape == b.shape == grid.shape
        assert b.nodata == 0
        assert b.descriptions == ('HH',)
        assert b.block_shapes == [(256, 256)]
        assert b.compression is not None
        assert b.compression.value == 'DEFLATE'


def test_hdf5_attribute_types(
    tmp_path: Path, sigma0_linear: np.ndarray, grid: Grid
) -> None:
    h5, _ = write_both(tmp_path, sigma0_linear, grid)
    with h5py.File(h5, 'r') as f:
        assert f.attrs['Mission ID'] == b'CSK'
        assert f.attrs['Product Type'] == b'GTC_B'
        assert f.attrs['Projection ID'] == b'UTM'
        np.testing.assert_array_equal(f.attrs['Map Projection Centre'], [0.0, 39.0])
        np.testing.assert_array_equal(
            f.attrs['Map Projection False East-North'], [500000.0, 0.0]
        )
        for name in (
            'Map Projection Centre',
            'Map Projection Scale Factor',
            'Map Projection False East-North',
            'Rescaling Factor',
            'Reference Slant Range',
            'Reference Slant Range Exponent',
            'Reference Incidence Angle',
        ):
            assert f.attrs[name].dtype == np.float64, name
        image = f['S01/SBI']
        assert image.dtype == np.float32
        assert image.shape == grid.shape
        for name in (
            'Top Left East-North',
            'Line Spacing',
            'Column Spacing',
            'Top Left Geodetic Coordinates',
            'Bottom Right Geodetic Coordinates',
        ):
            assert image.attrs[name].dtype == np.float64, name
        np.testing.assert_array_equal(
            image.attrs['Top Left East-North'], [318000.0, 4160200.0]
        )
        lat, lon, height = image.attrs['Top Left Geodetic Coordinates']
        assert 37.5 < lat < 37.6
        assert 36.9 < lon < 37.0
        assert height == 0
        near = image.attrs['Near Incidence Angle']
        far = image.attrs['Far Incidence Angle']
        assert near < 35.0 < far
        assert f['S01'].attrs['Polarisation'] == b'HH'
        qlk = f['S01/QLK']
        assert qlk.dtype == np.uint8
        assert qlk.ndim == 2
        assert qlk[-1, 0] == 0  # nodata corner
        assert np.all(qlk[:-20] > 0)
    # GDAL's CSK handling skips quick-looks: QLK opens as a plain, unreferenced array.
    with (
        pytest.warns(NotGeoreferencedWarning),
        rasterio.open(f'HDF5:"{h5}"://S01/QLK') as ql,
    ):
        assert ql.count == 1


def test_calibrate_back(tmp_path: Path, sigma0_linear: np.ndarray, grid: Grid) -> None:
    h5, tif = write_both(tmp_path, sigma0_linear, grid)
    nodata = np.isnan(sigma0_linear)
    with rasterio.open(f'HDF5:"{h5}"://S01/SBI') as ds:
        dn_h5 = ds.read(1)
        gdal_h5_meta = ds.tags()
    with rasterio.open(tif) as ds:
        dn_tif = ds.read(1)
        tif_meta = ds.tags()
    h5py_meta = h5_metadata(h5)
    for dn, meta in [(dn_h5, h5py_meta), (dn_h5, gdal_h5_meta), (dn_tif, tif_meta)]:
        assert np.all(dn[nodata] == 0)
        assert np.all(dn[~nodata] > 0)
        np.testing.assert_allclose(
            snap_sigma0(dn, meta)[~nodata], sigma0_linear[~nodata], rtol=1e-5
        )
    np.testing.assert_array_equal(dn_h5, dn_tif)
    # The GeoTIFF tags are spelt and formatted as GDAL exposes the HDF5 attributes.
    for key in (
        'Rescaling_Factor',
        'Reference_Slant_Range',
        'Reference_Slant_Range_Exponent',
        'Reference_Incidence_Angle',
        'Calibration_Constant_Compensation_Flag',
        'Range_Spreading_Loss_Compensation_Geometry',
        'Incidence_Angle_Compensation_Geometry',
        'S01_Calibration_Constant',
        'S01_Polarisation',
        'Product_Type',
        'Look_Side',
        'Orbit_Direction',
        'Scene_Sensing_Start_UTC',
        'Scene_Sensing_Stop_UTC',
        'Map_Projection_Centre',
        'Radar_Wavelength',
    ):
        assert tif_meta[key] == gdal_h5_meta[key], key
    assert gdal_h5_meta['Mission_ID'] == 'CSK'
    assert tif_meta['Mission_ID'] == 'CSG'
    assert tif_meta['Acquisition_Mode'] == 'SPOTLIGHT-2B'
    assert gdal_h5_meta['Acquisition_Mode'] == 'ENHANCED SPOTLIGHT'
    assert tif_meta['Scene_Sensing_Start_UTC'] == '2023-02-08 15:43:12.000000000'
    # Scene centre 37.58 N in UTM zone 37: <ll><H>_Z<LL> = 38N_Z37 (rounded latitude).
    product_filename = tif_meta['Product_Filename']
    assert product_filename == csg_acquisition().csg_filename(latitude_deg=37.58)
    assert re.fullmatch(CSG_REGEX, product_filename.removesuffix('.tif') + '.h5')
    assert gdal_h5_meta['Product_Filename'] == h5.name


def test_calibration_round_trip() -> None:
    calibration = Calibration()
    sigma0 = np.array([1e-3, 0.01, 1.0, 100.0, np.nan])
    dn = calibration.sigma0_to_dn(sigma0)
    assert dn[-1] == 0
    assert 900 < dn[2] < 1100  # 0 dB -> DN ~ 1000 with the default constants
    np.testing.assert_allclose(calibration.dn_to_sigma0(dn), sigma0, rtol=1e-12)
    with pytest.raises(ArgumentError, match='linear power'):
        calibration.sigma0_to_dn(np.array([-1.0]))
    with pytest.raises(ArgumentError, match='rescaling_factor'):
        Calibration(rescaling_factor=0.0)


def parse(name: str) -> dict[str, object]:
    fields = name.split('.')[0].split('_')
    if name.startswith('CSKS'):
        satellite, sensing, start = fields[0], fields[6], fields[8]
        polarisation = fields[5]
    else:
        satellite, sensing, start = fields[1], fields[8], fields[10]
        polarisation = fields[7]
    return {
        'satellite': int(satellite[-1]),
        'polarisation': polarisation,
        'look_side': {'R': 'RIGHT', 'L': 'LEFT'}[sensing[0]],
        'orbit_direction': {'A': 'ASCENDING', 'D': 'DESCENDING'}[sensing[1]],
        'start': datetime.datetime.strptime(start, '%Y%m%d%H%M%S').replace(
            tzinfo=datetime.UTC
        ),
    }


def test_real_names_match_regexes() -> None:
    for name in REAL_CSK_NAMES:
        assert re.fullmatch(CSK_REGEX, name), name
    assert re.fullmatch(CSG_REGEX, REAL_CSG_GEOTIFF.removesuffix('.tif') + '.h5')
    assert parse(REAL_CSG_GEOTIFF)['look_side'] == 'LEFT'


def test_csk_filename() -> None:
    tz = datetime.timezone(datetime.timedelta(hours=3))
    acquisition = Acquisition(
        'CSK',
        4,
        'HI',
        '04',
        'VV',
        'LEFT',
        'ASCENDING',
        START.astimezone(tz),
        STOP.astimezone(tz),
        30.0,
        -10.0,
    )
    name = acquisition.csk_filename()
    assert name == 'CSKS4_GTC_B_HI_04_VV_LA_SF_20230208154312_20230208154320.h5'
    assert re.fullmatch(CSK_REGEX, name)
    assert parse(name) == {
        'satellite': 4,
        'polarisation': 'VV',
        'look_side': 'LEFT',
        'orbit_direction': 'ASCENDING',
        'start': START,
    }
    assert acquisition.acquisition_mode == 'HIMAGE'
    assert re.fullmatch(CSK_REGEX, csk_acquisition().csk_filename())


def test_csg_filename() -> None:
    acquisition = Acquisition(
        'CSG',
        2,
        'STR',
        '012',
        'VH',
        'RIGHT',
        'ASCENDING',
        START,
        STOP,
        40.0,
        350.0,
        range_looks=4,
        azimuth_looks=3,
    )
    name = acquisition.csg_filename(latitude_deg=-33.4, utm_zone=19)
    assert name == (
        'CSG_SSAR2_GTC_B_0403_STR_012_VH_RA_F_20230208154312_20230208154320_'
        '1_F_33S_Z19_N00.tif'
    )
    assert re.fullmatch(CSG_REGEX, acquisition.csg_filename(suffix='.h5'))
    assert parse(name) == {
        'satellite': 2,
        'polarisation': 'VH',
        'look_side': 'RIGHT',
        'orbit_direction': 'ASCENDING',
        'start': START,
    }
    assert acquisition.acquisition_mode == 'STRIPMAP'
    assert csg_acquisition().csg_filename() == (
        'CSG_SSAR1_GTC_B_0101_S2B_007_HH_RD_F_20230208154312_20230208154320_'
        '1_F_37N_Z37_N00.tif'
    )


@pytest.mark.parametrize(
    ('change', 'match'),
    [
        ({'mission': 'TSX'}, 'mission'),
        ({'satellite': 5}, 'satellite'),
        ({'mode': 'S2B'}, 'mode'),
        ({'beam': '007'}, 'beam'),
        ({'polarisation': 'RH'}, 'polarisation'),
        ({'look_side': 'R'}, 'look_side'),
        ({'start': START.replace(tzinfo=None)}, 'tz-aware'),
        ({'stop': START}, 'after'),
        ({'incidence_deg': 95.0}, 'incidence'),
        ({'product_type': 'DGM'}, 'product_type'),
    ],
)
def test_bad_acquisition(change: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {
        'mission': 'CSK',
        'satellite': 2,
        'mode': 'S2',
        'beam': '09',
        'polarisation': 'HH',
        'look_side': 'RIGHT',
        'orbit_direction': 'DESCENDING',
        'start': START,
        'stop': STOP,
        'incidence_deg': 35.0,
        'heading_deg': 190.0,
    }
    fields.update(change)
    with pytest.raises(ArgumentError, match=match):
        Acquisition(**fields)  # type: ignore[arg-type]


def test_mission_mismatch(
    tmp_path: Path, sigma0_linear: np.ndarray, grid: Grid
) -> None:
    with pytest.raises(ArgumentError, match='CSK acquisition'):
        csg_acquisition().csk_filename()
    with pytest.raises(ArgumentError, match='CSG acquisition'):
        write_csg_geotiff(
            tmp_path / 'x.tif', sigma0_linear, grid, csk_acquisition(), Calibration()
        )
    with pytest.raises(ArgumentError, match='UTM'):
        write_csk_hdf5(
            tmp_path / 'x.h5',
            sigma0_linear,
            Grid(grid.transform, grid.width, grid.height, 'EPSG:3857'),
            csk_acquisition(),
            Calibration(),
        )
    with pytest.raises(ArgumentError, match='shape'):
        write_csk_hdf5(
            tmp_path / 'x.h5', sigma0_linear[1:], grid, csk_acquisition(), Calibration()
        )


def test_southern_hemisphere(tmp_path: Path) -> None:
    grid = Grid.from_bounds(350000, 6300000, 350100, 6300050, 2.0, crs='EPSG:32719')
    sigma0 = np.full(grid.shape, 0.1)
    path = tmp_path / 'south.h5'
    write_csk_hdf5(path, sigma0, grid, csk_acquisition(), Calibration())
    with rasterio.open(f'HDF5:"{path}"://S01/SBI') as ds:
        assert ds.crs.to_epsg() == 32719
        assert ds.transform == grid.transform


def test_write_geotiff(tmp_path: Path, grid: Grid) -> None:
    height_m = np.arange(grid.width * grid.height, dtype=np.float32).reshape(grid.shape)
    path = tmp_path / 'dsm.tif'
    write_geotiff(
        path,
        height_m,
        grid,
        nodata=-9999.0,
        tags={'UNITS': 'metre'},
        band_description='height_m',
    )
    with rasterio.open(path) as ds:
        assert ds.nodata == -9999.0
        assert ds.tags()['UNITS'] == 'metre'
        assert ds.descriptions == ('height_m',)
        assert ds.transform == grid.transform
        assert 'TIFFTAG_DATETIME' not in ds.tags()
        np.testing.assert_array_equal(ds.read(1), height_m)
    mask_path = tmp_path / 'mask.tif'
    write_geotiff(mask_path, height_m > 100, grid, nodata=None)
    with rasterio.open(mask_path) as ds:
        assert ds.dtypes == ('uint8',)


def buildings() -> geopandas.GeoDataFrame:
    return geopandas.GeoDataFrame(
        {'osm_id': [1, 2], 'height_m': [9.0, 15.5]},
        geometry=[
            shapely.box(318010, 4160010, 318020, 4160025),
            shapely.box(318100, 4160100, 318130, 4160110),
        ],
        crs='EPSG:32637',
    )


def write_twice(tmp_path: Path, name: str, write: Callable[[Path], None]) -> None:
    paths = []
    for folder in ('first', 'second'):
        (tmp_path / folder).mkdir(parents=True)
        paths.append(tmp_path / folder / name)
        write(paths[-1])
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_deterministic(tmp_path: Path, sigma0_linear: np.ndarray, grid: Grid) -> None:
    write_twice(
        tmp_path / 'h5',
        'x.h5',
        lambda p: write_csk_hdf5(
            p, sigma0_linear, grid, csk_acquisition(), Calibration()
        ),
    )
    write_twice(
        tmp_path / 'tif',
        'x.tif',
        lambda p: write_csg_geotiff(
            p, sigma0_linear, grid, csg_acquisition(), Calibration()
        ),
    )
    for name in ('osm.gpkg', 'osm.geojson'):
        write_twice(tmp_path / name, name, lambda p: write_vector(p, buildings()))


def test_write_vector(tmp_path: Path) -> None:
    path = tmp_path / 'osm.gpkg'
    write_vector(path, buildings(), layer='buildings')
    frame = geopandas.read_file(path, layer='buildings')
    assert frame.crs.to_epsg() == 32637
    assert list(frame['height_m']) == [9.0, 15.5]
    with sqlite3.connect(path) as connection:
        rows = connection.execute('SELECT last_change FROM gpkg_contents').fetchall()
    assert rows == [('2023-02-09T00:00:00Z',)]
    assert pyogrio.get_gdal_config_option('OGR_CURRENT_DATE') is None
    shapefile = tmp_path / 'osm.shp'
    write_vector(shapefile, buildings())
    assert tuple(shapefile.with_suffix('.dbf').read_bytes()[1:4]) == (123, 2, 9)
    with pytest.raises(ArgumentError, match='extension'):
        write_vector(tmp_path / 'osm.xyz', buildings())


WRITERS: dict[str, Callable[[Path, np.ndarray, Grid], None]] = {
    'x.h5': lambda p, s, g: write_csk_hdf5(p, s, g, csk_acquisition(), Calibration()),
    'x.tif': lambda p, s, g: write_csg_geotiff(
        p, s, g, csg_acquisition(), Calibration()
    ),
    'dsm.tif': lambda p, s, g: write_geotiff(p, s, g, nodata=None),
    'osm.gpkg': lambda p, s, g: write_vector(p, buildings()),
}


@pytest.mark.parametrize('name', sorted(WRITERS))
@pytest.mark.parametrize('parent', ['missing', 'a_file'])
def test_unwritable_parent(
    tmp_path: Path, sigma0_linear: np.ndarray, grid: Grid, name: str, parent: str
) -> None:
    (tmp_path / 'a_file').write_text('not a directory')
    path = tmp_path / parent / name
    with pytest.raises(OutputError, match=re.escape(str(path))):
        WRITERS[name](path, sigma0_linear, grid)
    assert not path.exists()


def test_path_is_directory(
    tmp_path: Path, sigma0_linear: np.ndarray, grid: Grid
) -> None:
    with pytest.raises(OutputError, match='directory'):
        write_csk_hdf5(tmp_path, sigma0_linear, grid, csk_acquisition(), Calibration())


def tiles_of(array: np.ndarray, size: int) -> list[tuple[int, int, np.ndarray]]:
    """Row-major tiles of ``size`` x ``size`` pixels (smaller at the edges)."""
    return [
        (row, col, array[row : row + size, col : col + size])
        for row in range(0, array.shape[0], size)
        for col in range(0, array.shape[1], size)
    ]


@pytest.fixture
def large_grid() -> Grid:
    # 1100 x 700 pixels: the quick-look keeps every third row and column.
    return Grid.from_bounds(318000, 4160000, 319100, 4160700, 1.0)


@pytest.fixture
def large_sigma0(large_grid: Grid) -> np.ndarray:
    rng = np.random.default_rng(1)
    sigma0 = rng.gamma(1.0, 0.1, large_grid.shape).astype(np.float32)
    sigma0[:, :40] *= 100  # bright columns
    sigma0[-60:, :90] = np.nan  # nodata corner
    return sigma0


@pytest.mark.parametrize('tile_px', [97, 256, 2000])
def test_tiles_write_the_same_products(
    tmp_path: Path, large_grid: Grid, large_sigma0: np.ndarray, tile_px: int
) -> None:
    grid, sigma0 = large_grid, large_sigma0
    whole_h5, tiled_h5 = tmp_path / 'whole.h5', tmp_path / 'tiled.h5'
    write_csk_hdf5(whole_h5, sigma0, grid, csk_acquisition(), Calibration())
    with csk_hdf5_tiles(tiled_h5, grid, csk_acquisition(), Calibration()) as sink:
        for row, col, tile in tiles_of(sigma0, tile_px):
            sink.write(tile, row, col)
    # HDF5: the same bytes, quick-look included
    assert tiled_h5.read_bytes() == whole_h5.read_bytes()
    with h5py.File(tiled_h5) as f:
        assert f['S01/QLK'].shape == (234, 367)

    whole_tif, tiled_tif = tmp_path / 'whole.tif', tmp_path / 'tiled.tif'
    write_csg_geotiff(whole_tif, sigma0, grid, csg_acquisition(), Calibration())
    with csg_geotiff_tiles(tiled_tif, grid, csg_acquisition(), Calibration()) as sink:
        for row, col, tile in tiles_of(sigma0, tile_px):
            sink.write(tile, row, col)
    # GeoTIFF: same profile, metadata and pixels (blocks may be stored in another
    # order)
    with rasterio.open(whole_tif) as a, rasterio.open(tiled_tif) as b:
        assert b.profile == a.profile
        assert b.tags() == a.tags()
        assert b.tags(1) == a.tags(1)
        assert b.descriptions == a.descriptions
        assert b.block_shapes == a.block_shapes
        assert b.compression == a.compression
        np.testing.assert_array_equal(b.read(1), a.read(1))


def test_tiles_must_cover_the_grid(
    tmp_path: Path, large_grid: Grid, large_sigma0: np.ndarray
) -> None:
    h5 = tmp_path / 'x.h5'
    with (
        pytest.raises(ArgumentError, match='cover'),
        csk_hdf5_tiles(h5, large_grid, csk_acquisition(), Calibration()) as sink,
    ):
        sink.write(large_sigma0[:256, :256], 0, 0)
    assert not h5.exists()  # no half-written product
    tif = tmp_path / 'x.tif'
    with (
        pytest.raises(ArgumentError, match='cover'),
        geotiff_tiles(tif, large_grid, np.float32, nodata=None) as sink,
    ):
        sink.write(large_sigma0[:256], 0, 0)
    assert not tif.exists()


def test_tile_outside_the_grid(
    tmp_path: Path, large_grid: Grid, large_sigma0: np.ndarray
) -> None:
    tif = tmp_path / 'x.tif'
    with (
        pytest.raises(ArgumentError, match='does not fit'),
        csg_geotiff_tiles(tif, large_grid, csg_acquisition(), Calibration()) as sink,
    ):
        sink.write(large_sigma0[:100, :100], 650, 0)
    assert not tif.exists()


def test_failure_while_writing_tiles_removes_the_file(
    tmp_path: Path, large_grid: Grid, large_sigma0: np.ndarray
) -> None:
    h5 = tmp_path / 'x.h5'

    def interrupted() -> None:
        with csk_hdf5_tiles(h5, large_grid, csk_acquisition(), Calibration()) as sink:
            sink.write(large_sigma0[:256, :256], 0, 0)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert not h5.exists()
    with (
        pytest.raises(ArgumentError, match='linear power'),
        csk_hdf5_tiles(h5, large_grid, csk_acquisition(), Calibration()) as sink,
    ):
        sink.write(-large_sigma0, 0, 0)  # negative sigma0
    assert not h5.exists()
