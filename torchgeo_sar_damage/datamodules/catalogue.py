# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The town catalogue: which files make up each town of a study (``scene.json``).

A catalogue is a JSON file that lists, per town, the files the data module reads. It
is what ``sardamage simulate`` writes beside its simulated towns, and what a user
writes by hand for real products::

    {
      "cities": {
        "kahramanmaras": {
          "folder": "data/kahramanmaras",
          "files": {
            "sar": ["CSG_SSAR1_GTC_B_0101_..._Z37_N00.tif"],
            "osm": "hotosm_tur_buildings_polygons.gpkg",
            "dsm": "dsm.tif",
            "dtm": "dtm.tif",
            "gem": ["Exposure_Res_Turkey_Adm1.csv", "Exposure_Com_Turkey_Adm1.csv"],
            "admin": "gadm41_TUR_1.gpkg",
            "labels": "EMSR648_AOI01_GRA_PRODUCT_builtUpA_r1_v1.json"
          },
          "gem_id_columns": {"ID_1": "ISO_1"}
        }
      }
    }

Relative paths are resolved against the town's ``folder``, itself relative to the
catalogue's folder (default: the town's name, as the simulator lays towns out);
absolute paths are used as they are. The keys of ``files``:

========================  ========  =====================================================
key                       needed    what
========================  ========  =====================================================
``sar``                   yes       COSMO-SkyMed/CSG L1C/L1D products (HDF5 or GTC
                                    GeoTIFF), a file or a list (``sar_geotiff`` or
                                    ``sar_hdf5``, as the simulator writes, also work)
``osm``                   yes       building footprints, one sample per footprint
``labels``                labelled  EMS grading layer or HOT buildings export with
                                    ``destroyed:building``; a file or a list
``dsm``                   ``dsm``   surface model GeoTIFF (heights in metres)
``dtm``                   no        terrain model; with it the DSM becomes DSM - DTM
``gem``                   ``gem``   GEM exposure CSVs as GEM publishes them
``admin``                 ``gem``   polygons carrying the CSVs' ``ID_n`` codes (or the
                                    column named by ``gem_id_columns``)
``truth``                 no        simulator's ground truth (not read)
========================  ========  =====================================================

:meth:`Catalogue.check` validates the towns a run uses before anything trains:
missing keys and files, a town without labels, a file whose CRS cannot be resolved,
and files that do not overlap the SAR product each give one error naming the town and
the file (:class:`~torchgeo_sar_damage.errors.CatalogueError`).

