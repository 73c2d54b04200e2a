# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The catalogue of bad inputs: one case per way an input can be wrong.

Each case makes its bad file in a temporary folder, runs the public API (or the
``sardamage`` command) on it and checks what the table promises:

* the type of the error; for ``sardamage``, exit code 2 exactly and one line on
  stderr; for an error of the API, that ``sardamage`` would report it the same way
  (one line, exit code 2, no traceback);
* that the message names the file (or argument) at fault, and says the problem in
  words that do not come from echoing that name or the bad input;
* for a warning, that the input is used without its bad part;
* that nothing in the case's folder changed (inputs untouched, no half-written output,
  no temporary or sidecar file left), nor the output it watches elsewhere. The documentation's table of bad inputs
(``docs/bad_inputs.md``) is generated from :data:`CASES`::

    python tests/test_bad_inputs.py docs/bad_inputs.md

and :func:`test_docs_table_is_current` keeps it in step.
"""

import contextlib
import errno
import io
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import h5py
import numpy as np
import pytest
import rasterio
from shapely import LineString, Point, Polygon, box

from torchgeo_sar_damage import cli
from torchgeo_sar_damage.cli import main
from torchgeo_sar_damage.datamodules import SARDamageDataModule
from torchgeo_sar_damage.datasets import (
    DSM,
    BuildingChips,
    COSMOSkyMed,
    DamageLabels,
    GEMExposure,
    OSMBuildings,
)
from torchgeo_sar_damage.errors import (
    ArgumentError,
    CatalogueError,
    InputFileError,
    OutputError,
)
from torchgeo_sar_damage.samplers import BuildingSampler
from torchgeo_sar_damage.simulation import run as simulation_run
from torchgeo_sar_damage.simulation.run import simulate
from torchgeo_sar_damage.taxonomy import TaxonomyError, parse_taxonomy

DATA = Path(__file__).parent / 'data'
CSG_TIF = next((DATA / 'cosmo_skymed' / 'csg').glob('CSG_*.tif'))
CSK_GTC = next((DATA / 'cosmo_skymed' / 'csk').glob('CSKS2_GTC_*.h5'))
INVALID_SAR = DATA / 'cosmo_skymed' / 'invalid'
CSK_SCS = next(INVALID_SAR.glob('CSKS1_SCS_*.h5'))
CSK_DGM = next(INVALID_SAR.glob('CSKS4_DGM_*.h5'))
SAR_NO_CRS = next(INVALID_SAR.glob('CSG_*.tif'))
DSM_TIF = DATA / 'dsm' / 'dsm' / 'dsm.tif'
OSM_NAME = 'hotosm_tur_buildings_polygons.gpkg'
EMS_LABELS = DATA / 'labels' / 'ems' / 'EMSR648_AOI16_GRA_PRODUCT_builtUpA_r1_v1.json'
GEM = DATA / 'gem'
GEM_CSV = GEM / 'adm1' / 'Exposure_Res_Turkey_Adm1.csv'
#: The area of CSK_GTC and DSM_TIF (EPSG:32637): 300000-300064 E, 4118000-4118064 N.
X0, Y0 = 300000.0, 4118000.0


class ExitStatus(Exception):
    """``sardamage`` returned a non-zero exit code.

    Attributes:
        code: the exit code.
        stderr: what it wrote on standard error.
    """

    def __init__(self, code: int, stderr: str) -> None:
        """Record the exit code and standard error of a run."""
        super().__init__(f'exit code {code}')
        self.code = code
        self.stderr = stderr


@dataclass(frozen=True)
class Attempt:
    """A bad input made on disk and the call that must refuse it.

    Attributes:
        action: the call.
        names: what the message must name (the file, or the argument at fault).
        watch: an output outside the case's folder that must be exactly as before
            the call (absent if it did not exist), with nothing left beside it (the
            case's folder is always checked).
        kept: for a warning, checks the call's result: the input is used without
            its bad part.
    """

    action: Callable[[], object]
    names: str
    watch: Path | None = None
    kept: Callable[[object], None] | None = None


@dataclass(frozen=True)
class BadInput:
    """One entry of the catalogue.

    Attributes:
        id: short name (the test id).
        source: which input it concerns.
        bad_input: what is wrong with it, for the table.
        error: what is raised (a Warning: warned, the input is used without the bad
            part; :class:`ExitStatus`: ``sardamage`` exits with code 2).
        says: text the message contains, naming the problem.
        make: makes the bad input in a folder and returns the attempt.
    """

    id: str
    source: str
    bad_input: str
    error: type[BaseException]
    says: str
    make: Callable[[Path, pytest.MonkeyPatch], Attempt]


# ------------------------------------------------------------------------ helpers


def _copy(src: Path, folder: Path, name: str | None = None) -> Path:
    path = folder / (name or src.name)
    shutil.copy(src, path)
    return path


def _truncate(src: Path, folder: Path, fraction: float) -> Path:
    path = folder / src.name
    data = src.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _footprints(
    folder: Path,
    geometries: list[Any],
    crs: str | None = 'EPSG:32637',
    name: str = OSM_NAME,
) -> Path:
    path = folder / name
    frame = gpd.GeoDataFrame(
        {'osm_id': list(range(1, len(geometries) + 1)), 'building': 'yes'},
        geometry=geometries,
        crs=crs,
    )
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # writing without a CRS
        frame.to_file(path)
    return path


def _houses(dx: float = 0.0, dy: float = 0.0) -> list[Any]:
    """Two 10 m houses inside the test SAR image (shifted by dx, dy metres)."""
    return [
        box(X0 + 10 + dx, Y0 + 10 + dy, X0 + 20 + dx, Y0 + 20 + dy),
        box(X0 + 35 + dx, Y0 + 35 + dy, X0 + 45 + dx, Y0 + 45 + dy),
    ]


def _sardamage(*argv: str) -> Callable[[], object]:
    def run() -> None:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = main(list(argv))
        if code != 0:
            raise ExitStatus(code, stderr.getvalue())

    return run


def _disk_full(path: Path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file under a path with its bytes (None when the path does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return {'': path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() if p.is_file() else b'<dir>'
        for p in sorted(path.rglob('*'))
    }


# -------------------------------------------------------------------- SAR products


def _sar_truncated_geotiff(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _truncate(CSG_TIF, tmp, 0.5)
    return Attempt(lambda: COSMOSkyMed(path), path.name)


def _sar_corrupt_geotiff(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _truncate(CSG_TIF, tmp, 0.1)
    return Attempt(lambda: COSMOSkyMed(path), path.name)


def _sar_truncated_hdf5(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _truncate(CSK_GTC, tmp, 0.5)
    return Attempt(lambda: COSMOSkyMed(path), path.name)


def _sar_corrupt_hdf5(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = tmp / CSK_GTC.name
    path.write_bytes(b'\x89HDF\r\n\x1a\n' + bytes(range(256)) * 8)
    return Attempt(lambda: COSMOSkyMed(path), path.name)


def _sar_no_crs(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _copy(SAR_NO_CRS, tmp)
    return Attempt(lambda: COSMOSkyMed(path), path.name)


def _sar_l1a(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _copy(CSK_SCS, tmp)
    return Attempt(lambda: COSMOSkyMed(path), path.name)


def _sar_l1b(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _copy(CSK_DGM, tmp)
    return Attempt(lambda: COSMOSkyMed(path), path.name)


def _sar_missing_polarisation(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _copy(CSK_GTC, tmp)
    return Attempt(lambda: COSMOSkyMed(path, bands=('VV',)), path.name)


def _sar_missing_calibration(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _copy(CSK_GTC, tmp)
    with h5py.File(path, 'a') as f:
        del f['S01'].attrs['Calibration Constant']
    return Attempt(lambda: COSMOSkyMed(path), path.name)


def _sar_not_csk(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _copy(CSK_GTC, tmp)
    with h5py.File(path, 'a') as f:
        f.attrs['Mission ID'] = np.bytes_('SAO')
    return Attempt(lambda: COSMOSkyMed(path), path.name)


def _sar_name_disagrees(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _copy(CSK_GTC, tmp, CSK_GTC.name.replace('_GTC_', '_GEC_'))
    return Attempt(lambda: COSMOSkyMed(path), path.name)


def _sar_all_nodata(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _copy(CSG_TIF, tmp)
    with rasterio.open(path, 'r+') as dst:
        dst.write(np.full((1, dst.height, dst.width), dst.nodata, dst.dtypes[0]))

    def action() -> object:
        sar = COSMOSkyMed(path)
        return sar[sar.bounds]

    def kept(sample: object) -> None:
        # the window is read, as NaN
        assert isinstance(sample, dict)
        assert sample['image'].shape == (1, 32, 32)
        assert sample['image'].isnan().all()

    return Attempt(action, path.name, kept=kept)


# ------------------------------------------------------------------ DSM and combos


def _dsm_truncated(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _truncate(DSM_TIF, tmp, 0.6)
    return Attempt(lambda: DSM(path), path.name)


def _dsm_no_crs(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _copy(DATA / 'dsm' / 'invalid' / 'no_crs.tif', tmp)
    return Attempt(lambda: DSM(path), path.name)


def _dsm_two_bands(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _copy(DATA / 'dsm' / 'invalid' / 'two_bands.tif', tmp)
    return Attempt(lambda: DSM(path), path.name)


def _crs_mismatch(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    # UTM 37N coordinates labelled as UTM 36N: the footprints land 500 km away
    path = _footprints(tmp, _houses(), crs='EPSG:32636')
    return Attempt(lambda: COSMOSkyMed(CSK_GTC) & OSMBuildings(path), path.name)


def _footprints_outside(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _footprints(tmp, _houses(dx=5000.0))

    def action() -> None:
        BuildingSampler(COSMOSkyMed(CSK_GTC), OSMBuildings(path), size=16.0)

    return Attempt(action, path.name)


# ---------------------------------------------------------------------- footprints


def _osm_empty(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _footprints(tmp, [])
    return Attempt(lambda: OSMBuildings(path), path.name)


def _osm_self_intersecting(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    bow_tie = Polygon([(X0, Y0), (X0 + 10, Y0 + 10), (X0 + 10, Y0), (X0, Y0 + 3)])
    path = _footprints(tmp, [bow_tie])
    return Attempt(lambda: OSMBuildings(path), path.name)


def _osm_zero_area(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    flat = Polygon([(X0, Y0), (X0 + 10, Y0), (X0 + 20, Y0)])
    path = _footprints(tmp, [flat], name='buildings.geojson')
    return Attempt(lambda: OSMBuildings(path), path.name)


def _osm_not_polygons(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    geometries = [Point(X0, Y0), LineString([(X0, Y0), (X0 + 5, Y0 + 5)])]
    path = _footprints(tmp, geometries, name='buildings.geojson')
    return Attempt(lambda: OSMBuildings(path), path.name)


def _osm_some_invalid(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    bow_tie = Polygon([(X0, Y0), (X0 + 10, Y0 + 10), (X0 + 10, Y0), (X0, Y0 + 3)])
    path = _footprints(tmp, [*_houses(), bow_tie])

    def kept(osm: object) -> None:
        # the two houses (osm_id 1, 2) are kept, the bow tie (3) is not
        assert isinstance(osm, OSMBuildings)
        assert sorted(osm.buildings['building_id']) == [1, 2]

    return Attempt(lambda: OSMBuildings(path), path.name, kept=kept)


def _osm_no_crs(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _footprints(tmp, _houses(), crs=None, name='buildings.shp')
    return Attempt(lambda: OSMBuildings(path), path.name)


def _osm_wrong_crs(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _footprints(tmp, _houses(), crs='EPSG:4326')
    return Attempt(lambda: OSMBuildings(path), path.name)


def _osm_corrupt(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = tmp / OSM_NAME
    path.write_bytes(b'SQLite format 3\x00' + b'\x00' * 100)
    return Attempt(lambda: OSMBuildings(path), path.name)


# -------------------------------------------------------------------------- labels


def _labels_unknown_grade(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    frame = gpd.read_file(EMS_LABELS)
    frame.loc[0, 'damage_gra'] = 'Collapsed'
    path = tmp / EMS_LABELS.name
    frame.to_file(path, driver='GeoJSON')
    return Attempt(lambda: DamageLabels(path), path.name)


def _labels_no_grade(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    frame = gpd.read_file(EMS_LABELS).drop(columns='damage_gra')
    path = tmp / EMS_LABELS.name
    frame.to_file(path, driver='GeoJSON')
    return Attempt(lambda: DamageLabels(path), path.name)


# ----------------------------------------------------------------- GEM exposure


def _gem(text: str) -> Callable[[Path, pytest.MonkeyPatch], Attempt]:
    def make(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
        path = tmp / GEM_CSV.name
        path.write_bytes(text.encode('utf-8'))
        return Attempt(lambda: GEMExposure(path, admin=GEM / 'admin.gpkg'), path.name)

    return make


def _gem_broken(
    folder: str, name: str
) -> Callable[[Path, pytest.MonkeyPatch], Attempt]:
    return _gem((GEM / 'broken' / folder / name).read_text('utf-8'))


def _gem_not_utf8(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = tmp / GEM_CSV.name
    path.write_bytes(GEM_CSV.read_text('utf-8').encode('utf-8') + 'İ'.encode('cp1254'))
    return Attempt(lambda: GEMExposure(path, admin=GEM / 'admin.gpkg'), path.name)


def _taxonomy(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    text = 'CR/LFINF+CDM/HBET:7-4'
    return Attempt(lambda: parse_taxonomy(text), text)


# ------------------------------------------------------------- sampling and stores


def _window_zero(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    path = _footprints(tmp, _houses())

    def action() -> None:
        osm = OSMBuildings(path)
        BuildingSampler(COSMOSkyMed(CSK_GTC) & osm, osm, size=0.0)

    return Attempt(action, 'window size')


def _chips(tmp: Path, root: Path) -> Callable[[], object]:
    path = _footprints(tmp, _houses())

    def action() -> None:
        osm = OSMBuildings(path)
        dataset = COSMOSkyMed(CSK_GTC) & osm
        sampler = BuildingSampler(dataset, osm, size=16.0)
        BuildingChips(dataset, sampler, root=root, progress=False)

    return action


def _chips_root_is_file(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    root = tmp / 'chips'
    root.write_text('not a folder')
    return Attempt(_chips(tmp, root), root.name, watch=root)


def _chips_disk_full(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Attempt:
    root = tmp / 'chips'
    root.mkdir()
    original = np.lib.format.open_memmap

    def full(filename: str, *args: object, **kwargs: object) -> object:
        original(filename, *args, **kwargs)  # type: ignore[arg-type]  # then disk full
        raise _disk_full(Path(filename))

    monkeypatch.setattr(np.lib.format, 'open_memmap', full)
    return Attempt(_chips(tmp, root), root.name, watch=root)


def _scene_json(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    root = tmp / 'scene'
    root.mkdir()
    (root / 'scene.json').write_text('{"cities": {"nurdagi": ', 'utf-8')
    return Attempt(lambda: SARDamageDataModule(root=root), 'scene.json')


def _catalogue(
    change: dict[str, Any], names: str | None = None
) -> Callable[[Path, pytest.MonkeyPatch], Attempt]:
    """A town catalogue of one town with entries of its ``files`` changed.

    A :class:`Path` value is copied beside the catalogue as ``<key>_<name>``; the
    message must name ``names`` (default: the catalogue).
    """

    def make(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
        osm = _footprints(tmp, _houses())
        files: dict[str, Any] = {
            'sar': str(_copy(CSK_GTC, tmp)),
            'osm': osm.name,
            'labels': str(_copy(EMS_LABELS, tmp)),
        }
        for key, value in change.items():
            if value is None:
                files.pop(key, None)
            elif isinstance(value, Path):
                files[key] = str(_copy(value, tmp, f'{key}_{value.name}'))
            else:
                files[key] = value
        path = tmp / 'towns.json'
        path.write_text(
            json.dumps({'cities': {'aoi16': {'folder': '.', 'files': files}}}),
            encoding='utf-8',
        )
        return Attempt(
            lambda: SARDamageDataModule(
                root=path,
                train_cities=['aoi16'],
                val_cities=[],
                test_cities=[],
                modalities=['sar', 'osm'],
                chips_root=tmp / 'chips',
            ),
            names or path.name,
        )

    return make


# ------------------------------------------------------------------- simulate, CLI

SMALL = ('--cities', 'nurdagi', '--buildings', '10', '--pixel-m', '2', '--quiet')


def _simulate_existing(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    out = tmp / 'out'
    out.mkdir()
    (out / 'notes.txt').write_text('mine')
    return Attempt(_sardamage('simulate', '--out', str(out), *SMALL), 'out', out)


def _simulate_under_file(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    notes = tmp / 'notes.txt'
    notes.write_text('x')
    out = notes / 'out'
    return Attempt(_sardamage('simulate', '--out', str(out), *SMALL), notes.name, notes)


def _simulate_unwritable(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    out = Path('/proc/sardamage-test/out')  # writable by nobody, not even root
    return Attempt(_sardamage('simulate', '--out', str(out), *SMALL), '/proc', out)


def _simulate_disk_full(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Attempt:
    out = tmp / 'scene'

    def half_written(scene: object, folder: Path, *args: object) -> None:
        (folder / 'dsm_pre_event_1m.tif').write_bytes(b'II*\x00 half of a file')
        raise _disk_full(folder / 'dsm_pre_event_1m.tif')

    monkeypatch.setattr(simulation_run, 'simulate_city', half_written)

    def action() -> None:
        simulate(out, cities=['nurdagi'], n_buildings=10, pixel_m=2.0, progress=False)

    return Attempt(action, 'scene', out)


def _simulate_bad_footprints(tmp: Path, _: pytest.MonkeyPatch) -> Attempt:
    bad = tmp / 'buildings.gpkg'
    bad.write_bytes(b'not a geopackage')
    out = tmp / 'out'
    argv = ('simulate', '--out', str(out), '--footprints', str(bad), '--quiet')
    return Attempt(_sardamage(*argv), bad.name, out)


CASES: list[BadInput] = [
    BadInput(
        'sar-truncated-geotiff',
        'COSMOSkyMed',
        'CSG GTC GeoTIFF cut short (half its bytes)',
        InputFileError,
        'is truncated',
        _sar_truncated_geotiff,
    ),
    BadInput(
        'sar-corrupt-geotiff',
        'COSMOSkyMed',
        'GeoTIFF whose header is cut (GDAL cannot open it)',
        InputFileError,
        'truncated or corrupt',
        _sar_corrupt_geotiff,
    ),
    BadInput(
        'sar-truncated-hdf5',
        'COSMOSkyMed',
        'CSK HDF5 product cut short',
        InputFileError,
        'truncated or corrupt',
        _sar_truncated_hdf5,
    ),
    BadInput(
        'sar-corrupt-hdf5',
        'COSMOSkyMed',
        'HDF5 signature followed by garbage',
        InputFileError,
        'truncated or corrupt',
        _sar_corrupt_hdf5,
    ),
    BadInput(
        'sar-no-crs',
        'COSMOSkyMed',
        'GTC GeoTIFF with a geotransform but no CRS',
        InputFileError,
        'no CRS',
        _sar_no_crs,
    ),
    BadInput(
        'sar-l1a',
        'COSMOSkyMed',
        'L1A SCS product (slant range, not geocoded)',
        InputFileError,
        'is a L1A SCS product in slant range',
        _sar_l1a,
    ),
    BadInput(
        'sar-l1b',
        'COSMOSkyMed',
        'L1B DGM product (ground range, not geocoded)',
        InputFileError,
        'is a L1B DGM product in ground range',
        _sar_l1b,
    ),
    BadInput(
        'sar-missing-polarisation',
        'COSMOSkyMed',
        'bands=("VV",) for an HH-only product',
        InputFileError,
        'has no VV polarisation',
        _sar_missing_polarisation,
    ),
    BadInput(
        'sar-missing-calibration',
        'COSMOSkyMed',
        "HDF5 product without its 'Calibration Constant'",
        InputFileError,
        'Calibration_Constant',
        _sar_missing_calibration,
    ),
    BadInput(
        'sar-not-csk',
        'COSMOSkyMed',
        "HDF5 whose 'Mission ID' is not CSK or CSG",
        InputFileError,
        "'Mission ID' is 'SAO'",
        _sar_not_csk,
    ),
    BadInput(
        'sar-name-disagrees',
        'COSMOSkyMed',
        'file name says GEC, metadata says GTC',
        InputFileError,
        'file name says GEC',
        _sar_name_disagrees,
    ),
    BadInput(
        'sar-all-nodata-window',
        'COSMOSkyMed',
        'a window where every SAR pixel is nodata',
        UserWarning,
        'holds only nodata',
        _sar_all_nodata,
    ),
    BadInput(
        'dsm-truncated',
        'DSM',
        'DSM GeoTIFF cut short',
        InputFileError,
        'truncated',
        _dsm_truncated,
    ),
    BadInput(
        'dsm-no-crs',
        'DSM',
        'DSM GeoTIFF without CRS',
        InputFileError,
        'no CRS',
        _dsm_no_crs,
    ),
    BadInput(
        'dsm-two-bands',
        'DSM',
        'DSM with two bands',
        InputFileError,
        'has 2 bands',
        _dsm_two_bands,
    ),
    BadInput(
        'crs-mismatch',
        'COSMOSkyMed & OSMBuildings',
        'footprints in UTM 37N coordinates declared as UTM 36N (SAR in 37N)',
        InputFileError,
        'does not overlap',
        _crs_mismatch,
    ),
    BadInput(
        'footprints-outside-sar',
        'BuildingSampler',
        'footprints 5 km away from the SAR image',
        InputFileError,
        'none of its 2 selected buildings',
        _footprints_outside,
    ),
    BadInput(
        'osm-empty',
        'OSMBuildings',
        'footprint file with no features',
        InputFileError,
        'has no features',
        _osm_empty,
    ),
    BadInput(
        'osm-self-intersecting',
        'OSMBuildings',
        'only a self-intersecting ("bow-tie") footprint',
        InputFileError,
        '1 invalid',
        _osm_self_intersecting,
    ),
    BadInput(
        'osm-zero-area',
        'OSMBuildings',
        'only a zero-area (collinear) footprint',
        InputFileError,
        '1 zero area',
        _osm_zero_area,
    ),
    BadInput(
        'osm-not-polygons',
        'OSMBuildings',
        'points and lines instead of polygons',
        InputFileError,
        '2 not a polygon',
        _osm_not_polygons,
    ),
    BadInput(
        'osm-some-invalid',
        'OSMBuildings',
        'one invalid footprint among good ones (dropped, counted)',
        UserWarning,
        'dropped 1 of 3 geometries (1 invalid)',
        _osm_some_invalid,
    ),
    BadInput(
        'osm-no-crs',
        'OSMBuildings',
        'Shapefile without its .prj',
        InputFileError,
        'no coordinate reference system',
        _osm_no_crs,
    ),
    BadInput(
        'osm-wrong-crs',
        'OSMBuildings',
        'UTM coordinates declared as EPSG:4326',
        InputFileError,
        'the CRS is declared wrongly',
        _osm_wrong_crs,
    ),
    BadInput(
        'osm-corrupt',
        'OSMBuildings',
        'GeoPackage that is not a database',
        InputFileError,
        'cannot be read as a vector layer',
        _osm_corrupt,
    ),
    BadInput(
        'labels-unknown-grade',
        'DamageLabels',
        "EMS grading with the grade 'Collapsed'",
        InputFileError,
        "not Copernicus EMS grades: ['Collapsed']",
        _labels_unknown_grade,
    ),
    BadInput(
        'labels-no-grade',
        'DamageLabels',
        "EMS layer without 'damage_gra'",
        InputFileError,
        "no 'damage_gra' field",
        _labels_no_grade,
    ),
    BadInput(
        'gem-missing-column',
        'GEMExposure',
        'exposure CSV without the BUILDINGS column',
        InputFileError,
        'has no BUILDINGS column',
        _gem_broken('missing_column', 'Exposure_Res_Turkey_Adm1.csv'),
    ),
    BadInput(
        'gem-semicolon',
        'GEMExposure',
        'exposure CSV separated by semicolons',
        InputFileError,
        'not comma-separated',
        _gem_broken('semicolon', 'Exposure_Res_Turkey_Adm1.csv'),
    ),
    BadInput(
        'gem-non-numeric',
        'GEMExposure',
        "BUILDINGS count 'twelve'",
        InputFileError,
        "line 3, column BUILDINGS: 'twelve' is not a number",
        _gem_broken('non_numeric', 'Exposure_Com_Turkey_Adm1.csv'),
    ),
    BadInput(
        'gem-negative-count',
        'GEMExposure',
        'negative BUILDINGS count',
        InputFileError,
        'line 2, column BUILDINGS: negative',
        _gem('ID_0,TAXONOMY,BUILDINGS\nTUR,CR/LFM/H:1,-2\n'),
    ),
    BadInput(
        'gem-malformed-taxonomy',
        'GEMExposure',
        'TAXONOMY with an unclosed parenthesis',
        InputFileError,
        'line 3, column TAXONOMY',
        _gem_broken('bad_taxonomy', 'Exposure_Res_Turkey_Adm1.csv'),
    ),
    BadInput(
        'gem-empty',
        'GEMExposure',
        'empty exposure CSV',
        InputFileError,
        'is empty',
        _gem(''),
    ),
    BadInput(
        'gem-not-utf8',
        'GEMExposure',
        'exposure CSV in the Windows Turkish code page',
        InputFileError,
        'not UTF-8',
        _gem_not_utf8,
    ),
    BadInput(
        'taxonomy-malformed',
        'parse_taxonomy',
        "height range 'HBET:7-4' (upper below lower)",
        TaxonomyError,
        'range with min > max',
        _taxonomy,
    ),
    BadInput(
        'window-size-zero',
        'BuildingSampler',
        'size=0',
        ArgumentError,
        'must be positive, not 0',
        _window_zero,
    ),
    BadInput(
        'chips-root-is-file',
        'BuildingChips',
        'root is an existing file',
        OutputError,
        'cannot create the chip store',
        _chips_root_is_file,
    ),
    BadInput(
        'chips-disk-full',
        'BuildingChips',
        'disk full while the chip store is written',
        OutputError,
        'No space left on device',
        _chips_disk_full,
    ),
    BadInput(
        'catalogue-unknown-key',
        'town catalogue',
        'a misspelt key in a town\'s files ("lables")',
        CatalogueError,
        "unknown file keys ['lables']",
        _catalogue({'labels': None, 'lables': 'x.json'}),
    ),
    BadInput(
        'catalogue-missing-file',
        'town catalogue',
        'a listed file does not exist',
        CatalogueError,
        "town 'aoi16': file not found",
        _catalogue({'dsm': 'dsm_missing.tif'}, 'dsm_missing.tif'),
    ),
    BadInput(
        'catalogue-no-labels',
        'town catalogue',
        'a training town without damage labels',
        CatalogueError,
        'a training, validation or test town needs damage labels',
        _catalogue({'labels': None}),
    ),
    BadInput(
        'catalogue-no-crs',
        'town catalogue',
        'a listed raster without a CRS',
        CatalogueError,
        'has no coordinate reference system, so it cannot be placed',
        _catalogue({'dsm': DATA / 'dsm' / 'invalid' / 'no_crs.tif'}, 'dsm_no_crs.tif'),
    ),
    BadInput(
        'catalogue-no-overlap',
        'town catalogue',
        "footprints of another area (they miss the town's SAR product)",
        CatalogueError,
        'does not overlap the SAR product',
        _catalogue({'osm': DATA / 'osm' / OSM_NAME}, f'osm_{OSM_NAME}'),
    ),
    BadInput(
        'scene-json-truncated',
        'SARDamageDataModule',
        'scene.json cut short',
        InputFileError,
        'cannot be read as JSON',
        _scene_json,
    ),
    BadInput(
        'simulate-existing-output',
        'sardamage simulate',
        '--out is a non-empty folder (no --overwrite)',
        ExitStatus,
        'pass --overwrite',
        _simulate_existing,
    ),
    BadInput(
        'simulate-output-under-file',
        'sardamage simulate',
        '--out inside a file',
        ExitStatus,
        'is a file, not a folder',
        _simulate_under_file,
    ),
    BadInput(
        'simulate-unwritable-output',
        'sardamage simulate',
        '--out in a folder nobody can write',
        ExitStatus,
        'cannot create',
        _simulate_unwritable,
    ),
    BadInput(
        'simulate-disk-full',
        'simulate',
        'disk full while a town is written',
        OutputError,
        'No space left on device); nothing was written',
        _simulate_disk_full,
    ),
    BadInput(
        'simulate-bad-footprints',
        'sardamage simulate',
        '--footprints file that is not a vector file',
        ExitStatus,
        'cannot be read as a vector file',
        _simulate_bad_footprints,
    ),
]

#: Bad inputs of ``sardamage predict``, tested in tests/test_predict.py:
#: (input, bad input, what happens, the message says, test).
_REFUSAL = 'tests/test_predict.py::test_refusals_exit_2'
_EXIT_2 = 'exit code 2, one line on stderr'
PREDICT_CASES: list[tuple[str, str, str, str, str]] = [
    (
        'sardamage predict',
        'checkpoint trained with the DSM, no --dsm given (other modalities)',
        _EXIT_2,
        "'dsm' modality",
        _REFUSAL,
    ),
    (
        'sardamage predict',
        'checkpoint trained with GEM exposure, no --gem given',
        _EXIT_2,
        "'gem' modality",
        _REFUSAL,
    ),
    (
        'sardamage predict',
        '--checkpoint that is not a checkpoint',
        _EXIT_2,
        'cannot be read as a PyTorch checkpoint',
        _REFUSAL,
    ),
    (
        'sardamage predict',
        '--out exists (no --overwrite); kept as it was',
        _EXIT_2,
        'exists; pass --overwrite',
        _REFUSAL,
    ),
    (
        'sardamage predict',
        '--out is not a GeoPackage',
        _EXIT_2,
        'must be a GeoPackage',
        _REFUSAL,
    ),
    (
        'sardamage predict',
        'footprints wholly outside the SAR (100 km away)',
        _EXIT_2,
        'covers none of the',
        _REFUSAL,
    ),
    (
        'sardamage predict',
        'interrupted while reading or writing: nothing is left in the output folder',
        '`KeyboardInterrupt`',
        '(no output file)',
        'tests/test_predict.py::test_interrupted_run_leaves_nothing',
    ),
    (
        'sardamage predict',
        'OUT.summary.json exists (no --overwrite); kept, nothing read',
        _EXIT_2,
        'summary.json: exists; pass --overwrite',
        'tests/test_predict_prior.py::test_summary_file_is_not_replaced_without_overwrite',
    ),
    (
        'sardamage predict',
        (
            "checkpoint without the validation town's damage rate (older version): "
            'probabilities not adapted, checkpoint threshold'
        ),
        '`UserWarning`, prior_adapted false',
        'predates calibration records',
        'tests/test_predict_prior.py::test_old_checkpoint_is_not_adapted',
    ),
    (
        'sardamage predict',
        (
            'fewer than 30 assessed buildings: probabilities not adapted, checkpoint '
            'threshold'
        ),
        '`UserWarning`, prior_adapted false',
        'fewer than min_buildings=30',
        'tests/test_predict_prior.py::test_too_few_buildings_fail_safe',
    ),
]


def _as_sardamage_reports(
    error: BaseException, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Check that ``sardamage`` reports an API error as the docs say.

    The error is raised inside a ``sardamage simulate`` run: one line on stderr,
    ``sardamage simulate: error: <message>``, and exit code 2.
    """

    def raising(_: object) -> int:
        raise error

    monkeypatch.setattr(cli, '_simulate', raising)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(['simulate', '--out', str(tmp / 'never-written')])
    assert code == 2
    assert stderr.getvalue() == f'sardamage simulate: error: {error}\n'


@pytest.mark.parametrize('case', CASES, ids=[case.id for case in CASES])
def test_bad_input(
    case: BadInput, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempt = case.make(tmp_path, monkeypatch)
    folder = _snapshot(tmp_path)
    watch = attempt.watch
    before = _snapshot(watch) if watch is not None else None
    beside = (
        sorted(os.listdir(watch.parent))
        if watch is not None and watch.parent.is_dir()
        else None
    )
    if issubclass(case.error, Warning):
        with pytest.warns(case.error) as record:
            result = attempt.action()
        message = ' | '.join(
            str(w.message) for w in record if issubclass(w.category, case.error)
        )
        assert attempt.kept is not None, 'a warning case checks what is kept'
        attempt.kept(result)
    elif case.error is ExitStatus:
        with pytest.raises(ExitStatus) as status:
            attempt.action()
        # exit code 2 exactly, one line on stderr, as the table says
        assert status.value.code == 2, status.value.stderr
        stderr = status.value.stderr
        assert stderr.endswith('\n'), stderr
        assert stderr.count('\n') == 1, stderr
        command = case.source.split()[1]
        prefix = f'sardamage {command}: error: '
        assert stderr.startswith(prefix), stderr
        message = stderr[len(prefix) :].strip()
    else:
        with pytest.raises(case.error) as info:
            attempt.action()
        message = str(info.value)
    assert attempt.names in message, message
    # the problem is said by the library, not found in the echoed name or input
    assert case.says not in attempt.names
    assert case.says in message.replace(attempt.names, '\0'), message
    assert '\n' not in message, message
    assert 'Traceback' not in message, message
    # nothing changed in the case's folder: inputs as made, nothing left beside them
    assert _snapshot(tmp_path) == folder
    if watch is not None:
        assert _snapshot(watch) == before
        if beside is not None:
            assert sorted(os.listdir(watch.parent)) == beside
    if not issubclass(case.error, Warning) and case.error is not ExitStatus:
        _as_sardamage_reports(info.value, tmp_path, monkeypatch)
        assert _snapshot(tmp_path) == folder


def test_enough_distinct_cases() -> None:
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids)
    assert len(ids) + len(PREDICT_CASES) >= 30


# ------------------------------------------------------------------- docs table

DOCS_TABLE = Path(__file__).parents[1] / 'docs' / 'bad_inputs.md'


def _error_name(error: type[BaseException]) -> str:
    if error is ExitStatus:
        return 'exit code 2, one line on stderr'
    if issubclass(error, Warning):
        return f'`{error.__name__}` (the bad part is left out)'
    return f'`{error.__name__}`'


def render_table() -> str:
    """The bad-input table of the documentation, in Markdown.

    Returns:
        The page ``docs/bad_inputs.md``.
    """
    lines = [
        '# Bad inputs',
        '',
        '<!-- generated by `python tests/test_bad_inputs.py docs/bad_inputs.md`;',
        '     do not edit: tests/test_bad_inputs.py checks it is current -->',
        '',
        'Every way of getting an input wrong that the test suite knows of. Each row is',
        'a test (`tests/test_bad_inputs.py`) that makes the bad input and checks the',
        'error type (for `sardamage`, exit code 2 and one line on stderr), that the',
        'message names the file (or argument) and says the problem, that a warning',
        'leaves out only the bad part, and that no input is changed and no output is',
        'left half-written. Errors come from `torchgeo_sar_damage.errors`',
        '(`InputFileError` and `ArgumentError` are `ValueError`s, `OutputError` an',
        '`OSError`); `sardamage` turns each of them into one line on stderr and exit',
        'code 2 (checked for the errors of the API rows too).',
        '',
        '| # | input | bad input | raises | the message says | test |',
        '|---|---|---|---|---|---|',
    ]
    rows = [
        (case.source, case.bad_input, _error_name(case.error), case.says, case.id)
        for case in CASES
    ]
    rows += [
        (source, bad, error, says, test)
        for source, bad, error, says, test in PREDICT_CASES
    ]
    for i, (source, bad, error, says, test) in enumerate(rows, start=1):
        cells = [str(i), f'`{source}`', bad, error, f'"{says}"', f'`{test}`']
        cells = [re.sub(r'\|', r'\\|', cell) for cell in cells]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def test_docs_table_is_current() -> None:
    assert DOCS_TABLE.read_text('utf-8') == render_table(), (
        'docs/bad_inputs.md is stale: run python tests/test_bad_inputs.py '
        'docs/bad_inputs.md'
    )


if __name__ == '__main__':  # pragma: no cover
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS_TABLE
    target.write_text(render_table(), 'utf-8')
    print(f'wrote {target} ({len(CASES) + len(PREDICT_CASES)} bad inputs)')
