"""`leti demo`: LeTI learning from execution feedback on 2 CPU cores, offline.

Pieces: `corpus` (offline pretraining text), `warmstart` (BPE tokenizer + ~0.5M-parameter
GPT-2 pretrained in a few minutes, cached), `config` (the presets: leti/demo/presets/demo.yaml and
demo-quick.yaml, and the arms), `run` (warm start -> textual arm -> binary arm -> the control arms
that --arms asks for, through `leti.loop`, resumable), `summary`.

What it shows (presets/demo.yaml, measured on the shared 2-core development machine with
`leti demo --arms textual,binary,constant,passing`; each arm is 4 iterations of 192 train
problems x 4 samples from the same warm start and seed; held-out = 64 problems x 4 samples at
T=0.2 with the `<|good|>` prefix from iteration 1 on (iteration 0, the untrained warm start,
gets the plain prompt); every seed has its own warm start and split):

    held-out pass@1 (%)    iteration 0     1      2      3      4    gradient steps
    seed 0  textual            16.8      23.4   30.9   32.0   32.0     768
            binary             16.8      18.0   16.8   15.6   17.2     768
            constant           16.8      19.9   24.6   27.7   23.8     768
            passing            16.8      21.9   32.4   35.2   41.8     216
    seed 1  textual            17.2      23.0   39.5   44.9   42.2     768
            binary             17.2      13.7   10.5   15.2   15.6     768
            constant           17.2      16.8   28.9   40.2   50.4     768
            passing            17.2      25.8   41.4   44.9   55.9     256
    seed 2  textual            19.9      18.4   27.7   38.3   38.3     768
            binary             19.9      20.3   17.2   14.1   16.8     768
            constant           19.9      18.8   16.0   25.8   24.2     768
            passing            19.9      28.9   45.3   37.1   45.3     268
    mean of the 3 seeds, iteration 4: baseline 18.0, textual 37.5, binary 16.5, constant 32.8,
    passing 47.7

The textual rows were re-measured on 2026-11-28, when the feedback gained chained exceptions and,
on Python 3.11, the interpreter's "Did you mean" suggestions (in about 40% of iteration 1's
samples: the tiny model misspells names; Python 3.12+ had them before). The textual arm had
reached 35.9 / 44.9 / 47.3 with the old feedback. The other arms train on no traceback text and
are unchanged (seed 0's binary curve reproduced exactly).

Arms: textual = the paper's `<|bad|>` + traceback feedback span + prompt + program; binary =
the same without the feedback span (training_text.textual_feedback=false); constant = the span
kept but every one says "The program failed." (training_text.feedback_content=constant);
passing = passing samples only, no span (training_text.keep_failures=false; it trains on the
14-49% of the samples that pass, hence about a third of the gradient steps).

Why the binary arm does not learn: the tiny model never learns to condition on the reward token.
Seed 0's final checkpoints prompted with `<|good|>` / `<|bad|>` / no prefix score 32.0 / 32.4 /
28.5 (textual) and 17.2 / 17.2 / 10.9 (binary) (`leti evaluate --model
RUN/seed0/ARM/iterations/4/checkpoint --prompt-prefix P --task synthetic:seed=0,train=192,test=64
--split test --n 4 --temperature 0.2 --max-new-tokens 64 --k 1 --seed 100004 --out DIR`; the `<|good|>`
figures equal the runs' own evaluations). In the binary arm the failures (84-87% of the samples)
are trained in the layout of the `<|good|>`-prefixed prompt used at evaluation, up to the reward
token it ignores, so their prompt -> wrong-program pairs cancel what the passing ones teach; in
the textual arm every failure sits behind a feedback span and so leaves the evaluation layout.
The controls confirm the layout part: the constant span lifts the binary arm in every seed (+7,
+35, +7 points at iteration 4), and dropping the failures (passing) is the strongest arm. What
the traceback says adds on top in two of three seeds (textual - constant at iteration 4: +8.2,
-8.2, +14.1 points), so on this tiny model most of the textual arm's gain over binary (about 80%: 16 of
21 points in the seed means) comes from moving failures out of the evaluation layout, and the
traceback's content is worth ~5 points on average with a large spread across seeds: it is not
shown to be irrelevant, nor reliably useful. Passing-only self-training is the strongest arm per
gradient step by far (seed means: 47.7% after ~250 steps against 37.5% for textual after 768; at
iteration 2, 76-88 steps, it is ahead of textual in every seed), and ahead of textual at the end
in every seed (+9.8, +13.7, +7.0). Curves move by 5-8 points between iterations without
a trend (e.g. passing seed 2: 45.3, 37.1, 45.3), so single-seed differences below ~10 points are
noise. `--seeds N` runs and averages N seeds; benchmarks/bench_demo.py (in the source repository,
not the package) re-measures the numbers and the wall time.

Time (benchmarks/bench_demo.py, fresh cache, 2 torch threads, nice 10, shared 2-core machine):
two runs took 451 s and 387 s wall (6.5-7.5 min; warm start 121-194 s, each arm 119-135 s,
report 1 s), 728-766 CPU-seconds. A second run reuses the cached warm start (~4.3 min). All four
arms with the warm start built took 547 s (seed 1) and 528 s (seed 2): warm start 118 s,
textual 130-138 s, binary 109-117 s, constant 113-120 s, passing 53-56 s (fewer steps).
Runs are bit-for-bit repeatable: the 4-arm runs reproduced the earlier textual and binary curves
of seeds 0 and 1 exactly, and the seed-0 controls match earlier iteration-2 measurements.
"""
