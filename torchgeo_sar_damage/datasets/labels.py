# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Building damage labels: Copernicus EMS grading products and HOT/OSM damage tags."""

import datetime
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import shapely
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from pyproj import CRS
from torchgeo.datasets.utils import GeoSlice, Path, Sample

from ..errors import ArgumentError, InputFileError
from ._vector import InMemoryVectorDataset, drop_bad_geometries, find_column, read_table

#: The four damage grades of a Copernicus EMS grading product, least severe first
#: (literals as stored in ``damage_gra``; their position is the ``'four'`` class).
GRADES = ('No visible damage', 'Possibly damaged', 'Damaged', 'Destroyed')
#: ``damage_gra`` values that mean "no assessment": always unlabelled (-1).
UNLABELLED_GRADES = ('Not Analysed', 'Not Applicable')
#: Column names of OSM's ``destroyed:building`` tag (as tagged, colon replaced,
#: Shapefile-truncated to 10 characters).
DESTROYED_COLUMNS = ('destroyed:building', 'destroyed_building', 'destroyed_')
#: Column names of OSM's ``damage:date`` tag.
DATE_COLUMNS = ('damage:date', 'damage_date', 'damage_dat')
#: Label of an unlabelled building.
UNLABELLED = -1


class DamageLabels(InMemoryVectorDataset):
    """Building damage labels: Copernicus EMS grading and HOT/OSM damage tags.

    **Copernicus EMS Rapid Mapping grading products** (for the 2023 Türkiye
    earthquakes, activation EMSR648, one product per area of interest, AOI) grade each
    building outline by photo-interpretation of post-event very-high-resolution
    imagery. The vector package holds one layer per theme, named
    ``EMSRNNN_AOINN_GRA_PRODUCT_<layer>_rN_vN`` (see :attr:`filename_regex`); the
    built-up areas layer ``builtUpA`` is read, as GeoJSON (``.json``) or Shapefile as
    delivered, from the field ``damage_gra`` (Damage Grading):

    ====================  ==========  ========
    ``damage_gra``        ``binary``  ``four``
    ====================  ==========  ========
    Destroyed             1           3
    Damaged               1           2
    Possibly damaged      0           1
    No visible damage     0           0
    Not Analysed          -1          -1
    Not Applicable        -1          -1
    ====================  ==========  ========

    The binary rule is configurable: ``positive`` and ``negative`` list the grades of
    each class, and a grade in neither is unlabelled, e.g.
    ``negative=('No visible damage',)`` drops "Possibly damaged" and
    ``positive=('Destroyed', 'Damaged', 'Possibly damaged')`` moves it (a class left
    at its default loses the grades given to the other one). Values are
    compared without regard to case and surrounding spaces; an empty value is
    unlabelled; any other value is an error naming the file, never a silent class.
    Products are downloaded (free, with a login) from the CEMS portal,
    https://emergency.copernicus.eu/mapping/list-of-components/EMSR648 .

    **HOT / OpenStreetMap damage tags**: after the earthquakes, mappers tagged
    collapsed buildings ``destroyed:building=yes`` with ``damage:date=2023-02-06``;
    HOT exports them to HDX as ``hotosm_tur_destroyed_buildings``, and a buildings
    extract carrying the tag (``hotosm_tur_buildings`` with that column) gives both
    classes, as QuickQuakeBuildings (Sun et al., 2024) used them: a feature with
    ``destroyed:building=yes`` is Destroyed (positive), every other feature of the file
    is No visible damage (negative). With ``damage_date``, only tags of that date are
    positive and destroyed buildings of other dates are unlabelled. A ``hotosm_*``
    buildings file without the tag column is not a label layer and is skipped.

    Each sample is a dict with ``label`` (int64 scalar: the label of the smallest
    labelled-layer polygon containing the window centre, -1 where that polygon is
    unlabelled or there is none), ``bounds`` and ``transform``. The polygons are held
    in memory (:attr:`labels`); :meth:`building_labels` and :meth:`labelled` assign
    them to a footprint layer by largest overlap. A window outside the bounds of every
    file raises :class:`IndexError`, as in any TorchGeo dataset (sample labelled
    buildings only, e.g. with the sampler's labelled-only filter).

    .. note::

       Grading from above under-estimates damage: pancake collapses under an intact
       roof slab and damage to walls look like "No visible damage" or "Possibly
       damaged". "Not Analysed" and "Not Applicable" mean no assessment, not "no
       damage". OSM tags are complete only where mappers worked, so untagged
       buildings are negatives with label noise. EMS outlines come from their own
       pre-event source and can be offset from OSM footprints.

    Licence: Copernicus EMS products are free to use with attribution ("© European
    Union, Copernicus Emergency Management Service") under the `Copernicus EMS terms
    and conditions <https://mapping.emergency.copernicus.eu/terms-and-conditions>`_;
    OSM data © OpenStreetMap contributors, `ODbL 1.0
    <https://opendatacommons.org/licenses/odbl/1.0/>`_.

    A file named in ``paths`` is read whatever its name (the regex filters
    directory searches only); one that is not a label layer is refused saying so. ``&`` keeps one key per modality, unlike TorchGeo's
    channel concatenation (see :class:`~torchgeo_sar_damage.datasets.utils.ModalityMixin`).

    .. versionadded:: 0.1

    .. versionchanged:: 0.2
       Named files are read whatever their name.
    """

    filename_glob = '*'

    #: Copernicus EMS built-up grading layers and HOT exports.
    filename_regex = r"""
        ^(?:
            (?P<activation>EMSR[0-9]{3,})     # activation, EMSR648 for 2023 Türkiye
            _(?P<aoi>AOI[0-9]{2,})           # area of interest
            _(?P<map_type>GRA)               # map type: damage grading
            _(?P<product>PRODUCT|MONIT[0-9]{2})  # first product or monitoring N
            _(?P<layer>builtUpA)             # built-up areas (polygons)
            _(?P<release>r[0-9]+)            # release
            _(?P<version>v[0-9]+)            # version
          |
            hotosm_(?P<country>[a-z]{3})     # HOT export, ISO 3166 alpha-3 country
            _(?:destroyed_)?buildings        # the damage layer or a buildings extract
            _polygons(?:_[a-z]+)?            # HDX appends the format, e.g. _geojson
        )
        \.(?:json|geojson|shp|gpkg)$
    """

    def __init__(
        self,
        paths: Path | Iterable[Path] = 'data',
        crs: CRS | None = None,
        res: float | tuple[float, float] | None = None,
        scheme: Literal['binary', 'four'] = 'binary',
        positive: Sequence[str] | None = None,
        negative: Sequence[str] | None = None,
        damage_date: str | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
        layer: str | int | None = None,
    ) -> None:
        """Initialise a new DamageLabels instance.

        Args:
            paths: one or more files or directories (searched recursively).
            crs: CRS to re-project to (default: that of the first file).
            res: resolution in CRS units (default: 1 for projected CRSs, 1e-5 degrees
                for geographic ones).
            scheme: ``'binary'`` (damaged 1 / undamaged 0) or ``'four'`` (grades 0-3).
            positive: grades labelled 1 under ``'binary'`` (default
                ``('Destroyed', 'Damaged')``, less any grade given in ``negative``).
            negative: grades labelled 0 under ``'binary'`` (default
                ``('Possibly damaged', 'No visible damage')``, less any grade given
                in ``positive``).
            damage_date: if given, only OSM ``destroyed:building`` tags with this
                ``damage:date`` (e.g. ``'2023-02-06'``) are positive.
            transforms: function applied to each sample.
            layer: layer of multi-layer files (first by default).

        Raises:
            ArgumentError: if the scheme is unknown, or ``positive``/``negative``
                name unknown grades, overlap, are empty or are given with ``'four'``.
            DatasetNotFoundError: if no label file is found.
            InputFileError: if a file cannot be read, lacks ``damage_gra`` or has
                grade values that are not EMS grades.
        """
        self.scheme = scheme
        self.mapping = self._mapping(scheme, positive, negative)
        self.damage_date = damage_date
        super().__init__(paths, crs, res, transforms, layer)

    @staticmethod
    def _mapping(
        scheme: str, positive: Sequence[str] | None, negative: Sequence[str] | None
    ) -> dict[str, int]:
        """Grade -> label under a scheme (grades absent are unlabelled).

        Args:
            scheme: ``'binary'`` or ``'four'``.
            positive: grades of class 1 (binary).
            negative: grades of class 0 (binary).

        Returns:
            The mapping.

        Raises:
            ArgumentError: on an unknown scheme or inconsistent grade lists.
        """
        if scheme == 'four':
            if positive is not None or negative is not None:
                raise ArgumentError(
                    "positive/negative apply to scheme='binary' only; the 'four' "
                    f'scheme maps {dict(enumerate(GRADES))}'
                )
            return {g: i for i, g in enumerate(GRADES)}
        if scheme != 'binary':
            raise ArgumentError(
                f"scheme={scheme!r} is not known: use 'binary' or 'four'"
            )
        default_pos = ('Destroyed', 'Damaged')
        default_neg = ('Possibly damaged', 'No visible damage')
        pos = tuple(positive) if positive is not None else None
        neg = tuple(negative) if negative is not None else None
        # a grade moved into one class leaves the other class's default
        if pos is None:
            pos = tuple(g for g in default_pos if neg is None or g not in neg)
        if neg is None:
            neg = tuple(g for g in default_neg if g not in pos)
        for name, grades in (('positive', pos), ('negative', neg)):
            unknown = sorted(set(grades) - set(GRADES))
            if unknown:
                raise ArgumentError(
                    f'{name}={grades!r}: {unknown} are not damage grades; choose '
                    f'from {GRADES}'
                )
            if not grades:
                raise ArgumentError(f'{name} is empty: give at least one grade')
        both = sorted(set(pos) & set(neg))
        if both:
            raise ArgumentError(
                f'{both} are both positive and negative; give each grade one class'
            )
        return {**dict.fromkeys(neg, 0), **dict.fromkeys(pos, 1)}

    def _load(self, path: str) -> gpd.GeoDataFrame | None:
        """Read one EMS grading layer or OSM tag file into grades.

        Args:
            path: the file.

        Returns:
            ``grade``, ``source`` and geometry, or None for a HOT buildings file
            without the damage tag.

        Raises:
            InputFileError: if an EMS layer lacks ``damage_gra`` or has unknown grades.
        """
        raw = read_table(path, self.layer)
        grade_column = find_column(raw, ('damage_gra',))
        tag_column = find_column(raw, DESTROYED_COLUMNS)
        if grade_column is not None:
            grades = self._ems_grades(raw[grade_column], path)
            source = 'ems'
        elif tag_column is not None:
            grades = self._tag_grades(raw, tag_column)
            source = 'osm'
        elif re.match(self.filename_regex, os.path.basename(path), re.VERBOSE) and (
            os.path.basename(path).startswith('hotosm_')
        ):
            return None
        else:
            raise InputFileError(
                path,
                "has no 'damage_gra' field (Copernicus EMS grading) nor a "
                "'destroyed:building' column (OSM): not a damage label layer",
            )
        table = gpd.GeoDataFrame(
            {'grade': grades, 'source': source},
            geometry=raw.geometry.values,
            crs=raw.crs,
        )
        return drop_bad_geometries(table, path)

    @staticmethod
    def _ems_grades(values: pd.Series, path: str) -> list[str | None]:
        """Canonical grade literals of a ``damage_gra`` column.

        Args:
            values: the column.
            path: the file, for errors.

        Returns:
            One canonical literal (or None where empty) per row.

        Raises:
            InputFileError: if a value is not an EMS grade.
        """
        canonical = {g.casefold(): g for g in GRADES + UNLABELLED_GRADES}
        grades: list[str | None] = []
        unknown: set[str] = set()
        for value in values:
            if value is None or (isinstance(value, float) and np.isnan(value)):
                grades.append(None)
                continue
            text = str(value).strip()
            if not text:
                grades.append(None)
            elif text.casefold() in canonical:
                grades.append(canonical[text.casefold()])
            else:
                unknown.add(text)
                grades.append(None)
        if unknown:
            raise InputFileError(
                path,
                f'damage_gra has values that are not Copernicus EMS grades: '
                f'{sorted(unknown)}; expected {list(GRADES + UNLABELLED_GRADES)}. '
                'Fix or remove those features.',
            )
        return grades

    def _tag_grades(self, raw: pd.DataFrame, tag_column: str) -> list[str | None]:
        """Grades from OSM's ``destroyed:building`` (and ``damage:date``) tags.

        Args:
            raw: the file's features.
            tag_column: the column of ``destroyed:building``.

        Returns:
            ``'Destroyed'`` where tagged yes (of ``damage_date``, if set), None where
            destroyed at another date, else ``'No visible damage'``.
        """

        def text(column: str | None) -> list[str]:
            if column is None:
                return [''] * len(raw)
            # GDAL parses ISO dates of GeoJSON/GeoPackage into datetimes
            return [
                ''
                if pd.isna(v)
                else v.strftime('%Y-%m-%d')
                if isinstance(v, datetime.date)
                else str(v).strip()
                for v in raw[column]
            ]

        tagged = np.array([v.lower() == 'yes' for v in text(tag_column)], dtype=bool)
        other_date = np.zeros(len(raw), dtype=bool)
        if self.damage_date is not None:
            dates = np.array(text(find_column(raw, DATE_COLUMNS)), dtype=object)
            other_date = tagged & (dates != self.damage_date)
        return [
            None if late else ('Destroyed' if yes else 'No visible damage')
            for yes, late in zip(tagged, other_date)
        ]

    def _set_features(self, table: gpd.GeoDataFrame) -> None:
        """Install the polygons with their labels under the scheme.

        Args:
            table: polygons in the dataset CRS.
        """
        label = np.array(
            [
                self.mapping.get(g, UNLABELLED) if g else UNLABELLED
                for g in table['grade']
            ],
            dtype=np.int64,
        )
        table = table.assign(label=label)[['label', 'grade', 'source', 'geometry']]
        super()._set_features(table)
        self._labels = label

    @property
    def labels(self) -> gpd.GeoDataFrame:
        """All polygons of the label layers, in the dataset CRS.

        Columns: ``label`` (int64 under the scheme, -1 unlabelled), ``grade`` (the
        EMS grade literal; for OSM tags Destroyed / No visible damage; None where
        empty), ``source`` (``'ems'`` or ``'osm'``) and ``geometry``.

        Returns:
            The label table (do not modify it in place).
        """
        return self._features

    def building_labels(self, buildings: gpd.GeoDataFrame) -> np.ndarray:
        """Label of each building of a footprint layer.

        Rule: each footprint takes the label of the polygon it overlaps most (by
        area; ties: the first polygon), so a footprint mostly inside a "Not
        Analysed" polygon is unlabelled. A footprint overlapping no polygon is -1.

        Args:
            buildings: footprints (any CRS, e.g. ``OSMBuildings.buildings``).

        Returns:
            int64 array, one label per building, in order.

        Raises:
            ArgumentError: if ``buildings`` has no CRS.
        """
        if buildings.crs is None:
            raise ArgumentError('buildings has no CRS; set one with set_crs()')
        geoms = np.asarray(buildings.to_crs(self.crs).geometry.array, dtype=object)
        out = np.full(len(geoms), UNLABELLED, dtype=np.int64)
        if len(geoms) == 0:
            return out
        b, p = self._tree.query(geoms, predicate='intersects')
        overlap = np.asarray(
            shapely.area(shapely.intersection(geoms[b], self._geoms[p])), dtype=float
        )
        keep = overlap > 0
        b, p, overlap = b[keep], p[keep], overlap[keep]
        order = np.lexsort((p, -overlap, b))
        b, p = b[order], p[order]
        first = np.r_[True, b[1:] != b[:-1]] if len(b) else np.zeros(0, dtype=bool)
        out[b[first]] = self._labels[p[first]]
        return out

    def labelled(self, buildings: gpd.GeoDataFrame) -> np.ndarray:
        """Which buildings of a footprint layer have a label (see :meth:`building_labels`).

        Args:
            buildings: footprints (any CRS).

        Returns:
            Boolean array, one per building, in order.
        """
        return self.building_labels(buildings) >= 0

    def _sample(self, index: GeoSlice) -> Sample:
        """The label under the window centre.

        Args:
            index: the query.

        Returns:
            ``label``, ``bounds``, ``transform``.
        """
        box, _, transform = self._window(index)
        x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        rows = self._tree.query(shapely.Point(x, y), predicate='intersects')
        covering = self._under_point(np.sort(rows), x, y)
        label = int(self._labels[covering[0]]) if len(covering) else UNLABELLED
        sample = self._base_sample(index, transform)
        sample['label'] = torch.tensor(label, dtype=torch.int64)
        return sample

    def plot(
        self, sample: Sample, show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Plot the label polygons of a sample's window and its label.

        Args:
            sample: a sample returned by :meth:`__getitem__`.
            show_titles: show the label above the panel.
            suptitle: optional figure title.

        Returns:
            A matplotlib Figure with the rendered sample.
        """
        bounds = sample['bounds'].tolist()
        xmin, xmax, ymin, ymax = bounds[0], bounds[1], bounds[3], bounds[4]
        rows = self._in_window((xmin, ymin, xmax, ymax))
        classes = max(self.mapping.values()) + 1
        colours = plt.get_cmap('RdYlGn_r', classes)
        fig, ax = plt.subplots(figsize=(4, 4))
        handles = []
        for value in [UNLABELLED, *range(classes)]:
            colour = 'lightgrey' if value == UNLABELLED else colours(value)
            chosen = rows[self._labels[rows] == value]
            if len(chosen):
                gpd.GeoSeries(self._geoms[chosen]).plot(
                    ax=ax, color=colour, edgecolor='black', linewidth=0.5
                )
            handles.append(Patch(color=colour, label=str(value)))
        ax.plot((xmin + xmax) / 2, (ymin + ymax) / 2, 'k+', markersize=12)
        ax.set_xlim(xmin, xmax)
        ax.set_ylim(ymin, ymax)
        ax.set_aspect('equal')
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(handles=handles, title='label', loc='upper right', fontsize='small')
        if show_titles and 'label' in sample:
            ax.set_title(f'label {int(sample["label"])} ({self.scheme})')
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig
