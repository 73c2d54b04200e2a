# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Maps and figures shared by the command line, the docs and the experiments."""

import os

import geopandas as gpd
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .datasets.cosmo_skymed import read_sigma0
from .utils import write_atomic

#: Colours of the EMS-98 damage grades 0 (none) to 5 (destruction).
GRADE_COLOURS = ('#1a9850', '#91cf60', '#d9ef8b', '#fee08b', '#fc8d59', '#d73027')
GRADE_NAMES = (
    'G0 none',
    'G1 negligible to slight',
    'G2 moderate',
    'G3 substantial to heavy',
    'G4 very heavy',
    'G5 destruction',
)


def read_sigma0_db(
    path: str | os.PathLike[str], max_size: int = 1500
) -> tuple[np.ndarray, tuple[float, float, float, float], dict[str, str]]:
    """Read a detected CSK/CSG GeoTIFF as calibrated sigma nought in dB, block-averaged.

    Args:
        path: GTC GeoTIFF with the calibration metadata tags.
        max_size: the longer side of the returned array is at most this many pixels;
            sigma nought is averaged in linear units over each block.

    Returns:
        sigma0 in dB (NaN where nodata), its extent (left, right, bottom, top) and the
        product's metadata tags.
    """
    sigma0, transform, tags = read_sigma0(path)
    valid = np.isfinite(sigma0)
    dn_shape = sigma0.shape
    step = max(1, int(np.ceil(max(dn_shape) / max_size)))
    rows, cols = (dn_shape[0] // step) * step, (dn_shape[1] // step) * step
    s = np.where(valid, sigma0, 0.0)[:rows, :cols].reshape(
        rows // step, step, cols // step, step
    )
    v = valid[:rows, :cols].reshape(rows // step, step, cols // step, step)
    count = v.sum(axis=(1, 3))
    with np.errstate(divide='ignore', invalid='ignore'):
        mean = s.sum(axis=(1, 3)) / count
        db = np.where(count > 0, 10 * np.log10(np.maximum(mean, 1e-10)), np.nan)
    left, top = transform.c, transform.f
    right = left + cols * transform.a
    bottom = top + rows * transform.e
    return db, (left, right, bottom, top), tags


def add_scale_bar(ax: Axes, length_m: float | None = None) -> None:
    """Draw a scale bar in the lower left of a map in metres."""
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    width = x1 - x0
    if length_m is None:
        raw = width / 5
        mag = 10 ** np.floor(np.log10(raw))
        length_m = float(max(m for m in (1, 2, 5) if m * mag <= raw) * mag)
    x = x0 + 0.05 * width
    y = y0 + 0.05 * (y1 - y0)
    ax.plot([x, x + length_m], [y, y], color='white', lw=4, solid_capstyle='butt')
    ax.plot([x, x + length_m], [y, y], color='black', lw=2, solid_capstyle='butt')
    label = f'{length_m / 1000:g} km' if length_m >= 1000 else f'{length_m:g} m'
    ax.text(
        x + length_m / 2,
        y + 0.015 * (y1 - y0),
        label,
        ha='center',
        va='bottom',
        fontsize=8,
        bbox={'facecolor': 'white', 'alpha': 0.7, 'edgecolor': 'none', 'pad': 1},
    )


def add_north_arrow(ax: Axes) -> None:
    """Draw a north arrow in the upper right (grid north of a north-up map)."""
    ax.annotate(
        'N',
        xy=(0.95, 0.95),
        xytext=(0.95, 0.85),
        xycoords='axes fraction',
        ha='center',
        va='center',
        fontsize=10,
        fontweight='bold',
        arrowprops={'facecolor': 'black', 'width': 3, 'headwidth': 9},
        bbox={'facecolor': 'white', 'alpha': 0.7, 'edgecolor': 'none', 'pad': 1},
    )


def plot_truth_quicklook(
    sar_path: str | os.PathLike[str],
    truth_path: str | os.PathLike[str],
    out_png: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Quick-look of a simulated town: SAR backdrop and footprints by true damage grade.

    Args:
        sar_path: GTC GeoTIFF of the town.
        truth_path: ``truth.gpkg`` with ``grade`` per footprint.
        out_png: where to save the figure (PNG), if given; written atomically.
        title: figure title; by default the product's mission, mode and date.

    Returns:
        The figure.
    """
    db, extent, tags = read_sigma0_db(sar_path)
    truth = gpd.read_file(truth_path)
    fig, axes = plt.subplots(
        1, 2, figsize=(14, 7), sharex=True, sharey=True, layout='constrained'
    )
    for ax in axes:
        im = ax.imshow(
            db, extent=extent, cmap='gray', vmin=-22, vmax=2, interpolation='nearest'
        )
        ax.set_aspect('equal')
        ax.set_xlabel('easting (m)')
    axes[0].set_ylabel('northing (m)')
    cmap = ListedColormap(GRADE_COLOURS)
    truth.plot(
        ax=axes[1],
        column='grade',
        cmap=cmap,
        vmin=-0.5,
        vmax=5.5,
        edgecolor='black',
        linewidth=0.2,
    )
    axes[0].set_title('sigma nought (dB)')
    axes[1].set_title('true EMS-98 damage grade')
    fig.colorbar(im, ax=axes[0], shrink=0.6, label='sigma0 (dB)')
    handles = [
        Patch(facecolor=c, edgecolor='black', label=n)
        for c, n in zip(GRADE_COLOURS, GRADE_NAMES)
    ]
    axes[1].legend(handles=handles, loc='lower right', fontsize=7, framealpha=0.8)
    for ax in axes:
        add_scale_bar(ax)
        add_north_arrow(ax)
    if title is None:
        start = tags.get('Scene_Sensing_Start_UTC', '')[:19]
        title = (
            f'{tags.get("Mission_ID", "?")} {tags.get("Acquisition_Mode", "")} '
            f'{tags.get("S01_Polarisation", "")} {tags.get("Orbit_Direction", "").lower()}, {start} UTC'
        )
    fig.suptitle(title)
    if out_png is not None:
        save_figure(fig, out_png)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 110) -> None:
    """Save a figure as PNG through a temporary file renamed into place."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format='png'))


def plot_prediction_map(
    sar_path: str | os.PathLike[str],
    predictions: gpd.GeoDataFrame,
    truth: gpd.GeoDataFrame | None = None,
    out_png: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Map of predicted damage probability per footprint over the SAR backdrop.

    Args:
        sar_path: GTC GeoTIFF of the town (backdrop, in dB).
        predictions: footprints with ``damage_prob`` (NaN: not assessed).
        truth: optional footprints with ``grade`` (EMS-98) drawn beside, as damaged
            (grade >= 4) or not.
        out_png: where to save the figure (PNG), written atomically.
        title: figure title.

    Returns:
        The figure.
    """
    db, extent, tags = read_sigma0_db(sar_path)
    panels = 2 if truth is not None else 1
    fig, axes = plt.subplots(
        1,
        panels,
        figsize=(7 * panels, 7),
        sharex=True,
        sharey=True,
        layout='constrained',
        squeeze=False,
    )
    left, bottom, right, top = predictions.total_bounds
    pad = 0.05 * max(right - left, top - bottom)
    for ax in axes[0]:
        ax.imshow(
            db, extent=extent, cmap='gray', vmin=-22, vmax=2, interpolation='nearest'
        )
        ax.set_xlim(left - pad, right + pad)
        ax.set_ylim(bottom - pad, top + pad)
        ax.set_aspect('equal')
        ax.ticklabel_format(useOffset=False, style='plain')
        ax.set_xlabel('easting (m)')
    axes[0, 0].set_ylabel('northing (m)')
    _draw_probabilities(fig, axes[0, 0], predictions)
    if truth is not None:
        _draw_truth(axes[0, 1], truth)
    for ax in axes[0]:
        add_scale_bar(ax)
        add_north_arrow(ax)
    start = tags.get('Scene_Sensing_Start_UTC', '')[:19]
    product = f'{tags.get("Mission_ID", "")} {tags.get("Acquisition_Mode", "")} {start} UTC'.strip()
    fig.suptitle(f'{title}\n{product}' if title else product)
    if out_png is not None:
        save_figure(fig, out_png)
    return fig


def _draw_probabilities(fig: Figure, ax: Axes, predictions: gpd.GeoDataFrame) -> None:
    """Footprints coloured by ``damage_prob``; unassessed ones hatched."""
    assessed = predictions[predictions['damage_prob'].notna()]
    missing = predictions[predictions['damage_prob'].isna()]
    assessed.plot(
        ax=ax,
        column='damage_prob',
        cmap='inferno',
        vmin=0,
        vmax=1,
        edgecolor='white',
        linewidth=0.2,
    )
    mappable = ScalarMappable(cmap='inferno', norm=Normalize(0, 1))
    fig.colorbar(mappable, ax=ax, shrink=0.6, label='predicted probability of damage')
    ax.set_title('predicted damage probability')
    if len(missing):
        missing.plot(
            ax=ax, facecolor='none', edgecolor='cyan', linewidth=0.5, hatch='///'
        )
        hatch = Patch(
            facecolor='none', edgecolor='cyan', hatch='///', label='not assessed'
        )
        ax.legend(handles=[hatch], loc='lower right', fontsize=8)


def _draw_truth(ax: Axes, truth: gpd.GeoDataFrame) -> None:
    """Footprints coloured by true damage (EMS-98 grade >= 4 or not)."""
    damaged = truth['grade'] >= 4
    truth[~damaged].plot(ax=ax, color='#1a9850', edgecolor='black', linewidth=0.2)
    truth[damaged].plot(ax=ax, color='#d73027', edgecolor='black', linewidth=0.2)
    handles = [
        Patch(
            facecolor='#d73027', edgecolor='black', label='damaged (EMS-98 grade 4-5)'
        ),
        Patch(facecolor='#1a9850', edgecolor='black', label='not damaged (grade 0-3)'),
    ]
    ax.legend(handles=handles, loc='lower right', fontsize=8, framealpha=0.8)
    ax.set_title('true damage')
