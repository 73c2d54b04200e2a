# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""BRIGHT (IEEE GRSS DFC 2025 track 2) as one sample per building."""

import hashlib
import json
import math
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
import rasterio.errors
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from pyproj import CRS
from rasterio.io import DatasetReader
from rasterio.windows import Window
from scipy import ndimage
from torchgeo.datasets import BRIGHTDFC2025, DatasetNotFoundError, NonGeoDataset
from tqdm.auto import tqdm

from ..errors import ArgumentError, InputFileError, OutputError, SARDamageError
from ..utils import write_atomic

#: A BRIGHT tile id, ``<event>_<number>``: the event (lower-case words joined by
#: ``-``, and ``_`` inside one name, e.g. ``la_palma-volcano``) is everything before
#: the last underscore, the number has eight digits (``turkey-earthquake_00000413``).
TILE_ID = re.compile(r'^(?P<event>[A-Za-z0-9][A-Za-z0-9_-]*)_(?P<number>\d{8})$')

#: Version of the per-building index; part of the cache signature.
INDEX_VERSION = 1

#: 8-connectivity: building pixels that share an edge or a corner are one building.
CONNECTIVITY = np.ones((3, 3), dtype=bool)

#: Columns of the per-building index (one row per building) and their types.
INDEX_COLUMNS: dict[str, str] = {
    'tile': 'str',  # tile id
    'event': 'str',  # event of the tile (TILE_ID's 'event')
    'component': 'int64',  # 1-based, in raster order of each component's first pixel
    'building_id': 'int64',  # unique over the dataset and stable (see building_id)
    'grade': 'int64',  # worst target class of the component: 1, 2 or 3
    'row_min': 'int64',  # bounding box in tile pixels, maxima exclusive
    'row_max': 'int64',
    'col_min': 'int64',
    'col_max': 'int64',
    'centroid_row': 'float64',  # mean of pixel centres (0.5 is the first pixel's)
    'centroid_col': 'float64',
    'seed_row': 'int64',  # the component's first pixel in raster order
    'seed_col': 'int64',
    'pixels': 'int64',  # area in pixels
    'edge': 'bool',  # the component touches the tile's edge
    'height': 'int64',  # tile size in pixels
    'width': 'int64',
    'res_x_m': 'float64',  # tile pixel size in metres (east-west, north-south)
    'res_y_m': 'float64',
}

#: Bits of a building id taken by the component number (the rest hash the tile id).
COMPONENT_BITS = 20

#: Rasters kept open per process and DataLoader worker (three per tile, least recently
#: used closed first); GDAL keeps the decoded blocks of open rasters in its cache.
MAX_OPEN = 96

#: Where BRIGHT can be had.
ZENODO_URL = 'https://zenodo.org/records/14619797'


def building_id(tile: str, component: int) -> int:
    """A building's id: unique over BRIGHT and independent of splits and tile lists.

    The top 43 bits are a BLAKE2b hash of the tile id, the low 20 the component
    number, so the id of a building never changes when tiles are added or removed.

    Args:
        tile: tile id.
        component: the building's 1-based component number in its tile.

    Returns:
        A non-negative int64 value.
    """
    digest = hashlib.blake2b(tile.encode(), digest_size=8).digest()
    # 63 bits in all, so the id is a non-negative int64
    prefix = int.from_bytes(digest, 'big') >> (COMPONENT_BITS + 1)
    return (prefix << COMPONENT_BITS) | component


def pixel_size_m(src: DatasetReader, path: str) -> tuple[float, float]:
    """Pixel size of a north-up raster in metres (east-west, north-south).

    In a projected CRS, the pixel size in CRS units times the unit's length in metres;
    in a geographic CRS (degrees), the geodesic length of one pixel east-west and
    north-south at the centre of the raster, on the CRS's ellipsoid.

    Args:
        src: an open raster.
        path: its path, for error messages.

    Returns:
        ``(res_x_m, res_y_m)``.

    Raises:
        InputFileError: if the raster has no CRS or is not north-up.
    """
    t = src.transform
    if src.crs is None:
        raise InputFileError(path, 'has no CRS: its pixel size in metres is unknown')
    if t.b != 0 or t.d != 0:
        raise InputFileError(path, f'is not north-up (transform {tuple(t)[:6]})')
    crs = CRS.from_user_input(src.crs.to_wkt())
    if crs.is_geographic:
        geod = crs.get_geod()
        assert geod is not None
        lon, lat = t.c + t.a * src.width / 2, t.f + t.e * src.height / 2
        dx = geod.inv(lon - t.a / 2, lat, lon + t.a / 2, lat)[2]
        dy = geod.inv(lon, lat - t.e / 2, lon, lat + t.e / 2)[2]
        return abs(dx), abs(dy)
    factor = crs.axis_info[0].unit_conversion_factor
    return abs(t.a) * factor, abs(t.e) * factor


