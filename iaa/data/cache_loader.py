"""Index batches into device batches, gathered from a :class:`~iaa.data.decoded_store.DecodedStore`.

:class:`CacheLoader` turns a stream of index batches into device batches: a background
thread gathers each batch into pinned host memory while the GPU works on the previous one.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from iaa.data.decoded_store import DecodedStore, as_rows

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
_DONE = object()


class CacheLoader:
    """(images uint8 on ``device``, heights, widths, idx) for each index batch of ``batches``, in order.

    One background thread gathers batches from the store's memory map (:meth:`DecodedStore.gather`)
    up to ``prefetch`` batches ahead; no worker processes. On CUDA with ``pin_memory`` (default:
    whenever ``device`` is CUDA) it gathers into a ring of ``prefetch + 1`` reused pinned buffers
    and the main thread copies each batch with ``non_blocking=True``; a buffer is written again
    only once the copy out of it has finished (a CUDA event). ``images`` is (B, 3, H, W) in
    channels-last memory (see ``gather``); heights, widths (int64) and ``idx`` (the batch as
    given, int64) stay on the CPU.

    The thread iterates ``batches`` itself, so a sampler is drawn up to ``prefetch + 1`` batches
    ahead of the batch being consumed. An exception in the thread (a read error, a bad row) is
    raised in the consumer at that batch; closing the iterator (``break``, ``close()``, garbage
    collection) stops the thread.
    """

    def __init__(
        self,
        store: DecodedStore,
        batches: Iterable[torch.Tensor | np.ndarray | Sequence[int]],
        device: torch.device | str,
        *,
        prefetch: int = 2,
        pin_memory: bool | None = None,
    ) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self.store = store
        self.batches = batches
        self.device = torch.device(device)
        self.prefetch = prefetch
        cuda = self.device.type == "cuda"
        self.pin_memory = cuda if pin_memory is None else bool(pin_memory) and cuda

    def __iter__(self) -> Iterator[Batch]:
        return self._run()

    def _run(self) -> Iterator[Batch]:
        stop = threading.Event()
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        slots = self.prefetch + 1
        free: queue.Queue = queue.Queue()  # (slot, CUDA event of the last copy out of it or None)
        for s in range(slots):
            free.put((s, None))
        buffers: list[torch.Tensor | None] = [None] * slots

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def take_slot() -> tuple[int, Any] | None:
            while not stop.is_set():
                try:
                    return free.get(timeout=0.1)
                except queue.Empty:
                    continue
            return None

        def produce() -> None:
            try:
                for batch in self.batches:
                    if stop.is_set():
                        return
                    if isinstance(batch, torch.Tensor):
                        idx = batch.detach().to("cpu", torch.int64).reshape(-1)
                    else:
                        idx = torch.as_tensor(np.asarray(batch), dtype=torch.int64).reshape(-1)
                    if not self.pin_memory:
                        images, heights, widths = self.store.gather(idx)
                        if not put((None, images, heights, widths, idx)):
                            return
                        continue
                    got = take_slot()
                    if got is None:
                        return
                    slot, event = got
                    if event is not None:
                        event.synchronize()  # the last copy out of this buffer has finished
                    numel = _batch_numel(self.store, idx)
                    buf = buffers[slot]
                    if buf is None or buf.numel() < numel:
                        size = numel if self.store.square else numel + numel // 4  # room to grow
                        buf = buffers[slot] = torch.empty(size, dtype=torch.uint8).pin_memory()
                    images, heights, widths = self.store.gather(idx, out=buf)
                    if not put((slot, images, heights, widths, idx)):
                        return
                put(_DONE)
            except BaseException as err:  # re-raised in the consumer
                put(err)

        thread = threading.Thread(target=produce, name="iaa-cache-loader", daemon=True)
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                slot, images, heights, widths, idx = item
                if self.device.type == "cpu":
                    yield images, heights, widths, idx
                    continue
                on_device = images.to(self.device, non_blocking=self.pin_memory)
                if slot is not None:
                    event = torch.cuda.Event()
                    event.record(torch.cuda.current_stream(self.device))
                    free.put((slot, event))
                yield on_device, heights, widths, idx
        finally:
            stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    ready.get_nowait()
            thread.join(timeout=10)


def _batch_numel(store: DecodedStore, idx: torch.Tensor) -> int:
    """Bytes of the gathered batch ``idx`` (padded to its largest image)."""
    rows = as_rows(idx, len(store))  # an out-of-range row: gather's error, raised here first
    b = len(rows)
    if store.square:
        h, w = store.max_size()
    elif b:
        hw = store.index[rows, 1:]
        h, w = int(hw[:, 0].max()), int(hw[:, 1].max())
    else:
        h = w = 0
    return b * h * w * 3
