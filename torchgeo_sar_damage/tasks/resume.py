# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Exact resumption of training from a checkpoint."""

from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch import Callback


class ResumableRandomness(Callback):
    """Keep the random number generators' states in checkpoints and restore them.

    A seeded run draws its shuffling, its augmentations and its dropout from the
    global generators (Python, NumPy, PyTorch, CUDA). Lightning restores the model,
    the optimiser and the loops from a checkpoint but not these generators, so a run
    resumed with ``--ckpt_path`` would draw other batches and augmentations than the
    uninterrupted run. With this callback the checkpoint carries the generators'
    states and resuming restores them, so the resumed run ends with the same weights
    and metrics as the uninterrupted one (on the same hardware and software).
    ``sardamage fit`` adds it to every run.

    .. versionadded:: 0.1
    """

    def state_dict(self) -> dict[str, Any]:
        """The generators' states, saved in the checkpoint.

        Returns:
            ``{'rng_states': ...}``.
        """
        states = _collect_rng_states(include_cuda=True)
        if 'numpy' in states:  # plain values: checkpoints load with weights_only
            name, keys, pos, has_gauss, cached = states['numpy']
            states['numpy'] = [name, keys.tolist(), pos, has_gauss, cached]
        return {'rng_states': states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the generators' states of a checkpoint.

        Args:
            state_dict: what :meth:`state_dict` saved.
        """
        states = dict(state_dict.get('rng_states', {}))
        if not torch.cuda.is_available():  # e.g. a GPU run resumed on a CPU
            states.pop('torch.cuda', None)
        if 'numpy' in states:
            name, keys, pos, has_gauss, cached = states['numpy']
            states['numpy'] = (
                name,
                np.asarray(keys, np.uint32),
                pos,
                has_gauss,
                cached,
            )
        if states:
            _set_rng_states(states)
