# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""GEM Global Exposure Model: building-stock features per administrative unit."""

import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyproj
import shapely
import torch
from matplotlib.figure import Figure
from pyproj import CRS
from torchgeo.datasets import VectorDataset
from torchgeo.datasets.errors import DatasetNotFoundError
from torchgeo.datasets.utils import GeoSlice, Path, Sample

from ..errors import ArgumentError, InputFileError
from ..taxonomy import Taxonomy, TaxonomyError, parse_taxonomy
from ._vector import default_res, read_table, timeless_index
from .utils import ModalityMixin, bounds_tensor, from_origin, resolve_slice

__all__ = ['FEATURE_NAMES', 'GEMExposure']

#: Material classes (:attr:`~torchgeo_sar_damage.taxonomy.Taxonomy.macro_class`).
MATERIAL_CLASSES = ('RC', 'PRECAST', 'URM', 'ADOBE', 'STEEL', 'WOOD', 'OTHER', 'UNK')
#: Lateral load-resisting systems; every other or missing LLRS counts as ``OTHER_UNK``.
LLRS_CLASSES = ('LFINF', 'LFM', 'LWAL', 'LFBR', 'OTHER_UNK')
#: Height classes by the midpoint of the storey range.
HEIGHT_CLASSES = ('1_3', '4_7', '8_PLUS', 'UNKNOWN')
#: Seismic design classes: no code (``CDN``, or ``DNO`` without code level), low,
#: moderate or high, unknown.
CODE_CLASSES = ('PRE', 'CDL', 'CDM_PLUS', 'UNKNOWN')

#: Names of the per-unit feature vector, in order (see :class:`GEMExposure`).
FEATURE_NAMES: tuple[str, ...] = (
    *(f'gem_material_{c.lower()}' for c in MATERIAL_CLASSES),
    *(f'gem_llrs_{c.lower()}' for c in LLRS_CLASSES),
    *(f'gem_storeys_{c.lower()}' for c in HEIGHT_CLASSES),
    *(f'gem_code_{c.lower()}' for c in CODE_CLASSES),
    'gem_mean_storeys',
    'gem_log10_buildings_per_km2',
    'gem_log10_buildings',
    'gem_missing',
)

#: Number of leading features that are class fractions (four groups, each sums to 1).
_N_FRACTIONS = (
    len(MATERIAL_CLASSES) + len(LLRS_CLASSES) + len(HEIGHT_CLASSES) + len(CODE_CLASSES)
)
_GROUP_OFFSETS = np.cumsum(
    [0, len(MATERIAL_CLASSES), len(LLRS_CLASSES), len(HEIGHT_CLASSES)]
)

#: Columns every GEM exposure CSV must have.
REQUIRED_COLUMNS = ('TAXONOMY', 'BUILDINGS')

#: Equal-area CRS used for the area of the units (WGS 84 / NSIDC EASE-Grid 2.0 Global).
AREA_CRS = 'EPSG:6933'

#: Side in degrees of the cell given to a lone asset location when units are built
#: from coordinates (30 arc-seconds).
LONE_CELL_DEG = 30 / 3600

_ID_COLUMN = re.compile(r'^ID_(\d+)$')

_BOUNDARIES_HINT = (
    'GEM does not distribute boundary files: take the polygons of the same '
    'administrative level from GADM (https://gadm.org), geoBoundaries '
    '(https://www.geoboundaries.org) or the national statistics office, and make '
    "sure one column holds GEM's codes (for Türkiye ID_1 is the ISO 3166-2 code, "
    "e.g. 'TR-46' for Kahramanmaraş); name it ID_n or map it with "
    "id_columns={'ID_1': '<column>'}"
)


def _classes(taxonomy: Taxonomy) -> tuple[int, int, int, int, float]:
    """Class of a taxonomy in each feature group, and its storey midpoint (or NaN)."""
    material = MATERIAL_CLASSES.index(taxonomy.macro_class)
    llrs = {'LFINF': 0, 'LFM': 1, 'LWAL': 2, 'LFBR': 3}.get(taxonomy.llrs or '', 4)
    mid = taxonomy.storeys_mid
    if mid is None:
        height = 3
    else:
        height = 0 if mid < 4 else 1 if mid < 8 else 2
    if taxonomy.code_level == 'CDN' or (
        taxonomy.code_level is None and taxonomy.ductility == 'DNO'
    ):
        code = 0
    elif taxonomy.code_level == 'CDL':
        code = 1
    elif taxonomy.code_level in ('CDM', 'CDH'):
        code = 2
    else:
        code = 3
    return material, llrs, height, code, math.nan if mid is None else mid


@dataclass
class _ExposureCSV:
    """One exposure CSV, validated."""

    path: str
    frame: pd.DataFrame  # str columns as read, plus _line, _buildings, _lon, _lat
    levels: tuple[int, ...]  # n of every ID_n column
    has_coordinates: bool


def _numbers(frame: pd.DataFrame, column: str, path: str) -> np.ndarray:
    """Parse one column as finite floats; raise naming the first bad line."""
    values = pd.to_numeric(frame[column].str.strip(), errors='coerce').to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputFileError(
            path,
            f'line {i + 2}, column {column}: {frame[column].iloc[i]!r} is not a number'
            f' ({int(bad.sum())} such rows); GEM writes counts as 17 or 26.0',
        )
    return values