.. versionadded:: 0.2
"""

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyogrio
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError
from rasterio.warp import transform_bounds

from ..errors import CatalogueError, InputFileError

#: Name of the catalogue inside a scene folder.
CATALOGUE_NAME = 'scene.json'

#: Keys of a town's ``files`` and whether a value may be a list.
FILE_KEYS: dict[str, bool] = {
    'sar': True,
    'sar_geotiff': True,
    'sar_hdf5': True,
    'osm': False,
    'labels': True,
    'dsm': False,
    'dtm': False,
    'gem': True,
    'admin': False,
    'truth': False,
}


@dataclass(frozen=True)
class TownFiles:
    """The files of one town, with absolute paths.

    Attributes:
        name: the town's name in the catalogue.
        folder: the folder its relative paths are resolved against.
        sar: SAR products.
        osm: building footprints.
        labels: damage label layers (empty: the town has no labels).
        dsm: surface model, if any.
        dtm: terrain model, if any.
        gem: GEM exposure CSVs.
        admin: polygons of the exposure's administrative units, if any.
        gem_id_columns: columns of ``admin`` that hold GEM's ``ID_n`` codes.
    """

    name: str
    folder: Path
    sar: tuple[Path, ...]
    osm: Path | None
    labels: tuple[Path, ...] = ()
    dsm: Path | None = None
    dtm: Path | None = None
    gem: tuple[Path, ...] = ()
    admin: Path | None = None
    gem_id_columns: dict[str, str] = field(default_factory=dict)


def _as_list(value: object) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


class Catalogue:
    """A validated town catalogue (see the module docstring for its format).

    .. versionadded:: 0.2
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Read a catalogue.

        Args:
            path: the JSON file, or a folder holding ``scene.json``.

        Raises:
            CatalogueError: if the file is missing, not JSON, or an entry is malformed
                (unknown keys, values of the wrong type).
        """
        path = Path(path)
        if path.is_dir() or path.suffix.lower() != '.json':
            path = path / CATALOGUE_NAME
        self.path = path
        try:
            raw = json.loads(path.read_text(encoding='utf-8'))
        except FileNotFoundError:
            raise CatalogueError(
                path,
                'not found: make a scene with `sardamage simulate --out '
                f'{path.parent}`, or write a catalogue of your towns (see "Your own '
                'data" in the documentation) and point --data.root at it',
            ) from None
        except (OSError, ValueError) as err:
            raise CatalogueError(path, f'cannot be read as JSON ({err})') from None
        if not isinstance(raw, dict):
            raise CatalogueError(path, 'must hold a JSON object with a "cities" entry')
        cities = raw.get('cities')
        if not isinstance(cities, dict) or not cities:
            raise CatalogueError(path, "has no 'cities' entries")
        #: The catalogue as read (towns keep any extra entries, e.g. the simulator's).
        self.raw: dict[str, Any] = raw
        #: SAR pixel spacing ``(x, y)`` in CRS units of each checked town's first
        #: product (filled by :meth:`check`).
        self.spacing: dict[str, tuple[float, float]] = {}
        #: The towns, in catalogue order.
        self.towns: dict[str, TownFiles] = {
            str(name): self._town(str(name), entry) for name, entry in cities.items()
        }

    def __contains__(self, name: object) -> bool:
        """Whether the catalogue lists a town."""
        return name in self.towns

    def __getitem__(self, name: str) -> TownFiles:
        """The files of a town."""
        return self.towns[name]

    def _town(self, name: str, entry: object) -> TownFiles:
        where = f'town {name!r}'
        if not isinstance(entry, dict):
            raise CatalogueError(self.path, f'{where}: the entry must be an object')
        folder_value = entry.get('folder', name)
        if not isinstance(folder_value, str) or not folder_value:
            raise CatalogueError(
                self.path, f'{where}: "folder" must be a path (a string)'
            )
        folder = Path(folder_value)
        if not folder.is_absolute():
            folder = self.path.parent / folder
        files = entry.get('files')
        if not isinstance(files, dict):
            raise CatalogueError(
                self.path,
                f'{where} has no "files" object (keys: {", ".join(FILE_KEYS)})',
            )
        unknown = sorted(set(files) - set(FILE_KEYS))
        if unknown:
            raise CatalogueError(
                self.path,
                f'{where}: unknown file keys {unknown}; the keys are '
                f'{", ".join(FILE_KEYS)}',
            )
        paths: dict[str, list[Path]] = {}
        for key, many in FILE_KEYS.items():
            values = _as_list(files.get(key))
            if len(values) > 1 and not many:
                raise CatalogueError(
                    self.path, f'{where}: "{key}" takes one file, not a list'
                )
            for value in values:
                if not isinstance(value, str) or not value:
                    raise CatalogueError(
                        self.path,
                        f'{where}: "{key}" must hold file paths (strings), not '
                        f'{value!r}',
                    )
            paths[key] = [folder / str(v) for v in values]  # absolute v stays absolute
        sar = paths['sar'] or paths['sar_geotiff'] or paths['sar_hdf5']
        id_columns = entry.get('gem_id_columns', {})
        if not isinstance(id_columns, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in id_columns.items()
        ):
            raise CatalogueError(
                self.path,
                f'{where}: "gem_id_columns" must map GEM code columns to columns of '
                'the admin layer, e.g. {"ID_1": "ISO_1"}',
            )

        def one(key: str) -> Path | None:
            return paths[key][0] if paths[key] else None

        return TownFiles(
            name=name,
            folder=folder,
            sar=tuple(sar),
            osm=one('osm'),
            labels=tuple(paths['labels']),
            dsm=one('dsm'),
            dtm=one('dtm'),
            gem=tuple(paths['gem']),
            admin=one('admin'),
            gem_id_columns=dict(id_columns),
        )

    # -- checks --------------------------------------------------------------------

    def check(
        self,
        towns: Sequence[str],
        modalities: Sequence[str],
        labelled: Sequence[str] = (),
    ) -> None:
        """Check the towns a run uses, before anything is read or trained.

        Args:
            towns: the towns to check.
            modalities: the model's modalities (``dsm`` needs a DSM, ``gem`` GEM
                files and their admin polygons).
            labelled: the towns that need labels (training, validation, test).

        Raises:
            CatalogueError: naming the town and the file, for the first problem:
                a town not in the catalogue, a missing key or file, a town without
                labels, a file whose CRS cannot be resolved or that does not overlap
                the town's SAR product.
        """
        for name in towns:
            if name not in self.towns:
                raise CatalogueError(
                    self.path, f'no town {name!r} (it has: {", ".join(self.towns)})'
                )
            self._check_town(self.towns[name], modalities, name in labelled)

    def _require(self, town: TownFiles, key: str, why: str) -> None:
        raise CatalogueError(
            self.path, f'town {town.name!r} lists no "{key}" file; {why}'
        )

    def _check_town(
        self, town: TownFiles, modalities: Sequence[str], labelled: bool
    ) -> None:
        if not town.sar:
            self._require(town, 'sar', 'give its COSMO-SkyMed/CSG product(s)')
        if town.osm is None:
            self._require(
                town, 'osm', 'give its building footprints (one sample per footprint)'
            )
        if labelled and not town.labels:
            self._require(
                town,
                'labels',
                'a training, validation or test town needs damage labels (an EMS '
                'grading layer or a HOT buildings export with destroyed:building)',
            )
        if 'dsm' in modalities and town.dsm is None:
            self._require(town, 'dsm', "the 'dsm' modality needs a surface model")
        if 'gem' in modalities and not town.gem:
            self._require(town, 'gem', "the 'gem' modality needs GEM exposure CSVs")
        if town.gem and town.admin is None and not _has_coordinates(town.gem):
            self._require(
                town,
                'admin',
                "GEM's exposure CSVs locate their rows by administrative codes "
                '(ID_1...); give the polygons of those units (e.g. GADM or '
                'geoBoundaries) and, if their code column is not named ID_n, '
                '"gem_id_columns"',
            )
        every = [*town.sar, town.osm, *town.labels, town.dsm, town.dtm]
        every += [*town.gem, town.admin]
        for path in every:
            if path is not None and not path.is_file():
                raise CatalogueError(
                    path, f'town {town.name!r}: file not found (from {self.path})'
                )
        sar_crs, sar_box, spacing = self._extent(town, town.sar[0], raster=True)
        assert spacing is not None  # a raster's
        self.spacing[town.name] = spacing
        others: list[tuple[Path | None, bool]] = [(p, True) for p in town.sar[1:]]
        others += [(town.osm, False), (town.dsm, True), (town.dtm, True)]
        others += [(p, False) for p in town.labels]
        others.append((town.admin, False))
        for path, raster in others:
            if path is None:
                continue
            crs, box, _ = self._extent(town, path, raster)
            left, bottom, right, top = transform_bounds(crs, sar_crs, *box)
            if not shapely.intersects(
                shapely.box(left, bottom, right, top), shapely.box(*sar_box)
            ):
                raise CatalogueError(
                    path,
                    f'town {town.name!r}: does not overlap the SAR product '
                    f'{town.sar[0].name} (its bounds {left:.0f}, {bottom:.0f}, '
                    f'{right:.0f}, {top:.0f} vs the SAR '
                    f'{", ".join(f"{v:.0f}" for v in sar_box)} in '
                    f'{sar_crs.to_string()}); is it a file of another town?',
                )

    def _extent(
        self, town: TownFiles, path: Path, raster: bool
    ) -> tuple[CRS, tuple[float, float, float, float], tuple[float, float] | None]:
        """CRS, bounds and (raster) pixel spacing of a file, naming the town on failure."""
        where = f'town {town.name!r}'
        spacing = None
        try:
            if raster:
                crs, bounds, spacing = _raster_extent(path)
            else:
                info = pyogrio.read_info(path, force_total_bounds=True)
                crs = (
                    None
                    if info.get('crs') is None
                    else CRS.from_user_input(info['crs'])
                )
                bounds = tuple(float(v) for v in info['total_bounds'])
        except InputFileError as err:
            raise CatalogueError(path, f'{where}: {err.problem}') from None
        except (RasterioIOError, RuntimeError, OSError, ValueError) as err:
            kind = 'raster' if raster else 'vector layer'
            raise CatalogueError(
                path, f'{where}: cannot be read as a {kind} ({err})'
            ) from None
        if crs is None:
            raise CatalogueError(
                path,
                f'{where}: has no coordinate reference system, so it cannot be '
                'placed on the SAR product; assign one (e.g. `gdal_edit.py -a_srs` '
                'or `ogr2ogr -a_srs`)',
            )
        if len(bounds) != 4 or not all(map(math.isfinite, bounds)):
            raise CatalogueError(path, f'{where}: has no features or no extent')
        box = (bounds[0], bounds[1], bounds[2], bounds[3])
        return crs, box, spacing


def _has_coordinates(paths: Sequence[Path]) -> bool:
    """Whether every CSV has LONGITUDE/LATITUDE columns (their header only)."""
    for path in paths:
        try:
            with open(path, encoding='utf-8-sig') as f:
                header = {c.strip().upper() for c in f.readline().split(',')}
        except (OSError, UnicodeDecodeError):
            return False  # GEMExposure names the problem when it reads the file
        if not {'LONGITUDE', 'LATITUDE'} <= header:
            return False
    return True


def _raster_extent(
    path: Path,
) -> tuple[CRS | None, tuple[float, ...], tuple[float, float]]:
    """CRS, bounds and pixel spacing of a GeoTIFF or an HDF5 product's first image."""
    with rasterio.open(path) as src:
        if src.count or not src.subdatasets:
            return src.crs, tuple(src.bounds), (float(src.res[0]), float(src.res[1]))
        names = src.subdatasets
    image = next((s for s in names if s.endswith(('/SBI', '/MBI', '/IMG'))), names[0])
    with rasterio.open(image) as sub:
        return sub.crs, tuple(sub.bounds), (float(sub.res[0]), float(sub.res[1]))


def town_gem_id_columns(
    town: TownFiles, default: Mapping[str, str] | None
) -> dict[str, str] | None:
    """The ``id_columns`` of a town's GEM exposure: its own, else the default."""
    columns = {**(default or {}), **town.gem_id_columns}
    return columns or None
