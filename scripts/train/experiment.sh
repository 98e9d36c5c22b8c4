#!/usr/bin/env bash
# The sparsity-aware training experiment in one call (GPU machine, ~9 minutes):
#   1. train the in-house byte-level Llama from scratch, dense (train.py, DENSE_MIN minutes)
#   2. fine-tune it briefly with UNIQUE's soft mask (finetune_soft_mask.py, FT_STEPS steps)
#   3. evaluate both, dense and under hard top-k at budgets 1/8..1/64 of the context for the
#      unique / quest / mean estimators (evaluate.py, at most EVAL_MIN minutes of configs)
#   4. plots when matplotlib is importable (else: scripts/train/plot_train_eval.py later)
# Works in WORK (default .train/experiment, git-ignored, kept between calls on a warm machine):
# model-dense/ and model-softmask/ (HF directories), eval.json, train.log, finetune.log,
# eval.log, env.txt, *.png; at the end copies all of it into $OUT when OUT is set.
# Needs the corpus .train/corpus (scripts/train/prepare_corpus.py on a machine with the
# Debian packages bible-kjv-text and python3.11; carry it). Checkpoints go to
# CKPT (default .train/ckpt): a call cut short resumes from them; FRESH=1 deletes them and WORK first.
#   OUT=dir  WORK=dir  PYTHON=python3  DENSE_MIN=7.5  FT_STEPS=300  EVAL_MIN=1.5  TINY=1 (CPU smoke test)
#   STAGES="dense ft control eval plot" (default: all; control only with CONTROL_STEPS): run a subset,
#     e.g. a longer dense run in one call (STAGES=dense DENSE_MIN=9.5; a later call with a larger
#     DENSE_MIN resumes it) and "ft eval plot" in the next (rm $CKPT/softmask.pt to redo a fine-tune)
#   FT_STEPS=n: the soft-mask fine-tune's length in steps (its schedules run over steps, so the result
#     does not depend on the GPU's speed); FT_MIN (default 10) only limits its time
#   CONTROL_STEPS=n (default 0 = off): also continue the dense model with dense attention for n steps
#     (same data and settings as the fine-tune) and evaluate it ("dense-ft-control"), to separate
#     the soft mask's effect from that of more training; CONTROL_MIN (default 10) limits its time
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
OUTDIR=${WORK:-.train/experiment}
CORPUS=${CORPUS:-.train/corpus}
CKPT=${CKPT:-.train/ckpt}
DENSE_MIN=${DENSE_MIN:-7.5}
FT_MIN=${FT_MIN:-10}
FT_STEPS=${FT_STEPS:-300}
EVAL_MIN=${EVAL_MIN:-1.5}
TINY_FLAG=()
if [ "${TINY:-0}" = 1 ]; then
  TINY_FLAG=(--tiny)
  DENSE_MIN=${DENSE_MIN_TINY:-0.3}; FT_MIN=${FT_MIN_TINY:-0.15}; FT_STEPS=${FT_STEPS_TINY:-20}; EVAL_MIN=0
fi
[ "${FRESH:-0}" = 1 ] && rm -rf "$CKPT" "$OUTDIR"
mkdir -p "$OUTDIR" "$CKPT"
if [ ! -f "$CORPUS/train.bin" ]; then
  echo "experiment: no $CORPUS: building it (needs bible-kjv-text)"
  $PY scripts/train/prepare_corpus.py --out "$CORPUS" ${TINY_FLAG[@]+"${TINY_FLAG[@]}"}
fi
start=$(date +%s)
{
  date -u; git rev-parse HEAD 2>/dev/null || true
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import sys; sys.path.insert(0, 'scripts/train'); import common; sm, _ = common.load_unique_attn(); print('soft-mask CUDA kernels:', sm.cuda_kernels_available())"
} > "$OUTDIR/env.txt" 2>&1 || true
cat "$OUTDIR/env.txt"
export PYTHONUNBUFFERED=1
STAGES=" ${STAGES:-dense ft control eval plot} "
has() { [[ "$STAGES" == *" $1 "* ]]; }
if has dense; then
$PY scripts/train/train.py ${TINY_FLAG[@]+"${TINY_FLAG[@]}"} --corpus "$CORPUS" --out "$OUTDIR/model-dense" \
  --ckpt "$CKPT/dense.pt" --minutes "$DENSE_MIN" 2>&1 | grep --line-buffered -v "^Loading weights\|Writing model shards" | tee -a "$OUTDIR/train.log"
echo "experiment: dense training done at $(( $(date +%s) - start ))s"
fi
if has ft; then
$PY scripts/train/finetune_soft_mask.py ${TINY_FLAG[@]+"${TINY_FLAG[@]}"} --corpus "$CORPUS" --init "$OUTDIR/model-dense" \
  --out "$OUTDIR/model-softmask" --ckpt "$CKPT/softmask.pt" --minutes "$FT_MIN" --max-steps "$FT_STEPS" 2>&1 \
  | grep --line-buffered -v "^Loading weights\|Writing model shards" | tee -a "$OUTDIR/finetune.log"
echo "experiment: soft-mask fine-tuning done at $(( $(date +%s) - start ))s"
fi
models=("$OUTDIR/model-dense" "$OUTDIR/model-softmask")
labels=(dense-trained soft-mask-ft)
CONTROL_STEPS=${CONTROL_STEPS:-0}
CONTROL_MIN=${CONTROL_MIN:-10}
if [ "$CONTROL_STEPS" != 0 ] && has control; then
  $PY scripts/train/finetune_soft_mask.py ${TINY_FLAG[@]+"${TINY_FLAG[@]}"} --corpus "$CORPUS" --init "$OUTDIR/model-dense" \
    --attn sdpa --out "$OUTDIR/model-densecontrol" --ckpt "$CKPT/densecontrol.pt" --minutes "$CONTROL_MIN" --max-steps "$CONTROL_STEPS" 2>&1 \
    | grep --line-buffered -v "^Loading weights\|Writing model shards" | tee -a "$OUTDIR/control.log"
  echo "experiment: dense control done at $(( $(date +%s) - start ))s"
fi
if [ -d "$OUTDIR/model-densecontrol" ]; then models+=("$OUTDIR/model-densecontrol"); labels+=(dense-ft-control); fi
if has eval; then
$PY scripts/train/evaluate.py ${TINY_FLAG[@]+"${TINY_FLAG[@]}"} --corpus "$CORPUS" \
  --models "${models[@]}" --labels "${labels[@]}" \
  --minutes "$EVAL_MIN" --out "$OUTDIR/eval.json" 2>&1 | grep --line-buffered -v "^Loading weights" | tee -a "$OUTDIR/eval.log"
echo "experiment: evaluation done at $(( $(date +%s) - start ))s"
fi
if has plot && [ -f "$OUTDIR/eval.json" ] && $PY -c "import matplotlib" 2>/dev/null; then
  $PY scripts/train/plot_train_eval.py "$OUTDIR/eval.json" --prefix "$OUTDIR/train_softmask" || true
fi
du -sh "$OUTDIR"/model-* 2>/dev/null || true
if [ -n "${OUT:-}" ] && [ "$(realpath -m "$OUT")" != "$(realpath -m "$OUTDIR")" ]; then
  mkdir -p "$OUT" && cp -r "$OUTDIR"/. "$OUT"/ && echo "experiment: copied $OUTDIR to $OUT"
fi
echo "experiment: all done in $(( $(date +%s) - start ))s; results in $OUTDIR"
