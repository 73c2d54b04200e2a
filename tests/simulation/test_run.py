# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import csv
import functools
import hashlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import h5py
import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
from shapely.geometry import box
from sklearn.metrics import roc_auc_score

from torchgeo_sar_damage.datasets.cosmo_skymed import (
    footprint_sigma0_statistics,
    sigma0_per_dn2,
)
from torchgeo_sar_damage.errors import ArgumentError, OutputError
from torchgeo_sar_damage.simulation import run, writers
from torchgeo_sar_damage.simulation.cities import CITIES
from torchgeo_sar_damage.simulation.observation import EMS_GRADES, NOT_ANALYSED
from torchgeo_sar_damage.simulation.run import heading_deg, simulate
from torchgeo_sar_damage.simulation.sar import (
    SARImage,
    render_sigma0,
    render_sigma0_tiles,
)


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below a folder, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob('*'))
        if p.is_file()
    }


def city_files(manifest: dict[str, Any], slug: str) -> list[str]:
    files = manifest['cities'][slug]['files']
    out = []
    for value in files.values():
        out += value if isinstance(value, list) else [value]
    return out


def published_sigma0(dn: np.ndarray, h5: Path) -> np.ndarray:
    """Sigma nought of detected DN, from the product's own HDF5 attributes.

    The published COSMO-SkyMed calibration, as SNAP's s1tbx ``CosmoSkymedCalibrator``
    (github.com/senbox-org/s1tbx) applies it to detected products, written here
    independently of the package::

        sigma0 = DN^2 * Rref^(2 Rexp) * sin(alpha_ref) / (F^2 * K)

    each of the last three terms only where the product's compensation flags ask
    for it. DN 0 is nodata (NaN).
    """
    with h5py.File(h5) as f:
        root = dict(f.attrs)
        k = float(f['S01'].attrs['Calibration Constant'])
    gain = 1.0 / float(root['Rescaling Factor']) ** 2
    if root['Range Spreading Loss Compensation Geometry'] != b'NONE':
        rref = float(root['Reference Slant Range'])
        gain *= rref ** (2 * float(root['Reference Slant Range Exponent']))
    if root['Incidence Angle Compensation Geometry'] != b'NONE':
        gain *= math.sin(math.radians(float(root['Reference Incidence Angle'])))
    if int(root['Calibration Constant Compensation Flag']) != 1:
        gain /= k
    dn = dn.astype(np.float64)
    return np.where(dn == 0, np.nan, dn**2 * gain)


