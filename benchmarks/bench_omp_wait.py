"""OpenMP's wait policy on a shared CPU: torch's default (threads spin after each parallel
region) against OMP_WAIT_POLICY=PASSIVE (they sleep), on the work of a demo-sized iteration.

Each side is a fresh process (libgomp reads the variable once, when torch loads it), run
alternately `--repeat` times: a few training steps (forward, backward, clip, AdamW) and one
sampling batch with leti's HFSampler, on a random-init GPT-2 of the demo's shape (3 layers, 96
wide, 1024-token BPE). It prints the median wall and CPU seconds of each side, their ratios, the
load average, and whether both sides computed bit-identical losses and samples (the policy
decides how idle threads wait, not how work is split, so they must).

    python benchmarks/bench_omp_wait.py            # --repeat 3 --steps 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

WORK = r"""
import json, sys, time, torch
from leti.model import load_model_and_tokenizer
from leti.sampling import SampleRequest, SamplingConfig, get_sampler
torch.set_num_threads(int(sys.argv[2]))
torch.manual_seed(0)  # dropout draws from the global generator
model, tok = load_model_and_tokenizer(sys.argv[1], dtype="float32", device="cpu")
g = torch.Generator().manual_seed(0)
t, c = time.perf_counter(), time.process_time()
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
losses = []
for _ in range(int(sys.argv[3])):
    x = torch.randint(0, 1000, (16, 192), generator=g)
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step(); opt.zero_grad()
    losses.append(loss.item().hex())
train = (time.perf_counter() - t, time.process_time() - c)
t, c = time.perf_counter(), time.process_time()
cfg = SamplingConfig(n=4, temperature=0.8, max_new_tokens=64, batch_size=64, seed=0)
reqs = [SampleRequest(f"p{i}", f"def f{i}(x):\n    return x + {i}\n\ndef g{i}(y):\n") for i in range(16)]
samples = sorted((s.key, s.completion) for s in get_sampler(cfg, model, tok).sample(reqs))
sample = (time.perf_counter() - t, time.process_time() - c)
print(json.dumps({"train": train, "sample": sample, "losses": losses, "samples": samples}))
"""


def run_side(model: str, passive: bool, threads: int, steps: int) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    out = subprocess.run([sys.executable, "-c", WORK, model, str(threads), str(steps)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--steps", type=int, default=8, help="training steps per run")
    p.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    args = p.parse_args()
    from leti.testing import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(f"{tmp}/m", vocab_size=1024, n_layer=3, n_embd=96, n_head=3)
        runs: dict[bool, list[dict]] = {False: [], True: []}
        start_load = os.getloadavg()[0]
        for _ in range(args.repeat):
            for passive in (False, True):
                runs[passive].append(run_side(model, passive, args.threads, args.steps))
        end_load = os.getloadavg()[0]
    same = all(r["losses"] == runs[False][0]["losses"] and r["samples"] == runs[False][0]["samples"]
               for side in runs.values() for r in side)
    print(f"torch threads {args.threads}, {args.repeat} runs per side, load average {start_load:.2f} -> {end_load:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'stage':<8} {'default wall':>12} {'passive wall':>12} {'wall ratio':>10} "
          f"{'default CPU':>11} {'passive CPU':>11} {'CPU ratio':>9}")
    for stage in ("train", "sample"):
        med = {side: [statistics.median(r[stage][i] for r in runs[side]) for i in (0, 1)] for side in runs}
        print(f"{stage:<8} {med[False][0]:12.2f} {med[True][0]:12.2f} {med[False][0] / med[True][0]:9.2f}x "
              f"{med[False][1]:11.2f} {med[True][1]:11.2f} {med[False][1] / med[True][1]:8.2f}x")
    print(f"identical losses and samples on both sides: {same}")


if __name__ == "__main__":
    main()
