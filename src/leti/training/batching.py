"""The micro-batches of each optimiser step, cut from its texts sorted by length.

A step's gradient is its summed token loss over all the tokens it predicts (trainer.py
`_optimizer_step`), so which of the step's texts share a micro-batch changes nothing but the
padding, and floating-point rounding. Sorting a step's texts by length before cutting them into
micro-batches pads each one to about its own texts' length instead of the step's longest.

Hand-written because the field's length-grouped samplers (transformers' LengthGroupedSampler)
group across random "megabatches": they change which texts share a step, and so the training.
This one keeps every step's texts, in the order the texts (shuffled or not) come.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

from torch.utils.data import Sampler


class StepSortedBatches(Sampler[list[int]]):
    """Batches of `batch_size` indices. Each run of `batches_per_step` batches (one optimiser step
    over every rank: accumulation steps x processes, as Accelerate deals batches to ranks in
    turn) holds the same texts as unsorted batches would, longest first."""

    def __init__(self, lengths: Sequence[int], batch_size: int, batches_per_step: int, order: Iterable[int]) -> None:
        self.lengths, self.batch_size = lengths, batch_size
        self.window = batch_size * batches_per_step
        self.order = order  # the text order of one epoch (a RandomSampler draws a new one each pass)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.order)
        for start in range(0, len(order), self.window):
            texts = sorted(order[start : start + self.window], key=lambda i: -self.lengths[i])  # stable
            for b in range(0, len(texts), self.batch_size):
                yield texts[b : b + self.batch_size]

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)  # a window is whole batches
