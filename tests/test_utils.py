# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import errno
from pathlib import Path

import pytest

from torchgeo_sar_damage.errors import OutputError
from torchgeo_sar_damage.utils import write_atomic


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / 'metrics.json'
    path.write_text('old')
    write_atomic(path, lambda p: p.write_text('new'))
    assert path.read_text() == 'new'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['metrics.json']


def test_full_disk_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / 'predictions.gpkg'
    path.write_bytes(b'previous run')

    def full_disk(tmp: Path) -> None:
        tmp.write_bytes(b'half a layer')
        raise OSError(errno.ENOSPC, 'No space left on device')

    with pytest.raises(OutputError, match=r'predictions\.gpkg.*No space left'):
        write_atomic(path, full_disk)
    assert path.read_bytes() == b'previous run'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['predictions.gpkg']


def test_interruption_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / 'map.png'

    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b'\x89PNG')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, interrupted)
    assert not list(tmp_path.iterdir())
