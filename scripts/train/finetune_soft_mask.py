#!/usr/bin/env python3
"""Fine-tunes a dense-trained model directory briefly with UNIQUE's soft-mask attention
(python/unique_attn/soft_mask.py, registered in transformers as "unique_soft_mask"), on the
same data mix as train.py. Per step the budget is context / f with f drawn from
--sm-budget-fracs (default 16,32,64); the temperature anneals geometrically from the first
to the second value of --sm-temperature (default 0.5:0.05) over the run; page 16, sink 1,
recent 1 (the engine's defaults); 300 steps (--max-steps; the schedules run over steps). Every
flag of train.py applies; the defaults differ:

  python3 scripts/train/finetune_soft_mask.py --init OUT/model-dense --out OUT/model-softmask
  python3 scripts/train/finetune_soft_mask.py --tiny --init /tmp/tiny --out /tmp/tiny-sm --max-steps 20
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402

# A fixed number of steps, not minutes: with the CUDA kernels 2 minutes are ~1600 steps on an
# H100 (~290 through the fp32 torch path), and 1640 steps made the model worse at every budget
# (docs/RESULTS.md, "The experiment through the CUDA kernels, and the fine-tune's length");
# --minutes is then only a time limit.
DEFAULTS = ["--attn", "unique_soft_mask", "--lr", "1e-4", "--max-steps", "300", "--minutes", "10", "--curriculum", "",
            "--tokens-per-step", "32768", "--retrieval-first", "0", "--out", ".train/model-softmask", "--seed", "4321", "--wd", "0.0"]

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "-h" in argv or "--help" in argv:
        print(__doc__)
    if not any(x == "--init" or x.startswith("--init=") for x in argv) and "-h" not in argv and "--help" not in argv:
        sys.exit("finetune_soft_mask: --init DIR (the dense-trained model directory) is required")
    train.main(DEFAULTS + argv)
