#!/usr/bin/env python3

# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Make tiny BRIGHT (IEEE GRSS DFC 2025 track 2) tiles in the layout TorchGeo reads.

Layout (that of ``torchgeo.datasets.BRIGHTDFC2025`` and of its archive
``dfc25_track2_trainval_with_split.zip``)::

    dfc25_track2_trainval/
        train_setlevel.txt     ids of BRIGHT's train set (TorchGeo's 'train')
        holdout_setlevel.txt   ids of BRIGHT's holdout set (TorchGeo's 'val')
        val_setlevel.txt       ids of BRIGHT's val set (TorchGeo's 'test')
        train/{pre-event,post-event,target}/  tiles of the train and holdout lists
        val/{pre-event,post-event}/           tiles of the val list (no targets)

with ``<id>_pre_disaster.tif`` (RGB, uint8), ``<id>_post_disaster.tif`` (SAR, one
band, uint8) and ``<id>_building_damage.tif`` (uint8: 0 background, 1 intact,
2 damaged, 3 destroyed); ids are ``<event>_<8 digits>``.

Every tile is 64 x 64 pixels. Pre-event RGB is R = 2 column, G = 2 row, B = 7 (so a
resampled window can be checked against its geometry); post-event SAR is DN 10 on
background and DN 100 on buildings (20 and 40 dB), with DN 0 (nodata) in columns 0-1
of ``turkey-earthquake_00000001``. Buildings (rows and columns inclusive, grade):

=============================  ==========  ======  =================================
tile                           CRS         pixel   buildings
=============================  ==========  ======  =================================
turkey-earthquake_00000001     EPSG:32637  1 m     A r10-15 c10-19 g1;
                                                   F r20-25 c58-63 g2 (right edge);
                                                   B r30-37 c5-12 g1 touching
                                                   C r30-37 c13-20 g3 (one, g3);
                                                   D r45-50 c30-35 g2, one pixel from
                                                   E r45-50 c37-42 g1 (two);
                                                   G r55-58 c50-53 g1 touching
                                                   H r59-62 c54-57 g2 at a corner
                                                   (one 8-connected, g2)
turkey-earthquake_00000002     EPSG:4326   0.3 m   P r20-39 c17-46 g2;
                                                   Q r0-3 c0-3 g3 (corner)
la_palma-volcano_00000001      EPSG:32628  0.3 m   P r20-39 c17-46 g1;
                                                   R r50-59 c50-63 g3 (right edge)
morocco-earthquake_00000001    EPSG:4326   1 m     r10-15 c10-19 g1; r30-35 c30-35 g2;
                                                   r50-55 c5-10 g3
libya-flood_00000001           EPSG:32634  0.5 m   r20-31 c20-39 g2
libya-flood_00000002           EPSG:32634  0.5 m   (none)
haiti-earthquake_00000001      EPSG:32618  0.5 m   r20-31 c20-39 g3; r45-50 c45-50 g1
mexico-hurricane_00000001      EPSG:32614  0.5 m   (val: no target)
=============================  ==========  ======  =================================

Lists: train = the first six tiles, holdout = haiti, val = mexico.

