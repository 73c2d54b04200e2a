# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The ``sardamage`` command line.

Subcommands:

* ``simulate``: write simulated post-earthquake scenes in the real products' formats.
* ``demo``: the end-to-end demonstration on simulated data.
* ``predict``: city-scale prediction from raw files to a per-building GeoPackage
  layer (and a PNG map), streamed; see :mod:`torchgeo_sar_damage.predict`.
* ``benchmark bright|qqb``: train and score FusionNet on a real public benchmark,
  per building (BRIGHT, QuickQuakeBuildings); see :mod:`torchgeo_sar_damage.benchmark`.
* ``fit``, ``validate``, ``test``: train and evaluate
  :class:`~torchgeo_sar_damage.tasks.DamageClassification` on a
  :class:`~torchgeo_sar_damage.datamodules.SARDamageDataModule` with LightningCLI,
  e.g. ``sardamage fit --config experiments/configs/sar.yaml``; ``--data.root DIR``
  points a config at another scene, ``--trainer.precision 16-mixed`` trains with
  mixed precision on a GPU, ``--trainer.devices 2 --trainer.strategy ddp`` on two
  processes. ``data.modalities`` also sets ``model.modalities`` and ``model.task``
  sets ``data.scheme`` (``'binary'``, or ``'four'`` for ``'multiclass'``).

