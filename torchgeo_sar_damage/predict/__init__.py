# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""City-scale prediction: raw files -> per-building damage layer (streamed).

:func:`predict_buildings` (``sardamage predict``) reads one post-event SAR product
(one or more COSMO-SkyMed/CSG files), building footprints (any vector file, any
CRS), optionally a DSM and GEM exposure, and a checkpoint of
:class:`~torchgeo_sar_damage.tasks.DamageClassification`, and writes a GeoPackage
layer with every input footprint, in the input's CRS, row order and attributes, plus:

* ``damage_prob``: calibrated probability of damage (the checkpoint's temperature
  and bias);
* ``damage``: 1 where ``damage_prob`` reaches the checkpoint's decision threshold;
* ``uncertainty``: standard deviation of the damage probability under Monte Carlo
  dropout of the fusion head (:data:`MC_SAMPLES` draws, encoders run once; see
  :meth:`~torchgeo_sar_damage.tasks.DamageClassification.probabilities_with_uncertainty`);
* ``status``: ``'ok'``, or why the building was not assessed (:data:`STATUSES`);
  ``damage_prob``, ``damage`` and ``uncertainty`` are empty (NULL) unless
  ``status`` is ``'ok'``: a building is never silently given a probability.

How it streams:

1. The footprints' bounding boxes only are read (:func:`pyogrio.read_bounds`), their
   centres re-projected to the SAR CRS (pyproj), and the buildings sorted in
   raster-block order (:data:`TILE_PIXELS` tiles of the SAR grid, row by row) and
   cut into chunks of ``batch_size`` buildings (:class:`BuildingChunks`).
2. Each chunk reads the footprints of its area (GeoPackage spatial index), makes one
   window per building with :class:`~torchgeo_sar_damage.samplers.BuildingSampler`
   and reads the windows with the package's datasets (:class:`COSMOSkyMed`,
   :class:`DSM`, :class:`GEMExposure`, :class:`OSMBuildings`), which re-project other
   CRSs with rasterio; Lightning's ``Trainer.predict`` runs the model
   (:class:`CityPredictor`), on one process or several (DDP), and
   :class:`PartWriter` keeps each process's results (a few bytes per building) and
   writes them as one part per process.
3. The parts are merged (:func:`merge_parts`) and the layer is written in input order,
   chunk by chunk, to a temporary GeoPackage renamed into place at the end
   (:func:`write_layer`); an interrupted or failed run leaves no output.

Memory depends on the chunk size, not on the number of buildings (besides a few
bytes per building for the bounds and results).

.. versionadded:: 0.1
"""

from .checkpoint import Checkpoint, load_checkpoint, match_training_sar
from .chunks import MIN_VALID_SAR_FRACTION, STATUSES, TILE_PIXELS, BuildingChunks
from .output import (
    OUTPUT_COLUMNS,
    WRITE_CHUNK,
    PartWriter,
    PredictionSummary,
    Results,
    draw_map,
    merge_parts,
    write_layer,
)
from .runner import GDAL_CACHEMAX_MB, MC_SAMPLES, CityPredictor, predict_buildings

__all__ = [
    'GDAL_CACHEMAX_MB',
    'MC_SAMPLES',
    'MIN_VALID_SAR_FRACTION',
    'OUTPUT_COLUMNS',
    'STATUSES',
    'TILE_PIXELS',
    'WRITE_CHUNK',
    'BuildingChunks',
    'Checkpoint',
    'CityPredictor',
    'PartWriter',
    'PredictionSummary',
    'Results',
    'draw_map',
    'load_checkpoint',
    'match_training_sar',
    'merge_parts',
    'predict_buildings',
    'write_layer',
]
