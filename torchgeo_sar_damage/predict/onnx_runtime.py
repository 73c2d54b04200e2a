# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The image encoders on ONNX Runtime (``predict --onnx``, the default on CPU).

Each image encoder (a timm backbone) is exported to ONNX with
:func:`torch.onnx.export` on the town's first windows and run by ONNX Runtime's CPU
execution provider with as many threads as PyTorch uses; the tabular branch, the
fusion and the head, where Monte Carlo dropout runs, stay in PyTorch. Only the
feature maps the fusion reads are exported (the last stage for early and late
fusion, also the token stage for attention: found by running the fusion on the
export windows), which saves ONNX Runtime writing out the others (about 5 % of the
encoder's time). ONNX Runtime computes the same float32 convolutions with its own
kernels: the switch is checked on those windows, where every exported feature map
must match PyTorch's within
:data:`TOLERANCE` of its largest magnitude (about 1e-7 on the benchmark's
checkpoints), else ``predict --onnx`` stops and says so and the default falls back
to PyTorch with a warning.

It pays most where PyTorch's CPU kernels are weakest, the grouped convolutions of
RegNet: the whole model (normalisation, encoders, head and its Monte Carlo dropout
draws) of the default checkpoint, early fusion with a RegNetX-400MF encoder, runs at
1.43 times PyTorch's rate on 64 x 64 px windows, ResNet-18 early and late fusion at
1.18 and 1.20 times, with probabilities within 1.2e-7 of PyTorch's
(``benchmarks/predict_model.py --variants float onnx`` on 2 cores). ONNX Runtime's
threads do not busy-wait between runs, so that PyTorch's have the cores for the
head.
"""

import ctypes
import ctypes.util
import gc
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchgeo.datasets.utils import Sample

from ..errors import ArgumentError
from ..models.encoders import ImageBranch
from ..models.fusion import Fusion
from .quantize import _encoder_inputs, _first

#: Largest difference of an encoder's feature maps on ONNX Runtime from PyTorch's,
#: relative to their largest magnitude, accepted when the encoders are switched.
TOLERANCE = 1e-4

#: Windows of the town the encoders are exported and checked on.
CHECK_WINDOWS = 16

#: ONNX operator set of the export.
OPSET = 17


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's ``onnx`` package are installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class FeatureMaps(list[Tensor | None]):
    """An encoder's feature maps, one position per stage, of which some were computed.

    Reading a stage that was not computed raises an error that says so, rather than
    returning a wrong map.
    """

    def __init__(self, maps: Sequence[Tensor | None], backbone: str) -> None:
        """Initialise a new FeatureMaps.

        Args:
            maps: one entry per stage, None where not computed.
            backbone: name of the backbone (for messages).
        """
        super().__init__(maps)
        self.backbone = backbone

    def __getitem__(self, index: Any) -> Any:  # noqa: ANN401 - list's overloads
        """A stage's map (or a slice of them).

        Args:
            index: the stage (or a slice).

        Returns:
            The map(s).

        Raises:
            ArgumentError: if a stage was not computed.
        """
        value = super().__getitem__(index)
        maps = value if isinstance(index, slice) else [value]
        if any(m is None for m in maps):
            raise ArgumentError(
                f'--onnx: the {self.backbone} encoder was exported with the feature '
                f'maps its fusion read on the export windows only, not stage {index}; '
                'predict with --no-onnx'
            )
        return value

    def __iter__(self) -> Any:  # noqa: ANN401
        """Iterate over every stage (each must have been computed)."""
        return iter(self[:])


class _Recorder(list[Tensor]):
    """Feature maps that record which stages are read (to export those only)."""

    def __init__(self, maps: Sequence[Tensor], read: set[int]) -> None:
        super().__init__(maps)
        self.read = read

    def __getitem__(self, index: Any) -> Any:  # noqa: ANN401 - list's overloads
        stages = range(len(self))
        self.read.update(stages[index] if isinstance(index, slice) else [stages[index]])
        return super().__getitem__(index)

    def __iter__(self) -> Any:  # noqa: ANN401
        self.read.update(range(len(self)))
        return super().__iter__()


class _Stages(nn.Module):
    """An encoder that returns some of its stages (what is exported)."""

    def __init__(self, encoder: nn.Module, stages: Sequence[int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.stages = list(stages)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        maps = self.encoder(x)
        return tuple(maps[i] for i in self.stages)


class OnnxEncoder(nn.Module):
    """An exported encoder run by an ONNX Runtime session (inference only).

    Returns the feature maps of the PyTorch encoder it replaces, at the same
    positions (:class:`FeatureMaps`): those of :attr:`stages`, the ones the fusion
    reads; reading another raises an error.

    .. versionchanged:: 0.4
       *stages* and *count*: only the stages the fusion reads are computed.
    """

    def __init__(
        self,
        session: Any,  # noqa: ANN401
        backbone: str,
        stages: Sequence[int] | None = None,
        count: int | None = None,
    ) -> None:
        """Initialise a new OnnxEncoder.

        Args:
            session: an ``onnxruntime.InferenceSession`` of the exported encoder,
                with one input, ``input``, and one output per stage of *stages*.
            backbone: name of the backbone it runs (for messages).
            stages: the stages the session computes, in its output order (default:
                all, as many as the session's outputs).
            count: the number of stages of the encoder (default: ``len(stages)``).
        """
        super().__init__()
        self.session = session
        self.backbone = backbone
        outputs = len(session.get_outputs())
        self.stages = list(range(outputs)) if stages is None else list(stages)
        self.count = len(self.stages) if count is None else count

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps of a batch (contiguous float32 on the CPU for the session).

        Args:
            x: input [B, C, H, W].

        Returns:
            One position per stage, as the PyTorch encoder's (:class:`FeatureMaps`).
        """
        array = x.detach().to('cpu', torch.float32).contiguous().numpy()
        outputs = self.session.run(None, {'input': array})
        maps: list[Tensor | None] = [None] * self.count
        for stage, output in zip(self.stages, outputs, strict=True):
            maps[stage] = torch.from_numpy(output)
        return FeatureMaps(maps, self.backbone)  # type: ignore[return-value]


def onnx_encoders(
    fusion: Fusion,
    batches: Sequence[Sample],
    forward: Callable[[Sample], Any] | None = None,
    threads: int | None = None,
) -> None:
    """Run a fusion's image encoders on ONNX Runtime, in place.

    The model must be in evaluation mode, on the CPU.

    Args:
        fusion: the model's fusion (its :attr:`~Fusion.encoders` are replaced).
        batches: model batches of the town to predict; the first
            :data:`CHECK_WINDOWS` windows of the first are exported and checked on.
        forward: what runs a batch through the fusion (default: ``fusion``).
        threads: ONNX Runtime's intra-op threads (default: PyTorch's).

    Raises:
        ArgumentError: if ONNX Runtime is not installed, there is no window, an
            encoder cannot be exported, or its outputs differ from PyTorch's by more
            than :data:`TOLERANCE`.
    """
    if not onnxruntime_available():
        raise ArgumentError(
            '--onnx needs the onnx and onnxruntime packages (pip install onnx '
            'onnxruntime); install them or predict with --no-onnx'
        )
    if not batches:
        raise ArgumentError(
            '--onnx: no building of the town could be read to export the encoders '
            'on; predict with --no-onnx'
        )
    import onnxruntime

    run = forward or fusion
    branches = {
        name: branch
        for name, branch in fusion.encoders.items()
        if isinstance(branch, ImageBranch)
        and not isinstance(branch.encoder, OnnxEncoder)
    }
    # the encoders' inputs, and the stages of their outputs the fusion reads
    read: dict[str, set[int]] = {name: set() for name in branches}
    inputs = _encoder_inputs(
        branches,
        run,
        _first(batches[0], CHECK_WINDOWS),
        lambda name, maps: _Recorder(maps, read[name]),
    )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # no busy-waiting between runs: PyTorch's threads run the head meanwhile
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    # no arena per session: each would keep its peak activations (late fusion's
    # three encoders peaked over 2 GB with them)
    options.enable_cpu_mem_arena = False
    replaced: dict[str, OnnxEncoder] = {}
    for name, branch in branches.items():
        x = inputs[name].contiguous()
        with torch.inference_mode():
            expected: list[Tensor] = list(branch.encoder(x))
        stages = sorted(read[name]) or list(range(len(expected)))  # none: keep all
        names = [f'stage{i}' for i in stages]
        batch_axis = {key: {0: 'batch'} for key in ['input', *names]}
        try:
            with (
                tempfile.TemporaryDirectory() as folder,
                warnings.catch_warnings(),
                torch.no_grad(),
            ):
                warnings.simplefilter('ignore')  # the exporter's deprecation notes
                path = Path(folder) / f'{name}.onnx'
                torch.onnx.export(
                    _Stages(branch.encoder, stages),
                    (x,),
                    path,
                    input_names=['input'],
                    output_names=names,
                    dynamic_axes=batch_axis,
                    opset_version=OPSET,
                    dynamo=False,
                )
                model = path.read_bytes()
            session = onnxruntime.InferenceSession(
                model, options, providers=['CPUExecutionProvider']
            )
        except Exception as err:  # noqa: BLE001 - the exporter raises many kinds
            raise ArgumentError(
                f'--onnx: the {name!r} encoder ({branch.backbone}) cannot be exported '
                f'to ONNX ({type(err).__name__}: {err}); predict with --no-onnx'
            ) from None
        encoder = OnnxEncoder(session, branch.backbone, stages, len(expected))
        maps = encoder(x)
        got = [maps[i] for i in stages]
        wanted = [expected[i] for i in stages]
        scale = max(float(e.abs().max()) for e in wanted) or 1.0
        same = all(g.shape == e.shape for g, e in zip(got, wanted, strict=True))
        diff = (
            max(float((g - e).abs().max()) for g, e in zip(got, wanted, strict=True))
            if same
            else float('inf')
        )
        if not diff <= TOLERANCE * scale:
            raise ArgumentError(
                f'--onnx: the {name!r} encoder ({branch.backbone}) gives other feature '
                f'maps on ONNX Runtime (largest difference {diff:.2e}, relative '
                f'{diff / scale:.2e} > {TOLERANCE:g}); predict with --no-onnx'
            )
        replaced[name] = encoder
    for name, encoder in replaced.items():
        branches[name].encoder = encoder
    _release_memory()


def _release_memory() -> None:
    """Give the memory the exporter freed back to the system (glibc only).

    Tracing and serialising the encoders leaves a few hundred MB of freed heap that
    glibc keeps (late fusion's three ResNet-18); ``malloc_trim`` returns it.
    Elsewhere (macOS, Windows) nothing is done.
    """
    gc.collect()
    try:
        trim = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
