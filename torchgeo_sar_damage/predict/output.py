# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Per-building results, their parts across processes, and the written layer and map."""

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import lightning
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyogrio
import rasterio
import rasterio.warp
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from torchgeo.datasets.utils import Sample
from tqdm.auto import tqdm

from ..errors import OutputError
from ..utils import write_atomic
from .chunks import _CODE, _PENDING, STATUSES

#: Footprints read and written per step of :func:`write_layer`.
WRITE_CHUNK = 5000
#: Columns added to the footprints.
OUTPUT_COLUMNS = ('damage_prob', 'damage', 'uncertainty', 'status')
#: What the ``uncertainty`` column is, adapted or not (in the summary file).
UNCERTAINTY_MEANING = (
    'Monte Carlo dropout standard deviation of the calibrated probability before '
    'adaptation to the town'
)


@dataclass
class Results:
    """Per-building results in input order (a few bytes per building).

    Attributes:
        probability: calibrated damage probability (NaN: not assessed).
        uncertainty: MC dropout standard deviation (NaN: not assessed).
        status: codes of :data:`STATUSES` (-1: not reported).
    """

    probability: npt.NDArray[np.float32]
    uncertainty: npt.NDArray[np.float32]
    status: npt.NDArray[np.int8]

    @classmethod
    def empty(cls, n: int) -> 'Results':
        """Results of ``n`` buildings, none reported yet."""
        return cls(
            np.full(n, np.nan, dtype=np.float32),
            np.full(n, np.nan, dtype=np.float32),
            np.full(n, _PENDING, dtype=np.int8),
        )

    def update(self, output: Mapping[str, Tensor]) -> None:
        """Record the output of one :meth:`CityPredictor.predict_step`."""
        positions = output['positions'].numpy()
        status = output['status'].numpy()
        assessed = output['assessed'].numpy()
        self.status[positions] = np.where(status == _PENDING, _CODE['ok'], status)
        self.probability[assessed] = output['probability'].numpy()
        self.uncertainty[assessed] = output['uncertainty'].numpy()


