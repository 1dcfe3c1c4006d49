"""Fine-tuning settings (TRL style: one dataclass beside the trainer, help text on every field).

Defaults are the authors' CodeGen-350M-mono run (xingyaoww/LeTI, run_leti.py and
leti/scripts/model/train/rw_conditioned/mbpp/350M/finetune+50x3+lr1e-5+mixpretrain.sh): AdamW
(betas 0.9/0.999, weight decay 0.01 except biases and norms), constant lr 1e-5, no gradient
clipping, 128 texts per optimiser step, texts in order, 3 epochs per iteration, bf16, whole
optimiser steps alternating 1:1 with packed continued-pretraining batches of the first 50k Python
files of The Stack (streamed from the hub; offline configs set `stdlib`) less the 10% of them held
out to measure forgetting, one AdamW state carried through every iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Largest LoRA rank: a rank above a layer's width adds nothing (ranks in use: 8-256), and 10**20
# was a traceback from torch's tensor sizes after the base evaluation and the first sampling phase.
MAX_LORA_RANK = 65536


@dataclass(frozen=True)
class LoraSettings:
    enabled: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) instead of all weights; merged into the checkpoint after training."})
    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata={"help": "Modules that get adapters (peft names; 'all-linear' = every linear layer but the output head)."})
    train_special_tokens: bool = field(default=True, metadata={"help": "Also train the rows of the added special tokens (<|good|> ...) via peft trainable_token_indices, in the input embedding and in an output head that is untied (Llama, Mistral, GPT-NeoX) or tied to it; they stay at their mean initialisation otherwise. An untied head with a bias (CodeGen, Phi) keeps its initial rows under LoRA (peft's trainable tokens drop the bias; a warning says so); full fine-tuning trains them."})
    save: Literal["merged", "adapter"] = field(default="merged", metadata={"help": "'merged': every checkpoint is a plain model with the adapters merged in; 'adapter': checkpoints hold only the adapters (peft format, with the trained special-token rows) over the original model, and each iteration goes on training the same adapters. Not with the vllm sampler (it cannot load the special-token rows)."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: train the adapters over a 4-bit NF4 copy of the weights (bitsandbytes, pip install 'leti[qlora]'); the full-precision model waits on the CPU and the adapters are merged into it after training. Needs enabled: true."})

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"trainer.lora.r must be >= 1, got {self.r!r}")
        if self.r > MAX_LORA_RANK:
            raise ValueError(f"trainer.lora.r must be at most {MAX_LORA_RANK}, got {self.r!r}")
        if self.alpha < 1:  # the adapters' output is scaled by alpha / r: 0 trains nothing
            raise ValueError(f"trainer.lora.alpha must be >= 1, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"trainer.lora.dropout must be in [0, 1), got {self.dropout!r}")
        if self.save not in ("merged", "adapter"):
            raise ValueError(f"trainer.lora.save must be 'merged' or 'adapter', got {self.save!r}")
        if "all-linear" in self.target_modules and len(self.target_modules) > 1:
            # peft reads 'all-linear' only as the whole value; in a list it is a module name that
            # matches nothing, and the other names alone got adapters
            raise ValueError(f"trainer.lora.target_modules={self.target_modules!r}: 'all-linear' stands alone, as "
                             "['all-linear'] (every linear layer); or list the layers without it")


@dataclass(frozen=True)
class TrainerConfig:
    learning_rate: float = field(default=1e-5, metadata={"help": "Constant learning rate (authors: 1e-5 for 350M, 5e-6 for 2B; SFT baseline 1e-4)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (authors: 0.01); not applied to biases and norms."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping norm (0 = off, the authors' setting: their train step applies the gradient unclipped)."})
    carry_optimizer_state: bool = field(default=True, metadata={"help": "Go on with AdamW's moments and step count from one iteration's training to the next, as the authors keep one train state for the whole run (run_leti.py). Kept as leti_optimizer.pth in the newest checkpoint only: two fp32 numbers per trained weight (2.8 GB at 350M, about 22 GB at CodeGen-2B, 2.8B weights; with LoRA only the adapters'). Needs one process or DDP (not DeepSpeed or FSDP, which split the state over ranks) and, with LoRA, lora.save: adapter (merged adapters start new each iteration). False: a new AdamW every iteration."})
    epochs: int = field(default=3, metadata={"help": "Passes over one iteration's training texts (authors: 3; SFT baseline 30)."})
    batch_size: int = field(default=8, metadata={"help": "Texts (or pretraining blocks) per micro-batch, per device."})
    gradient_accumulation_steps: int = field(default=16, metadata={"help": "Micro-batches per optimiser step. Default 16 x batch_size 8 = 128 texts per step on one device: the authors' global batch (16 per TPU core x 8 cores of a v3-8, 16 microbatches). With N devices, divide by N to keep 128. A step's loss is its summed token loss over the tokens it predicts, however they fall into micro-batches and devices, as the authors normalise."})
    shuffle: bool = field(default=False, metadata={"help": "Shuffle the training texts each epoch. Authors: no, the texts are trained on in order (each problem's samples together); leti's order is the task's problem order, samples by index."})
    max_length: int = field(default=2048, metadata={"help": "Tokens per text (longer ones are cut at the end and counted) and pretraining block length; capped at the model's context (authors: CodeGen's 2048 for both)."})
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = field(default="auto", metadata={"help": "'auto': bf16 autocast on GPUs that support it, else fp32; weights stay fp32."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in the backward pass to save memory."})
    pretrain_mix_ratio: float = field(default=1.0, metadata={"help": "Continued-pretraining optimiser steps per LeTI optimiser step (1.0 = 1:1 alternation of whole steps, authors; 0 = no mix). Where the stream starts: pretrain_restart_every_epoch."})
    pretrain_corpus: str = field(default="bigcode/the-stack", metadata={"help": "Continued-pretraining corpus: a Hugging Face dataset id, streamed (default: the authors' corpus, bigcode/the-stack, Python files; a gated dataset: accept its terms on the hub, then `hf auth login`), 'stdlib' (this machine's Python standard library, offline) or a directory of .py files. Checked at run start."})
    pretrain_hf_data_dir: str | None = field(default="data/python", metadata={"help": "data_dir of the Hugging Face pretraining dataset (the-stack and the-stack-smol: data/python)."})
    pretrain_text_field: str = field(default="content", metadata={"help": "Text column of the Hugging Face pretraining dataset."})
    pretrain_restart_every_epoch: bool = field(default=True, metadata={"help": "Start the pretraining stream again at its first block every epoch, as the authors build a new pretraining loader each epoch. False: one stream per training stage, continued across its epochs."})
    pretrain_eos_separator: bool = field(default=False, metadata={"help": "Put the tokenizer's end-of-text token between packed pretraining documents. Authors: no, files are concatenated as they are (run_leti.py, pretrain_tokenize_function and group_texts)."})
    pretrain_max_files: int = field(default=50000, metadata={"help": "Use at most this many corpus files, in order (authors: the first 50k Python files of The Stack)."})
    pretrain_cache: bool = field(default=True, metadata={"help": "Tokenize the pretraining corpus once, when a training stage first needs it, into an on-disk cache that every later pass, iteration and run with the same corpus and tokenizer reads back ($LETI_CACHE_DIR/pretrain, default $XDG_CACHE_HOME/leti/pretrain, else ~/.cache/leti/pretrain; 2 bytes per token, 4 with vocabularies over 65,536): a hub corpus is streamed once, not every epoch. The same batches either way. False: read and tokenize the corpus on every pass."})
    pretrain_heldout_fraction: float = field(default=0.1, metadata={"help": "Share of the corpus's files held out of the mix, to measure the model's loss on code it never trains on. Split as the authors split theirs (datasets' train_test_split(test_size=this, seed=pretrain_split_seed)): the mix trains on the other files in the split's shuffled order. 0: no file held out, the mix trains on every file in corpus order."})
    pretrain_split_seed: int = field(default=42, metadata={"help": "Seed of that split (authors: their run seed, 42)."})
    pretrain_heldout_loss: bool | None = field(default=None, metadata={"help": "Measure the mean token loss on the held-out files: the base model's, then each iteration's trained model's (metrics.jsonl: pretrain_heldout_loss; authors: before training and every epoch). It shows what the model forgets of ordinary code. null: when the mix is on. true: without the mix too (the no-mix ablation, where forgetting shows; the corpus is then read for this alone). Needs pretrain_heldout_fraction > 0."})
    pretrain_packing: Literal["authors", "stream"] = field(default="authors", metadata={"help": "How the corpus's files become blocks of max_length tokens. 'authors': as run_leti.py packs them (datasets' map(group_texts, batched=True, num_proc=8) on each split): the split's files in 8 contiguous shards, each shard in groups of 1,000 files, each group concatenated and cut into blocks with its tail dropped; then each split keeps a multiple of 128 blocks (when it has 128). 'stream': the split's files as one stream, only its last tail dropped."})
    pretrain_heldout_max_blocks: int | None = field(default=None, metadata={"help": "Score at most this many held-out blocks (of max_length tokens) each time; null: all of them (authors: all, cut to a multiple of 128). A forward pass over each, every iteration."})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "Optional LoRA (peft) settings."})
    report_to: list[str] = field(default_factory=list, metadata={"help": "Experiment trackers: any of 'tensorboard', 'wandb' (must be installed; checked at run start, wandb's login and WANDB_* settings too). One session per leti run, written by rank 0 in the run directory (logs/tensorboard; logs/wandb: one wandb run per leti run, resumed with it, in the project WANDB_PROJECT names, default 'leti'), with the whole run config (dotted keys) and, on the run's cumulative optimizer steps (metrics.jsonl's gradient_steps_total; iteration 0 at 0): every log_every LeTI steps train/leti_loss, train/pretrain_loss (the mix's steps since the last point) and train/learning_rate; eval/pretrain_heldout_loss at each stage's end; and each iteration's metrics.jsonl numbers (eval/pass@k and the task's metrics, train/pass_rate, ...)."})
    log_every: int = field(default=10, metadata={"help": "Log the mean LeTI loss every this many LeTI optimiser steps (the logged step number counts every optimiser step, pretraining ones included)."})

    @property
    def measures_heldout(self) -> bool:
        """Whether training stages measure the loss on the held-out pretraining files."""
        if self.pretrain_heldout_fraction == 0:
            return False
        return self.pretrain_mix_ratio > 0 if self.pretrain_heldout_loss is None else self.pretrain_heldout_loss

    @property
    def reads_corpus(self) -> bool:
        """Whether training reads the pretraining corpus (the mix, or the held-out loss)."""
        return self.pretrain_mix_ratio > 0 or self.measures_heldout

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError(f"trainer.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.weight_decay < 0:
            raise ValueError(f"trainer.weight_decay must be >= 0, got {self.weight_decay!r}")
        # torch's AdamW refuses these only when the optimiser is built, after a whole sampling phase
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.max_grad_norm < 0:
            raise ValueError(f"trainer.max_grad_norm must be >= 0 (0 = no clipping), got {self.max_grad_norm!r}")
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_length < 8:
            raise ValueError(f"trainer.max_length must be >= 8, got {self.max_length!r}")
        if self.pretrain_mix_ratio < 0:
            raise ValueError(f"trainer.pretrain_mix_ratio must be >= 0, got {self.pretrain_mix_ratio!r}")
        if self.mixed_precision not in ("auto", "bf16", "fp16", "no"):
            raise ValueError(f"trainer.mixed_precision must be 'auto', 'bf16', 'fp16' or 'no', got {self.mixed_precision!r}")
        if self.pretrain_max_files < 1:
            raise ValueError(f"trainer.pretrain_max_files must be >= 1, got {self.pretrain_max_files!r}")
        if not 0 <= self.pretrain_heldout_fraction < 1:
            raise ValueError(f"trainer.pretrain_heldout_fraction must be in [0, 1), got {self.pretrain_heldout_fraction!r}")
        if not 0 <= self.pretrain_split_seed < 2**32:
            raise ValueError(f"trainer.pretrain_split_seed must be in [0, 2**32), got {self.pretrain_split_seed!r}")
        if self.pretrain_heldout_loss and self.pretrain_heldout_fraction == 0:
            raise ValueError("trainer.pretrain_heldout_loss: true needs held-out files; set trainer.pretrain_heldout_fraction > 0 (authors: 0.1)")
        if self.pretrain_packing not in ("authors", "stream"):
            raise ValueError(f"trainer.pretrain_packing must be 'authors' or 'stream', got {self.pretrain_packing!r}")
        if self.pretrain_heldout_max_blocks is not None and self.pretrain_heldout_max_blocks < 1:
            raise ValueError(f"trainer.pretrain_heldout_max_blocks must be >= 1 or null (all), got {self.pretrain_heldout_max_blocks!r}")
        if self.lora.load_in_4bit and not self.lora.enabled:
            raise ValueError("trainer.lora.load_in_4bit is QLoRA and needs trainer.lora.enabled: true")
        if self.lora.save == "adapter" and not self.lora.enabled:
            raise ValueError("trainer.lora.save='adapter' needs trainer.lora.enabled: true")
        bad = [t for t in self.report_to if t not in ("tensorboard", "wandb")]
        if bad:
            raise ValueError(f"trainer.report_to: unknown tracker {bad[0]!r}; use 'tensorboard' or 'wandb'")
