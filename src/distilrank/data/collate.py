"""Length-grouped, deterministic batching (resumable: the order depends only on seed and epoch)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Yield batches of indices whose examples have similar lengths, in shuffled batch order.

    Each epoch shuffles the indices with ``seed + epoch``, cuts them into windows of
    ``batch_size * window`` examples, sorts each window by length (less padding), chunks it into
    batches and shuffles the batches. The same (seed, epoch) always gives the same batches, so a
    resumed run can skip exactly the batches it has already seen.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, seed: int = 0, window: int = 50, drop_last: bool = False
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.window = window
        self.drop_last = drop_last
        self.epoch = 0

    def begin_epoch(self, epoch: int) -> None:
        # Not named set_epoch on purpose: accelerate calls set_epoch with its own counter, which
        # restarts at 0 on resume; the loop owns the epoch.
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        idx = list(range(len(self.lengths)))
        rng.shuffle(idx)
        size = self.batch_size * self.window
        batches: list[list[int]] = []
        for start in range(0, len(idx), size):
            chunk = sorted(idx[start : start + size], key=lambda i: self.lengths[i], reverse=True)
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
