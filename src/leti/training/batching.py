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


class Blank(list):
    """A text's token ids that train with weight 0 (the collator masks all its labels). Under
    several processes the last optimiser step can have fewer micro-batches than ranks x
    accumulation steps; micro-batches of a Blank fill each rank's share up to the same count,
    because DDP's gradient all-reduce needs every rank's backward pass. (Accelerate's own filler,
    even_batches, repeats the epoch's first texts instead, which then train twice.)"""


class StepExamples:
    """The tokenized texts, indexed as StepSortedBatches yields them: index n + i is text i as a Blank."""

    def __init__(self, examples: Sequence[list[int]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> list[int]:
        n = len(self.examples)
        return self.examples[i] if i < n else Blank(self.examples[i - n])


class StepSortedBatches(Sampler[list[int]]):
    """Batches of `batch_size` indices. Each run of `batches_per_step` batches (one optimiser step
    over every rank: accumulation steps x processes, as Accelerate deals batches to ranks in
    turn) holds the same texts as unsorted batches would, longest first. With `processes` > 1
    the last step is filled with one-text Blank batches (index n + i) to a multiple of
    `processes` batches, so every rank gets as many batches as the others."""

    def __init__(self, lengths: Sequence[int], batch_size: int, batches_per_step: int, order: Iterable[int],
                 processes: int = 1) -> None:
        self.lengths, self.batch_size, self.processes = lengths, batch_size, processes
        self.window = batch_size * batches_per_step
        self.order = order  # the text order of one epoch (a RandomSampler draws a new one each pass)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.order)
        texts: list[int] = []
        for start in range(0, len(order), self.window):
            texts = sorted(order[start : start + self.window], key=lambda i: -self.lengths[i])  # stable
            for b in range(0, len(texts), self.batch_size):
                yield texts[b : b + self.batch_size]
        for _ in range(self._blanks()):
            yield [len(self.lengths) + texts[-1]]  # the last step's shortest text, weight 0

    def _blanks(self) -> int:
        n = len(self.lengths)
        if self.processes == 1 or n == 0:
            return 0
        last = n - (math.ceil(n / self.window) - 1) * self.window  # texts in the last step
        return -math.ceil(last / self.batch_size) % self.processes

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size) + self._blanks()  # a window is whole batches