def label_tile(
    target: npt.NDArray[np.integer[Any]],
) -> tuple[npt.NDArray[np.int32], int]:
    """Buildings of a target raster: 8-connected components of classes 1-3.

    Args:
        target: BRIGHT target raster (0 background, 1-3 building).

    Returns:
        Component labels (0 background, 1 to n in raster order of each component's
        first pixel) and n.
    """
    labels, n = ndimage.label(target > 0, structure=CONNECTIVITY)
    return labels, int(n)


def tile_buildings(tile: str, path: str) -> pd.DataFrame:
    """The per-building index rows of one tile (see :data:`INDEX_COLUMNS`).

    Args:
        tile: tile id.
        path: its target raster.

    Returns:
        One row per building, in component order.

    Raises:
        InputFileError: if the raster cannot be read or is not a BRIGHT target.
    """
    try:
        with rasterio.open(path) as src:
            target = src.read(1)
            res_x_m, res_y_m = pixel_size_m(src, path)
    except rasterio.errors.RasterioIOError as err:
        raise InputFileError(path, f'cannot be read ({err})') from err
    if target.max(initial=0) > 3:
        raise InputFileError(
            path,
            f'holds the value {int(target.max())}; a BRIGHT target holds 0 '
            '(background), 1 (intact), 2 (damaged) and 3 (destroyed)',
        )
    labels, n = label_tile(target)
    if n >= 2**COMPONENT_BITS:
        raise InputFileError(path, f'holds {n} buildings, more than building_id allows')
    components = np.arange(1, n + 1)
    height, width = target.shape
    boxes = ndimage.find_objects(labels)
    _, first = np.unique(labels.ravel(), return_index=True)
    centroids = np.array(
        ndimage.center_of_mass(np.ones_like(labels), labels, components)
    ).reshape(n, 2)
    rows = {
        'tile': tile,
        'event': _event(tile),
        'component': components,
        'building_id': [building_id(tile, int(c)) for c in components],
        'grade': np.asarray(ndimage.maximum(target, labels, components), dtype=int),
        'row_min': [b[0].start for b in boxes],
        'row_max': [b[0].stop for b in boxes],
        'col_min': [b[1].start for b in boxes],
        'col_max': [b[1].stop for b in boxes],
        'centroid_row': centroids[:, 0] + 0.5,
        'centroid_col': centroids[:, 1] + 0.5,
        'seed_row': first[1:] // width,
        'seed_col': first[1:] % width,
        'pixels': np.bincount(labels.ravel(), minlength=n + 1)[1:],
        'height': height,
        'width': width,
        'res_x_m': res_x_m,
        'res_y_m': res_y_m,
    }
    frame = pd.DataFrame(rows, index=range(n))
    frame['edge'] = (
        (frame['row_min'] == 0)
        | (frame['col_min'] == 0)
        | (frame['row_max'] == height)
        | (frame['col_max'] == width)
    )
    return frame[list(INDEX_COLUMNS)]


def linear_weights(
    coords: npt.NDArray[np.float64], size: int
) -> npt.NDArray[np.float64]:
    """Linear interpolation weights along one axis.

    Args:
        coords: ``[n]`` point coordinates in pixel indices (0 is the first pixel's
            centre).
        size: number of pixels.

    Returns:
        ``[n, size]`` matrix; row i holds the weights of the two pixels around
        ``coords[i]`` (those beyond ``0..size-1`` are left out, not renormalised).
    """
    first = np.floor(coords).astype(np.int64)
    frac = coords - first
    weights = np.zeros((len(coords), size))
    points = np.arange(len(coords))
    for pixel, weight in ((first, 1 - frac), (first + 1, frac)):
        inside = (pixel >= 0) & (pixel < size)
        weights[points[inside], pixel[inside]] = weight[inside]
    return weights


