# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Post-training int8 quantisation of the image encoders (``predict --quantize``).

Not exact: the probabilities differ from the float model's by up to 0.007-0.014 on
the benchmark's trained checkpoints (``benchmarks/predict_city.py`` measures the
largest difference beside the speed; their calibration temperatures of 0.10-0.27
magnify logit errors), in exchange for about twice the model's rate on a CPU with
int8 instructions (2.1-2.2 times for late and attention fusion, 1.7 for early, on
AVX-512 VNNI). The tabular branch, the fusion and the head, where Monte Carlo
dropout runs, stay in float.

It uses PyTorch's FX graph mode quantisation (``torch.ao.quantization``), which
PyTorch has deprecated in favour of the separate ``torchao`` package (not a
dependency of this one) but still ships (2.14); should a release remove it,
``--quantize`` says so and prediction without it is unchanged.
"""

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torchgeo.datasets.utils import Sample

from ..errors import ArgumentError
from ..models.encoders import ImageBranch
from ..models.fusion import Fusion

#: Chunks of the town, spread over it, whose windows calibrate the int8 ranges.
CALIBRATION_CHUNKS = 4

#: Windows that calibrate the int8 ranges, taken evenly from the calibration chunks.
#: 256 windows gave probabilities as close to the float model's as 1,024
#: (benchmarks' late-fusion checkpoint: largest difference 4.7e-3 and 5.7e-3 on 512
#: other windows) in a third of the time; the histogram observers are slow.
CALIBRATION_WINDOWS = 256


def calibration_chunks(count: int) -> list[int]:
    """Indices of :data:`CALIBRATION_CHUNKS` chunks spread evenly over ``count``.

    The same for every process of a distributed run, so every process quantises
    the model the same way.

    Args:
        count: number of chunks that hold buildings inside the SAR product.

    Returns:
        Distinct chunk indices, in increasing order (fewer when ``count`` is small).
    """
    if count < 1:
        return []
    step = count / CALIBRATION_CHUNKS
    return sorted({int(i * step) for i in range(CALIBRATION_CHUNKS)})


def quantize_encoders(
    fusion: Fusion,
    batches: Sequence[Sample],
    forward: Callable[[Sample], Any] | None = None,
) -> None:
    """Quantise a fusion's image encoders to int8, in place (static, FX graph mode).

    Each encoder (a timm backbone) is traced with :func:`torch.fx`, its
    convolutions fused with their batch normalisation and activation, and observed
    on ``batches`` (activation ranges by histogram, weights per channel: PyTorch's
    default for the CPU's quantised engine, ``torch.backends.quantized.engine``)
    before conversion to int8 kernels. The model must be in evaluation mode.

    Args:
        fusion: the model's fusion (its :attr:`~Fusion.encoders` are replaced).
        batches: model batches to calibrate on, of the town to predict
            (:data:`CALIBRATION_WINDOWS` windows in all are taken from their
            starts).
        forward: what runs a batch through the fusion (default: ``fusion``).

    Raises:
        ArgumentError: if there is no window to calibrate on, or an encoder cannot
            be traced (backbones that are not FX-traceable, e.g. vision
            transformers).
    """
    if not batches:
        raise ArgumentError(
            '--quantize: no building of the town could be read to calibrate the int8 '
            'model; predict without --quantize'
        )
    prepare_fx, convert_fx, mapping = _quantize_fx()
    run = forward or fusion
    branches = {
        name: branch
        for name, branch in fusion.encoders.items()
        if isinstance(branch, ImageBranch)
    }
    per_batch = -(-CALIBRATION_WINDOWS // len(batches))
    batches = [_first(batch, per_batch) for batch in batches]
    inputs = _encoder_inputs(branches, run, _first(batches[0], 2))
    for name, branch in branches.items():
        try:
            with _deprecated_api():
                branch.encoder = prepare_fx(branch.encoder, mapping, (inputs[name],))
        except Exception as err:  # noqa: BLE001 - torch.fx raises many kinds
            raise ArgumentError(
                f'--quantize: the {name!r} encoder ({branch.backbone}) cannot be '
                f'traced for int8 quantisation ({type(err).__name__}: {err}); '
                'predict without --quantize'
            ) from None
    with torch.inference_mode(), _deprecated_api():
        for batch in batches:
            run(batch)
    with _deprecated_api():
        for branch in branches.values():
            branch.encoder = convert_fx(branch.encoder)


@contextmanager
def _deprecated_api() -> Iterator[None]:
    """Silence ``torch.ao.quantization``'s deprecation warning (see the module)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            'ignore', '.*torch.ao.quantization', category=DeprecationWarning
        )
        yield


def _quantize_fx() -> tuple[Callable[..., Any], Callable[..., Any], Any]:
    """``prepare_fx``, ``convert_fx`` and the CPU engine's qconfig mapping."""
    try:
        with _deprecated_api():
            from torch.ao.quantization import get_default_qconfig_mapping
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

            mapping = get_default_qconfig_mapping(torch.backends.quantized.engine)
    except ImportError as err:  # pragma: no cover - a PyTorch without it
        raise ArgumentError(
            f'--quantize: this PyTorch ({torch.__version__}) has no FX graph mode '
            f'quantisation ({err}); predict without --quantize'
        ) from None
    return prepare_fx, convert_fx, mapping


def _first(batch: Sample, count: int) -> Sample:
    """The first ``count`` windows of a model batch."""
    return {
        key: value[:count] if isinstance(value, Tensor) and value.dim() else value
        for key, value in batch.items()
    }


def _encoder_inputs(
    branches: dict[str, ImageBranch],
    run: Callable[[Sample], Any],
    batch: Sample,
    outputs: Callable[[str, Any], Any] | None = None,
) -> dict[str, Tensor]:
    """Each encoder's input on ``batch`` (to trace with).

    ``outputs(name, output)``, if given, replaces each encoder's output on the way
    (e.g. to see what the fusion reads of it).
    """
    inputs: dict[str, Tensor] = {}
    hooks = []
    for name, branch in branches.items():

        def keep(module: nn.Module, args: tuple[Tensor, ...], name: str = name) -> None:
            inputs[name] = args[0]

        def swap(
            module: nn.Module, args: object, output: object, name: str = name
        ) -> object:
            assert outputs is not None
            return outputs(name, output)

        hooks.append(branch.encoder.register_forward_pre_hook(keep))
        if outputs is not None:
            hooks.append(branch.encoder.register_forward_hook(swap))
    try:
        with torch.inference_mode():
            run(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return inputs
