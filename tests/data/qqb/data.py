#!/usr/bin/env python3

# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Make a tiny QuickQuakeBuildings tree as its authors deliver it.

Layout (GitHub repository ``ya0-sun/PostEQ-SARopt-BuildingDamage``, README and
``dataset.py``), under ``data/``:

* ``fold-1.txt`` ... ``fold-5.txt``: lines ``damaged/<osm id>,1`` or
  ``intact/<osm id>,0``, CRLF line ends, no line end after the last line (as the
  published files);
* ``damaged/`` and ``intact/``: per building ``<osm id>_SAR.mat`` (key ``x1``),
  ``_SARftp.mat`` (``x2``), ``_opt.mat`` (``x3``), ``_optftp.mat`` (``x4``).

The ``.mat`` files are MATLAB v7.3 files as MATLAB writes them: HDF5 with a 512-byte
user block that starts with the MATLAB text header, one dataset per file with a
``MATLAB_class`` attribute, and arrays stored column-major, so that h5py sees an
H x W patch as W x H and an H x W x 3 optical patch as 3 x W x H.

Twelve buildings (four damaged) with patches of two sizes, non-square and
different for SAR and optical. In MATLAB's orientation (row r, column c):

* SAR: ``-20 + r + 0.1 c`` (dB-like), with missing values < -100 (-999 or -Inf) in
  a top-left block of some buildings;
* optical: band b is ``40 b + 5 r + c`` (0-255);
* footprints: 1 inside a block centred in the patch, else 0.

Some buildings store optical as ``uint8`` and masks as MATLAB ``logical``; the
rest are ``double``, as MATLAB saves by default.
"""

import os
import shutil

import h5py
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')

#: (osm id, damaged, fold, SAR rows x columns, optical rows x columns, missing).
BUILDINGS = [
    (1139272419, True, 1, (12, 8), (10, 6), -999.0),
    (1139025727, False, 1, (12, 8), (10, 6), None),
    (1141523658, False, 1, (10, 14), (8, 12), -np.inf),
    (1138759917, True, 2, (10, 14), (8, 12), None),
    (1138870256, False, 2, (12, 8), (10, 6), None),
    (86709243, False, 2, (12, 8), (10, 6), -999.0),
    (1139181810, True, 3, (12, 8), (10, 6), None),
    (1138681967, False, 3, (10, 14), (8, 12), None),
    (1139270435, False, 4, (12, 8), (10, 6), None),
    (1139280845, False, 4, (10, 14), (8, 12), None),
    (1144158051, True, 5, (10, 14), (8, 12), -999.0),
    (1139720671, False, 5, (12, 8), (10, 6), None),
]

#: Buildings whose optical is uint8 and whose masks are MATLAB logical.
INTEGER = {1139025727, 1138759917}

HEADER = (
    b'MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Tue Apr  9 10:00:00 2024 '
    b'HDF5 schema 1.00 .'
)


def sar_patch(rows: int, cols: int, missing: float | None) -> np.ndarray:
    """SAR patch in MATLAB orientation: -20 + r + 0.1 c, missing top-left block."""
    r, c = np.mgrid[:rows, :cols]
    sar = -20.0 + r + 0.1 * c
    if missing is not None:
        sar[:2, :3] = missing
    return sar


def optical_patch(rows: int, cols: int) -> np.ndarray:
    """Optical patch in MATLAB orientation (rows x columns x 3): 40 b + 5 r + c."""
    r, c = np.mgrid[:rows, :cols]
    return np.stack([40.0 * b + 5 * r + c for b in range(3)], axis=-1)


def footprint(rows: int, cols: int) -> np.ndarray:
    """A 4 x 2 block of ones centred in a rows x columns patch (both even)."""
    mask = np.zeros((rows, cols))
    mask[rows // 2 - 2 : rows // 2 + 2, cols // 2 - 1 : cols // 2 + 1] = 1
    return mask


def save_mat(path: str, key: str, array: np.ndarray, matlab_class: str) -> None:
    """Write one array as MATLAB -v7.3 does (column-major, header, attributes)."""
    with h5py.File(path, 'w', userblock_size=512) as f:
        # MATLAB's column-major array, seen from C order: all axes reversed.
        data = np.ascontiguousarray(array.transpose())
        dtype = {'double': np.float64, 'uint8': np.uint8, 'logical': np.uint8}
        dataset = f.create_dataset(key, data=data.astype(dtype[matlab_class]))
        dataset.attrs['MATLAB_class'] = np.bytes_(matlab_class)
        if matlab_class == 'logical':
            dataset.attrs['MATLAB_int_decode'] = np.int32(1)
    with open(path, 'r+b') as f:
        header = HEADER.ljust(116, b' ') + b'\x00' * 8 + b'\x00\x02' + b'IM'
        f.write(header)


def write_fold(fold: int) -> None:
    """Write fold-<fold>.txt with CRLF line ends and no final line end."""
    lines = [
        f'{"damaged" if damaged else "intact"}/{osm_id},{int(damaged)}'
        for osm_id, damaged, f, *_ in BUILDINGS
        if f == fold
    ]
    with open(os.path.join(ROOT, f'fold-{fold}.txt'), 'w', newline='') as f:
        f.write('\r\n'.join(lines))


def main() -> None:
    """Write the tree."""
    shutil.rmtree(ROOT, ignore_errors=True)
    for folder in ('damaged', 'intact'):
        os.makedirs(os.path.join(ROOT, folder))
    for osm_id, damaged, _, sar_shape, opt_shape, missing in BUILDINGS:
        stem = os.path.join(ROOT, 'damaged' if damaged else 'intact', str(osm_id))
        integer = osm_id in INTEGER
        mask_class = 'logical' if integer else 'double'
        save_mat(f'{stem}_SAR.mat', 'x1', sar_patch(*sar_shape, missing), 'double')
        save_mat(f'{stem}_SARftp.mat', 'x2', footprint(*sar_shape), mask_class)
        optical = optical_patch(*opt_shape)
        save_mat(f'{stem}_opt.mat', 'x3', optical, 'uint8' if integer else 'double')
        save_mat(f'{stem}_optftp.mat', 'x4', footprint(*opt_shape), mask_class)
    for fold in range(1, 6):
        write_fold(fold)


if __name__ == '__main__':
    main()