def bilinear(
    values: npt.NDArray[np.float64],
    valid: npt.NDArray[np.bool_],
    rows: npt.NDArray[np.float64],
    cols: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """NaN-aware bilinear resampling of a block onto a grid of points.

    Each output value is the bilinear mean of the valid pixels among the four around
    the point, their weights renormalised (a normalised convolution); a point with no
    valid neighbour is NaN. Pixels beyond the block count as invalid. Where every
    pixel is valid this is :func:`scipy.ndimage.map_coordinates` with ``order=1``
    (and ``mode='grid-constant'``), computed as two matrix products because the
    points form a grid.

    Args:
        values: ``[C, h, w]`` block.
        valid: ``[C, h, w]`` mask of the values to use.
        rows: ``[n]`` row coordinates of the points in the block's pixel indices
            (0 is the centre of the first row).
        cols: ``[m]`` column coordinates, likewise.

    Returns:
        ``[C, n, m]`` values at the grid of points ``rows x cols``.
    """
    w_rows = linear_weights(rows, values.shape[1])
    w_cols = linear_weights(cols, values.shape[2])
    sums = w_rows @ np.where(valid, values, 0.0) @ w_cols.T
    weights = w_rows @ valid.astype(np.float64) @ w_cols.T
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(weights > 1e-6, sums / weights, np.nan)


def _pixel_span(
    coords: npt.NDArray[np.float64], size: int
) -> tuple[int, int, npt.NDArray[np.bool_]]:
    """Pixels of a tile axis needed to interpolate at ``coords`` (tile pixel units).

    Returns:
        First pixel, number of pixels (at least 1) and which coordinates lie in the
        tile.
    """
    first = min(max(math.floor(float(coords.min()) - 0.5), 0), size - 1)
    last = min(max(math.floor(float(coords.max()) - 0.5) + 1, 0), size - 1)
    return first, last - first + 1, (coords >= 0) & (coords < size)


class _BRIGHTFiles(BRIGHTDFC2025):
    """TorchGeo's BRIGHT file lists, without its download or extraction step."""

    def _verify(self) -> None:
        """Check nothing here: :class:`BRIGHTBuildings` names each missing file."""


class BRIGHTBuildings(NonGeoDataset):
    """BRIGHT (IEEE GRSS DFC 2025 track 2), one sample per building.

    `BRIGHT <https://github.com/ChenHongruixuan/BRIGHT>`__ (Chen et al., 2025) pairs
    pre-event optical images (RGB, 8 bits; Maxar, NAIP, NOAA, PNOA) with post-event
    VHR SAR (Capella Space and Umbra, 0.3-1 m, one 8-bit amplitude band) and a
    manually annotated building damage raster, as 1024 x 1024 GeoTIFF tiles of
    disasters worldwide (earthquakes in Turkey, Morocco, Haiti, Noto; floods, fires,
    volcanoes, explosions, hurricanes). TorchGeo reads the tiles as
    :class:`~torchgeo.datasets.BRIGHTDFC2025`; this class reads the same files and
    gives one sample per building, a window of fixed size in metres around it.

    Getting the data (once; nothing is downloaded here): TorchGeo's archive
    (:attr:`url`, 10.2 GB), e.g. ``BRIGHTDFC2025(root, download=True)``, or the
    authors' release at https://zenodo.org/records/14619797 laid out as below. The
    licence is CC BY-NC 4.0 (non-commercial use, with attribution). Layout, that of
    TorchGeo::

        root/dfc25_track2_trainval/
            train_setlevel.txt     tile ids of BRIGHT's train set
            holdout_setlevel.txt   tile ids of BRIGHT's holdout set
            val_setlevel.txt       tile ids of BRIGHT's val set
            train/pre-event/<id>_pre_disaster.tif       tiles of train and holdout
            train/post-event/<id>_post_disaster.tif
            train/target/<id>_building_damage.tif
            val/{pre-event,post-event,target}/...       tiles of val

    Tile ids are ``<event>_<8 digits>`` (:data:`TILE_ID`); the event is everything
    before the last underscore (``la_palma-volcano_00000001``). Target values are
    0 background, 1 intact, 2 damaged, 3 destroyed.

    Buildings: one building is one **8-connected** component of building pixels
    (classes 1-3) of a tile's target raster: pixels sharing an edge or a corner.
    A component holding several classes takes the **worst** (the maximum). A
    component that touches the tile edge is kept (it may be cut) and flagged ``edge``.

    Sample keys:

    * ``sar``: float32 ``[1, H, W]``, post-event amplitude as relative decibels,
      ``20 log10(DN)`` of the 8-bit digital number, DN 0 (nodata) as NaN; the
      products are scaled to 8 bits per image, so this is **not calibrated sigma
      nought** and levels differ between images;
    * ``optical``: float32 ``[3, H, W]``, pre-event RGB, 0-255;
    * ``footprint``: uint8 ``[1, H, W]``, 0 no building, 1 another building, 2 the
      building (from the target raster);
    * ``label``: int64 scalar, ``task='binary'``: 0 intact, 1 damaged or destroyed;
      ``task='grades'``: 0 intact, 1 damaged, 2 destroyed;
    * ``event`` and ``tile`` (str); ``building_id`` (int64 scalar, unique and
      stable: :func:`building_id`); ``edge`` (bool scalar).

    The window is a square of ``size_m`` metres centred on the building's centroid,
    on the tile's own grid (no reprojection), sampled at ``H = W =
    round(size_m / pixel_m)`` points, so windows of 0.3 m and 1 m tiles cover the
    same ground at the same pixel size. The tile's pixel size in metres comes from its
    transform: CRS units times their length for a projected CRS; for a geographic
    CRS (degrees), the geodesic length of a pixel at the tile's centre. SAR and
    optical are resampled bilinearly, NaN-aware (:func:`bilinear`: DN 0 and declared
    nodata are left out and the weights of the rest renormalised; SAR is
    interpolated as amplitude, then converted to dB); the footprint takes the
    nearest pixel. Outside the tile SAR and optical are NaN and the footprint 0.

    Splits: BRIGHT's own lists (``split='train'``, ``'holdout'``, ``'val'``:
    TorchGeo's ``'train'``, ``'val'``, ``'test'``, see :attr:`torchgeo_splits`;
    TorchGeo's archive has no targets for BRIGHT's val tiles, so ``'val'`` needs
    them added), or leave-one-event-out with ``test_events``: ``split='train'`` gives
    the buildings of the other events and ``split='test'`` those of ``test_events``,
    both from the labelled tiles of the train and holdout lists.
    ``earthquakes_only=True`` keeps events whose name contains ``earthquake``.

    The per-building index (:attr:`index`, columns :data:`INDEX_COLUMNS`) of every
    listed tile with a target is built once, with a progress bar, and cached as CSV
    with a JSON signature (tile ids, sizes and modification times of the targets):
    beside the data (``root/bright_buildings_index.csv``), or in ``cache_dir``, or,
    where ``root`` cannot be written, in ``$XDG_CACHE_HOME/torchgeo_sar_damage``.
    Any change of the tiles builds it again.

    If you use this dataset in your research, please cite:

    * Chen, H., Song, J., Dietrich, O., Broni-Bediako, C., Xuan, W., Wang, J., Shao,
      X., Wei, Y., Xia, J., Lan, C., Schindler, K., Yokoya, N., 2025. BRIGHT: A
      globally distributed multimodal building damage assessment dataset with
      very-high-resolution for all-weather disaster response. arXiv:2501.06019.
      https://arxiv.org/abs/2501.06019

    .. versionadded:: 0.1
    """

    #: Folder of the dataset under ``root`` (TorchGeo's).
    data_dir = BRIGHTDFC2025.data_dir

    #: TorchGeo's archive of BRIGHT, the layout read here.
    url = BRIGHTDFC2025.url

    #: BRIGHT's split lists.
    split_files: ClassVar[dict[str, str]] = {
        'train': 'train_setlevel.txt',
        'holdout': 'holdout_setlevel.txt',
        'val': 'val_setlevel.txt',
    }

    #: BRIGHT's split names -> TorchGeo's (``BRIGHTDFC2025(split=...)``).
    torchgeo_splits: ClassVar[dict[str, Literal['train', 'val', 'test']]] = {
        'train': 'train',
        'holdout': 'val',
        'val': 'test',
    }

    #: Class names of each task, by label value.
    tasks: ClassVar[dict[str, tuple[str, ...]]] = {
        'binary': ('intact', 'damaged or destroyed'),
        'grades': ('intact', 'damaged', 'destroyed'),
    }

    #: Name of the cached index (``.csv``) and its signature (``.json``).
    index_name = 'bright_buildings_index'

    def __init__(
        self,
        root: str | os.PathLike[str] = 'data',
        split: Literal['train', 'holdout', 'val', 'test'] = 'train',
        *,
        task: Literal['binary', 'grades'] = 'binary',
        size_m: float = 32.0,
        pixel_m: float = 0.5,
        test_events: Sequence[str] | None = None,
        earthquakes_only: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        progress: bool = True,
    ) -> None:
        """Initialise a new BRIGHTBuildings dataset, building its index if needed.

        Args:
            root: folder holding ``dfc25_track2_trainval``.
            split: ``'train'``, ``'holdout'`` or ``'val'`` (BRIGHT's lists), or with
                ``test_events``, ``'train'`` (other events) or ``'test'``.
            task: ``'binary'`` (damaged or destroyed vs intact) or ``'grades'``.
            size_m: window side in metres.
            pixel_m: output pixel size in metres (the window has
                ``round(size_m / pixel_m)`` pixels a side).
            test_events: events held out for leave-one-event-out.
            earthquakes_only: keep only events whose name contains ``earthquake``.
            cache_dir: folder of the cached index (default: beside the data).
            transforms: a function applied to each sample.
            progress: show a progress bar while building the index.

        Raises:
            ArgumentError: if an argument is invalid or an event unknown.
            DatasetNotFoundError: if ``root`` holds no ``dfc25_track2_trainval``
                (the message says where to get BRIGHT).
            InputFileError: if a split list or a tile file is missing, a tile id is
                malformed or a target raster is not one.
        """
        self.test_events = _check_arguments(split, task, size_m, pixel_m, test_events)
        self.root = Path(root)
        self.split = split
        self.task = task
        self.size_m = size_m
        self.pixel_m = pixel_m
        self.size_px = round(size_m / pixel_m)
        self.earthquakes_only = earthquakes_only
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.transforms = transforms
        self.progress = progress
        self.cache_path: Path | None = None
        self._check_root()
        self.lists, self.paths = self._read_lists()
        self.tiles = self._select_tiles()
        self._check_tiles()
        index = self._load_index()
        self.index = index[index['tile'].isin(self.tiles)].reset_index(drop=True)
        self.events = sorted(set(self.index['event']))
        self._columns = {c: self.index[c].to_numpy() for c in self.index.columns}
        self._handles: OrderedDict[str, DatasetReader] = OrderedDict()
        self._pid = os.getpid()

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names of the task, by label value."""
        return self.tasks[self.task]

    def _check_root(self) -> None:
        """Check the data folder (DatasetNotFoundError) and split lists (InputFileError)."""
        folder = self.root / self.data_dir
        if not folder.is_dir():
            archive = self.root / f'{self.data_dir}.zip'
            hint = (
                f' {archive} is there: extract it (BRIGHTDFC2025(root) does).'
                if archive.is_file()
                else ''
            )
            error = DatasetNotFoundError(self)
            error.args = (
                (
                    f'{error.args[0]} BRIGHT (DFC 2025 track 2) not found: {folder} does '
                    f'not exist.{hint} Get it once (10.2 GB, CC BY-NC 4.0) from '
                    f'{self.url}, e.g. torchgeo.datasets.BRIGHTDFC2025(root, '
                    f'download=True), or from {ZENODO_URL}, and give its parent folder as '
                    'root; nothing is downloaded here.'
                ),
            )
            raise error
        for name in self.split_files.values():
            if not (folder / name).is_file():
                raise InputFileError(
                    folder / name,
                    'BRIGHT split list missing; the data folder is incomplete: '
                    f"extract TorchGeo's archive ({self.url}) again",
                )

    def _read_lists(self) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
        """Tile ids of each BRIGHT list and each tile's paths, from TorchGeo's logic."""
        lists: dict[str, list[str]] = {}
        paths: dict[str, dict[str, str]] = {}
        for split, name in self.split_files.items():
            files = _BRIGHTFiles(os.fspath(self.root), self.torchgeo_splits[split])
            lists[split] = []
            for line, sample in enumerate(files.sample_paths, start=1):
                tile = os.path.basename(sample['image_pre'])
                tile = tile.removesuffix('_pre_disaster.tif')
                if not TILE_ID.fullmatch(tile):
                    raise InputFileError(
                        self.root / self.data_dir / name,
                        f'line {line}: {tile!r} is not a BRIGHT tile id '
                        "'<event>_<8 digits>' (e.g. 'turkey-earthquake_00000413'); "
                        'fix or remove the line',
                    )
                folder = os.path.dirname(os.path.dirname(sample['image_post']))
                target = os.path.join(folder, 'target', f'{tile}_building_damage.tif')
                paths[tile] = {
                    'pre': sample['image_pre'],
                    'post': sample['image_post'],
                    'target': sample.get('target', target),
                }
                lists[split].append(tile)
        return lists, paths

    def _select_tiles(self) -> list[str]:
        """Tiles of the split, after the event filters."""
        if self.test_events is None:
            tiles = self.lists[self.split]
        else:
            tiles = self.lists['train'] + self.lists['holdout']
            known = sorted({_event(t) for t in tiles})
            if self.earthquakes_only:
                known = [e for e in known if 'earthquake' in e]
            unknown = [e for e in self.test_events if e not in known]
            if unknown:
                kind = 'earthquake ' if self.earthquakes_only else ''
                raise ArgumentError(
                    f"test_events: {unknown} not among the {kind}events of BRIGHT's "
                    f'train and holdout lists in {self.root}: {known}'
                )
            held_out = set(self.test_events)
            tiles = [
                t for t in tiles if (_event(t) in held_out) == (self.split == 'test')
            ]
        if self.earthquakes_only:
            tiles = [t for t in tiles if 'earthquake' in _event(t)]
        return tiles

    def _check_tiles(self) -> None:
        for tile in self.tiles:
            for kind, path in self.paths[tile].items():
                if os.path.isfile(path):
                    continue
                problem = f'missing: the {kind} raster of BRIGHT tile {tile}'
                if kind == 'target' and tile in self.lists['val']:
                    problem += (
                        "; TorchGeo's archive has no targets for BRIGHT's val list "
                        "(add them, or use split='holdout' for evaluation)"
                    )
                else:
                    problem += (
                        f"; extract TorchGeo's archive ({self.url}) again, or remove "
                        'the tile from its list'
                    )
                raise InputFileError(path, problem)

    def _load_index(self) -> pd.DataFrame:
        """The index of every listed tile with a target, from the cache or built."""
        targets = {
            tile: paths['target']
            for tile, paths in sorted(self.paths.items())
            if os.path.isfile(paths['target'])
        }
        signature = _signature(targets, self.root / self.data_dir)
        candidates = self._cache_candidates()
        for path in candidates:
            index = _read_cache(path, signature)
            if index is not None:
                self.cache_path = path
                return index
        index = self._build_index(targets)
        problems = []
        for path in candidates:
            try:
                _write_cache(path, index, signature)
            except OutputError as err:
                problems.append(str(err))
                continue
            self.cache_path = path
            return index
        warnings.warn(
            'the BRIGHT building index could not be cached, it will be built again '
            f'next time: {"; ".join(problems)}; give a writable cache_dir',
            stacklevel=3,
        )
        return index

    def _cache_candidates(self) -> list[Path]:
        """Cache files to try, in order (the first writable one is written)."""
        key = hashlib.sha256(os.fsencode(self.root.resolve())).hexdigest()[:12]
        name = f'{self.index_name}_{key}.csv'
        if self.cache_dir is not None:
            return [self.cache_dir / name]
        user = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache')
        return [
            self.root / f'{self.index_name}.csv',
            user / 'torchgeo_sar_damage' / name,
        ]

    def _build_index(self, targets: dict[str, str]) -> pd.DataFrame:
        """Label every target raster (one row per building, tiles in id order)."""
        frames = [
            tile_buildings(tile, path)
            for tile, path in tqdm(
                targets.items(),
                desc='indexing BRIGHT buildings',
                unit='tile',
                disable=not self.progress,
            )
        ]
        index = pd.concat(
            [_empty_index(), *[f for f in frames if len(f)]], ignore_index=True
        ).astype(INDEX_COLUMNS)
        duplicated = index['building_id'].duplicated()
        if duplicated.any():
            tiles = sorted(set(index.loc[duplicated, 'tile']))
            raise SARDamageError(
                f'building ids of tiles {tiles} collide; please report this'
            )
        return index

    def __len__(self) -> int:
        """Number of buildings."""
        return len(self.index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return the window of one building.

        Args:
            index: position of the building in :attr:`index`.

        Returns:
            The sample (keys in the class description).

        Raises:
            IndexError: if index is out of range.
            InputFileError: if a tile raster cannot be read or does not match the
                target's grid.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)} buildings')
        col = self._columns
        tile = str(col['tile'][index])
        paths = self.paths[tile]
        rows, cols = self._window(index)
        amplitude = self._read(paths['post'], index, [1], rows, cols, sar=True)
        with np.errstate(divide='ignore'):
            sar = 20 * np.log10(amplitude)
        optical = self._read(paths['pre'], index, [1, 2, 3], rows, cols, sar=False)
        grade = int(col['grade'][index])
        label = int(grade >= 2) if self.task == 'binary' else grade - 1
        sample: dict[str, Any] = {
            'sar': torch.from_numpy(sar.astype(np.float32)),
            'optical': torch.from_numpy(optical.astype(np.float32)),
            'footprint': torch.from_numpy(self._footprint(index, rows, cols)),
            'label': torch.tensor(label, dtype=torch.int64),
            'event': str(col['event'][index]),
            'tile': tile,
            'building_id': torch.tensor(int(col['building_id'][index])),
            'edge': torch.tensor(bool(col['edge'][index])),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _window(
        self, index: int
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Row and column coordinates (tile pixels) of the window's pixel centres."""
        col = self._columns
        steps = (np.arange(self.size_px) + 0.5) / self.size_px - 0.5
        rows = col['centroid_row'][index] + steps * self.size_m / col['res_y_m'][index]
        cols = col['centroid_col'][index] + steps * self.size_m / col['res_x_m'][index]
        return rows, cols

    def _read(
        self,
        path: str,
        index: int,
        bands: list[int],
        rows: npt.NDArray[np.float64],
        cols: npt.NDArray[np.float64],
        *,
        sar: bool,
    ) -> npt.NDArray[np.float64]:
        """Bands of a tile raster resampled at the window's points (NaN outside)."""
        src = self._open(path, index)
        r0, h, inside_r = _pixel_span(rows, src.height)
        c0, w, inside_c = _pixel_span(cols, src.width)
        try:
            block = src.read(bands, window=Window(c0, r0, w, h)).astype(np.float64)
        except rasterio.errors.RasterioIOError as err:
            raise InputFileError(path, f'cannot be read ({err})') from err
        if sar:
            valid = block > 0
        elif src.nodata is not None:
            valid = block != src.nodata
        else:
            valid = np.ones(block.shape, dtype=bool)
        out = bilinear(block, valid, rows - r0 - 0.5, cols - c0 - 0.5)
        out[:, ~inside_r] = np.nan
        out[:, :, ~inside_c] = np.nan
        return out

    def _footprint(
        self, index: int, rows: npt.NDArray[np.float64], cols: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.uint8]:
        """Footprint window: 2 the building, 1 other buildings, 0 none (nearest)."""
        col = self._columns
        src = self._open(self.paths[str(col['tile'][index])]['target'], index)
        ri, ci = np.floor(rows).astype(int), np.floor(cols).astype(int)
        inside_r = (ri >= 0) & (ri < src.height)
        inside_c = (ci >= 0) & (ci < src.width)
        box = (
            int(col['row_min'][index]),
            int(col['row_max'][index]),
            int(col['col_min'][index]),
            int(col['col_max'][index]),
        )
        r0 = min(int(ri[inside_r].min()), box[0])
        r1 = max(int(ri[inside_r].max()) + 1, box[1])
        c0 = min(int(ci[inside_c].min()), box[2])
        c1 = max(int(ci[inside_c].max()) + 1, box[3])
        target = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
        block = (target > 0).astype(np.uint8)
        inner = (slice(box[0] - r0, box[1] - r0), slice(box[2] - c0, box[3] - c0))
        labels, _ = label_tile(target[inner])
        seed = labels[col['seed_row'][index] - box[0], col['seed_col'][index] - box[2]]
        block[inner][labels == seed] = 2
        out = np.zeros((1, self.size_px, self.size_px), dtype=np.uint8)
        out[0][np.ix_(inside_r, inside_c)] = block[
            np.ix_(ri[inside_r] - r0, ci[inside_c] - c0)
        ]
        return out

    def _open(self, path: str, index: int) -> DatasetReader:
        """An open raster (kept open, a few per process), checked against the index."""
        if self._pid != os.getpid():  # a forked worker: do not share GDAL handles
            self._handles, self._pid = OrderedDict(), os.getpid()
        src = self._handles.pop(path, None)
        if src is None:
            try:
                src = rasterio.open(path)
            except rasterio.errors.RasterioIOError as err:
                raise InputFileError(path, f'cannot be read ({err})') from err
            while len(self._handles) >= max(MAX_OPEN, 1):
                self._handles.popitem(last=False)[1].close()
        self._handles[path] = src
        shape = (
            int(self._columns['height'][index]),
            int(self._columns['width'][index]),
        )
        if (src.height, src.width) != shape:
            raise InputFileError(
                path,
                f'is {src.height} x {src.width} pixels, its target {shape[0]} x '
                f"{shape[1]}: the tile's rasters must share one grid",
            )
        return src

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the open rasters (for DataLoader workers)."""
        state = self.__dict__.copy()
        state['_handles'] = OrderedDict()
        return state

    def plot(
        self,
        sample: dict[str, Any],
        show_titles: bool = True,
        suptitle: str | None = None,
    ) -> Figure:
        """Plot a sample: SAR, optical (building outlined) and footprint.

        Args:
            sample: a sample returned by :meth:`__getitem__` (with ``prediction``, a
                label value, shown beside the label).
            show_titles: show panel titles and the label.
            suptitle: optional figure title.

        Returns:
            A matplotlib Figure with the rendered sample.
        """
        footprint = np.asarray(sample['footprint'][0])
        fig, axs = plt.subplots(1, 3, figsize=(12, 4.4))
        axs[0].imshow(np.asarray(sample['sar'][0]), cmap='gray')
        optical = np.nan_to_num(np.asarray(sample['optical']).transpose(1, 2, 0))
        axs[1].imshow(np.clip(optical / 255, 0, 1))
        colours = ListedColormap(['white', 'lightgrey', 'tab:red'])
        axs[2].imshow(footprint, cmap=colours, vmin=0, vmax=2, interpolation='none')
        if (footprint == 2).any():
            for ax in axs[:2]:
                ax.contour(footprint == 2, levels=[0.5], colors='tab:red')
        for ax in axs:
            ax.set_xticks([])
            ax.set_yticks([])
        if show_titles:
            axs[0].set_title('post-event SAR (relative dB)')
            axs[1].set_title('pre-event optical')
            axs[2].set_title('footprint')
            title = f'{sample["tile"]}: {self.classes[int(sample["label"])]}'
            if 'prediction' in sample:
                title += f', predicted {self.classes[int(sample["prediction"])]}'
            fig.text(0.5, 0.02, title, ha='center')
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig


def _event(tile: str) -> str:
    """Event of a (checked) tile id."""
    return tile.rsplit('_', 1)[0]


def _check_arguments(
    split: str,
    task: str,
    size_m: float,
    pixel_m: float,
    test_events: Sequence[str] | None,
) -> list[str] | None:
    """Check the arguments of BRIGHTBuildings; return ``test_events`` as a list."""
    own = tuple(BRIGHTBuildings.split_files)
    if task not in BRIGHTBuildings.tasks:
        raise ArgumentError(f'task={task!r}: use one of {list(BRIGHTBuildings.tasks)}')
    if (
        not (math.isfinite(size_m) and math.isfinite(pixel_m))
        or min(size_m, pixel_m) <= 0
    ):
        raise ArgumentError(
            f'size_m={size_m}, pixel_m={pixel_m}: both must be positive numbers'
        )
    if size_m < pixel_m:
        raise ArgumentError(f'size_m={size_m} is smaller than one pixel ({pixel_m} m)')
    if test_events is None:
        if split not in own:
            raise ArgumentError(
                f'split={split!r}: use one of {list(own)}, or give test_events for '
                "a leave-one-event-out 'train'/'test' split"
            )
        return None
    events = [test_events] if isinstance(test_events, str) else list(test_events)
    if not events:
        raise ArgumentError('test_events is empty: name at least one event')
    if split not in ('train', 'test'):
        raise ArgumentError(
            f"split={split!r} with test_events: use 'train' (other events) or 'test'"
        )
    return events


def _signature(targets: dict[str, str], folder: Path) -> str:
    """Hash of the index version and each target's tile, path, size and mtime."""
    entries: list[Any] = [INDEX_VERSION]
    for tile, path in targets.items():
        stat = os.stat(path)
        entries.append(
            [tile, os.path.relpath(path, folder), stat.st_size, stat.st_mtime_ns]
        )
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _empty_index() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in INDEX_COLUMNS.items()})


def _read_cache(path: Path, signature: str) -> pd.DataFrame | None:
    """The cached index at ``path`` if its signature matches, else None."""
    try:
        meta = json.loads(path.with_suffix('.json').read_text(encoding='utf-8'))
        if meta.get('signature') != signature:
            return None
        index = pd.read_csv(path, dtype=INDEX_COLUMNS, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if len(index) != meta.get('buildings') or list(index.columns) != list(
        INDEX_COLUMNS
    ):
        return None
    return index


def _write_cache(path: Path, index: pd.DataFrame, signature: str) -> None:
    """Write the index and then its signature, each atomically."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(path.parent, f'cannot be created ({err})') from err
    write_atomic(path, lambda tmp: index.to_csv(tmp, index=False))
    meta = {
        'version': INDEX_VERSION,
        'signature': signature,
        'tiles': int(index['tile'].nunique()),
        'buildings': len(index),
        'columns': INDEX_COLUMNS,
    }
    write_atomic(
        path.with_suffix('.json'),
        lambda tmp: tmp.write_text(json.dumps(meta, indent=1), encoding='utf-8'),
    )