Bad arguments and bad input files end with one line on standard error and exit code 2,
never a traceback.
"""

import argparse
import json
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ArgumentError, InputFileError, SARDamageError
from .simulation.cities import CITIES

if TYPE_CHECKING:
    from .predict import PredictionSummary

#: Subcommands handed to LightningCLI.
LIGHTNING_COMMANDS = ('fit', 'validate', 'test')


def _int_at_least(minimum: int, words: str) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (``words`` names the rule)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be {words}, not {value}')
        return value

    return parse


_positive_int = _int_at_least(1, 'positive')
_non_negative_int = _int_at_least(0, 'non-negative')


def _pixel(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not 0.1 <= value <= 5.0:
        raise argparse.ArgumentTypeError(f'must be between 0.1 and 5 m, not {value}')
    return value


def _city(text: str) -> str:
    if text not in CITIES:
        raise argparse.ArgumentTypeError(
            f'unknown city {text!r}; choose from {", ".join(CITIES)}'
        )
    return text


def _add_buildings(parser: argparse.ArgumentParser, default: int) -> None:
    """``--buildings N`` (per town)."""
    parser.add_argument(
        '--buildings',
        type=_positive_int,
        default=default,
        metavar='N',
        help=f'buildings per town (default: {default})',
    )


def _add_seed(parser: argparse.ArgumentParser) -> None:
    """``--seed S``."""
    parser.add_argument(
        '--seed',
        type=_non_negative_int,
        default=0,
        metavar='S',
        help='random seed (default: 0)',
    )


def _add_accelerator(parser: argparse.ArgumentParser) -> None:
    """``--accelerator`` (``--device`` is its old name in ``predict``)."""
    parser.add_argument(
        '--accelerator',
        '--device',
        dest='accelerator',
        default='cpu',
        metavar='A',
        help="Lightning accelerator: 'cpu' (default), 'gpu' or 'auto' (a GPU if any)",
    )


def _add_simulate(
    sub: 'argparse._SubParsersAction[argparse.ArgumentParser]',
) -> argparse.ArgumentParser:
    """The ``simulate`` subcommand."""
    sim = sub.add_parser(
        'simulate',
        help="simulate post-earthquake scenes in the real products' formats",
        description='Simulate towns hit by the 6 February 2023 earthquakes and write, per '
        'town, the SAR product (CSK HDF5 and CSG GeoTIFF), a pre-event DSM, OSM '
        'footprints, GEM exposure CSVs with unit polygons, a Copernicus EMS grading '
        'layer and truth.gpkg, all listed in OUT/scene.json.',
        epilog='built-in cities: ' + ', '.join(CITIES),
    )
    sim.add_argument('--out', required=True, type=Path, help='output folder')
    sim.add_argument(
        '--cities',
        nargs='+',
        type=_city,
        metavar='SLUG',
        help='towns to simulate (default: all): ' + ', '.join(CITIES),
    )
    _add_buildings(sim, 3000)
    _add_seed(sim)
    sim.add_argument(
        '--pixel-m',
        type=_pixel,
        default=0.5,
        metavar='M',
        help='SAR pixel spacing in metres (default: 0.5)',
    )
    sim.add_argument(
        '--footprints',
        type=Path,
        metavar='FILE',
        help='simulate over these real footprints (any vector file, any CRS) instead of the built-in towns',
    )
    sim.add_argument(
        '--overwrite',
        action='store_true',
        help='replace the simulated files of a non-empty OUT',
    )
    sim.add_argument(
        '--gem-level',
        type=int,
        choices=(1, 2),
        default=1,
        help='administrative level of the GEM exposure: 1 = per province, as GEM '
        'publishes Türkiye (Exposure_*_Turkey_Adm1.csv, province polygons; default), '
        '2 = per simulated district (..._Adm2.csv, district polygons)',
    )
    sim.add_argument('--quiet', action='store_true', help='no progress bars')

    sim.set_defaults(handler=_simulate)
    return sim


def _add_demo(
    sub: 'argparse._SubParsersAction[argparse.ArgumentParser]',
) -> argparse.ArgumentParser:
    """The ``demo`` subcommand."""
    demo = sub.add_parser(
        'demo',
        help='simulate, train, test on an unseen town, map (CPU, minutes)',
        description='Simulate four towns, train the SAR+OSM+DSM+GEM fusion model on two, '
        'choose the threshold on a third, test on the fourth (never seen) and write '
        'OUT/model.ckpt, OUT/predictions.gpkg, OUT/map.png and OUT/metrics.json.',
    )
    demo.add_argument(
        '--out',
        type=Path,
        default=Path('outputs/demo'),
        help='output folder (default: outputs/demo)',
    )
    _add_buildings(demo, 800)
    demo.add_argument(
        '--epochs',
        type=_positive_int,
        default=6,
        metavar='E',
        help='training epochs (default: 6)',
    )
    _add_seed(demo)
    _add_accelerator(demo)
    demo.add_argument('--quiet', action='store_true', help='no progress bars')

    demo.set_defaults(handler=_demo)
    return demo


def _add_predict(
    sub: 'argparse._SubParsersAction[argparse.ArgumentParser]',
) -> argparse.ArgumentParser:
    """The ``predict`` subcommand: its inputs (run options in :func:`_add_predict_run`)."""
    pred = sub.add_parser(
        'predict',
        help='per-building damage of a whole town from raw files (GeoPackage + map)',
        description='Predict the damage of every building footprint from one '
        'post-event COSMO-SkyMed/CSG product with a trained checkpoint. Writes the '
        'footprints (input CRS, columns and row order) with damage_prob, damage, '
        'uncertainty and status; streamed in raster-block order, written to a '
        'temporary file renamed at the end. By default the probabilities and the '
        "threshold are adapted to the town's damage rate, estimated without labels; "
        'OUT.summary.json beside the layer gives the estimated damaged share, its '
        'interval, the threshold and whether they were adapted. No trained weights '
        'ship with the package: '
        'the checkpoint is one you trained (sardamage fit or sardamage demo). A model '
        'trained on simulated scenes is for rehearsal and testing, not for real '
        'imagery. No real CSK/CSG product has been read by the tests: the readers '
        'follow the published specifications, and reports from real products are '
        'welcome.',
    )
    pred.add_argument(
        '--sar',
        required=True,
        nargs='+',
        type=Path,
        metavar='FILE',
        help='COSMO-SkyMed/CSG product(s): HDF5 or GTC GeoTIFF',
    )
    pred.add_argument(
        '--calibration',
        type=Path,
        metavar='JSON',
        help='calibration attributes for SAR products that lack them (a clipped '
        'GeoTIFF without metadata tags), as a JSON object of attribute name -> value '
        '(Rescaling_Factor, S01_Calibration_Constant, ...), or file name -> such an '
        'object',
    )
    pred.add_argument(
        '--sar-units',
        choices=('db', 'dn'),
        help="what the model reads of the SAR: 'db' (sigma nought) or 'dn' (digital "
        "numbers); the checkpoint's by default, and only that is accepted",
    )
    pred.add_argument(
        '--buildings',
        required=True,
        type=Path,
        metavar='FOOTPRINTS',
        help='building footprints (GeoPackage, GeoJSON, Shapefile...; any CRS)',
    )
    pred.add_argument('--dsm', type=Path, metavar='F', help='pre-event DSM GeoTIFF')
    pred.add_argument(
        '--gem',
        nargs='+',
        type=Path,
        default=[],
        metavar='CSV',
        help='GEM exposure CSV files',
    )
    pred.add_argument(
        '--admin', type=Path, metavar='F', help='administrative unit polygons of --gem'
    )
    pred.add_argument(
        '--admin-code-column',
        metavar='[ID_n=]COLUMN',
        help=(
            "column of --admin that holds GEM's unit codes when it is not named ID_n, "
            "e.g. ISO_1 (for the CSVs' deepest ID_n level) or ID_1=ISO_1"
        ),
    )
    pred.set_defaults(handler=_predict)
    return pred


def _add_predict_run(pred: argparse.ArgumentParser) -> None:
    """The ``predict`` subcommand's model, output and run options."""
    pred.add_argument(
        '--checkpoint',
        required=True,
        type=Path,
        metavar='CKPT',
        help='checkpoint of a trained model (sardamage fit / demo)',
    )
    pred.add_argument(
        '--out', required=True, type=Path, metavar='OUT.gpkg', help='output layer'
    )
    pred.add_argument('--map', type=Path, metavar='OUT.png', help='also draw a map')
    pred.add_argument(
        '--batch-size',
        type=_positive_int,
        default=256,
        metavar='N',
        help='buildings per model batch (default: 256)',
    )
    pred.add_argument(
        '--chunk-size',
        type=_positive_int,
        default=None,
        metavar='N',
        help='buildings read together, then predicted --batch-size at a time '
        '(default: 4 x --batch-size; larger chunks read shared raster blocks fewer '
        'times and hold more memory)',
    )
    _add_accelerator(pred)
    pred.add_argument(
        '--devices',
        type=_positive_int,
        default=1,
        metavar='N',
        help='processes (DDP when more than one; default: 1)',
    )
    pred.add_argument(
        '--num-workers',
        type=_non_negative_int,
        default=0,
        metavar='W',
        help='dataloader workers reading chunks (default: 0)',
    )
    pred.add_argument(
        '--mc-samples',
        type=_non_negative_int,
        default=20,
        metavar='T',
        help='Monte Carlo dropout draws for uncertainty (default: 20)',
    )
    pred.add_argument(
        '--quantize',
        action='store_true',
        help='run the image encoders in int8 (post-training quantisation calibrated '
        "on 256 windows of the town; CPU only). Not exact: about twice the model's "
        "rate on CPU, probabilities within about 0.01 of the float model's (0.007-"
        '0.014 measured; README, "How fast it predicts"). Default: off',
    )
    pred.add_argument(
        '--onnx',
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the image encoders on ONNX Runtime (exported on the town's first "
        'windows and checked against PyTorch there: the same probabilities to float '
        "rounding; about 1.4 times the model's rate for the default RegNet encoder). "
        'Default: on the CPU without --quantize where onnx and onnxruntime are '
        'installed; --no-onnx: PyTorch only',
    )
    pred.add_argument(
        '--read-ahead',
        action=argparse.BooleanOptionalAction,
        default=True,
        help='read the next chunks in a background thread while the model predicts '
        '(the same output; with one device and --num-workers 0). Default: on',
    )
    pred.add_argument(
        '--adapt-prior',
        action=argparse.BooleanOptionalAction,
        default=False,
        help="adapt damage_prob and the threshold to the town's own damage rate, "
        'estimated without labels from the probabilities (label shift, EM of '
        "Saerens et al.; from the validation town's rate in the checkpoint), with a "
        '90%% bootstrap interval in OUT.summary.json; --no-adapt-prior keeps the '
        "checkpoint's probabilities and threshold (default: off, from the study's "
        'evidence: docs/results/study.md, "Unseen cities after prior adaptation")',
    )
    pred.add_argument(
        '--threshold',
        choices=('expected-f1', 'checkpoint'),
        default='expected-f1',
        help='the decision threshold when damage_prob is not adapted: the '
        "validation town's, recorded in the checkpoint, or the threshold that "
        "maximises the expected F1 of this town's calibrated probabilities, chosen "
        'without labels (adapted probabilities always use their own expected-F1 '
        "threshold). Default: expected-f1 (in the study's unseen towns it raised "
        "every model's F1 over the validation town's threshold: docs/results/"
        'study.md)',
    )
    pred.add_argument(
        '--overwrite',
        action='store_true',
        help='replace existing outputs (the layer, OUT.summary.json, the map)',
    )
    pred.add_argument('--quiet', action='store_true', help='no progress bars')


def _add_lightning(sub: 'argparse._SubParsersAction[argparse.ArgumentParser]') -> None:
    """``fit``, ``validate``, ``test``: listed for ``--help`` (LightningCLI runs them)."""
    # listed for --help only: main() hands these to LightningCLI before parsing
    lightning_help = {
        'fit': 'train a damage model (LightningCLI; see sardamage fit --help)',
        'validate': 'evaluate on the validation cities (LightningCLI)',
        'test': 'evaluate on the test cities, per city (LightningCLI)',
    }
    for name, text in lightning_help.items():
        sub.add_parser(name, help=text, add_help=False)


def _add_benchmark(sub: 'argparse._SubParsersAction[argparse.ArgumentParser]') -> None:
    """The ``benchmark bright`` and ``benchmark qqb`` subcommands."""
    bench = sub.add_parser(
        'benchmark',
        help='train and score FusionNet on BRIGHT or QuickQuakeBuildings (real data)',
        description='Train and score FusionNet per building on a real public '
        "benchmark you downloaded: BRIGHT (TorchGeo's BRIGHTDFC2025 layout) or "
        "QuickQuakeBuildings. Writes OUT/benchmark.csv (the study's columns) and "
        'OUT/benchmark.md. Nothing is downloaded.',
    )
    which = bench.add_subparsers(dest='benchmark', required=True, metavar='DATASET')
    bright = which.add_parser(
        'bright',
        help='BRIGHT (DFC 2025 track 2): its own split or leave-one-event-out',
        description='FusionNet on BRIGHT, one sample per building. Without '
        "--test-events: train on BRIGHT's train list, choose on holdout, test on val "
        "(its targets are not in TorchGeo's archive). With --test-events: each event "
        'in turn is tested, the other events train (train tiles) and choose (holdout '
        'tiles).',
    )
    bright.add_argument(
        '--test-events',
        nargs='+',
        metavar='EVENT',
        help='events to leave out, one fold each (e.g. turkey-earthquake)',
    )
    bright.add_argument(
        '--earthquakes-only',
        action='store_true',
        help='keep only the earthquake events',
    )
    bright.add_argument(
        '--size-m', type=float, default=32.0, metavar='M', help='window side (32 m)'
    )
    bright.add_argument(
        '--pixel-m',
        type=_pixel,
        default=0.5,
        metavar='M',
        help='window pixel size in metres (default 0.5)',
    )
    bright.add_argument(
        '--cache-dir', type=Path, metavar='DIR', help='folder of the building index'
    )
    qqb = which.add_parser(
        'qqb',
        help='QuickQuakeBuildings (Islahiye, Capella SAR + optical, 5 folds)',
        description='FusionNet on QuickQuakeBuildings, under its published protocol '
        '(validation fold = test fold) and an honest one (separate validation fold).',
    )
    qqb.add_argument(
        '--protocol',
        choices=('both', 'qqb', 'honest'),
        default='both',
        help="'qqb': theirs; 'honest': a separate fold chooses; 'both' (default)",
    )
    qqb.add_argument(
        '--size', type=_positive_int, default=64, metavar='PX', help='window side (64)'
    )
    qqb.add_argument(
        '--folds',
        nargs='+',
        type=int,
        choices=(1, 2, 3, 4, 5),
        default=[1, 2, 3, 4, 5],
        metavar='K',
        help='test folds (default: all five)',
    )
    defaults = {
        'bright': 'sar sar+osm sar+optical sar+osm+optical',
        'qqb': 'sar sar+optical',
    }
    for name, parser in (('bright', bright), ('qqb', qqb)):
        parser.add_argument(
            '--root', required=True, type=Path, help='folder of the downloaded data'
        )
        parser.add_argument('--out', required=True, type=Path, help='output folder')
        parser.add_argument(
            '--modalities',
            nargs='+',
            default=defaults[name].split(),
            metavar='SET',
            help=f'modality sets joined by + (default: {defaults[name]})',
        )
        parser.add_argument(
            '--fusions',
            nargs='+',
            default=['late'],
            metavar='F',
            help='early, late, attention (default: late)',
        )
        parser.add_argument(
            '--seeds',
            nargs='+',
            type=_non_negative_int,
            default=[0],
            metavar='S',
            help='training seeds (default: 0)',
        )
        parser.add_argument(
            '--epochs', type=_positive_int, default=10, metavar='E', help='(10)'
        )
        parser.add_argument(
            '--batch-size', type=_positive_int, default=32, metavar='B', help='(32)'
        )
        parser.add_argument(
            '--backbone', default='resnet18', metavar='NAME', help='timm encoder'
        )
        _add_accelerator(parser)
        parser.add_argument('--quiet', action='store_true', help='no progress bars')
    bench.set_defaults(handler=_benchmark)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sardamage``: one builder per subcommand."""
    parser = argparse.ArgumentParser(
        prog='sardamage',
        description='Building damage assessment from one post-event VHR SAR image '
        'plus geospatial context (torchgeo-sar-damage).',
    )
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    _add_simulate(sub)
    _add_demo(sub)
    _add_predict_run(_add_predict(sub))
    _add_benchmark(sub)
    _add_lightning(sub)
    return parser


def _simulate(args: argparse.Namespace) -> int:
    from .simulation.run import simulate

    if args.footprints is not None and args.cities:
        raise SARDamageError('--cities and --footprints exclude each other')
    start = time.perf_counter()
    manifest = simulate(
        args.out,
        cities=args.cities,
        n_buildings=args.buildings,
        seed=args.seed,
        pixel_m=args.pixel_m,
        footprints=args.footprints,
        overwrite=args.overwrite,
        progress=not args.quiet,
        gem_level=args.gem_level,
    )
    if not args.quiet:
        for slug, city in manifest['cities'].items():
            print(
                f'{slug}: {city["buildings"]} buildings, {100 * city["damage_rate"]:.1f} % '
                f'grade >= 4, median PGA {city["pga_g"]["median"]:.2f} g'
            )
        print(f'wrote {args.out / "scene.json"} in {time.perf_counter() - start:.0f} s')
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    config = DemoConfig(
        buildings=args.buildings,
        epochs=args.epochs,
        seed=args.seed,
        accelerator=args.accelerator,
    )
    metrics = run_demo(args.out, config, quiet=args.quiet)
    out: Path = args.out
    print(
        f'unseen town {metrics["test_city"]}: F1 {metrics["f1score"]:.3f}, '
        f'AUROC {metrics["auroc"]:.3f}, AP {metrics["averageprecision"]:.3f}, '
        f'kappa {metrics["cohenkappa"]:.3f} ({metrics["seconds"]:.0f} s)'
    )
    for name in ('model.ckpt', 'predictions.gpkg', 'map.png', 'metrics.json', 'scene'):
        print(f'  {out / name}')
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from torchgeo.datasets.errors import DatasetNotFoundError

    try:
        return _run_benchmark(args)
    except DatasetNotFoundError as err:
        raise InputFileError(args.root, str(err)) from None


def _run_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import (
        QQB_PUBLISHED,
        bright_folds,
        check_sets,
        qqb_folds,
        run_benchmark,
        write_benchmark_report,
    )

    sets = check_sets(args.modalities)
    command = 'sardamage ' + shlex.join(getattr(args, 'argv', ['benchmark']))
    pixel_m: float | None
    if args.benchmark == 'bright':
        folds = bright_folds(
            args.root,
            args.test_events,
            args.earthquakes_only,
            args.size_m,
            args.pixel_m,
            args.cache_dir,
            progress=not args.quiet,
        )
        pixel_m = args.pixel_m
        title = 'FusionNet on BRIGHT, per building'
        data = (
            f'Data: BRIGHT in `{args.root}`, windows of {args.size_m:g} m at '
            f'{args.pixel_m:g} m; '
            + (
                'leave-one-event-out over ' + ', '.join(args.test_events)
                if args.test_events
                else "BRIGHT's own split (train / holdout / val)"
            )
            + ('; earthquakes only' if args.earthquakes_only else '')
            + '.'
        )
        published: tuple[tuple[str, float, float], ...] = ()
        source = ''
    else:
        folds = qqb_folds(args.root, args.protocol, args.size, test_folds=args.folds)
        pixel_m = None
        title = 'FusionNet on QuickQuakeBuildings, per building'
        data = (
            f'Data: QuickQuakeBuildings in `{args.root}`, patches resized to '
            f'{args.size} px; five folds.'
        )
        published = QQB_PUBLISHED
        source = (
            'Sun, Wang & Eineder (arXiv:2312.06587), 5-fold means of the GitHub '
            'repository `ya0-sun/PostEQ-SARopt-BuildingDamage` (their protocol).'
        )
    rows = run_benchmark(
        folds,
        sets,
        args.fusions,
        args.seeds,
        out=args.out,
        progress=not args.quiet,
        epochs=args.epochs,
        batch_size=args.batch_size,
        backbone=args.backbone,
        pixel_m=pixel_m,
        accelerator=args.accelerator,
    )
    about = [
        data,
        (
            f'Models: FusionNet ({args.backbone} encoders) trained by DamageClassification, '
            f'{args.epochs} epochs, batch {args.batch_size}, seeds {args.seeds}, fusions '
            f'{", ".join(args.fusions)}, accelerator {args.accelerator}. The checkpoint '
            'of the epoch with the best validation AUROC is kept.'
        ),
        f'Command: `{command}`.',
    ]
    files = write_benchmark_report(rows, args.out, title, about, published, source)
    for path in files:
        print(f'  {path}')
    return 0


def _code_column(value: str | None) -> dict[str, str] | str | None:
    """``--admin-code-column``: ``COLUMN`` or ``ID_n=COLUMN``."""
    if value is None or '=' not in value:
        return value
    level, _, column = value.partition('=')
    if not re.fullmatch(r'ID_\d+', level.strip()) or not column.strip():
        raise ArgumentError(
            f'--admin-code-column {value}: give COLUMN or ID_n=COLUMN, e.g. ID_1=ISO_1'
        )
    return {level.strip(): column.strip()}


def _calibration(path: Path | None) -> dict[str, Any] | None:
    """``--calibration``: the JSON object in the file."""
    if path is None:
        return None
    try:
        value = json.loads(path.read_text(encoding='utf-8'))
    except FileNotFoundError:
        raise InputFileError(path, 'calibration file does not exist') from None
    except (OSError, ValueError) as err:
        raise InputFileError(path, f'cannot be read as JSON ({err})') from None
    if not isinstance(value, dict):
        raise InputFileError(
            path,
            'must hold a JSON object of calibration attributes, e.g. '
            '{"Rescaling_Factor": 0.0002, "S01_Calibration_Constant": 220000.0, ...}',
        )
    return value


def _predict(args: argparse.Namespace) -> int:
    from .predict import predict_buildings

    summary = predict_buildings(
        args.sar,
        args.buildings,
        args.checkpoint,
        args.out,
        dsm=args.dsm,
        gem=args.gem,
        admin=args.admin,
        gem_id_columns=_code_column(args.admin_code_column),
        sar_units=args.sar_units,
        calibration=_calibration(args.calibration),
        map_path=args.map,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        accelerator=args.accelerator,
        devices=args.devices,
        num_workers=args.num_workers,
        mc_samples=args.mc_samples,
        overwrite=args.overwrite,
        progress=not args.quiet,
        adapt_prior=args.adapt_prior,
        quantize=args.quantize,
        threshold=args.threshold,
        onnx=args.onnx,
        read_ahead=args.read_ahead,
    )
    if summary is None:  # a non-zero rank of a distributed run
        return 0
    counts = ', '.join(f'{n} {name}' for name, n in summary.counts.items() if n)
    print(
        f'{summary.buildings} buildings ({counts}); {summary.damaged} predicted '
        f'damaged at threshold {summary.threshold:.3f} (temperature '
        f'{summary.temperature:.2f}, bias {summary.calibration_bias:+.2f})'
    )
    print(_share_line(summary))
    for path in (summary.out, summary.summary_file, summary.map):
        if path is not None:
            print(f'  {path}')
    return 0


def _share_line(summary: 'PredictionSummary') -> str:
    """``predict``'s line on the town's damaged share, threshold and adaptation."""
    from .predict.output import share_text

    share = share_text(
        summary.damaged_share_estimate,
        summary.damaged_share_interval,
        summary.prior_adapted,
        dash='-',
    )
    if summary.prior_adapted:
        return (
            f'{share}; threshold {summary.threshold:.3f}; prior adapted (interval: '
            f'{100 * summary.interval_level:.0f} % bootstrap; validation town '
            f'{100 * summary.source_prior:.1f} % damaged)'
        )
    source = (
        "the checkpoint's"
        if summary.threshold_rule == 'checkpoint'
        else "expected-F1 of the town's probabilities"
    )
    return (
        f'{share}; threshold {summary.threshold:.3f} ({source}); prior not '
        f'adapted: {summary.reason}'
    )


def _scheme(task: str) -> str:
    """The label scheme of the data module for a task."""
    return 'four' if task == 'multiclass' else 'binary'


def _lightning(argv: list[str] | None) -> int:
    """Run a LightningCLI subcommand (fit, validate, test).

    Args:
        argv: the arguments, subcommand first (None: ``sys.argv[1:]``).

    Returns:
        0 (LightningCLI exits by itself on bad arguments).
    """
    from jsonargparse import ArgumentParser
    from lightning.pytorch.cli import LightningCLI
    from torchgeo.tasks import Classification

    from .batch import image_channel_count
    from .datamodules import SARDamageDataModule
    from .tasks import ResumableRandomness

    class SARDamageCLI(LightningCLI):
        """LightningCLI with the data module and the task kept consistent.

        The model is :class:`~torchgeo_sar_damage.tasks.DamageClassification` unless
        ``--model`` names another :class:`torchgeo.tasks.Classification` (e.g.
        TorchGeo's own, with ``--data.stacked true``): ``data.modalities`` sets the
        damage task's ``modalities`` or TorchGeo's ``in_channels``.
        """

        def add_arguments_to_parser(self, parser: ArgumentParser) -> None:
            parser.set_defaults(
                {
                    'model': {
                        'class_path': 'torchgeo_sar_damage.tasks.DamageClassification'
                    }
                }
            )
            parser.link_arguments('data.modalities', 'model.init_args.modalities')
            parser.link_arguments(
                'data.modalities',
                'model.init_args.in_channels',
                compute_fn=image_channel_count,
            )
            parser.link_arguments(
                'model.init_args.task', 'data.scheme', compute_fn=_scheme
            )

    SARDamageCLI(
        Classification,
        SARDamageDataModule,
        subclass_mode_model=True,
        args=argv,
        save_config_kwargs={'overwrite': True},
        # checkpoints carry the random generators: --ckpt_path resumes exactly
        trainer_defaults={'callbacks': [ResumableRandomness()]},
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sardamage``.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for bad arguments or input, 130 when interrupted.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in LIGHTNING_COMMANDS:
        try:
            return _lightning(None if argv is None else arguments)
        except SARDamageError as err:
            print(f'sardamage {arguments[0]}: error: {err}', file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(arguments)
    args.argv = arguments
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SARDamageError as err:
        print(f'sardamage {args.command}: error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f'sardamage {args.command}: interrupted; nothing was left half-written',
            file=sys.stderr,
        )
        return 130


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
