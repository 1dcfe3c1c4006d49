"""The model's loss on held-out ordinary code: the pretraining corpus's files that the mix never
trains on (trainer.pretrain_heldout_fraction). The authors measure it before training and every
epoch (run_leti.py, evaluate_dataset on pretrain_dataset_valid); a rising loss is the forgetting
that the continued-pretraining mix is there to prevent.
"""

from __future__ import annotations

import math

import torch

from leti.progress import Progress


@torch.no_grad()
def heldout_loss(accelerator, model, blocks: torch.Tensor, batch_size: int, progress: bool = False) -> float:
    """Mean token loss of `model` (prepared by `accelerator`) over `blocks` (a (n, length) tensor
    of full blocks): summed over every predicted token, divided once by their count, as the
    authors' evaluate_dataset does (their count also takes each block's first, unpredicted token:
    a scale of (length - 1) / length). The batches are spread over the ranks, and every rank runs
    the same number of forward passes (a rank short of one repeats a batch and counts nothing),
    since ZeRO-3 and FSDP gather weights collectively in each one."""
    modes = _eval_mode(model)
    batches = list(torch.split(blocks, batch_size))
    per_rank = math.ceil(len(batches) / accelerator.num_processes)
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # (summed loss, tokens)
    with Progress(per_rank, "held-out loss", "batches", progress) as bar:
        for j in range(per_rank):
            i = j * accelerator.num_processes + accelerator.process_index
            ids = batches[min(i, len(batches) - 1)].to(accelerator.device)
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
            if i < len(batches):
                n = ids.shape[0] * (ids.shape[1] - 1)  # full blocks: every token but the first is predicted
                total += torch.tensor([float(loss) * n, n], dtype=torch.float64, device=accelerator.device)
            bar.update(1)
    if accelerator.num_processes > 1:
        total = accelerator.reduce(total, reduction="sum")
    for m, training in modes.items():  # back as it was
        m.training = training
    return float(total[0] / total[1])


def _eval_mode(model) -> dict:
    """Put every module in eval mode (no dropout) but bitsandbytes' 4-bit linear layers, and return
    the modes as they were. Those layers on a CPU with AVX512-BF16 convert their weights, when
    they run in eval mode, to an inference-only layout that QLoRA training after it cannot use
    ("a view of a leaf Variable ... in-place operation"); they hold no dropout of their own."""
    modes = {m: m.training for m in model.modules()}
    for m in modes:
        if not (type(m).__name__ == "Linear4bit" and type(m).__module__.startswith("bitsandbytes")):
            m.training = False
    return modes