class PartWriter(BasePredictionWriter):
    """Keeps each process's predictions and writes them as one part per process.

    Part ``part-<rank>.npz`` holds ``probability``, ``uncertainty`` and ``status``
    over all buildings (status -1 where another process predicted the building);
    :func:`merge_parts` combines them.

    .. versionadded:: 0.1
    """

    def __init__(self, folder: str | os.PathLike[str], buildings: int) -> None:
        """Initialise a new PartWriter.

        Args:
            folder: where the parts go.
            buildings: number of input buildings.
        """
        super().__init__(write_interval='batch')
        self.folder = Path(folder)
        self.results = Results.empty(buildings)

    def write_on_batch_end(
        self,
        trainer: lightning.Trainer,
        pl_module: lightning.LightningModule,
        prediction: Mapping[str, Tensor],
        batch_indices: Sequence[int] | None,
        batch: Sample,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Record a chunk's predictions (see :class:`BasePredictionWriter`)."""
        self.results.update(prediction)

    def on_predict_end(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule
    ) -> None:
        """Write this process's part."""
        self.folder.mkdir(parents=True, exist_ok=True)
        results = self.results
        write_atomic(
            self.folder / f'part-{trainer.global_rank}.npz',
            lambda tmp: np.savez(
                tmp,
                probability=results.probability,
                uncertainty=results.uncertainty,
                status=results.status,
            ),
        )


def merge_parts(parts: Sequence[str | os.PathLike[str]], buildings: int) -> Results:
    """Merge the parts of :class:`PartWriter` into one set of results.

    Args:
        parts: the ``part-<rank>.npz`` files.
        buildings: number of input buildings.

    Returns:
        The merged results (a building reported by several processes, as a
        distributed sampler may repeat some, keeps the first part's values).

    Raises:
        OutputError: if a part is missing buildings no other part has.
    """
    merged = Results.empty(buildings)
    for part in parts:
        with np.load(part) as data:
            status = data['status']
            take = (merged.status == _PENDING) & (status != _PENDING)
            merged.status[take] = status[take]
            merged.probability[take] = data['probability'][take]
            merged.uncertainty[take] = data['uncertainty'][take]
    pending = int((merged.status == _PENDING).sum())
    if pending:
        raise OutputError(
            Path(parts[0]).parent if parts else '.',
            f'{pending} buildings are in no prediction part; was a process killed?',
        )
    return merged


def write_layer(
    buildings: str | os.PathLike[str],
    out: str | os.PathLike[str],
    results: Results,
    fids: npt.NDArray[np.int64],
    threshold: float,
    layer: str,
    input_layer: str | int | None = None,
    progress: bool = True,
) -> None:
    """Write the footprints with the prediction columns, in input order, streamed.

    Args:
        buildings: the input footprints.
        out: the GeoPackage to write (a temporary file: the caller renames it).
        results: per-building results, in the order of ``fids``.
        fids: feature ids of the input, in read order.
        threshold: decision threshold of ``damage``.
        layer: name of the output layer.
        input_layer: layer of ``buildings``.
        progress: show a progress bar.
    """
    order = np.argsort(fids, kind='stable')
    sorted_fids = fids[order]
    total = int(pyogrio.read_info(buildings, layer=input_layer)['features'])
    labels = np.array(STATUSES, dtype=object)
    written = 0
    with tqdm(
        total=total, desc='writing', unit='building', disable=not progress
    ) as bar:
        while written < total:
            frame = pyogrio.read_dataframe(
                buildings,
                layer=input_layer,
                skip_features=written,
                max_features=WRITE_CHUNK,
                fid_as_index=True,
            )
            if frame.empty:
                break
            where = np.searchsorted(sorted_fids, frame.index.to_numpy())
            where = np.clip(where, 0, len(sorted_fids) - 1)
            known = sorted_fids[where] == frame.index.to_numpy()
            position = order[where]
            status = np.where(
                known, results.status[position], _CODE['invalid_geometry']
            )
            ok = status == _CODE['ok']
            # float64 before the comparison: damage is damage_prob >= threshold as
            # written, not as rounded to the threshold's float32 neighbour
            probability = np.where(
                ok, results.probability[position].astype(np.float64), np.nan
            )
            uncertainty = np.where(ok, results.uncertainty[position], np.nan)
            frame = frame.drop(
                columns=[c for c in OUTPUT_COLUMNS if c in frame.columns]
            )
            frame['damage_prob'] = probability
            frame['damage'] = pd.array(
                np.where(ok, probability >= threshold, False).astype(np.int64),
                dtype='Int64',
            )
            frame.loc[~ok, 'damage'] = pd.NA
            frame['uncertainty'] = uncertainty.astype(np.float64)
            frame['status'] = labels[status]
            frame = frame.reset_index(drop=True)
            pyogrio.write_dataframe(
                frame,
                out,
                layer=layer,
                driver='GPKG',
                append=written > 0,
                promote_to_multi=False,
            )
            written += len(frame)
            bar.update(len(frame))


def summary_path(out: str | os.PathLike[str]) -> Path:
    """Where :func:`predict_buildings` writes the town summary of layer ``out``.

    Args:
        out: the GeoPackage layer (``damage.gpkg``).

    Returns:
        ``out`` with ``.summary.json`` for its suffix (``damage.summary.json``).
    """
    return Path(out).with_suffix('.summary.json')


def _finite(value: float | None) -> float | None:
    """``value``, or None when it is None or not finite (JSON has no NaN)."""
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass
class PredictionSummary:
    """What :func:`predict_buildings` did, and the town's estimated damage rate.

    :meth:`to_dict` is the content of the summary file beside the layer
    (:func:`summary_path`).

    Attributes:
        out: the GeoPackage written.
        map: the PNG map, if drawn.
        buildings: input footprints.
        counts: buildings per status.
        threshold: decision threshold of ``damage``: the expected-F1 threshold of
            the adapted probabilities when :attr:`prior_adapted`, otherwise the
            checkpoint's or the expected-F1 threshold of the unadapted
            probabilities (:attr:`threshold_rule`).
        temperature: calibration temperature used.
        damaged: buildings predicted damaged (``damage_prob >= threshold``).
        calibration_bias: calibration bias used (probability
            ``sigmoid(logit / temperature + calibration_bias)``).
        assessed: buildings with status ``'ok'`` (those with a probability).
        damaged_share_estimate: estimated share of damaged buildings among the
            assessed ones: the EM estimate when :attr:`prior_adapted`, the mean
            probability otherwise (NaN without any assessed building).
        damaged_share_interval: bootstrap interval ``(low, high)`` of the estimate
            (:attr:`interval_level` coverage), or None when not adapted.
        interval_level: coverage of :attr:`damaged_share_interval`.
        expected_damaged: sum of the written probabilities, the expected number
            of damaged buildings.
        prior_adapted: whether ``damage_prob`` was adapted to the town's estimated
            damage rate (:func:`~torchgeo_sar_damage.prior_shift.adapt_to_town`).
        threshold_rule: where :attr:`threshold` comes from: ``'checkpoint'`` (the
            validation town's), ``'expected-f1'`` (of the town's calibrated
            probabilities) or ``'adapted-expected-f1'`` (of the adapted ones).
        source_prior: damage rate of the validation town the checkpoint was
            calibrated on (NaN when the checkpoint does not record it).
        reason: why the probabilities were not adapted, or None.
        checkpoint: the checkpoint file.
        sar: the SAR product files.
        summary_file: the summary file written, if any.
    """

    out: Path
    map: Path | None
    buildings: int
    counts: dict[str, int]
    threshold: float
    temperature: float
    damaged: int
    calibration_bias: float = 0.0
    assessed: int = 0
    damaged_share_estimate: float = math.nan
    damaged_share_interval: tuple[float, float] | None = None
    interval_level: float = 0.9
    expected_damaged: float = 0.0
    prior_adapted: bool = False
    threshold_rule: str = 'checkpoint'
    source_prior: float = math.nan
    reason: str | None = None
    checkpoint: Path | None = None
    sar: list[Path] = field(default_factory=list)
    summary_file: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON values (paths as strings, NaN as None).

        Returns:
            A dictionary that :func:`json.dumps` writes with ``allow_nan=False``.
        """
        interval = self.damaged_share_interval
        return {
            'buildings': self.buildings,
            'assessed': self.assessed,
            'counts': dict(self.counts),
            'damaged_share_estimate': _finite(self.damaged_share_estimate),
            'damaged_share_interval': (
                None if interval is None else [_finite(v) for v in interval]
            ),
            'interval_level': self.interval_level,
            'expected_damaged': _finite(self.expected_damaged),
            'damaged': self.damaged,
            'threshold': _finite(self.threshold),
            'threshold_rule': self.threshold_rule,
            'prior_adapted': self.prior_adapted,
            'source_prior': _finite(self.source_prior),
            'reason': self.reason,
            'temperature': _finite(self.temperature),
            'calibration_bias': _finite(self.calibration_bias),
            'uncertainty_column': UNCERTAINTY_MEANING,
            'checkpoint': None if self.checkpoint is None else str(self.checkpoint),
            'sar': [str(p) for p in self.sar],
            'out': str(self.out),
            'map': None if self.map is None else str(self.map),
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON, atomically.

        Args:
            path: the JSON file (:func:`summary_path` of the layer).

        Returns:
            ``path``.

        Raises:
            OutputError: if it cannot be written.
        """
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + '\n'
        write_atomic(path, lambda tmp: tmp.write_text(text, encoding='utf-8'))
        return Path(path)


def _percent(share: float) -> str:
    """A share as a percentage: whole numbers from 10 %, one decimal below."""
    value = 100.0 * share
    return f'{value:.0f}' if round(value, 1) >= 10 else f'{value:.1f}'


def share_text(
    estimate: float,
    interval: tuple[float, float] | None,
    adapted: bool,
    dash: str = '\N{EN DASH}',
) -> str:
    """The estimated damaged share in words, e.g. ``estimated damaged share 23 % (19–27 %)``.

    Args:
        estimate: estimated share of damaged buildings (NaN: none assessed).
        interval: its interval, or None.
        adapted: whether the probabilities were adapted to the town's rate;
            otherwise the text ends in ``(not adapted)``.
        dash: between the interval's bounds.

    Returns:
        The text.
    """
    if not math.isfinite(estimate):
        return 'damaged share not estimated (no building assessed)'
    text = f'estimated damaged share {_percent(estimate)} %'
    if not adapted:
        return f'{text} (not adapted)'
    if interval is None or not all(math.isfinite(v) for v in interval):
        return text
    low, high = interval
    return f'{text} ({_percent(low)}{dash}{_percent(high)} %)'


def map_title(
    assessed: int,
    buildings: int,
    estimate: float = math.nan,
    interval: tuple[float, float] | None = None,
    adapted: bool = False,
) -> str:
    """The title of :func:`draw_map`.

    Args:
        assessed: buildings with a probability.
        buildings: footprints in the layer.
        estimate: estimated share of damaged buildings (NaN: leave it out).
        interval: its interval, or None.
        adapted: whether the probabilities were adapted to the town's rate.

    Returns:
        E.g. ``Predicted building damage (118 of 120 buildings assessed)`` and, on a
        second line (a 7-inch map is too narrow for one),
        ``estimated damaged share 23 % (19–27 %)``.
    """
    title = f'Predicted building damage ({assessed} of {buildings} buildings assessed)'
    if math.isfinite(estimate):
        title += f'\n{share_text(estimate, interval, adapted)}'
    return title


def draw_map(
    layer_path: str | os.PathLike[str],
    sar: Sequence[str | os.PathLike[str]],
    out_png: Path,
    layer: str | None = None,
    *,
    estimate: float = math.nan,
    interval: tuple[float, float] | None = None,
    adapted: bool = False,
) -> Path:
    """Draw the prediction map of a written layer over the SAR quick-look.

    The title (:func:`map_title`) gives the buildings assessed and, when
    ``estimate`` is given, the town's estimated damaged share.

    Args:
        layer_path: the GeoPackage written by :func:`predict_buildings`.
        sar: the SAR files (the first GeoTIFF is the backdrop).
        out_png: the PNG to write (atomically).
        layer: the layer to read.
        estimate: estimated share of damaged buildings
            (:attr:`PredictionSummary.damaged_share_estimate`).
        interval: its interval, or None when not adapted.
        adapted: whether the probabilities were adapted to the town's rate.

    Returns:
        ``out_png``.
    """
    import matplotlib.pyplot as plt

    from ..plot import plot_prediction_map

    backdrop = next(
        os.fspath(p) for p in sar if str(p).lower().endswith(('.tif', '.tiff'))
    )
    with rasterio.open(backdrop) as src:
        crs = src.crs
    table = gpd.read_file(layer_path, layer=layer).to_crs(crs)
    fig = plot_prediction_map(
        backdrop,
        table,
        None,
        out_png,
        title=map_title(
            int(table['damage_prob'].notna().sum()),
            len(table),
            estimate,
            interval,
            adapted,
        ),
    )
    plt.close(fig)
    return out_png
