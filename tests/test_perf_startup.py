"""Start-up work a run does not need: a run without LoRA never imports peft (about 3 s, with
bitsandbytes, which prints a warning about its CPU kernels)."""

from __future__ import annotations

import subprocess
import sys


def test_training_without_lora_does_not_import_peft():
    code = (
        "import sys, torch\n"
        "from leti.training.trainer import _causal_lm_loss\n"
        "from leti.training.lora import is_peft\n"
        "m = torch.nn.Linear(2, 2)\n"
        "assert not is_peft(m)\n"
        "_causal_lm_loss(m)\n"
        "print('peft' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_peft_model_is_still_recognised():
    import torch
    from peft import LoraConfig, get_peft_model

    from leti.training.lora import is_peft

    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(2, 2)), LoraConfig(target_modules=["0"], r=1))
    assert is_peft(model) and not is_peft(torch.nn.Linear(2, 2))