def _read_exposure_csv(path: str) -> _ExposureCSV:
    """Read and check one GEM exposure CSV (UTF-8, comma-separated).

    Args:
        path: the CSV file.

    Returns:
        Its rows (string columns as read, plus ``_line``, ``_buildings`` and, where
        located by coordinates, ``_lon`` and ``_lat``), ID levels and whether it has
        coordinates.

    Raises:
        InputFileError: if the file cannot be read, is not a comma-separated CSV,
            lacks a required column or has a malformed value.
    """
    frame = _load_csv(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    levels, has_lon = _check_columns(path, list(frame.columns))
    frame['TAXONOMY'] = frame['TAXONOMY'].str.strip()
    frame['_line'] = np.arange(2, len(frame) + 2)
    frame['_buildings'] = _numbers(frame, 'BUILDINGS', path)
    negative = frame['_buildings'].to_numpy() < 0
    if negative.any():
        i = int(np.flatnonzero(negative)[0])
        raise InputFileError(
            path,
            f'line {i + 2}, column BUILDINGS: negative count '
            f'{frame["BUILDINGS"].iloc[i]!r}',
        )
    if has_lon:
        for column, limit in (('LONGITUDE', 180.0), ('LATITUDE', 90.0)):
            values = _numbers(frame, column, path)
            outside = np.abs(values) > limit
            if outside.any():
                i = int(np.flatnonzero(outside)[0])
                raise InputFileError(
                    path,
                    f'line {i + 2}, column {column}: {values[i]} is outside '
                    f'[-{limit:g}, {limit:g}]; GEM coordinates are WGS 84 degrees',
                )
            frame['_lon' if column == 'LONGITUDE' else '_lat'] = values
    return _ExposureCSV(path, frame, levels, has_lon)


def _load_csv(path: str) -> pd.DataFrame:
    """Read a CSV as strings, refusing what pandas would read silently wrong.

    Args:
        path: the CSV file.

    Returns:
        Its rows, every column a string (empty cells as ``''``).

    Raises:
        InputFileError: if the file cannot be read, is empty, is not UTF-8 or is not
            well formed (rows with more fields than the header included).
    """
    try:
        with warnings.catch_warnings():
            # more fields than the header: pandas would drop them with a warning
            warnings.simplefilter('error', pd.errors.ParserWarning)
            return pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                encoding='utf-8-sig',
                index_col=False,
            )
    except pd.errors.ParserWarning:
        raise InputFileError(
            path, 'is not a well-formed CSV file: rows have more fields than the header'
        ) from None
    except UnicodeDecodeError as err:
        raise InputFileError(
            path,
            f'is not UTF-8 text ({err.reason} at byte {err.start}); GEM exposure files '
            'are UTF-8: re-save it as UTF-8',
        ) from None
    except pd.errors.EmptyDataError:
        raise InputFileError(path, 'is empty; expected a GEM exposure CSV') from None
    except pd.errors.ParserError as err:
        raise InputFileError(
            path, f'is not a well-formed CSV file ({err})'.replace('\n', ' ')
        ) from None
    except OSError as err:
        raise InputFileError(path, f'cannot be read ({err.strerror})') from None


def _check_columns(path: str, columns: list[str]) -> tuple[tuple[int, ...], bool]:
    """Check the header of an exposure CSV.

    Args:
        path: the CSV file.
        columns: its column names, stripped.

    Returns:
        The ``n`` of every ``ID_n`` column (sorted), and whether the CSV has
        LONGITUDE and LATITUDE columns.

    Raises:
        InputFileError: if the header is not comma-separated, lacks a required
            column, has only one of LONGITUDE and LATITUDE, or has neither codes nor
            coordinates.
    """
    if 'TAXONOMY' not in columns:
        for sep, name in ((';', 'semicolons'), ('\t', 'tabs'), ('|', 'bars')):
            if any(sep in c for c in columns):
                raise InputFileError(
                    path,
                    f'is not comma-separated: its header separates columns with {name} '
                    f'({columns[0][:60]!r}...); GEM exposure files use commas: re-save '
                    'it with "," as delimiter',
                )
    for column in REQUIRED_COLUMNS:
        if column not in columns:
            raise InputFileError(
                path,
                f'has no {column} column (columns: {", ".join(columns)}); a GEM '
                'exposure CSV has ID_0, NAME_0, ID_1, NAME_1, ..., TAXONOMY, '
                'BUILDINGS, ...',
            )
    levels = tuple(
        sorted(int(m.group(1)) for c in columns if (m := _ID_COLUMN.match(c)))
    )
    has_lon, has_lat = 'LONGITUDE' in columns, 'LATITUDE' in columns
    if has_lon != has_lat:
        raise InputFileError(
            path,
            f'has {"LONGITUDE" if has_lon else "LATITUDE"} but not '
            f'{"LATITUDE" if has_lon else "LONGITUDE"}; both are needed',
        )
    if not levels and not has_lon:
        raise InputFileError(
            path,
            'has neither ID_n codes (ID_0, ID_1...) nor LONGITUDE/LATITUDE columns, '
            'so its assets cannot be located',
        )
    return levels, has_lon


def _normalise_codes(values: pd.Series) -> pd.Series:
    """Codes as stripped strings; integral numbers lose their ``.0``."""
    if pd.api.types.is_float_dtype(values) and bool((values.dropna() % 1 == 0).all()):
        values = values.astype('Int64')
    return values.astype('string').str.strip()