def test_products_hold_the_rendered_sigma0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The products give back the rendered sigma nought by the published formula.

    Written with an exponent, rescaling factor and calibration constant other than
    the simulator's, so that a writer that drops or misplaces a term is caught.
    """
    rendered: list[np.ndarray] = []

    def recording(*args: object, **kwargs: object) -> SARImage:
        image = render_sigma0(*args, **kwargs)  # type: ignore[arg-type]
        rendered.append(image.sigma0.copy())
        return image

    monkeypatch.setattr(run, 'render_sigma0', recording)
    monkeypatch.setattr(
        run,
        'Calibration',
        functools.partial(
            writers.Calibration,
            rescaling_factor=450.0,
            calibration_constant=2.0e5,
            reference_slant_range_m=1200.0,
            reference_slant_range_exponent=0.85,
        ),
    )
    out = tmp_path / 'scene'
    manifest = simulate(
        out, cities=['nurdagi'], n_buildings=20, pixel_m=2.0, progress=False
    )
    files = manifest['cities']['nurdagi']['files']
    h5 = out / 'nurdagi' / files['sar_hdf5']
    tif = out / 'nurdagi' / files['sar_geotiff']
    with h5py.File(h5) as f:
        assert float(f.attrs['Reference Slant Range Exponent']) == 0.85
        dn_h5 = np.asarray(f['S01/SBI'][()], dtype=np.float64)
    with rasterio.open(tif) as src:
        dn_tif = src.read(1).astype(np.float64)
    assert len(rendered) == 1
    (sigma0,) = rendered
    assert sigma0.shape == dn_tif.shape == dn_h5.shape
    valid = dn_tif > 0  # inside the swath
    assert 0.5 < valid.mean() < 1.0
    for dn in (dn_h5, dn_tif):
        np.testing.assert_array_equal(dn > 0, valid)
        np.testing.assert_allclose(
            published_sigma0(dn, h5)[valid], sigma0[valid], rtol=1e-5
        )


class TestOutputs:
    def test_manifest_lists_every_file(
        self, tiny_scene: Path, tiny_manifest: dict[str, Any]
    ) -> None:
        assert set(tiny_manifest['cities']) == {'kahramanmaras', 'nurdagi'}
        listed = {'scene.json'}
        for slug in tiny_manifest['cities']:
            names = city_files(tiny_manifest, slug)
            assert len(names) == 10  # 2 SAR, DSM, OSM, 3 GEM, admin, labels, truth
            listed |= {f'{slug}/{n}' for n in names}
        on_disk = {
            str(p.relative_to(tiny_scene)) for p in tiny_scene.rglob('*') if p.is_file()
        }
        assert on_disk == listed

    def test_rasters_open_with_crs_and_bounds(
        self, tiny_scene: Path, tiny_manifest: dict[str, Any]
    ) -> None:
        for slug, city in tiny_manifest['cities'].items():
            left, bottom, right, top = city['bounds']
            files = city['files']
            paths = [
                str(tiny_scene / slug / files['sar_geotiff']),
                f'HDF5:"{tiny_scene / slug / files["sar_hdf5"]}"://S01/SBI',
                str(tiny_scene / slug / files['dsm']),
            ]
            for path in paths:
                with rasterio.open(path) as src:
                    assert src.crs is not None, path
                    assert src.crs.to_epsg() == 32637, path
                    b = src.bounds
                    res = src.res[0]
                    assert b.left <= left < b.left + res
                    assert b.top >= top > b.top - res
                    assert b.right >= right
                    assert b.bottom <= bottom

    def test_vectors_open_with_crs_and_bounds(
        self, tiny_scene: Path, tiny_manifest: dict[str, Any]
    ) -> None:
        for slug, city in tiny_manifest['cities'].items():
            left, bottom, right, top = city['bounds']
            files = city['files']
            for name in ('osm', 'labels', 'truth', 'admin'):
                info = pyogrio.read_info(tiny_scene / slug / files[name])
                assert info['crs'] == 'EPSG:32637', name
                x0, y0, x1, y1 = info['total_bounds']
                assert x0 >= left - 1, name
                assert y0 >= bottom - 1, name
                assert x1 <= right + 1, name
                assert y1 <= top + 1, name

    def test_hdf5_and_geotiff_agree(
        self, tiny_scene: Path, tiny_manifest: dict[str, Any]
    ) -> None:
        slug = 'nurdagi'
        files = tiny_manifest['cities'][slug]['files']
        h5 = tiny_scene / slug / files['sar_hdf5']
        tif = tiny_scene / slug / files['sar_geotiff']
        with rasterio.open(f'HDF5:"{h5}"://S01/SBI') as a, rasterio.open(tif) as b:
            assert a.transform == b.transform
            assert a.crs == b.crs
            dn_a = a.read(1).astype(np.float64)
            dn_b = b.read(1).astype(np.float64)
            tags_b = b.tags()
        with (
            pytest.warns(rasterio.errors.NotGeoreferencedWarning),
            rasterio.open(h5) as container,
        ):
            tags_a = container.tags()
        sigma_a = dn_a**2 * sigma0_per_dn2(tags_a, h5)
        sigma_b = dn_b**2 * sigma0_per_dn2(tags_b, tif)
        np.testing.assert_allclose(sigma_a, sigma_b, rtol=1e-6)
        valid = dn_b > 0
        assert 0.5 < valid.mean() < 1.0  # nodata corners outside the swath
        # the calibration the products declare, read by the test's own formula
        np.testing.assert_allclose(
            sigma_b[valid], published_sigma0(dn_b, h5)[valid], rtol=1e-9
        )

    def test_gem_exposure_matches_buildings(
        self, tiny_scene: Path, tiny_manifest: dict[str, Any]
    ) -> None:
        """By default GEM is written as published for Türkiye: per province."""
        assert tiny_manifest['gem_level'] == 1
        for slug, city in tiny_manifest['cities'].items():
            assert city['gem_level'] == 1
            assert city['files']['gem'] == [
                f'Exposure_{o}_Turkey_Adm1.csv' for o in ('Res', 'Com', 'Ind')
            ]
            truth = gpd.read_file(tiny_scene / slug / city['files']['truth'])
            admin = gpd.read_file(tiny_scene / slug / city['files']['admin'])
            # one province polygon: the districts dissolved, no district columns
            assert list(admin.columns) == [
                'ID_0',
                'NAME_0',
                'ID_1',
                'NAME_1',
                'geometry',
            ]
            assert len(admin) == 1
            assert admin['ID_1'].iloc[0] == CITIES[slug].province_id
            assert admin.geometry.area.sum() == pytest.approx(
                box(*city['bounds']).area, rel=1e-6
            )
            # the truth still knows each building's district
            assert truth['ID_2'].str.startswith(CITIES[slug].province_id + '-').all()
            total = 0.0
            for name in city['files']['gem']:
                with open(tiny_scene / slug / name, encoding='utf-8', newline='') as f:
                    reader = csv.DictReader(f)
                    rows = list(reader)
                assert 'ID_2' not in (reader.fieldnames or [])
                for row in rows:
                    assert row['ID_1'] in set(admin['ID_1'])
                    total += float(row['BUILDINGS'])
            assert total == len(truth)

    def test_gem_level_2_writes_districts(
        self, tiny_scene: Path, tmp_path: Path
    ) -> None:
        """gem_level=2: district files and polygons; the other files are unchanged."""
        out = tmp_path / 'districts'
        manifest = simulate(
            out,
            cities=['nurdagi'],
            n_buildings=150,
            seed=0,
            pixel_m=1.0,
            progress=False,
            gem_level=2,
        )
        assert manifest['gem_level'] == 2
        city = manifest['cities']['nurdagi']
        assert city['gem_level'] == 2
        assert city['files']['gem'] == [
            f'Exposure_{o}_Turkey_Adm2.csv' for o in ('Res', 'Com', 'Ind')
        ]
        admin = gpd.read_file(out / 'nurdagi' / city['files']['admin'])
        assert list(admin.columns[:6]) == [
            'ID_0',
            'NAME_0',
            'ID_1',
            'NAME_1',
            'ID_2',
            'NAME_2',
        ]
        assert len(admin) == 5
        assert admin['ID_2'].is_unique
        truth = gpd.read_file(out / 'nurdagi' / city['files']['truth'])
        provinces = 0.0
        districts: dict[tuple[str, str], float] = {}
        for name in city['files']['gem']:
            with open(out / 'nurdagi' / name, encoding='utf-8', newline='') as f:
                for row in csv.DictReader(f):
                    assert row['ID_2'] in set(admin['ID_2'])
                    key = (row['ID_1'], row['TAXONOMY'])
                    districts[key] = districts.get(key, 0.0) + float(row['BUILDINGS'])
        # the district rows add up to the default's province rows, taxonomy by
        # taxonomy
        default = tiny_scene / 'nurdagi'
        for name in (f'Exposure_{o}_Turkey_Adm1.csv' for o in ('Res', 'Com', 'Ind')):
            with open(default / name, encoding='utf-8', newline='') as f:
                for row in csv.DictReader(f):
                    key = (row['ID_1'], row['TAXONOMY'])
                    assert districts.pop(key) == float(row['BUILDINGS'])
                    provinces += float(row['BUILDINGS'])
        assert not districts
        assert provinces == len(truth)
        # the level changes the GEM files, the admin layer and scene.json only
        a, b = digest(out / 'nurdagi'), digest(default)
        assert set(a) - set(b) == set(city['files']['gem'])
        assert {k for k in set(a) & set(b) if a[k] != b[k]} == {'admin_units.gpkg'}

    def test_labels_cover_part_of_the_town(
        self, tiny_scene: Path, tiny_manifest: dict[str, Any]
    ) -> None:
        for slug, city in tiny_manifest['cities'].items():
            labels = gpd.read_file(tiny_scene / slug / city['files']['labels'])
            truth = gpd.read_file(tiny_scene / slug / city['files']['truth'])
            assert set(labels['damage_gra']) <= {*EMS_GRADES, NOT_ANALYSED}
            assert 0.3 * len(truth) < len(labels) < len(truth)
            assert truth['ems_damage_gra'].notna().sum() == len(labels)

    def test_damage_rate_in_manifest(
        self, tiny_scene: Path, tiny_manifest: dict[str, Any]
    ) -> None:
        for slug, city in tiny_manifest['cities'].items():
            truth = gpd.read_file(tiny_scene / slug / city['files']['truth'])
            assert city['damage_rate'] == pytest.approx(
                (truth['grade'] >= 4).mean(), abs=1e-4
            )
            assert sum(city['grade_counts']) == len(truth) == city['buildings']


class TestDeterminism:
    def test_same_seed_same_bytes(self, tiny_scene: Path, tmp_path: Path) -> None:
        again = tmp_path / 'again'
        simulate(
            again,
            cities=['kahramanmaras', 'nurdagi'],
            n_buildings=150,
            seed=0,
            pixel_m=1.0,
            progress=False,
        )
        assert digest(again) == digest(tiny_scene)

    def test_town_does_not_depend_on_the_others(
        self, tiny_scene: Path, tmp_path: Path
    ) -> None:
        alone = tmp_path / 'alone'
        simulate(
            alone,
            cities=['nurdagi'],
            n_buildings=150,
            seed=0,
            pixel_m=1.0,
            progress=False,
        )
        full = {k: v for k, v in digest(tiny_scene).items() if k.startswith('nurdagi/')}
        assert {k: v for k, v in digest(alone).items() if k != 'scene.json'} == full

    def test_other_seed_other_scene(self, tiny_scene: Path, tmp_path: Path) -> None:
        other = tmp_path / 'other'
        simulate(
            other,
            cities=['nurdagi'],
            n_buildings=150,
            seed=1,
            pixel_m=1.0,
            progress=False,
        )
        a = digest(other)
        b = digest(tiny_scene)
        common = [k for k in a if k in b and k.startswith('nurdagi/')]
        assert common
        assert all(a[k] != b[k] for k in common if k.endswith(('.tif', '.gpkg')))


class TestArguments:
    @pytest.mark.parametrize(
        ('kwargs', 'match'),
        [
            ({'cities': ['atlantis']}, 'unknown city'),
            ({'n_buildings': 0}, 'positive'),
            ({'n_buildings': -5}, 'positive'),
            ({'pixel_m': 0.0}, 'pixel'),
            ({'seed': -1}, 'seed'),
            ({'footprints': 'no/such/file.gpkg'}, 'no such file'),
            ({'gem_level': 0}, r'--gem-level must be 1 \(provinces.*or 2'),
            ({'gem_level': 3}, '--gem-level'),
            ({'gem_level': '1'}, '--gem-level'),
        ],
    )
    def test_bad_argument(
        self, tmp_path: Path, kwargs: dict[str, Any], match: str
    ) -> None:
        with pytest.raises(ArgumentError, match=match):
            simulate(tmp_path / 'out', **kwargs)
        assert not (tmp_path / 'out').exists()

    def test_non_empty_output_needs_overwrite(self, tmp_path: Path) -> None:
        out = tmp_path / 'out'
        out.mkdir()
        (out / 'notes.txt').write_text('mine')
        with pytest.raises(ArgumentError, match='--overwrite'):
            simulate(
                out, cities=['nurdagi'], n_buildings=20, pixel_m=2.0, progress=False
            )
        simulate(
            out,
            cities=['nurdagi'],
            n_buildings=20,
            pixel_m=2.0,
            overwrite=True,
            progress=False,
        )
        assert (out / 'notes.txt').read_text() == 'mine'
        assert (out / 'scene.json').is_file()

    def test_output_under_a_file(self, tmp_path: Path) -> None:
        (tmp_path / 'a_file').write_text('x')
        with pytest.raises(ArgumentError, match='not a folder'):
            simulate(tmp_path / 'a_file' / 'out', cities=['nurdagi'], n_buildings=20)

    def test_output_is_a_file(self, tmp_path: Path) -> None:
        (tmp_path / 'out').write_text('x')
        with pytest.raises(ArgumentError, match='not a folder'):
            simulate(tmp_path / 'out', cities=['nurdagi'], n_buildings=20)

    @pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='needs /proc')
    def test_unwritable_output(self) -> None:
        with pytest.raises((ArgumentError, OutputError), match='/proc'):
            simulate('/proc/sardamage-test/out', cities=['nurdagi'], n_buildings=20)


class TestAtomicity:
    def test_failure_leaves_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[Path] = []
        original = writers.write_vector

        def failing(path: Path, frame: gpd.GeoDataFrame, **kwargs: str) -> None:
            calls.append(path)
            if len(calls) == 3:
                raise OSError(28, 'No space left on device')
            original(path, frame, **kwargs)

        monkeypatch.setattr(run, 'write_vector', failing)
        out = tmp_path / 'out'
        with pytest.raises(OSError, match='No space'):
            simulate(
                out,
                cities=['nurdagi', 'islahiye'],
                n_buildings=20,
                pixel_m=2.0,
                progress=False,
            )
        assert list(tmp_path.iterdir()) == []

    def test_failure_keeps_previous_results(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        out = tmp_path / 'out'
        simulate(out, cities=['nurdagi'], n_buildings=20, pixel_m=2.0, progress=False)
        before = digest(out)

        def failing(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(run, 'write_exposure_csv', failing)
        with pytest.raises(KeyboardInterrupt):
            simulate(
                out,
                cities=['nurdagi'],
                n_buildings=20,
                seed=3,
                pixel_m=2.0,
                overwrite=True,
                progress=False,
            )
        assert digest(out) == before
        assert [p.name for p in tmp_path.iterdir()] == ['out']


def test_heading_of_the_orbit() -> None:
    asc = heading_deg(37.5, 'ASCENDING')
    desc = heading_deg(37.5, 'DESCENDING')
    assert 345 < asc < 355  # north-north-west
    assert 185 < desc < 195  # south-south-west
    assert asc + desc == pytest.approx(540.0)


def test_footprints_from_a_file(tmp_path: Path) -> None:
    # real-looking urban geometry in another CRS: a generated town in WGS84
    source = tmp_path / 'source'
    simulate(source, cities=['islahiye'], n_buildings=80, pixel_m=2.0, progress=False)
    truth = gpd.read_file(source / 'islahiye' / 'truth.gpkg')
    town = truth[['geometry']].to_crs('EPSG:4326')
    town['building:levels'] = ['7' if i % 4 == 0 else None for i in range(len(town))]
    path = tmp_path / 'my_town.geojson'
    town.to_file(path, driver='GeoJSON')
    out = tmp_path / 'rehearsal'
    manifest = simulate(
        out, footprints=path, n_buildings=60, pixel_m=2.0, progress=False
    )
    assert list(manifest['cities']) == ['my-town']
    city = manifest['cities']['my-town']
    assert city['crs'] == 'EPSG:32637'
    assert city['buildings'] == 60
    result = gpd.read_file(out / 'my-town' / 'truth.gpkg')
    assert result.crs.to_epsg() == 32637
    assert (result['storeys'] == 7).sum() >= 10  # tagged levels are used
    with rasterio.open(out / 'my-town' / city['files']['sar_geotiff']) as src:
        assert src.crs.to_epsg() == 32637


def test_damage_is_only_partly_visible(tmp_path: Path) -> None:
    """No single footprint statistic separates damaged buildings almost perfectly."""
    out = tmp_path / 'hard'
    manifest = simulate(
        out, cities=['antakya'], n_buildings=500, seed=7, progress=False
    )
    city = manifest['cities']['antakya']
    truth = gpd.read_file(out / 'antakya' / city['files']['truth'])
    damaged = truth['grade'].to_numpy() >= 4
    assert 0.1 < damaged.mean() < 0.45
    stats = footprint_sigma0_statistics(
        out / 'antakya' / city['files']['sar_geotiff'], truth
    )
    aucs = {}
    for col in stats.columns:
        values = stats[col].to_numpy()
        ok = np.isfinite(values)
        auc = roc_auc_score(damaged[ok], values[ok])
        aucs[col] = max(auc, 1 - auc)
    assert max(aucs.values()) < 0.9, aucs  # not trivially separable
    assert max(aucs.values()) > 0.55, aucs  # but damage is visible


# ------------------------------------------------------------ tiled SAR rendering

TILED_KWARGS: dict[str, Any] = {
    'cities': ['antakya'],
    'n_buildings': 300,
    'seed': 2,
    'pixel_m': 1.0,
    'progress': False,
}


@pytest.fixture(scope='module')
def tiled_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One town simulated whole-grid, and twice with tiles of 200 px forced."""
    root = tmp_path_factory.mktemp('tiled')
    simulate(root / 'whole', **TILED_KWARGS)
    tiles: list[tuple[int, int, tuple[int, int]]] = []

    def recording(
        *args: object, **kwargs: object
    ) -> Iterator[tuple[int, int, SARImage]]:
        for row, col, image in render_sigma0_tiles(*args, **kwargs):  # type: ignore[arg-type]
            tiles.append((row, col, image.sigma0.shape))
            yield row, col, image

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, 'SAR_WHOLE_GRID_MAX_PIXELS', 0)
        patch.setattr(run, 'SAR_TILE_PX', 200)
        patch.setattr(run, 'render_sigma0_tiles', recording)
        manifest = simulate(root / 'tiled', **TILED_KWARGS)
        simulate(root / 'again', **TILED_KWARGS)
    return {'root': root, 'tiles': tiles, 'manifest': manifest}


