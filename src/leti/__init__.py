"""leti: Learning from Textual Interactions for code language models."""

import logging
import os
import sys

__version__ = "0.1.0"


class _DeepSpeedOnCpu:
    """DeepSpeed, where installed, is imported by transformers and Accelerate as soon as a model
    is saved or trained, and on a machine without a GPU warns that it "was unable to detect" one.
    Its CPU backend is named before that first import (DS_ACCELERATOR=cpu when torch sees no
    CUDA, the rule leti.training.trainer applies at training), without importing torch for it:
    the check runs when something imports deepspeed, by then torch is loaded."""

    done = False

    def find_spec(self, name, path=None, target=None):
        # stays on sys.meta_path: removing itself here, while the import walks that list, would
        # make Python skip the next finder for this import
        if not self.done and name == "deepspeed" and "torch" in sys.modules:
            self.done = True
            import torch

            if not torch.cuda.is_available():
                os.environ.setdefault("DS_ACCELERATOR", "cpu")
        return None  # the import itself goes on as usual


if "deepspeed" not in sys.modules:
    sys.meta_path.insert(0, _DeepSpeedOnCpu())

# bitsandbytes (imported with peft, for LoRA) warns on CPUs with AVX512-BF16 that an optional CPU
# kernel for 4-bit weights failed to load ("pip install kernels"): noise on every LoRA run, and
# leti's 4-bit training (QLoRA) runs on CUDA. Its own logger, so nothing else is hidden.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