:func:`write_fake` writes a larger fake of the same layout (for the benchmark).
"""

import os

import numpy as np
import rasterio
from pyproj import Geod
from rasterio.transform import Affine

ROOT = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = 'dfc25_track2_trainval'
SIZE = 64

#: One building: first row, last row, first column, last column (inclusive), grade.
Building = tuple[int, int, int, int, int]

#: tile id -> (EPSG code, pixel size in metres, (lon, lat) or (x, y) of the top left)
TILES: dict[str, tuple[int, float, tuple[float, float]]] = {
    'turkey-earthquake_00000001': (32637, 1.0, (299000.0, 4116864.0)),
    'turkey-earthquake_00000002': (4326, 0.3, (36.9, 37.2)),
    'la_palma-volcano_00000001': (32628, 0.3, (220000.0, 3170000.0)),
    'morocco-earthquake_00000001': (4326, 1.0, (-8.4, 31.1)),
    'libya-flood_00000001': (32634, 0.5, (710000.0, 3630000.0)),
    'libya-flood_00000002': (32634, 0.5, (720000.0, 3630000.0)),
    'haiti-earthquake_00000001': (32618, 0.5, (700000.0, 2050000.0)),
    'mexico-hurricane_00000001': (32614, 0.5, (400000.0, 1860000.0)),
}

BUILDINGS: dict[str, list[Building]] = {
    'turkey-earthquake_00000001': [
        (10, 15, 10, 19, 1),
        (20, 25, 58, 63, 2),
        (30, 37, 5, 12, 1),
        (30, 37, 13, 20, 3),
        (45, 50, 30, 35, 2),
        (45, 50, 37, 42, 1),
        (55, 58, 50, 53, 1),
        (59, 62, 54, 57, 2),
    ],
    'turkey-earthquake_00000002': [(20, 39, 17, 46, 2), (0, 3, 0, 3, 3)],
    'la_palma-volcano_00000001': [(20, 39, 17, 46, 1), (50, 59, 50, 63, 3)],
    'morocco-earthquake_00000001': [
        (10, 15, 10, 19, 1),
        (30, 35, 30, 35, 2),
        (50, 55, 5, 10, 3),
    ],
    'libya-flood_00000001': [(20, 31, 20, 39, 2)],
    'libya-flood_00000002': [],
    'haiti-earthquake_00000001': [(20, 31, 20, 39, 3), (45, 50, 45, 50, 1)],
    'mexico-hurricane_00000001': [(20, 31, 20, 39, 2)],
}

LISTS = {
    'train_setlevel.txt': [
        'turkey-earthquake_00000001',
        'turkey-earthquake_00000002',
        'la_palma-volcano_00000001',
        'morocco-earthquake_00000001',
        'libya-flood_00000001',
        'libya-flood_00000002',
    ],
    'holdout_setlevel.txt': ['haiti-earthquake_00000001'],
    'val_setlevel.txt': ['mexico-hurricane_00000001'],
}

#: Tiles whose SAR has DN 0 (nodata) in these columns.
NODATA_COLUMNS = {'turkey-earthquake_00000001': slice(0, 2)}


def geographic_transform(
    lon: float, lat: float, pixel_m: float, size: int = SIZE
) -> Affine:
    """A transform in degrees whose pixels are ``pixel_m`` at the tile's centre."""
    geod = Geod(ellps='WGS84')
    step = 1e-5
    lat_c = lat - size / 2 * pixel_m / 111_000
    m_lon = geod.inv(lon, lat_c, lon + step, lat_c)[2] / step
    m_lat = geod.inv(lon, lat_c - step / 2, lon, lat_c + step / 2)[2] / step
    return Affine(pixel_m / m_lon, 0.0, lon, 0.0, -pixel_m / m_lat, lat)


def tile_transform(epsg: int, pixel_m: float, origin: tuple[float, float]) -> Affine:
    if epsg == 4326:
        return geographic_transform(origin[0], origin[1], pixel_m)
    return Affine(pixel_m, 0.0, origin[0], 0.0, -pixel_m, origin[1])


def write_tif(path: str, data: np.ndarray, epsg: int, transform: Affine) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with rasterio.open(
        path,
        'w',
        driver='GTiff',
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype='uint8',
        crs=f'EPSG:{epsg}',
        transform=transform,
        compress='lzw',
    ) as dst:
        dst.write(data)


def tile_paths(root: str, folder: str, tile: str) -> tuple[str, str, str]:
    base = os.path.join(root, DATA_DIR, folder)
    return (
        os.path.join(base, 'pre-event', f'{tile}_pre_disaster.tif'),
        os.path.join(base, 'post-event', f'{tile}_post_disaster.tif'),
        os.path.join(base, 'target', f'{tile}_building_damage.tif'),
    )


def write_tile(
    root: str,
    folder: str,
    tile: str,
    epsg: int,
    transform: Affine,
    target: np.ndarray,
    sar: np.ndarray,
    optical: np.ndarray,
    with_target: bool = True,
) -> None:
    """Write a tile's three rasters (the target only if ``with_target``)."""
    pre, post, damage = tile_paths(root, folder, tile)
    write_tif(pre, optical, epsg, transform)
    write_tif(post, sar[None], epsg, transform)
    if with_target:
        write_tif(damage, target[None], epsg, transform)


