# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Chunks read by a background thread while the model runs (``predict --read-ahead``).

Reading a chunk (GDAL window reads, footprint rasterisation, tables) runs mostly on
one core, and the model's ONNX Runtime and PyTorch kernels release the GIL, so a
thread that reads the next chunks while the model predicts the current one keeps
both cores busy without a second process, its start-up or its copies of the
inputs. The chunks come in the same order with the same values: prediction is
unchanged.
"""

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext

from torch.utils.data import Dataset, IterableDataset

#: Chunks read ahead of the model (bounded memory: at most this many wait).
DEPTH = 2

#: Seconds between the reader's checks of whether the consumer has stopped.
_POLL_S = 0.1


class _Failure:
    """An exception raised by the reader, passed on to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class ReadAhead[T](IterableDataset[T]):
    """The items of a dataset in index order, read by a thread ahead of their use.

    At most :data:`DEPTH` items wait in memory. An exception raised while reading
    an item is raised again, unchanged, where that item would have been yielded;
    when the consumer stops early (an error in the model, Ctrl-C), the reader stops
    after the item it is reading.

    .. versionadded:: 0.4
    """

    def __init__(
        self,
        dataset: Dataset[T],
        depth: int = DEPTH,
        context: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        """Initialise a new ReadAhead.

        Args:
            dataset: a map-style dataset with ``len``.
            depth: items read ahead (at least 1).
            context: a context the reader thread reads in (e.g. the GDAL settings
                of a ``rasterio.Env``, which are per thread).

        Raises:
            ValueError: if *depth* is less than 1.
        """
        if depth < 1:
            raise ValueError(f'depth must be at least 1, not {depth}')
        self.dataset = dataset
        self.depth = depth
        self.context = context

    def __len__(self) -> int:
        """Number of items (that of the dataset)."""
        return len(self.dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[T]:
        """Yield the items in order while the next ones are read.

        Yields:
            ``dataset[0]``, ``dataset[1]``, ...
        """
        waiting: queue.Queue[object] = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    waiting.put(item, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            try:
                with self.context():
                    for index in range(len(self)):
                        if stop.is_set() or not put(self.dataset[index]):
                            return
            except BaseException as err:  # noqa: BLE001 - passed on, raised there
                put(_Failure(err))
                return
            put(_END)

        reader = threading.Thread(target=read, name='sardamage-read-ahead', daemon=True)
        reader.start()
        try:
            while True:
                item = waiting.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item  # type: ignore[misc]
        finally:
            stop.set()
            reader.join()
