# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""ReadAhead: a dataset's items in order, read by a background thread."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from torch.utils.data import Dataset

from torchgeo_sar_damage.errors import InputFileError
from torchgeo_sar_damage.predict.read_ahead import ReadAhead


class Recorder(Dataset[dict[str, int]]):
    """Items ``{'index': i}``; records which thread read each, fails at ``fail``."""

    def __init__(self, length: int, fail: int | None = None) -> None:
        self.length = length
        self.fail = fail
        self.read: list[int] = []
        self.threads: set[str] = set()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, int]:
        self.threads.add(threading.current_thread().name)
        if index == self.fail:
            raise InputFileError('chunk.gpkg', f'item {index} is broken')
        self.read.append(index)
        return {'index': index}


def wait_for(condition: object, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` is true (the reader runs on its own)."""
    assert callable(condition)
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, 'the reader did not get there'
        time.sleep(0.01)


def reader_alive() -> bool:
    return any(t.name == 'sardamage-read-ahead' for t in threading.enumerate())


def test_items_in_order_read_by_another_thread() -> None:
    data = Recorder(7)
    entered: list[str] = []

    @contextmanager
    def context() -> Iterator[None]:
        entered.append(threading.current_thread().name)
        yield

    ahead = ReadAhead(data, context=context)
    assert len(ahead) == 7
    assert [item['index'] for item in ahead] == list(range(7))
    assert data.threads == {'sardamage-read-ahead'}
    assert entered == ['sardamage-read-ahead']
    assert not reader_alive()
    # a second pass reads everything again
    assert [item['index'] for item in ahead] == list(range(7))


def test_reads_ahead_but_no_further_than_its_depth() -> None:
    data = Recorder(50)
    items = iter(ReadAhead(data, depth=3))
    assert next(items) == {'index': 0}
    # 3 waiting and one more read, blocked until there is room
    wait_for(lambda: len(data.read) == 5)
    time.sleep(0.3)
    assert len(data.read) == 5
    assert next(items) == {'index': 1}
    wait_for(lambda: len(data.read) == 6)
    items.close()  # type: ignore[attr-defined]
    assert not reader_alive()
    assert len(data.read) < 50


def test_a_reading_error_is_raised_where_its_item_was_due() -> None:
    data = Recorder(10, fail=3)
    items = iter(ReadAhead(data))
    assert [next(items)['index'] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(InputFileError, match=r'chunk\.gpkg: item 3 is broken'):
        next(items)
    assert not reader_alive()
    assert max(data.read) == 2  # nothing read after the failure


def test_an_error_of_the_consumer_stops_the_reader() -> None:
    data = Recorder(1000)

    def consume() -> None:
        for item in ReadAhead(data, depth=1):
            if item['index'] == 2:
                raise RuntimeError('model failed')

    with pytest.raises(RuntimeError, match='model failed'):
        consume()
    assert not reader_alive()
    assert len(data.read) <= 5


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match='depth must be at least 1, not 0'):
        ReadAhead(Recorder(1), depth=0)