def sar_paths(runs: dict[str, Any], which: str) -> tuple[Path, Path]:
    files = runs['manifest']['cities']['antakya']['files']
    folder = runs['root'] / which / 'antakya'
    return folder / files['sar_hdf5'], folder / files['sar_geotiff']


def h5_layout(path: Path) -> list[tuple[str, Any]]:
    """Every group and dataset of an HDF5 file: type, shape, storage, attributes."""
    layout: list[tuple[str, Any]] = []

    def attributes(obj: h5py.HLObject) -> list[tuple[str, str, str]]:
        return [(k, str(v.dtype), repr(v)) for k, v in obj.attrs.items()]

    with h5py.File(path) as f:
        layout.append(('/', attributes(f)))

        def visit(name: str, obj: h5py.HLObject) -> None:
            if isinstance(obj, h5py.Dataset):
                storage = (obj.dtype, obj.shape, obj.chunks, obj.compression)
                layout.append((name, (storage, attributes(obj))))
            else:
                layout.append((name, attributes(obj)))

        f.visititems(visit)
    return layout


class TestTiledSAR:
    def test_tiles_were_used(self, tiled_runs: dict[str, Any]) -> None:
        city = tiled_runs['manifest']['cities']['antakya']
        with rasterio.open(sar_paths(tiled_runs, 'tiled')[1]) as src:
            height, width = src.shape
        n_tiles = math.ceil(height / 200) * math.ceil(width / 200)
        assert n_tiles >= 9
        tiles = tiled_runs['tiles']
        assert len(tiles) == 2 * n_tiles  # two runs
        assert sum(h * w for _, _, (h, w) in tiles[:n_tiles]) == height * width
        assert city['buildings'] == 300

    def test_same_files_and_formats(self, tiled_runs: dict[str, Any]) -> None:
        whole = digest(tiled_runs['root'] / 'whole')
        tiled = digest(tiled_runs['root'] / 'tiled')
        assert list(tiled) == list(whole)  # no temporary file left behind
        h5, tif = sar_paths(tiled_runs, 'tiled')
        sar = {str(p.relative_to(tiled_runs['root'] / 'tiled')) for p in (h5, tif)}
        # everything but the SAR pixels is the same, DSM and scene.json included
        assert {k for k in whole if whole[k] != tiled[k]} == sar
        whole_h5, whole_tif = sar_paths(tiled_runs, 'whole')
        assert h5_layout(h5) == h5_layout(whole_h5)
        with rasterio.open(tif) as a, rasterio.open(whole_tif) as b:
            assert a.profile == b.profile
            assert a.tags() == b.tags()
            assert a.tags(1) == b.tags(1)
            assert a.descriptions == b.descriptions
            assert a.compression == b.compression
            # the same swath: nodata where the whole-grid product has it
            np.testing.assert_array_equal(a.read(1) == 0, b.read(1) == 0)

    def test_hdf5_and_geotiff_agree(self, tiled_runs: dict[str, Any]) -> None:
        h5, tif = sar_paths(tiled_runs, 'tiled')
        with h5py.File(h5) as f, rasterio.open(tif) as src:
            np.testing.assert_array_equal(f['S01/SBI'][()], src.read(1))

    def test_same_seed_same_bytes(self, tiled_runs: dict[str, Any]) -> None:
        assert digest(tiled_runs['root'] / 'again') == digest(
            tiled_runs['root'] / 'tiled'
        )

    def test_same_statistics(self, tiled_runs: dict[str, Any]) -> None:
        truth = gpd.read_file(tiled_runs['root'] / 'whole' / 'antakya' / 'truth.gpkg')
        levels = {}
        for which in ('whole', 'tiled'):
            with rasterio.open(sar_paths(tiled_runs, which)[1]) as src:
                dn = src.read(1).astype(np.float64)
                footprints = rasterio.features.rasterize(
                    truth.geometry, out_shape=src.shape, transform=src.transform
                ).astype(bool)
            valid = dn > 0
            # sigma0 in dB up to the calibration constant, the same in both files
            sigma0_db = 20 * np.log10(dn[valid])
            on = footprints[valid]
            levels[which] = (sigma0_db[on].mean(), sigma0_db[~on].mean())
        (b_whole, g_whole), (b_tiled, g_tiled) = levels['whole'], levels['tiled']
        assert abs(b_whole - g_whole) > 0.5  # footprints differ from the ground
        assert b_tiled == pytest.approx(b_whole, abs=0.3)
        assert g_tiled == pytest.approx(g_whole, abs=0.1)
        assert b_tiled - g_tiled == pytest.approx(b_whole - g_whole, abs=0.3)
