# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Per-building results, their parts across processes, and the written layer and map."""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

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
            probability = np.where(ok, results.probability[position], np.nan)
            uncertainty = np.where(ok, results.uncertainty[position], np.nan)
            frame = frame.drop(
                columns=[c for c in OUTPUT_COLUMNS if c in frame.columns]
            )
            frame['damage_prob'] = probability.astype(np.float64)
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


@dataclass
class PredictionSummary:
    """What :func:`predict_buildings` did.

    Attributes:
        out: the GeoPackage written.
        map: the PNG map, if drawn.
        buildings: input footprints.
        counts: buildings per status.
        threshold: decision threshold used.
        temperature: calibration temperature used.
        damaged: buildings predicted damaged.
        calibration_bias: calibration bias used (probability
            ``sigmoid(logit / temperature + calibration_bias)``).
    """

    out: Path
    map: Path | None
    buildings: int
    counts: dict[str, int]
    threshold: float
    temperature: float
    damaged: int
    calibration_bias: float = 0.0


def draw_map(
    layer_path: str | os.PathLike[str],
    sar: Sequence[str | os.PathLike[str]],
    out_png: Path,
    layer: str | None = None,
) -> Path:
    """Draw the prediction map of a written layer over the SAR quick-look.

    Args:
        layer_path: the GeoPackage written by :func:`predict_buildings`.
        sar: the SAR files (the first GeoTIFF is the backdrop).
        out_png: the PNG to write (atomically).
        layer: the layer to read.

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
        title=f'Predicted building damage ({int(table["damage_prob"].notna().sum())} '
        f'of {len(table)} buildings assessed)',
    )
    plt.close(fig)
    return out_png
