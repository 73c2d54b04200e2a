# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""City-scale prediction: raw files -> per-building damage layer (streamed).

:func:`predict_buildings` (``sardamage predict``) reads one post-event SAR product
(one or more COSMO-SkyMed/CSG files), building footprints (any vector file, any
CRS), optionally a DSM and GEM exposure, and a checkpoint of
:class:`~torchgeo_sar_damage.tasks.DamageClassification`, and writes a GeoPackage
layer with every input footprint, in the input's CRS, row order and attributes, plus:

* ``damage_prob``: probability of damage, calibrated on the validation town (the
  checkpoint's temperature and bias) and, with ``adapt_prior``, adapted to the
  town's own damage rate (below);
* ``damage``: 1 where ``damage_prob`` reaches the decision threshold: the
  expected-F1 threshold of ``damage_prob`` (chosen on the town, without labels;
  the default), or, with ``threshold='checkpoint'`` and unadapted probabilities,
  the validation town's threshold recorded in the checkpoint;
* ``uncertainty``: standard deviation of the damage probability under Monte Carlo
  dropout of the fusion head (:data:`MC_SAMPLES` draws, encoders run once; see
  :meth:`~torchgeo_sar_damage.tasks.DamageClassification.probabilities_with_uncertainty`),
  always of the calibrated probability *before* adaptation: it measures how much
  the model's answer for this building moves, on the validation town's scale, not
  a spread of ``damage_prob`` (the adaptation is increasing, so it keeps the
  buildings' order);
* ``status``: ``'ok'``, or why the building was not assessed (:data:`STATUSES`);
  ``damage_prob``, ``damage`` and ``uncertainty`` are empty (NULL) unless
  ``status`` is ``'ok'``: a building is never silently given a probability.

**The town's damage rate.** Calibrated probabilities mean "damaged, at the
validation town's damage rate"; a new town has its own rate, unknown. Without
adaptation (the default), the estimated damaged share is the mean calibrated
probability. With ``adapt_prior=True`` (``sardamage predict --adapt-prior``), once
every building is predicted,
:func:`~torchgeo_sar_damage.prior_shift.adapt_to_town` estimates the town's
damaged share from the assessed buildings' probabilities (EM under label shift,
from the validation town's rate that the checkpoint records), re-weights the
probabilities to it, picks their expected-F1 threshold and bounds the share with a
90 % bootstrap interval. It fails safe, with a warning, keeping the calibrated
probabilities: with fewer than 30 assessed buildings, when EM does not converge or
runs to 0 or 1, when the interval is wider than 0.5, and for a checkpoint that
predates the record of the validation town's rate (retrain it to adapt).
Adaptation is off by default because the study measured it making unseen towns
worse, not better (``docs/results/study.md``, "Unseen cities after prior
adaptation"): the label-shift assumption fails between towns whose damage looks
different, and EM amplifies that. The interval covers the sampling of buildings
only, not that.

**The summary.** Beside the layer, ``<out stem>.summary.json`` (``damage.gpkg`` ->
``damage.summary.json``, :func:`summary_path`; written atomically and, like the
layer and the map, never replaced without ``overwrite``) holds
:meth:`PredictionSummary.to_dict`: ``buildings``, ``assessed``, ``counts`` (per
status), ``damaged_share_estimate``, ``damaged_share_interval`` (``[low, high]``,
null when not adapted), ``interval_level``, ``expected_damaged`` (the sum of
``damage_prob``), ``damaged`` (buildings at or above the threshold),
``threshold``, ``threshold_rule`` (where the threshold comes from),
``prior_adapted``, ``source_prior`` (the validation town's rate), ``reason`` (why
not adapted, or null), ``temperature``, ``calibration_bias``,
``uncertainty_column`` (what the column means), ``checkpoint``, ``sar``, ``out``
and ``map``; a value that is not a number is null. The map's title gives the
estimated share (:func:`map_title`), and ``sardamage predict`` prints it with the
threshold and whether the probabilities were adapted.

How it streams:

1. The footprints' bounding boxes only are read (:func:`pyogrio.read_bounds`), their
   centres re-projected to the SAR CRS (pyproj), and the buildings sorted in
   raster-block order (:data:`TILE_PIXELS` tiles of the SAR grid, row by row within
   vertical strips of :data:`~.chunks.STRIP_TILES` tiles, so that the blocks two tile
   rows share are still in GDAL's block cache) and cut into chunks of
   ``batch_size`` buildings (:class:`BuildingChunks`).
2. Each chunk reads the footprints of its area (GeoPackage spatial index), makes one
   window per building with :class:`~torchgeo_sar_damage.samplers.BuildingSampler`
   and reads the windows with the package's datasets (:class:`COSMOSkyMed`,
   :class:`DSM`, :class:`GEMExposure`, :class:`OSMBuildings`), which re-project other
   CRSs with rasterio. A background thread reads the next chunks while the model
   predicts (``read_ahead``, :class:`~.read_ahead.ReadAhead`; one device, no
   dataloader workers); Lightning's ``Trainer.predict`` runs the model
   (:class:`CityPredictor`), on one process or several (DDP), and
   :class:`PartWriter` keeps each process's results (a few bytes per building) and
   writes them as one part per process.
3. The parts are merged (:func:`merge_parts`), the probabilities adapted to the
   town's rate on the first process, and the layer is written in input order, chunk
   by chunk, to a temporary GeoPackage renamed into place at the end
   (:func:`write_layer`); an interrupted or failed run leaves no output. The map and
   the summary follow.

Memory depends on the chunk size, not on the number of buildings (besides a few
bytes per building for the bounds and results).

**Speed.** The model runs under ``torch.inference_mode`` (Lightning's predict
loop), channels-last, with PyTorch's default threads (one per core), in batches of
``batch_size`` buildings, read in chunks of ``chunk_size`` (4 batches by default)
by a background thread while the model predicts (``read_ahead``). On the CPU the image encoders run on ONNX Runtime by
default where it is installed (``onnx``, ``--onnx``/``--no-onnx``:
:mod:`~torchgeo_sar_damage.predict.onnx_runtime`; the same probabilities to float
rounding). ``quantize=True`` (``--quantize``) runs the image encoders in int8 (:mod:`~torchgeo_sar_damage.predict.quantize`): about twice the
model's rate on CPU, **not exact** (the probabilities move by up to about 0.01; the
README gives the measured rates and differences per model).

.. versionadded:: 0.1
"""

from .checkpoint import Checkpoint, load_checkpoint, match_training_sar
from .chunks import MIN_VALID_SAR_FRACTION, STATUSES, TILE_PIXELS, BuildingChunks
from .output import (
    OUTPUT_COLUMNS,
    UNCERTAINTY_MEANING,
    WRITE_CHUNK,
    PartWriter,
    PredictionSummary,
    Results,
    draw_map,
    map_title,
    merge_parts,
    share_text,
    summary_path,
    write_layer,
)
from .runner import (
    GDAL_CACHEMAX_MB,
    MC_SAMPLES,
    THRESHOLD_RULES,
    CityPredictor,
    predict_buildings,
)

__all__ = [
    'GDAL_CACHEMAX_MB',
    'MC_SAMPLES',
    'MIN_VALID_SAR_FRACTION',
    'OUTPUT_COLUMNS',
    'STATUSES',
    'THRESHOLD_RULES',
    'TILE_PIXELS',
    'UNCERTAINTY_MEANING',
    'WRITE_CHUNK',
    'BuildingChunks',
    'Checkpoint',
    'CityPredictor',
    'PartWriter',
    'PredictionSummary',
    'Results',
    'draw_map',
    'load_checkpoint',
    'map_title',
    'match_training_sar',
    'merge_parts',
    'predict_buildings',
    'share_text',
    'summary_path',
    'write_layer',
]
