# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Inference options of prediction: each against the reference path."""

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from torchgeo_sar_damage import predict as predict_module
from torchgeo_sar_damage.cli import main
from torchgeo_sar_damage.errors import ArgumentError, InputFileError
from torchgeo_sar_damage.models.encoders import ImageBranch
from torchgeo_sar_damage.predict import load_checkpoint, predict_buildings
from torchgeo_sar_damage.predict.quantize import (
    CALIBRATION_CHUNKS,
    calibration_chunks,
    quantize_encoders,
)

#: :func:`conftest.town_chunks`: opens a town's chunks for a checkpoint.
TownChunks = Callable[..., predict_module.BuildingChunks]


#: Largest difference of int8 probabilities from the float model's on the test town
#: (the one-epoch model at temperature 1, its own sigmoid, the most sensitive scale:
#: measured 2.4e-4, with probabilities spread over 0.017).
QUANTIZED_ATOL = 1e-3


@pytest.fixture(scope='module')
def model_t1(small_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared small model with temperature 1 and bias 0 (its own sigmoid).

    The one-epoch model's fitted temperature is large: its calibrated probabilities
    lie close together and hide differences 50 times; this copy shows them.
    """
    raw = torch.load(small_model, weights_only=True)
    raw['state_dict']['temperature'] = torch.tensor(1.0)
    raw['state_dict']['calibration_bias'] = torch.tensor(0.0)
    path = tmp_path_factory.mktemp('options_model_t1') / 'model_t1.ckpt'
    torch.save(raw, path)
    return path


def run(
    unseen_town: dict[str, Any], model: Path, out: Path, **kwargs: object
) -> gpd.GeoDataFrame:
    """Predict the town (checkpoint's probabilities, batches of 16); read the layer."""
    args: dict[str, Any] = {
        'dsm': unseen_town['dsm'],
        'gem': unseen_town['gem'],
        'admin': unseen_town['admin'],
        'progress': False,
        'batch_size': 16,
        'adapt_prior': False,
        **kwargs,
    }
    predict_buildings(
        [unseen_town['sar']], unseen_town['buildings'], model, out, **args
    )
    return gpd.read_file(out)


def predict_argv(unseen_town: dict[str, Any], model: Path) -> list[str]:
    """``sardamage predict`` arguments for the town (no ``--out``)."""
    argv = ['predict', '--sar', str(unseen_town['sar'])]
    argv += ['--buildings', str(unseen_town['buildings'])]
    argv += ['--dsm', str(unseen_town['dsm']), '--gem', *map(str, unseen_town['gem'])]
    argv += ['--admin', str(unseen_town['admin']), '--checkpoint', str(model)]
    return [*argv, '--quiet', '--mc-samples', '0', '--batch-size', '16']


def spy(monkeypatch: pytest.MonkeyPatch, method: str) -> list[bool]:
    """Record each call of a :class:`CityPredictor` encoder switch, then run it."""
    calls: list[bool] = []
    original = getattr(predict_module.CityPredictor, method)

    def wrapper(
        self: predict_module.CityPredictor, batches: list[dict[str, Tensor]]
    ) -> None:
        calls.append(True)
        original(self, batches)

    monkeypatch.setattr(predict_module.CityPredictor, method, wrapper)
    return calls


def watch_forward(
    monkeypatch: pytest.MonkeyPatch, seen: Callable[[dict[str, Tensor]], object]
) -> None:
    """Call ``seen`` with each batch :class:`CityPredictor` predicts, then predict it."""
    forward = predict_module.CityPredictor.forward

    def record(
        self: predict_module.CityPredictor, batch: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        seen(batch)
        return forward(self, batch)

    monkeypatch.setattr(predict_module.CityPredictor, 'forward', record)


def seeded(
    predictor: predict_module.CityPredictor, item: dict[str, Tensor]
) -> tuple[Tensor, Tensor]:
    """Probability and uncertainty of a chunk, dropout seeded with 0."""
    torch.manual_seed(0)
    with torch.inference_mode():
        return predictor(item)


def town_predictor(
    unseen_town: dict[str, Any], model: Path, town_chunks: TownChunks
) -> tuple[predict_module.BuildingChunks, predict_module.CityPredictor]:
    """The town's chunks of 64 buildings and a predictor (4 MC draws) of ``model``."""
    checkpoint = load_checkpoint(model)
    chunks = town_chunks(unseen_town, checkpoint, 64)
    return chunks, predict_module.CityPredictor(checkpoint, chunks.raw_names, 4)


@pytest.fixture(scope='module')
def reference(
    unseen_town: dict[str, Any],
    model_t1: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> gpd.GeoDataFrame:
    """The float prediction of the town with :func:`model_t1`."""
    return run(
        unseen_town, model_t1, tmp_path_factory.mktemp('reference') / 'town.gpkg'
    )


def test_predict_runs_in_inference_mode(
    unseen_town: dict[str, Any],
    model_t1: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model runs under ``torch.inference_mode`` (Lightning's predict loop)."""
    seen: list[bool] = []
    watch_forward(
        monkeypatch, lambda batch: seen.append(torch.is_inference_mode_enabled())
    )
    run(unseen_town, model_t1, tmp_path / 'out.gpkg', mc_samples=0)
    assert seen
    assert all(seen)


def test_quantized_probabilities_are_close(
    unseen_town: dict[str, Any],
    model_t1: Path,
    reference: gpd.GeoDataFrame,
    tmp_path: Path,
) -> None:
    """int8 encoders: the same buildings assessed, probabilities within a bound."""
    layer = run(unseen_town, model_t1, tmp_path / 'int8.gpkg', quantize=True)
    assert list(layer['status']) == list(reference['status'])
    ok = (reference['status'] == 'ok').to_numpy()
    assert ok.sum() > 0.9 * len(reference)
    quantized = layer.loc[ok, 'damage_prob'].to_numpy()
    exact = reference.loc[ok, 'damage_prob'].to_numpy()
    assert np.ptp(exact) > 0.01  # the model separates buildings: a real comparison
    difference = np.abs(quantized - exact)

    assert 0 < difference.max() <= QUANTIZED_ATOL  # not exact, but close
    assert layer.loc[ok, 'uncertainty'].notna().all()


def test_quantize_replaces_the_encoders(
    unseen_town: dict[str, Any], model_t1: Path, town_chunks: TownChunks
) -> None:
    """Every image encoder runs int8 convolutions; the head stays in float."""
    chunks, predictor = town_predictor(unseen_town, model_t1, town_chunks)
    item = chunks[0]
    exact, _ = seeded(predictor, item)
    predictor.quantize([chunks[i] for i in calibration_chunks(chunks.first_outside)])
    fusion = predictor.task.model.fusion
    assert len(fusion.encoders) == 3  # sar, osm, dsm (late fusion)
    for branch in fusion.encoders.values():
        kinds = {type(m) for m in branch.encoder.modules()}
        assert torch.ao.nn.quantized.Conv2d in kinds or any(
            issubclass(k, torch.ao.nn.quantized.Conv2d) for k in kinds
        )
    assert isinstance(predictor.task.model.head[0], nn.Linear)
    quantized, _ = seeded(predictor, item)
    torch.testing.assert_close(quantized, exact, rtol=0, atol=QUANTIZED_ATOL)


def test_quantize_is_cpu_only(
    unseen_town: dict[str, Any], model_t1: Path, tmp_path: Path
) -> None:
    with pytest.raises(ArgumentError, match='CPU only'):
        run(
            unseen_town,
            model_t1,
            tmp_path / 'gpu.gpkg',
            quantize=True,
            accelerator='gpu',
        )
    assert not (tmp_path / 'gpu.gpkg').exists()


def test_cli_quantize(
    unseen_town: dict[str, Any],
    model_t1: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--quantize`` reaches :func:`predict_buildings` (off by default)."""
    seen = spy(monkeypatch, 'quantize')
    argv = predict_argv(unseen_town, model_t1)
    assert main([*argv, '--out', str(tmp_path / 'plain.gpkg')]) == 0
    assert not seen
    assert main([*argv, '--quantize', '--out', str(tmp_path / 'int8.gpkg')]) == 0
    assert seen == [True]


def test_calibration_chunks() -> None:
    assert calibration_chunks(0) == []
    assert calibration_chunks(1) == [0]
    assert calibration_chunks(2) == [0, 1]
    spread = calibration_chunks(100)
    assert len(spread) == CALIBRATION_CHUNKS
    assert spread[0] == 0
    assert spread[-1] >= 100 * (CALIBRATION_CHUNKS - 1) // CALIBRATION_CHUNKS
    assert calibration_chunks(100) == spread  # the same in every process


class _Branching(nn.Module):
    """An encoder whose control flow depends on its input (torch.fx cannot trace it)."""

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.sum() > 0:
            return [x]
        return [-x]


def test_untraceable_encoder_is_refused() -> None:
    from torchgeo_sar_damage.models import FusionNet

    net = FusionNet(('sar',), backbone='resnet10t', embed_dim=8).eval()
    branch = net.fusion.encoders['sar']
    assert isinstance(branch, ImageBranch)
    branch.encoder = _Branching()
    branch.proj = nn.Sequential(nn.Linear(2, 8))
    batch = {'sar': torch.randn(2, 1, 8, 8), 'sar_valid': torch.ones(2, 1, 8, 8)}
    with pytest.raises(ArgumentError, match=r"'sar' encoder.*cannot be traced"):
        quantize_encoders(net.fusion, [batch])
    with pytest.raises(ArgumentError, match='no building'):
        quantize_encoders(net.fusion, [])


#: Largest difference of probabilities with the encoders on ONNX Runtime from
#: PyTorch's: float32 either way, only the kernels' summation order differs.
ONNX_ATOL = 1e-5


def test_onnx_is_the_cpu_default_and_exact(
    unseen_town: dict[str, Any],
    model_t1: Path,
    reference: gpd.GeoDataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ONNX Runtime encoders by default on the CPU: PyTorch's probabilities."""
    used = spy(monkeypatch, 'use_onnx')
    plain = run(unseen_town, model_t1, tmp_path / 'torch.gpkg', onnx=False)
    assert not used
    # the module's reference ran with the default; again, now watched
    default = run(unseen_town, model_t1, tmp_path / 'default.gpkg')
    assert used == [True]
    for layer in (default, reference):
        assert list(layer['status']) == list(plain['status'])
        ok = (plain['status'] == 'ok').to_numpy()
        assert np.ptp(plain.loc[ok, 'damage_prob']) > 0.01  # a real comparison
        np.testing.assert_allclose(
            layer.loc[ok, 'damage_prob'], plain.loc[ok, 'damage_prob'], atol=ONNX_ATOL
        )
        np.testing.assert_array_equal(layer['damage'], plain['damage'])


def test_onnx_replaces_every_encoder(
    unseen_town: dict[str, Any], model_t1: Path, town_chunks: TownChunks
) -> None:
    """Each image encoder runs on ONNX Runtime; the head stays in PyTorch."""
    from torchgeo_sar_damage.predict.onnx_runtime import OnnxEncoder

    chunks, predictor = town_predictor(unseen_town, model_t1, town_chunks)
    item = chunks[0]
    exact, spread = seeded(predictor, item)
    predictor.use_onnx([chunks[0]])
    fusion = predictor.task.model.fusion
    assert len(fusion.encoders) == 3  # sar, osm, dsm (late fusion)
    assert all(isinstance(b.encoder, OnnxEncoder) for b in fusion.encoders.values())
    # no memory arena per session (each would keep its peak activations)
    for branch in fusion.encoders.values():
        options = branch.encoder.session.get_session_options()
        assert not options.enable_cpu_mem_arena
    assert isinstance(predictor.task.model.head[0], nn.Linear)
    onnx, onnx_spread = seeded(predictor, item)
    torch.testing.assert_close(onnx, exact, rtol=0, atol=ONNX_ATOL)
    torch.testing.assert_close(onnx_spread, spread, rtol=0, atol=ONNX_ATOL)


@pytest.mark.parametrize('fusion', ['early', 'attention'])
def test_onnx_encoders_export_the_maps_the_fusion_reads(fusion: str) -> None:
    """Early fusion's last map, attention's token map too: they match PyTorch's."""
    from torchgeo_sar_damage.models import FusionNet
    from torchgeo_sar_damage.predict.onnx_runtime import OnnxEncoder, onnx_encoders

    torch.manual_seed(0)
    net = FusionNet(
        ('sar', 'osm'), fusion=fusion, backbone='regnetx_002', embed_dim=8
    ).eval()
    batch = {
        'sar': torch.randn(6, 1, 32, 32),
        'sar_valid': torch.ones(6, 1, 32, 32),
        'footprint': (torch.rand(6, 2, 32, 32) > 0.5).float(),
    }
    with torch.inference_mode():
        exact = net(batch)
    onnx_encoders(net.fusion, [batch])
    with torch.inference_mode():
        torch.testing.assert_close(net(batch), exact, rtol=0, atol=1e-5)
        # a batch size other than the export's (the batch axis is dynamic)
        half = net({k: v[:3] for k, v in batch.items()})
    torch.testing.assert_close(half, exact[:3], rtol=0, atol=1e-5)
    sar = net.fusion.sar_encoder
    assert sar is not None
    encoder = sar.encoder
    assert isinstance(encoder, OnnxEncoder)
    last = len(sar.channels) - 1
    token = getattr(net.fusion, 'token_stage', last)
    assert encoder.stages == sorted({token, last})
    assert encoder.count == len(sar.channels)
    # a stage that was not exported is refused, not returned wrongly
    maps = encoder(torch.randn(2, sar.in_chans, 32, 32))
    assert len(maps) == len(sar.channels)
    skipped = min(set(range(last)) - {token})
    with pytest.raises(ArgumentError, match=f'not stage {skipped}.*--no-onnx'):
        maps[skipped]
    with pytest.raises(ArgumentError, match='--no-onnx'):
        list(maps)


def test_onnx_refuses_and_falls_back(
    unseen_town: dict[str, Any],
    model_t1: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Clear errors when asked for; PyTorch with a warning (or silently) otherwise."""
    from torchgeo_sar_damage.predict import onnx_runtime, runner

    with pytest.raises(ArgumentError, match='excludes --quantize'):
        run(unseen_town, model_t1, tmp_path / 'a.gpkg', onnx=True, quantize=True)
    with pytest.raises(ArgumentError, match='accelerator gpu'):
        run(unseen_town, model_t1, tmp_path / 'b.gpkg', onnx=True, accelerator='gpu')
    assert not list(tmp_path.iterdir())

    # outputs that differ from PyTorch's: refused, or PyTorch with a warning
    forward = onnx_runtime.OnnxEncoder.forward

    def noisy(self: onnx_runtime.OnnxEncoder, x: Tensor) -> list[Tensor | None]:
        maps = forward(self, x)
        return [maps[i] + 0.01 if i in self.stages else None for i in range(self.count)]

    with monkeypatch.context() as patch:
        patch.setattr(onnx_runtime.OnnxEncoder, 'forward', noisy)
        with pytest.raises(ArgumentError, match=r'other feature maps.*--no-onnx'):
            run(unseen_town, model_t1, tmp_path / 'c.gpkg', onnx=True)
        with pytest.warns(UserWarning, match='predicting with PyTorch instead'):
            layer = run(unseen_town, model_t1, tmp_path / 'd.gpkg')
    assert (layer['status'] == 'ok').any()

    # without ONNX Runtime: an error if asked for, PyTorch silently by default
    monkeypatch.setattr(runner, 'onnxruntime_available', lambda: False)
    monkeypatch.setattr(onnx_runtime, 'onnxruntime_available', lambda: False)
    with pytest.raises(ArgumentError, match='pip install onnx onnxruntime'):
        run(unseen_town, model_t1, tmp_path / 'e.gpkg', onnx=True)
    used: list[bool] = []
    monkeypatch.setattr(
        predict_module.CityPredictor, 'use_onnx', lambda *a: used.append(True)
    )
    run(unseen_town, model_t1, tmp_path / 'f.gpkg')
    assert not used


def test_cli_onnx(
    unseen_town: dict[str, Any],
    model_t1: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--onnx``/``--no-onnx`` reach :func:`predict_buildings` (default: None)."""
    from torchgeo_sar_damage.predict import runner

    seen: list[object] = []
    monkeypatch.setattr(
        runner, '_use_onnx', lambda predictor, chunks, required: seen.append(required)
    )
    argv = predict_argv(unseen_town, model_t1)
    assert main([*argv, '--out', str(tmp_path / 'a.gpkg')]) == 0
    assert main([*argv, '--onnx', '--out', str(tmp_path / 'b.gpkg')]) == 0
    assert main([*argv, '--no-onnx', '--out', str(tmp_path / 'c.gpkg')]) == 0
    assert seen == [False, True]


def reader_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the thread that reads each chunk."""
    names: list[str] = []
    getitem = predict_module.BuildingChunks.__getitem__

    def record(self: predict_module.BuildingChunks, index: int) -> dict[str, Tensor]:
        names.append(threading.current_thread().name)
        return getitem(self, index)

    monkeypatch.setattr(predict_module.BuildingChunks, '__getitem__', record)
    return names


def test_read_ahead_is_the_default_and_exact(
    unseen_town: dict[str, Any],
    model_t1: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks are read in a background thread by default, with the same output."""
    names = reader_threads(monkeypatch)
    options: dict[str, Any] = {'onnx': False, 'chunk_size': 16}  # several chunks
    serial = run(
        unseen_town, model_t1, tmp_path / 'serial.gpkg', read_ahead=False, **options
    )
    assert set(names) == {threading.main_thread().name}
    names.clear()
    ahead = run(unseen_town, model_t1, tmp_path / 'ahead.gpkg', **options)
    assert 'sardamage-read-ahead' in names
    assert len(names) > 2  # the town has several chunks, read by the thread
    assert list(ahead['status']) == list(serial['status'])
    ok = (serial['status'] == 'ok').to_numpy()
    assert np.ptp(serial.loc[ok, 'damage_prob']) > 0.01  # a real comparison
    for column in ('damage_prob', 'uncertainty', 'damage'):
        np.testing.assert_array_equal(ahead[column], serial[column])
    # with dataloader workers, they read (not the thread)
    names.clear()
    run(unseen_town, model_t1, tmp_path / 'workers.gpkg', onnx=False, num_workers=1)
    assert 'sardamage-read-ahead' not in names


def test_read_ahead_error_reaches_the_caller(
    unseen_town: dict[str, Any],
    model_t1: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chunk that cannot be read stops prediction with its own error, no output."""
    getitem = predict_module.BuildingChunks.__getitem__

    def broken(self: predict_module.BuildingChunks, index: int) -> dict[str, Tensor]:
        if threading.current_thread().name == 'sardamage-read-ahead' and index == 1:
            raise InputFileError(self.buildings, 'chunk 1 cannot be read')
        return getitem(self, index)

    monkeypatch.setattr(predict_module.BuildingChunks, '__getitem__', broken)
    out = tmp_path / 'broken.gpkg'
    with pytest.raises(InputFileError, match='chunk 1 cannot be read'):
        run(unseen_town, model_t1, out, onnx=False)
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no parts folder or summary left
    assert not any(t.name == 'sardamage-read-ahead' for t in threading.enumerate())


def test_cli_read_ahead(
    unseen_town: dict[str, Any],
    model_t1: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--read-ahead``/``--no-read-ahead`` reach the loop (default: on)."""
    names = reader_threads(monkeypatch)
    argv = [*predict_argv(unseen_town, model_t1), '--no-onnx']
    assert main([*argv, '--out', str(tmp_path / 'a.gpkg')]) == 0
    assert 'sardamage-read-ahead' in names
    names.clear()
    assert main([*argv, '--no-read-ahead', '--out', str(tmp_path / 'b.gpkg')]) == 0
    assert set(names) == {threading.main_thread().name}


def test_chunks_are_predicted_in_model_batches(
    unseen_town: dict[str, Any],
    model_t1: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks of 64 buildings run through the model 16 at a time, as chunks of 16."""
    sizes: list[int] = []
    chunks: list[int] = []
    watch_forward(monkeypatch, lambda batch: sizes.append(len(batch['image'])))
    getitem = predict_module.BuildingChunks.__getitem__

    def chunk(self: predict_module.BuildingChunks, index: int) -> dict[str, Tensor]:
        item = getitem(self, index)
        chunks.append(len(item['assessed']))
        return item

    monkeypatch.setattr(predict_module.BuildingChunks, '__getitem__', chunk)
    small = run(unseen_town, model_t1, tmp_path / 'a.gpkg', onnx=False, chunk_size=16)
    assert max(sizes) == 16
    sizes.clear()
    chunks.clear()
    large = run(unseen_town, model_t1, tmp_path / 'b.gpkg', onnx=False, chunk_size=64)
    assert max(sizes) == 16
    assert max(chunks) > 16  # read 64 at a time, predicted 16 at a time
    assert list(large['status']) == list(small['status'])
    ok = (small['status'] == 'ok').to_numpy()
    assert np.ptp(small.loc[ok, 'damage_prob']) > 0.01  # a real comparison
    np.testing.assert_allclose(
        large.loc[ok, 'damage_prob'], small.loc[ok, 'damage_prob'], atol=1e-6
    )
    np.testing.assert_array_equal(large['damage'], small['damage'])
    # other dropout draws (seeded by each batch's first building), the same spread
    spread = large.loc[ok, 'uncertainty'].to_numpy()
    assert (spread >= 0).all()
    assert spread.mean() == pytest.approx(small.loc[ok, 'uncertainty'].mean(), rel=0.3)
    with pytest.raises(ArgumentError, match='chunk_size must be at least 1'):
        run(unseen_town, model_t1, tmp_path / 'c.gpkg', chunk_size=0)


def test_cli_chunk_size(
    unseen_town: dict[str, Any],
    model_t1: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--chunk-size`` reads that many buildings at once (default 4 batches)."""
    sizes: list[int] = []
    init = predict_module.BuildingChunks.__init__

    def record(
        self: predict_module.BuildingChunks, *args: object, **kwargs: object
    ) -> None:
        sizes.append(int(kwargs['batch_size']))  # type: ignore[call-overload]
        init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(predict_module.BuildingChunks, '__init__', record)
    argv = [*predict_argv(unseen_town, model_t1), '--no-onnx']
    assert main([*argv, '--out', str(tmp_path / 'a.gpkg')]) == 0
    assert main([*argv, '--chunk-size', '40', '--out', str(tmp_path / 'b.gpkg')]) == 0
    assert sizes == [64, 40]  # predict_argv's --batch-size 16
