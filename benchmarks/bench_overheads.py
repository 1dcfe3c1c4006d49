"""The repeated work a CPU iteration used to do, old way against leti's, in one process.

On a demo-sized iteration (the demo's task, 192 problems x 4 samples, a random-init GPT-2 of the
demo's shape with a 1024-token BPE):

  training texts      768 texts ending in EOS: tokenised twice each (old encode_prompt) / once
  decode              768 completions: the prompt decoded per sample (old) / once per prompt
  peft import         a run without LoRA: is_peft imported peft (old) / does not (a fresh
                      process each, the import time only)
  full gc pass        one gc.collect() over what importing torch and transformers left (old) /
                      after gc.freeze(), as `leti run` now calls before its iterations (new)

Each prints old and new CPU seconds (median of --repeat) and the ratio, and checks that both
sides produce the same output.

    python benchmarks/bench_overheads.py            # --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def cpu(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        c = time.process_time()
        out = fn()
        times.append(time.process_time() - c)
    return statistics.median(times), out


def old_encode(tokenizer, text: str) -> list[int]:
    """encode_prompt before: a second tokenisation whenever the ids end in EOS."""
    ids = list(tokenizer(text, verbose=False).input_ids)
    eos = tokenizer.eos_token_id
    if eos is None or not ids or ids[-1] != eos:
        return ids
    plain = list(tokenizer(text, add_special_tokens=False, verbose=False).input_ids)
    for start in range(len(ids) - len(plain) + 1):
        if plain and ids[start : start + len(plain)] == plain:
            end = start + len(plain)
            return ids[:end] + [t for t in ids[end:] if t != eos]
    return ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    from leti.model import decode_completion, decode_prompt, encode_prompt, load_model_and_tokenizer
    from leti.tasks.registry import get_task
    from leti.testing import make_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_model(f"{tmp}/m", vocab_size=1024, n_layer=3, n_embd=96, n_head=3)
        _, tok = load_model_and_tokenizer(path, dtype="float32", device="cpu")
        problems = get_task("synthetic:seed=0,train=192,test=64").problems("train")
        completion = "    result = []\n    for x in items:\n        result.append(x * 2)\n    return result\n"
        texts = [f"<|bad|><|lang_feedback|>NameError: name 'y' is not defined<|/lang_feedback|>{p.prompt}{completion}"
                 f"{tok.eos_token}" for p in problems for _ in range(4)]

        old_s, old_out = cpu(lambda: [old_encode(tok, t) for t in texts], args.repeat)
        new_s, new_out = cpu(lambda: [encode_prompt(tok, t) for t in texts], args.repeat)
        rows.append(("training texts (768)", old_s, new_s, old_out == new_out))

        prompts = [encode_prompt(tok, p.prompt) for p in problems for _ in range(4)]
        news = [encode_prompt(tok, completion)] * len(prompts)

        def old_decode():
            return [decode_completion(tok, p, n) for p, n in zip(prompts, news, strict=True)]

        def new_decode():
            heads: dict = {}
            out = []
            for p, n in zip(prompts, news, strict=True):
                key = tuple(p)
                if key not in heads:
                    heads[key] = decode_prompt(tok, p)
                out.append(decode_completion(tok, p, n, heads[key]))
            return out

        old_s, old_out = cpu(old_decode, args.repeat)
        new_s, new_out = cpu(new_decode, args.repeat)
        rows.append(("decode (768 samples)", old_s, new_s, old_out == new_out))

    def import_cpu(code: str) -> float:
        out = subprocess.run([sys.executable, "-c", "import time, torch, accelerate, leti.training.trainer\n"
                              "from leti.training.lora import is_peft\n"
                              "c = time.process_time()\n" + code + "\nprint(time.process_time() - c)"],
                             capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    check = "assert not is_peft(torch.nn.Linear(1, 1))"
    old_s = statistics.median(import_cpu("import peft\n" + check) for _ in range(args.repeat))  # is_peft before
    new_s = statistics.median(import_cpu(check) for _ in range(args.repeat))
    rows.append(("peft import (start-up)", old_s, new_s, True))

    # a full collection, as ModelSlot.release and Accelerate's free_memory make several times an
    # iteration: over everything the imports left (old) / after runner's gc.freeze() (new)
    collect = "import gc, transformers.modeling_utils\ngc.collect()\n{}c = time.process_time()\ngc.collect()"
    old_s = statistics.median(import_cpu(collect.format("")) for _ in range(args.repeat))
    new_s = statistics.median(import_cpu(collect.format("gc.freeze()\n")) for _ in range(args.repeat))
    rows.append(("full gc pass (each)", old_s, new_s, True))

    load = os.getloadavg()
    print(f"median of {args.repeat}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'work':<32} {'old CPU s':>9} {'new CPU s':>9} {'ratio':>7}  same output")
    for name, old_s, new_s, same in rows:
        print(f"{name:<32} {old_s:9.3f} {new_s:9.3f} {old_s / max(new_s, 1e-3):6.1f}x  {same}")


if __name__ == "__main__":
    main()
