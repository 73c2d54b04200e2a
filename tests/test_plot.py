# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from torchgeo_sar_damage.errors import InputFileError
from torchgeo_sar_damage.plot import plot_truth_quicklook, read_sigma0_db
from torchgeo_sar_damage.simulation.grid import Grid
from torchgeo_sar_damage.simulation.writers import (
    Acquisition,
    Calibration,
    write_csg_geotiff,
    write_geotiff,
)


def product(path: Path, sigma0: np.ndarray, grid: Grid) -> None:
    start = datetime.datetime(2023, 2, 8, 15, 30, tzinfo=datetime.UTC)
    acq = Acquisition(
        mission='CSG',
        satellite=1,
        mode='S2B',
        beam='010',
        polarisation='VV',
        look_side='RIGHT',
        orbit_direction='DESCENDING',
        start=start,
        stop=start + datetime.timedelta(seconds=8),
        incidence_deg=35.0,
        heading_deg=190.0,
    )
    write_csg_geotiff(path, sigma0.astype(np.float32), grid, acq, Calibration())


def test_sigma0_db_is_calibrated_and_averaged(tmp_path: Path) -> None:
    grid = Grid.from_bounds(500000, 4160000, 500100, 4160060, 0.5)
    sigma0 = np.full(grid.shape, 0.1)
    sigma0[:, :10] = np.nan
    path = tmp_path / 'p.tif'
    product(path, sigma0, grid)
    db, extent, tags = read_sigma0_db(path, max_size=50)
    assert db.shape[1] <= 50
    assert np.nanmax(np.abs(db - (-10.0))) < 0.01
    assert np.isnan(db[:, 0]).all()
    assert extent[0] == 500000
    assert extent[3] == 4160060
    assert tags['Mission_ID'] == 'CSG'


def test_missing_calibration_names_the_file(tmp_path: Path) -> None:
    grid = Grid.from_bounds(500000, 4160000, 500020, 4160020, 1.0)
    path = tmp_path / 'plain.tif'
    write_geotiff(path, np.ones(grid.shape, dtype=np.float32), grid, nodata=0.0)
    with pytest.raises(InputFileError, match=r'plain\.tif.*Rescaling_Factor'):
        read_sigma0_db(path)


def test_not_a_raster(tmp_path: Path) -> None:
    path = tmp_path / 'junk.tif'
    path.write_text('junk')
    with pytest.raises(InputFileError, match=r'junk\.tif'):
        read_sigma0_db(path)


def test_quicklook_png(
    tiny_scene: Path, tiny_manifest: dict[str, Any], tmp_path: Path
) -> None:
    city = tiny_manifest['cities']['nurdagi']
    png = tmp_path / 'q.png'
    fig = plot_truth_quicklook(
        tiny_scene / 'nurdagi' / city['files']['sar_geotiff'],
        tiny_scene / 'nurdagi' / city['files']['truth'],
        png,
    )
    assert fig.get_suptitle().startswith('CSG SPOTLIGHT-2B VV ascending, 2023-02-09')
    legend = fig.axes[1].get_legend()
    assert legend is not None
    assert len(legend.get_texts()) == 6
    plt.close(fig)
    with Image.open(png) as img:
        assert img.size[0] > 800
        assert img.size[1] > 400
    assert not list(tmp_path.glob('.*tmp'))
