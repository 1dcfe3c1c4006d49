"""A checkpoint's tokenizer pads on the left, as leti generates, when loaded with plain
transformers: batched generate with AutoTokenizer on a leti checkpoint padded on the right
(transformers saves only the attributes given at init, and leti sets padding_side after)."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from leti.model import load_model_and_tokenizer, save_model


def test_a_saved_checkpoint_pads_left_with_plain_transformers(tiny_model_path, tmp_path):
    model, tokenizer = load_model_and_tokenizer(tiny_model_path, device="cpu")
    ckpt = save_model(model, tokenizer, tmp_path / "ckpt")

    assert json.loads((Path(ckpt) / "tokenizer_config.json").read_text()).get("padding_side") == "left"
    plain = AutoTokenizer.from_pretrained(ckpt)
    assert plain.padding_side == "left"
    batch = plain(["def f(x):\n    return x\n", "x"], padding=True)
    assert batch["attention_mask"][1][0] == 0 and batch["attention_mask"][1][-1] == 1  # the short row padded in front