class GEMExposure(ModalityMixin, VectorDataset):
    """GEM Global Exposure Model, as building-stock features per administrative unit.

    The `Global Exposure Model <https://github.com/gem/global_exposure_model>`_ of the
    GEM Foundation (release v2023.1) describes the building stock of every country as
    CSV rows of *assets*: groups of buildings of one building class (a GEM Building
    Taxonomy string) aggregated per administrative unit, with their number, replacement
    costs, floor area and occupants. It is not a building inventory: it says what mix of
    buildings a unit has, not where each one stands. This dataset turns each unit's
    rows into one fixed-length feature vector and returns the vector of the unit under a
    window's centre, so it combines with the image datasets through ``&``.

    Dataset format:

    * one CSV per country and occupancy in the repository's ``<Region>/<Country>``
      folders, ``Exposure_<Occupancy>_<Country>_Adm<n>.csv`` (see
      :attr:`filename_regex`); the ``Exposure_Summary_*.csv`` files are ignored
    * UTF-8, comma-separated, header ``ID_0, NAME_0, ID_1, NAME_1, [ID_2, NAME_2, ...]
      SETTLEMENT, OCCUPANCY, TAXONOMY, BUILDINGS, TOTAL_REPL_COST_USD,
      COST_STRUCTURAL_USD, COST_NONSTRUCTURAL_USD, COST_CONTENTS_USD, TOTAL_AREA_SQM,
      OCCUPANTS_PER_ASSET, OCCUPANTS_PER_ASSET_DAY, OCCUPANTS_PER_ASSET_NIGHT,
      OCCUPANTS_PER_ASSET_TRANSIT``; only ``TAXONOMY`` and ``BUILDINGS`` are read, plus
      the ``ID_n``/``NAME_n`` codes or, where a file has them, ``LONGITUDE`` and
      ``LATITUDE`` (WGS 84) of the assets
    * counts are floats in some files (``26.0``, residential) and integers in others
      (``17``, commercial and industrial); names keep their national letters
      (``KAHRAMANMARAŞ``)
    * ``TAXONOMY`` follows the GEM Building Taxonomy v3.2 dialect
      (``CR/LFINF(MUR+CL)+CDM+DUM/H:6/RES``), read with
      :func:`~torchgeo_sar_damage.taxonomy.parse_taxonomy`

    Administrative units:

    * rows are joined to the polygons of ``admin`` through the deepest ``ID_n`` code
      present in every ID-only CSV and in the polygon layer: ``ID_1`` for the published
      per-province files (``TR-46`` is Kahramanmaraş), ``ID_2`` for finer files whose
      polygon layer has ``ID_2``; polygons sharing a code are dissolved into one unit
    * rows of files with ``LONGITUDE``/``LATITUDE`` are points: they go to the polygon
      of ``admin`` that contains them (at the deepest ``ID_n`` level of the layer, or
      each polygon on its own if the layer has no ``ID_n`` column); without ``admin``
      every distinct asset location becomes a unit of its own, its Voronoi cell
      (computed in degrees) clipped to the points' bounding box grown by half the
      median distance to the nearest other location (a lone location gets a
      30 arc-second square)
    * GEM does not distribute boundary files; GADM, geoBoundaries or the national
      statistics office provide them. For Türkiye, ``ID_1`` holds the ISO 3166-2 province
      code; ``id_columns`` maps GEM's ``ID_n`` to the column of another layer

    Features (:attr:`feature_names`, :data:`FEATURE_NAMES`), 25 floats per unit, every
    share weighted by ``BUILDINGS`` over all rows of the unit (all occupancies):

    * ``gem_material_{rc,precast,urm,adobe,steel,wood,other,unk}``: shares of
      :attr:`~torchgeo_sar_damage.taxonomy.Taxonomy.macro_class`
    * ``gem_llrs_{lfinf,lfm,lwal,lfbr,other_unk}``: shares of the lateral
      load-resisting system (infilled frame, moment frame, wall, braced frame, any other
      or not given)
    * ``gem_storeys_{1_3,4_7,8_plus,unknown}``: shares by the midpoint of the storey
      range (:attr:`~torchgeo_sar_damage.taxonomy.StoreyRange.mid`: ``HBET:7-9`` counts
      as 8+, ``HBET:10+`` too); ``unknown`` for ``H:UNK`` or no height
    * ``gem_code_{pre,cdl,cdm_plus,unknown}``: shares by seismic design level: no code
      (``CDN``, or non-ductile ``DNO`` without a code level), low (``CDL``), moderate or
      high (``CDM``, ``CDH``), not given
    * ``gem_mean_storeys``: mean storey midpoint over the buildings of known height
      (0 when ``gem_storeys_unknown`` is 1)
    * ``gem_log10_buildings_per_km2``: log10(1 + buildings per km² of the unit's
      polygon), area in the equal-area EPSG:6933
    * ``gem_log10_buildings``: log10(1 + number of buildings of the unit)
    * ``gem_missing``: 1 where no unit with buildings lies under the point; then every
      other feature is 0. Zeros are never a silent stand-in: they only appear together
      with this flag

    Each group of shares sums to 1. Polygons of ``admin`` with no exposure rows, or
    whose rows sum to zero buildings, stay units of the dataset (its extent is the
    polygon layer) but carry the missing vector. A window that intersects no unit
    raises :class:`IndexError`, as in TorchGeo.

    .. note::

       Release v2023.1.0 updated Türkiye after the 6 February 2023
       Kahramanmaraş–Gaziantep earthquakes: destroyed buildings were removed and the
       mapping schemes changed. The published files are therefore the *post*-event stock;
       the buildings that collapsed are missing from the counts and mix.

    .. note::

       The exposure model is distributed under the Creative Commons
       Attribution-NonCommercial-ShareAlike 4.0 licence (CC BY-NC-SA 4.0): download the
       files yourself, do not bundle them with code under another licence, and respect
       the non-commercial and share-alike terms in what you derive from them.

    If you use this dataset in your research, please cite:

    * https://doi.org/10.1177/87552930231194048

    A CSV named in ``paths`` is read whatever its name (the glob and the regex
    filter directory searches only). ``&`` keeps one key per modality, unlike TorchGeo's
    channel concatenation (see :class:`~torchgeo_sar_damage.datasets.utils.ModalityMixin`).

    .. versionadded:: 0.1

    .. versionchanged:: 0.2
       Named files are read whatever their name.
    """

    #: Glob of the exposure files inside a directory.
    filename_glob = 'Exposure_*.csv'

    #: File names of the exposure model, e.g. ``Exposure_Res_Turkey_Adm1.csv``.
    filename_regex = r"""
        ^Exposure
        _(?P<occupancy>Res|Com|Ind)   # occupancy: residential, commercial, industrial
        _(?P<country>.+?)             # country or territory, '_' between words
        (?:_Adm(?P<level>\d+))?       # administrative level of the rows (Adm1: ID_1)
        \.csv$
    """

    #: Names of the features, in the order of the ``tabular`` vector.
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def __init__(
        self,
        paths: Path | Iterable[Path] = 'data',
        admin: Path | gpd.GeoDataFrame | None = None,
        crs: CRS | None = None,
        res: float | tuple[float, float] | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
        layer: str | int | None = None,
        id_columns: Mapping[str, str] | str | None = None,
    ) -> None:
        """Initialise a new GEMExposure instance.

        Args:
            paths: exposure CSVs, or directories to search for them (e.g. the Res, Com
                and Ind files of a country; their rows are pooled).
            admin: polygons of the administrative units (a vector file or a
                GeoDataFrame, any CRS) carrying GEM's ``ID_n`` codes; required unless
                every CSV has ``LONGITUDE``/``LATITUDE``.
            crs: :term:`coordinate reference system (CRS)` of the dataset (defaults to
                the CRS of ``admin``, or EPSG:4326 without it).
            res: resolution in units of the CRS (defaults to 1e-5 for a geographic CRS,
                1 otherwise, as the other vector datasets); only the window's centre
                is looked up.
            transforms: a function/transform that takes an input sample and returns a
                transformed version.
            layer: layer of ``admin`` to read when it is a multi-layer file.
            id_columns: columns of ``admin`` that hold GEM's codes, e.g.
                ``{'ID_1': 'shapeISO'}``, or one column name for the deepest ``ID_n``
                level of the CSVs (``'shapeISO'`` is ``{'ID_1': 'shapeISO'}`` for
                the published per-province files); columns already named ``ID_n``
                need no entry.

        Raises:
            DatasetNotFoundError: if no exposure CSV is found.
            InputFileError: if a CSV or the polygon layer is malformed.
            ArgumentError: if ``admin`` is needed but missing, or shares no ``ID_n``
                code level with the CSVs.
        """
        self.paths = paths
        self.transforms = transforms
        self.label_name = None
        self.task = 'semantic_segmentation'
        self.layer = layer
        regex = re.compile(self.filename_regex, re.VERBOSE)
        named = set(self.named_files)  # read whatever their name
        files = [
            f for f in self.files if f in named or regex.match(os.path.basename(f))
        ]
        if not files:
            raise DatasetNotFoundError(self)
        tables = [_read_exposure_csv(f) for f in files]
        if isinstance(id_columns, str):
            id_columns = _deepest_code(tables, id_columns)
        polygons = None if admin is None else _read_admin(admin, layer, id_columns)
        units, rows_unit = _build_units(tables, polygons)
        units, features = _aggregate(tables, units, rows_unit)

        crs = CRS.from_user_input(crs) if crs is not None else CRS(units.crs)
        units = units.to_crs(crs)
        #: The units: index the unit code (``TR-46``), columns ``name``,
        #: ``buildings`` (their number), ``area_km2``, the features and the polygon.
        self.units: gpd.GeoDataFrame = units
        #: Feature vector of each unit, then the missing-flag vector (no unit).
        self._unit_features = np.vstack([features, _missing_vector()]).astype(
            np.float32
        )
        self._tree = shapely.STRtree(units.geometry.to_numpy())
        self._transformers: dict[str, pyproj.Transformer] = {}

        self._res = default_res(crs, res)
        self.index = timeless_index(
            {'unit': units.index.to_numpy()}, units.geometry.to_numpy(), crs
        )

    # ------------------------------------------------------------------ lookup

    def _locate(self, x: np.ndarray, y: np.ndarray, crs: CRS) -> np.ndarray:
        """Row of :attr:`units` containing each point (-1 outside every unit)."""
        if crs != self.units.crs:
            key = crs.to_wkt()
            if key not in self._transformers:
                self._transformers[key] = pyproj.Transformer.from_crs(
                    crs, self.units.crs, always_xy=True
                )
            x, y = self._transformers[key].transform(x, y)
        points = np.asarray(shapely.points(np.asarray(x, float), np.asarray(y, float)))
        n = len(self.units)
        unit = np.full(len(points), n, dtype=np.int64)
        inside = ~shapely.is_missing(points) & ~shapely.is_empty(points)
        found, hit = self._tree.query(points[inside], predicate='intersects')
        sub = np.full(int(inside.sum()), n, dtype=np.int64)
        np.minimum.at(sub, found, hit)  # ties on a shared border: first unit wins
        unit[inside] = sub
        unit[unit == n] = -1
        return unit

    def _units(
        self, queries: Sequence[GeoSlice]
    ) -> tuple[list[tuple[slice, slice, slice]], npt.NDArray[np.int64], np.ndarray]:
        """Resolved slices, unit under the centre and overlap flag of each window."""
        bounds = self.bounds
        slices = [resolve_slice(query, bounds) for query in queries]
        boxes = shapely.box(
            [x.start for x, _, _ in slices],
            [y.start for _, y, _ in slices],
            [x.stop for x, _, _ in slices],
            [y.stop for _, y, _ in slices],
        )
        found, _ = self.index.sindex.query(boxes, predicate='intersects')
        overlaps = np.zeros(len(slices), dtype=bool)
        overlaps[found] = True
        cx = np.array([(x.start + x.stop) / 2 for x, _, _ in slices])
        cy = np.array([(y.start + y.stop) / 2 for _, y, _ in slices])
        units = self._locate(cx, cy, self.crs) if slices else np.empty(0, np.int64)
        return slices, np.asarray(units, dtype=np.int64), overlaps

    def _samples(self, queries: Sequence[GeoSlice]) -> Iterator[Sample]:
        slices, units, overlaps = self._units(queries)
        for query, (x, y, t), ok, unit in zip(
            queries, slices, overlaps, units, strict=True
        ):
            if not ok:
                raise IndexError(
                    f'index: {query} not found in dataset with bounds: {self.bounds}'
                )
            transform = from_origin(x.start, y.stop, x.step, y.step)
            sample: Sample = {
                'tabular': torch.from_numpy(self._unit_features[unit].copy()),
                'bounds': bounds_tensor(x, y, t),
                'transform': torch.tensor(transform),
            }
            if self.transforms is not None:
                sample = self.transforms(sample)
            yield sample

    def extract_batch(self, queries: Sequence[GeoSlice]) -> Sample:
        """The features of many windows as one batch, ``tabular`` ``(B, F)``.

        Args:
            queries: windows, e.g. from a sampler.

        Returns:
            The rows of :meth:`extract`'s ``tabular``, stacked.

        Raises:
            IndexError: if a window does not intersect any unit.

        .. versionadded:: 0.1
        """
        queries = list(queries)
        _, units, overlaps = self._units(queries)
        if not overlaps.all():
            query = queries[int(np.flatnonzero(~overlaps)[0])]
            raise IndexError(
                f'index: {query} not found in dataset with bounds: {self.bounds}'
            )
        return {'tabular': torch.from_numpy(self._unit_features[units])}

    def __getitem__(self, index: GeoSlice) -> Sample:
        """Features of the unit under the centre of a window.

        Args:
            index: [xmin:xmax:xres, ymin:ymax:yres, tmin:tmax:tres] coordinates to index.

        Returns:
            ``tabular`` (float32, ``[len(feature_names)]``; the missing-flag vector when
            no unit lies under the centre), ``bounds`` and ``transform``.

        Raises:
            IndexError: if the window does not intersect any unit.
        """
        return next(self._samples([index]))

    def extract(self, queries: Sequence[GeoSlice]) -> Iterator[Sample]:
        """Samples of many windows at once; each equals ``self[query]``.

        Every window centre is located in one vectorised point-in-polygon query.

        Args:
            queries: windows, e.g. from a sampler.

        Yields:
            One sample per query, in order.

        Raises:
            IndexError: when reaching a window that does not intersect any unit.
        """
        yield from self._samples(list(queries))

    def features(self, buildings: gpd.GeoDataFrame | gpd.GeoSeries) -> pd.DataFrame:
        """Feature table of a whole layer of buildings.

        Each building takes the unit containing its representative point (a point
        inside the footprint, computed in the layer's own CRS, see
        :meth:`shapely.Geometry.representative_point`); buildings outside every unit,
        or without geometry, get the missing-flag vector (``gem_missing`` = 1).

        Args:
            buildings: footprints or points, in any CRS.

        Returns:
            One row per building, same order and index, columns :attr:`feature_names`
            (float32).

        Raises:
            ArgumentError: if ``buildings`` is not a GeoDataFrame/GeoSeries with a CRS.
        """
        if not isinstance(buildings, gpd.GeoDataFrame | gpd.GeoSeries):
            raise ArgumentError(
                f'buildings must be a GeoDataFrame or GeoSeries, not '
                f'{type(buildings).__name__}'
            )
        if buildings.crs is None:
            raise ArgumentError(
                'buildings have no CRS; set it with buildings.set_crs(...) first'
            )
        geometry = (
            buildings.geometry if isinstance(buildings, gpd.GeoDataFrame) else buildings
        )
        arr = geometry.to_numpy()
        valid = ~(shapely.is_missing(arr) | shapely.is_empty(arr))
        points = shapely.point_on_surface(arr[valid])
        unit = np.full(len(arr), -1, dtype=np.int64)
        crs = CRS(buildings.crs)
        unit[valid] = self._locate(shapely.get_x(points), shapely.get_y(points), crs)
        return pd.DataFrame(
            self._unit_features[unit],
            index=buildings.index,
            columns=list(self.feature_names),
        )

    # ------------------------------------------------------------------ plots

    def plot(
        self, sample: Sample, show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Plot a sample's feature vector as a bar chart.

        Args:
            sample: a sample returned by :meth:`__getitem__`.
            show_titles: flag indicating whether to show titles above each panel.
            suptitle: optional string to use as a suptitle.

        Returns:
            A matplotlib Figure with the rendered sample.
        """
        values = sample['tabular'].detach().cpu().numpy()
        names: Sequence[str] = self.feature_names
        if len(values) != len(names):
            names = [str(i) for i in range(len(values))]
        fig, ax = plt.subplots(figsize=(6, 0.22 * len(values) + 1))
        colours = ['tab:red' if n == 'gem_missing' else 'tab:blue' for n in names]
        ax.barh(range(len(values)), values, color=colours)
        ax.set_yticks(range(len(values)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel('value')
        if show_titles:
            missing = 'gem_missing' in names and values[names.index('gem_missing')] > 0
            ax.set_title('no unit (missing)' if missing else 'unit features')
        if suptitle is not None:
            fig.suptitle(suptitle)
        fig.tight_layout()
        return fig

    def plot_units(self, feature: str = 'gem_material_urm') -> Figure:
        """Map one feature over the units.

        Args:
            feature: one of :attr:`feature_names`, ``buildings`` or ``area_km2``.

        Returns:
            A matplotlib Figure with the map.

        Raises:
            ArgumentError: if ``feature`` is not a column of :attr:`units`.
        """
        if feature not in self.units.columns or feature == 'geometry':
            raise ArgumentError(
                f'unknown feature {feature!r}; choose one of '
                f'{", ".join(self.feature_names)}, buildings, area_km2'
            )
        fig, ax = plt.subplots(figsize=(6, 5))
        self.units.plot(column=feature, ax=ax, legend=True, edgecolor='k')
        ax.set_title(feature)
        return fig


# ---------------------------------------------------------------------- construction


def _missing_vector() -> np.ndarray:
    vector = np.zeros(len(FEATURE_NAMES))
    vector[FEATURE_NAMES.index('gem_missing')] = 1.0
    return vector


def _deepest_code(tables: list[_ExposureCSV], column: str) -> dict[str, str]:
    """Map the deepest ``ID_n`` level every ID-only CSV has to ``column``."""
    levels = [set(t.levels) for t in tables if not t.has_coordinates]
    common = set.intersection(*levels) if levels else set()
    if not common:
        raise ArgumentError(
            f"id_columns={column!r} names the admin column of the CSVs' codes, but "
            'the CSVs share no ID_n column (they are located by LONGITUDE/LATITUDE '
            'or have different levels); map a level explicitly, e.g. '
            f"{{'ID_1': {column!r}}}"
        )
    return {f'ID_{max(common)}': column}


def _read_admin(
    admin: Path | gpd.GeoDataFrame,
    layer: str | int | None,
    id_columns: Mapping[str, str] | None,
) -> gpd.GeoDataFrame:
    """Read the polygon layer, keep polygons, name the code columns ``ID_n``."""
    if isinstance(admin, gpd.GeoDataFrame):
        name = 'admin'
        frame = admin.copy()
        if frame.crs is None:
            raise ArgumentError('admin GeoDataFrame has no CRS; set one with set_crs')
    else:
        name = os.fspath(admin)
        if not os.path.exists(name):
            raise InputFileError(
                name,
                f'does not exist; admin must be a vector file of the units. '
                f'{_BOUNDARIES_HINT}',
            )
        frame = read_table(name, layer)
    for gem, column in (id_columns or {}).items():
        if not _ID_COLUMN.match(gem):
            raise ArgumentError(
                f'id_columns key {gem!r} is not a GEM code column (ID_0, ID_1, ...)'
            )
        if column not in frame.columns:
            raise ArgumentError(
                f'id_columns maps {gem} to {column!r}, which is not a column of {name} '
                f'(columns: {", ".join(map(str, frame.columns))})'
            )
        frame[gem] = frame[column]
    geometry = frame.geometry.to_numpy()
    polygonal = shapely.get_type_id(geometry) >= 0
    polygonal &= np.isin(shapely.get_type_id(geometry), (3, 6))  # (Multi)Polygon
    polygonal &= ~shapely.is_empty(geometry)
    frame = frame[polygonal]
    if frame.empty:
        problem = 'has no polygons of administrative units'
        if isinstance(admin, gpd.GeoDataFrame):
            raise ArgumentError(f'admin GeoDataFrame {problem}')
        raise InputFileError(name, problem)
    frame.attrs['name'] = name
    return frame


def _build_units(
    tables: list[_ExposureCSV], polygons: gpd.GeoDataFrame | None
) -> tuple[gpd.GeoDataFrame, list[np.ndarray]]:
    """The unit polygons and, per table, the unit row of each of its rows (-1: none).

    Args:
        tables: the exposure CSVs.
        polygons: the layer of administrative units (:func:`_read_admin`), or None to
            build one unit per asset location (:func:`_point_units`).

    Returns:
        The units (``name`` and geometry, indexed by code) and, per table, the
        position in them of each row's unit.

    Raises:
        ArgumentError: if a table is located by codes only and no layer is given, or
            the layer shares no ``ID_n`` column with such tables.
        InputFileError: if a table has an empty code.
    """
    id_tables = [t for t in tables if not t.has_coordinates]
    if polygons is None:
        if id_tables:
            raise ArgumentError(
                f'{id_tables[0].path} has no LONGITUDE/LATITUDE columns: its rows are '
                'located only by their administrative codes (ID_0, ID_1...), so '
                'GEMExposure needs admin=<polygon layer of the units with the same '
                f'ID_n codes>. {_BOUNDARIES_HINT}'
            )
        return _point_units(tables)
    name = polygons.attrs.get('name', 'admin')
    level = _unit_level(id_tables, polygons, name)
    units = _polygon_units(polygons, level)
    rows_unit: list[np.ndarray] = []
    tree = shapely.STRtree(units.geometry.to_numpy())
    to_units = pyproj.Transformer.from_crs('EPSG:4326', units.crs, always_xy=True)
    for table in tables:
        frame = table.frame
        examples = ''
        if table.has_coordinates:
            x, y = to_units.transform(
                frame['_lon'].to_numpy(), frame['_lat'].to_numpy()
            )
            found, hit = tree.query(shapely.points(x, y), predicate='intersects')
            unit = np.full(len(frame), len(units), dtype=np.int64)
            np.minimum.at(unit, found, hit)
            unit[unit == len(units)] = -1
            what = 'assets lie outside every polygon of'
        else:
            assert level is not None
            unit, codes = _rows_by_code(table, units, level)
            what = f'rows have an ID_{level} code absent from'
            if (unit < 0).any():
                sample = sorted(set(codes[unit < 0].astype(str)))[:5]
                examples = f' ({", ".join(sample)}...)'
        lost = unit < 0
        if lost.any():
            warnings.warn(
                f'{table.path}: {int(lost.sum())} of {len(frame)} {what} {name}'
                f'{examples}; they are ignored',
                UserWarning,
                stacklevel=3,
            )
        rows_unit.append(unit)
    return units, rows_unit


def _unit_level(
    id_tables: list[_ExposureCSV], polygons: gpd.GeoDataFrame, name: str
) -> int | None:
    """The ``ID_n`` level that identifies the units of an admin layer.

    Args:
        id_tables: the exposure CSVs located by codes only.
        polygons: the layer of administrative units.
        name: the layer's name (for messages).

    Returns:
        The deepest level the layer shares with every table of *id_tables*; with
        none of them, the layer's deepest level, or None if it has no ``ID_n``
        column (its polygons are then units of their own).

    Raises:
        ArgumentError: if the layer shares no level with the tables.
    """
    admin_levels = {
        int(m.group(1)) for c in polygons.columns if (m := _ID_COLUMN.match(str(c)))
    }
    if id_tables:
        common = admin_levels.intersection(*(t.levels for t in id_tables))
        if not common:
            raise ArgumentError(
                f'{name} shares no ID_n code column with the exposure CSVs (CSV: '
                f'{", ".join(f"ID_{n}" for n in id_tables[0].levels)}; {name}: '
                f'{", ".join(map(str, polygons.columns))}). {_BOUNDARIES_HINT}'
            )
        return max(common)
    return max(admin_levels) if admin_levels else None


def _polygon_units(polygons: gpd.GeoDataFrame, level: int | None) -> gpd.GeoDataFrame:
    """The units of an admin layer: its polygons dissolved by their code.

    Args:
        polygons: the layer of administrative units.
        level: the ``ID_n`` level of the codes (:func:`_unit_level`); None gives
            each polygon its own unit, named by its position.

    Returns:
        The units, with ``name`` (``NAME_n`` where the layer has it, else empty) and
        geometry, indexed by code (``unit``); polygons without a code are dropped.
    """
    if level is None:
        return gpd.GeoDataFrame(
            {'name': ''},
            index=pd.Index([str(i) for i in range(len(polygons))], name='unit'),
            geometry=polygons.geometry.to_numpy(),
            crs=polygons.crs,
        )
    key = f'ID_{level}'
    codes = _normalise_codes(polygons[key])
    keep = codes.notna() & (codes != '')
    frame = gpd.GeoDataFrame(
        {'unit': codes[keep].to_numpy()},
        geometry=polygons.geometry[keep].to_numpy(),
        crs=polygons.crs,
    )
    if f'NAME_{level}' in polygons.columns:
        frame['name'] = polygons[f'NAME_{level}'][keep].astype(str).to_numpy()
    else:
        frame['name'] = ''
    if frame['unit'].duplicated().any():
        frame = frame.dissolve(by='unit', aggfunc='first')
    else:
        frame = frame.set_index('unit')
    units = frame[['name', 'geometry']]
    units.index.name = 'unit'
    return units


def _rows_by_code(
    table: _ExposureCSV, units: gpd.GeoDataFrame, level: int
) -> tuple[npt.NDArray[np.intp], pd.Series]:
    """The unit of each row of a table located by its ``ID_n`` codes.

    Units the layer left unnamed take the table's ``NAME_n`` (in place).

    Args:
        table: an exposure CSV located by codes.
        units: the units (:func:`_polygon_units`), modified in place.
        level: the ``n`` of the codes.

    Returns:
        The position in *units* of each row's unit (-1: code absent from them), and
        the rows' normalised codes.

    Raises:
        InputFileError: if a row's code is empty.
    """
    frame = table.frame
    codes = _normalise_codes(frame[f'ID_{level}'])
    empty = (codes.isna() | (codes == '')).to_numpy()
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise InputFileError(table.path, f'line {i + 2}, column ID_{level}: empty code')
    unit = pd.Index(units.index).get_indexer(codes.to_numpy())
    if f'NAME_{level}' in frame.columns:  # name units the layer left unnamed
        found_rows = unit >= 0
        names = pd.Series(
            frame[f'NAME_{level}'].to_numpy()[found_rows],
            index=units.index[unit[found_rows]],
        )
        names = names[~names.index.duplicated()]
        unnamed = units['name'] == ''
        units.loc[unnamed, 'name'] = names.reindex(units.index[unnamed]).fillna('')
    return unit, codes


def _point_units(
    tables: list[_ExposureCSV],
) -> tuple[gpd.GeoDataFrame, list[np.ndarray]]:
    """One unit per distinct asset location: its clipped Voronoi cell (degrees)."""
    lonlat = np.concatenate(
        [t.frame[['_lon', '_lat']].to_numpy(dtype=np.float64) for t in tables]
    )
    locations, inverse = np.unique(lonlat, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    points = np.asarray(shapely.points(locations))
    if len(locations) == 1:
        half = LONE_CELL_DEG / 2
    else:
        tree = shapely.STRtree(points)
        _, distance = tree.query_nearest(
            points, exclusive=True, return_distance=True, all_matches=False
        )
        half = float(np.median(distance)) / 2
    lo = locations.min(axis=0) - half
    hi = locations.max(axis=0) + half
    envelope = shapely.box(lo[0], lo[1], hi[0], hi[1])
    if len(locations) == 1:
        cells = np.array([envelope])
    else:
        diagram = shapely.voronoi_polygons(
            shapely.multipoints(points), extend_to=envelope, ordered=True
        )
        cells = shapely.intersection(shapely.get_parts(diagram), envelope)
    units = gpd.GeoDataFrame(
        {'name': ''},
        index=pd.Index([f'{lon:.6f} {lat:.6f}' for lon, lat in locations], name='unit'),
        geometry=cells,
        crs='EPSG:4326',
    )
    rows_unit, start = [], 0
    for table in tables:
        rows_unit.append(inverse[start : start + len(table.frame)].astype(np.int64))
        start += len(table.frame)
    return units, rows_unit


def _aggregate(
    tables: list[_ExposureCSV], units: gpd.GeoDataFrame, rows_unit: list[np.ndarray]
) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Per-unit feature matrix; the missing vector for units without buildings."""
    n_units = len(units)
    shares = np.zeros((n_units, _N_FRACTIONS))
    total = np.zeros(n_units)
    storeys_weight = np.zeros(n_units)
    storeys_sum = np.zeros(n_units)
    cache: dict[str, tuple[int, int, int, int, float]] = {}
    for table, unit in zip(tables, rows_unit, strict=True):
        frame = table.frame
        texts = frame['TAXONOMY'].to_numpy()
        for text in pd.unique(texts):
            if text in cache:
                continue
            try:
                cache[text] = _classes(parse_taxonomy(text))
            except TaxonomyError as err:
                line = int(np.flatnonzero(texts == text)[0]) + 2
                raise InputFileError(
                    table.path, f'line {line}, column TAXONOMY: {err}'
                ) from None
        classes = np.array([cache[t][:4] for t in texts], dtype=np.int64).reshape(-1, 4)
        mid = np.array([cache[t][4] for t in texts], dtype=np.float64)
        weight = frame['_buildings'].to_numpy(dtype=np.float64)
        ok = unit >= 0
        u, w, c, m = unit[ok], weight[ok], classes[ok], mid[ok]
        for group in range(4):
            np.add.at(shares, (u, _GROUP_OFFSETS[group] + c[:, group]), w)
        np.add.at(total, u, w)
        known = np.isfinite(m)
        np.add.at(storeys_weight, u[known], w[known])
        np.add.at(storeys_sum, u[known], (w * m)[known])

    units = units.copy()
    area_km2 = units.geometry.to_crs(AREA_CRS).area.to_numpy() / 1e6
    with np.errstate(divide='ignore', invalid='ignore'):
        mean_storeys = np.where(storeys_weight > 0, storeys_sum / storeys_weight, 0.0)
        density = np.where(area_km2 > 0, total / area_km2, 0.0)
        fractions = shares / total[:, None]
    features = np.column_stack(
        [
            fractions,
            mean_storeys,
            np.log10(1 + density),
            np.log10(1 + total),
            np.zeros(len(units)),
        ]
    )
    features[total <= 0] = _missing_vector()
    units['buildings'] = total
    units['area_km2'] = area_km2
    for i, feature in enumerate(FEATURE_NAMES):
        units[feature] = features[:, i]
    return units, features
