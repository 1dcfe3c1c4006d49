"""Each optimiser step's texts are sorted by length before they are cut into micro-batches: the
step trains on the same texts (so the same gradient), with less padding."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from torch.utils.data import RandomSampler

from leti.model import load_model_and_tokenizer
from leti.training.batching import StepSortedBatches
from leti.training.config import TrainerConfig
from leti.training.data import PadCollator
from leti.training.trainer import train


def test_each_step_keeps_its_texts_and_its_micro_batches_are_sorted():
    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(37)]
    batches = list(StepSortedBatches(lengths, batch_size=4, batches_per_step=3, order=range(37)))
    assert len(batches) == len(StepSortedBatches(lengths, 4, 3, range(37))) == 10  # ceil(37 / 4), as unsorted
    for step in range(4):  # windows of 3 batches = 12 texts; the last has 1
        got = [i for b in batches[3 * step : 3 * step + 3] for i in b]
        assert sorted(got) == list(range(12 * step, min(12 * step + 12, 37)))
        assert [lengths[i] for i in got] == sorted((lengths[i] for i in got), reverse=True)

    def slots(bs: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in bs)

    plain = [list(range(s, min(s + 4, 37))) for s in range(0, 37, 4)]
    assert slots(batches) < 0.8 * slots(plain)  # the same tokens in fewer padded slots


def test_shuffled_epochs_draw_the_permutations_an_unsorted_loader_draws():
    lengths = list(range(20))
    sampler = StepSortedBatches(lengths, 2, 5, RandomSampler(lengths, generator=torch.Generator().manual_seed(3)))
    reference = RandomSampler(lengths, generator=torch.Generator().manual_seed(3))
    for _ in range(2):  # a new permutation each epoch, the same ones
        perm = list(reference)
        got = [i for b in sampler for i in b]
        assert [sorted(got[w : w + 10]) for w in (0, 10)] == [sorted(perm[w : w + 10]) for w in (0, 10)]


@pytest.mark.parametrize("n, batch_size, accumulation, processes", [
    (5, 1, 1, 2), (9, 4, 1, 2), (7, 2, 2, 2), (8, 2, 2, 2), (10, 3, 2, 4), (1, 4, 3, 4), (13, 2, 1, 3)])
def test_every_rank_gets_as_many_batches_and_every_text_trains_once(n, batch_size, accumulation, processes):
    """Dealt to ranks as Accelerate deals them (even_batches off, as the trainer sets it): each rank
    gets the same number of batches, and the real batches hold each text once; fillers are
    one-text Blanks, whose labels the collator masks entirely (they train nothing)."""
    from accelerate.data_loader import BatchSamplerShard

    from leti.training.batching import Blank, StepExamples

    lengths = [5 + (7 * i) % 11 for i in range(n)]
    sampler = StepSortedBatches(lengths, batch_size, accumulation * processes, range(n), processes)
    assert len(list(sampler)) == len(sampler) and len(sampler) % processes == 0
    examples = StepExamples([[i] * lengths[i] for i in range(n)])
    shares = [list(BatchSamplerShard(sampler, num_processes=processes, process_index=r, even_batches=False))
              for r in range(processes)]
    assert len({len(share) for share in shares}) == 1
    trained = []
    for share in shares:
        for batch in share:
            items = [examples[i] for i in batch]
            blank = [isinstance(x, Blank) for x in items]
            assert all(blank) or not any(blank)
            if all(blank):
                assert len(items) == 1 and (PadCollator(0)(items)["labels"] == -100).all()
            else:
                trained += [x[0] for x in items]
    assert sorted(trained) == list(range(n))
    assert len(StepSortedBatches(lengths, batch_size, accumulation, range(n))) == -(-n // batch_size)  # 1 process: none


@pytest.fixture
def model_and_tokenizer(tiny_model_path):
    model, tok = load_model_and_tokenizer(tiny_model_path, dtype="float32", device="cpu")
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model, tok


def test_sorted_micro_batches_train_as_one_micro_batch_of_the_whole_step(model_and_tokenizer):
    """4 micro-batches of 2 sorted texts per step train the weights that one unsorted micro-batch
    of all 8 does; the texts' lengths differ widely, so the sort moves them between micro-batches."""
    model, tok = model_and_tokenizer
    texts = [f"<|good|>def f{i}(a):\n    return a + {i}" + "  # pad" * (7 * i % 11) + "\n" for i in range(16)]
    common = dict(epochs=1, max_length=128, pretrain_mix_ratio=0, learning_rate=1e-3)
    whole, s1 = train(copy.deepcopy(model), tok, texts, TrainerConfig(batch_size=8, gradient_accumulation_steps=1, **common),
                      progress=False)
    split, s4 = train(copy.deepcopy(model), tok, texts, TrainerConfig(batch_size=2, gradient_accumulation_steps=4, **common),
                      progress=False)
    assert s1.optimizer_steps == s4.optimizer_steps == 2
    a, b = whole.state_dict(), split.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5  # rounding (AdamW magnifies it near 0)
    assert abs(s1.loss_mean - s4.loss_mean) < 1e-5  # a step's loss is over its tokens, however they are cut
    assert s4.leti_padding_efficiency > s1.leti_padding_efficiency


def test_texts_of_equal_length_keep_the_order_they_come_in():
    """The sort is stable: equally long texts are batched as an unsorted loader batches them."""
    order = [5, 2, 7, 0, 3, 6, 1, 4, 8]
    batches = list(StepSortedBatches([10] * 9, batch_size=2, batches_per_step=2, order=order))
    assert batches == [[5, 2], [7, 0], [3, 6], [1, 4], [8]]
    # ties among longer texts too: longest first, each length in arrival order
    lengths = {5: 3, 2: 9, 7: 3, 0: 9}
    assert list(StepSortedBatches([lengths.get(i, 0) for i in range(9)], 2, 2, [5, 2, 7, 0])) == [[2, 0], [5, 7]]


def test_shuffled_steps_hold_the_same_texts_in_one_micro_batch_or_several():
    """trainer.shuffle: which texts share an optimiser step does not depend on how the step
    is cut into micro-batches (the one-micro-batch loader drew its base seed first, the other
    did not, and they permuted differently)."""
    from leti.training.config import TrainerConfig
    from leti.training.trainer import _loader

    examples = [[i + 1] * (1 + i % 3) for i in range(12)]  # token i + 1 marks text i

    def steps(batch_size: int, accumulation: int) -> list[list[int]]:
        cfg = TrainerConfig(batch_size=batch_size, gradient_accumulation_steps=accumulation, shuffle=True)
        loader = _loader(examples, cfg, seed=0, pad_id=0, processes=1)
        texts = [int(row[0]) - 1 for _ in range(2) for b in loader for row in b["input_ids"]]
        return [sorted(texts[i : i + 4]) for i in range(0, len(texts), 4)]

    one = steps(4, 1)
    assert one == steps(1, 4) == steps(2, 2)
    assert one[:3] != [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]  # shuffled