def write_lists(root: str, lists: dict[str, list[str]]) -> None:
    os.makedirs(os.path.join(root, DATA_DIR), exist_ok=True)
    for name, ids in lists.items():
        with open(os.path.join(root, DATA_DIR, name), 'w') as f:
            f.writelines(f'{tile}\n' for tile in ids)


def small_tile(tile: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Target, SAR and optical arrays of one tiny tile."""
    target = np.zeros((SIZE, SIZE), dtype=np.uint8)
    for r0, r1, c0, c1, grade in BUILDINGS[tile]:
        target[r0 : r1 + 1, c0 : c1 + 1] = grade
    sar = np.where(target > 0, 100, 10).astype(np.uint8)
    if tile in NODATA_COLUMNS:
        sar[:, NODATA_COLUMNS[tile]] = 0
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    optical = np.stack([2 * cols, 2 * rows, np.full_like(rows, 7)]).astype(np.uint8)
    return target, sar, optical


def main(root: str = ROOT) -> None:
    write_lists(root, LISTS)
    for name, ids in LISTS.items():
        folder = 'val' if name == 'val_setlevel.txt' else 'train'
        for tile in ids:
            epsg, pixel_m, origin = TILES[tile]
            target, sar, optical = small_tile(tile)
            write_tile(
                root,
                folder,
                tile,
                epsg,
                tile_transform(epsg, pixel_m, origin),
                target,
                sar,
                optical,
                with_target=folder == 'train',
            )


#: Events, pixel sizes and CRS of the fake written by :func:`write_fake`, in turn.
FAKE_EVENTS = (
    'turkey-earthquake',
    'morocco-earthquake',
    'haiti-earthquake',
    'la_palma-volcano',
    'libya-flood',
)
FAKE_PIXEL_M = (0.3, 0.5, 1.0)


def fake_target(
    rng: np.random.Generator, size: int, buildings: int, pixel_m: float
) -> np.ndarray:
    """Random rectangles of 5-20 m sides and random grades (overlaps merge)."""
    target = np.zeros((size, size), dtype=np.uint8)
    for _ in range(buildings):
        h, w = (rng.uniform(5, 20, size=2) / pixel_m).astype(int) + 1
        r0 = int(rng.integers(0, size - h // 2))
        c0 = int(rng.integers(0, size - w // 2))
        grade = int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15]))
        target[r0 : r0 + h, c0 : c0 + w] = grade
    return target


def write_fake(
    root: str, tiles: int = 100, size: int = 1024, buildings: int = 150, seed: int = 0
) -> list[str]:
    """Write a larger fake BRIGHT in the same layout (every tile in the train list).

    Events, pixel sizes (0.3, 0.5, 1 m) and CRS (UTM or EPSG:4326) alternate; SAR is
    speckled (gamma) amplitude on 8 bits, optical random RGB, both LZW-compressed.

    Args:
        root: folder to write ``dfc25_track2_trainval`` into.
        tiles: number of tiles.
        size: tile side in pixels.
        buildings: rectangles drawn per tile (overlapping ones merge).
        seed: random seed.

    Returns:
        The tile ids written.
    """
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(tiles):
        event = FAKE_EVENTS[i % len(FAKE_EVENTS)]
        tile = f'{event}_{i:08d}'
        pixel_m = FAKE_PIXEL_M[i % len(FAKE_PIXEL_M)]
        if i % 2:
            epsg, transform = 4326, geographic_transform(37.0, 37.5, pixel_m, size)
        else:
            epsg = 32637
            transform = Affine(pixel_m, 0.0, 300000.0, 0.0, -pixel_m, 4100000.0)
        target = fake_target(rng, size, buildings, pixel_m)
        amplitude = np.sqrt(rng.gamma(1.0, 1.0, (size, size))) * 60 * (1 + target)
        sar = np.clip(amplitude, 1, 255).astype(np.uint8)
        optical = rng.integers(0, 256, (3, size, size), dtype=np.uint8)
        write_tile(root, 'train', tile, epsg, transform, target, sar, optical)
        ids.append(tile)
    write_lists(
        root,
        {'train_setlevel.txt': ids, 'holdout_setlevel.txt': [], 'val_setlevel.txt': []},
    )
    return ids


if __name__ == '__main__':
    main()
