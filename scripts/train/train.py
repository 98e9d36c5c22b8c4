#!/usr/bin/env python3
"""Trains the in-house long-context model from scratch: a small byte-level Llama
(LlamaForCausalLM, MHA, RoPE theta 5e5) on the corpus of prepare_corpus.py mixed with
synthetic passkey / key-value retrieval sequences: first retrieval sequences alone at 512
tokens until they are learned (--retrieval-first), then the text mix with a sequence-length
curriculum up to --context; bf16 autocast, dense attention through SDPA (FlashAttention), a wall-clock budget
(--minutes, counted across resumes) and resumable checkpoints (--ckpt). Saves the Hugging
Face directory (--out) that transformers and `unique generate --model DIR` load.

  python3 scripts/train/train.py --corpus .train/corpus --out OUT/model-dense --minutes 7.4   # models/unique-demo
  python3 scripts/train/train.py --tiny --minutes 0.3 --out /tmp/tiny     # CPU smoke test

The loss is text CE (mean over non-answer tokens) + --answer-weight * answer CE (mean over
the answer tokens of the retrieval sequences).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=".train/corpus")
    ap.add_argument("--out", default=".train/model-dense", help="HF directory written at the end")
    ap.add_argument("--ckpt", default=None, help="checkpoint file (default OUT/../<name>.ckpt.pt)")
    ap.add_argument("--size", default="demo", choices=sorted(C.MODEL_SIZES))
    ap.add_argument("--context", type=int, default=8192)
    ap.add_argument("--curriculum", default="0.3:2048",
                    help="frac:len,... : before time fraction frac train at len (then --context)")
    ap.add_argument("--tokens-per-step", type=int, default=16384)
    ap.add_argument("--minutes", type=float, default=7.5, help="training wall-clock budget (all runs together)")
    ap.add_argument("--max-steps", type=int, default=0,
                    help="train this many steps; the schedules (lr, curriculum, soft-mask temperature) then run "
                         "over steps, not time, so the result does not depend on the GPU's speed; --minutes stays "
                         "a time limit (0: time only)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--synth-frac", type=float, default=0.5, help="fraction of retrieval sequences")
    ap.add_argument("--retrieval-first", type=float, default=0.95, metavar="ACC",
                    help="first train on retrieval sequences only, at --retrieval-len tokens, until the answer "
                         "accuracy (mean of the last 4 logs) reaches ACC or --retrieval-max-frac of the time is "
                         "spent; then --synth-frac and --curriculum apply, their fractions counted over the rest "
                         "of the time (0: off). Retrieval forms as a sudden phase change that mixed text delays "
                         "past a short run's end (docs/RESULTS.md, issue 7)")
    ap.add_argument("--retrieval-len", type=int, default=512)
    ap.add_argument("--retrieval-max-frac", type=float, default=0.6)
    ap.add_argument("--answer-weight", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--ckpt-every", type=float, default=60.0, help="seconds between checkpoints")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--init", default=None, help="start from this HF directory (fine-tuning) instead of scratch")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "unique_soft_mask"],
                    help="attention in training: dense SDPA or UNIQUE's soft mask (python/unique_attn)")
    ap.add_argument("--sm-budget-fracs", default="16,32,64",
                    help="soft mask: budget = context / f with f drawn per step from this list")
    ap.add_argument("--sm-temperature", default="0.5:0.05", help="soft mask: T start:end (geometric in time)")
    ap.add_argument("--sm-page-size", type=int, default=16)
    ap.add_argument("--sm-sink", type=int, default=1)
    ap.add_argument("--sm-recent", type=int, default=1)
    ap.add_argument("--sm-backend", default=None, help="soft mask backend: auto | torch | cuda")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke settings: tiny model, context 512")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    if a.tiny:
        a.size, a.context, a.tokens_per_step = "tiny", 512, 2048
        if not a.init:
            a.curriculum = "0.3:384"
            a.retrieval_len = 384
        a.ckpt_every = min(a.ckpt_every, 5.0)
        a.log_every = min(a.log_every, 2)
    if a.ckpt is None:
        a.ckpt = os.path.abspath(a.out.rstrip("/")) + ".ckpt.pt"
    return a


def seq_len_at(frac, a):
    """frac: the fraction of the curriculum's time spent (after the retrieval-first phase)."""
    for part in filter(None, a.curriculum.split(",")):
        f, n = part.split(":")
        if frac < float(f):
            return min(int(n), a.context)
    return a.context


def main(argv=None):
    a = parse(argv)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    from transformers import LlamaForCausalLM
    if a.init:
        model = LlamaForCausalLM.from_pretrained(a.init, dtype=torch.float32).to(dev)
        a.context = min(a.context, model.config.max_position_embeddings)
    else:
        model = LlamaForCausalLM(C.llama_config(a.size, a.context)).to(dev)
    model.config._attn_implementation = "sdpa"
    if a.attn == "unique_soft_mask":
        _, hf = C.load_unique_attn()
        hf.register_transformers()
        model.config._attn_implementation = "unique_soft_mask"
        model.config.unique_page_size = a.sm_page_size
        model.config.unique_sink, model.config.unique_recent = a.sm_sink, a.sm_recent
        model.config.unique_mode, model.config.unique_backend = "soft", a.sm_backend
    sm_fracs = [int(f) for f in a.sm_budget_fracs.split(",")]
    t_start, t_end = (float(x) for x in a.sm_temperature.split(":"))
    nparams = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=dev.type == "cuda")
    corpus = C.Corpus(a.corpus, "train")
    rng = np.random.default_rng(a.seed)
    step, elapsed, history = 0, 0.0, []
    switch_frac = None if a.retrieval_first > 0 else 0.0  # time fraction at which retrieval-first ended
    if os.path.exists(a.ckpt):
        ck = torch.load(a.ckpt, map_location=dev, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, elapsed, history = ck["step"], ck["elapsed"], ck["history"]
        switch_frac = ck.get("switch_frac", switch_frac)
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        print(f"train: resumed {a.ckpt} at step {step}, {elapsed:.0f}s done", flush=True)
    fwd = torch.compile(model) if a.compile else model
    budget = a.minutes * 60.0
    print(f"train: {a.init or a.size} model, {nparams / 1e6:.2f}M parameters, context {a.context}, "
          f"{a.tokens_per_step} tokens/step, {a.minutes} min, device {dev}", flush=True)

    def save_ckpt():
        tmp = a.ckpt + ".tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed,
                    "history": history, "switch_frac": switch_frac, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                    "args": vars(a)}, tmp)
        os.replace(tmp, a.ckpt)

    t_last_ckpt = time.time()
    t0 = time.time() - elapsed
    tok_count = 0
    t_log = time.time()
    model.train()
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget or (a.max_steps and step >= a.max_steps):
            break
        frac = step / a.max_steps if a.max_steps else elapsed / budget
        if switch_frac is None:
            recent_acc = [h["answer_acc"] for h in history[-4:] if h["answer_acc"] is not None]
            if frac >= a.retrieval_max_frac or (len(recent_acc) == 4 and np.mean(recent_acc) >= a.retrieval_first):
                switch_frac = frac
                print(f"train: retrieval-first phase done at step {step}, {elapsed:.0f}s "
                      f"(answer accuracy {np.mean(recent_acc) if recent_acc else 0:.2f}); text mix from here", flush=True)
        if switch_frac is None:
            L, synth = min(a.retrieval_len, a.context), 1.0
        else:
            L, synth = seq_len_at((frac - switch_frac) / max(1e-9, 1 - switch_frac), a), a.synth_frac
        B = max(1, a.tokens_per_step // L)
        lr = C.lr_at(frac, a.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        if a.attn == "unique_soft_mask":
            f = sm_fracs[int(rng.integers(len(sm_fracs)))]
            model.config.unique_budget = max(a.sm_page_size, L // f)
            model.config.unique_temperature = t_start * (t_end / t_start) ** min(1.0, frac)
        toks, ans = C.make_batch(rng, corpus, B, L, synth)
        x = torch.from_numpy(toks).to(dev, non_blocking=True)
        am = torch.from_numpy(ans).to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = fwd(input_ids=x, use_cache=False).logits
        text, ansl, acc = C.lm_losses(logits, x, am)
        loss = text + (a.answer_weight * ansl if ansl is not None else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tok_count += B * L
        if step % a.log_every == 0:
            dt = time.time() - t_log
            rec = {"step": step, "time": round(time.time() - t0, 1), "seq_len": L, "lr": lr,
                   "text_loss": text.item(), "answer_loss": None if ansl is None else ansl.item(),
                   "answer_acc": None if acc is None else acc.item(), "grad_norm": gn.item(),
                   "tok_per_s": tok_count / max(dt, 1e-9)}
            history.append(rec)
            print("train: step {step} t={time}s L={seq_len} lr={lr:.2e} text {text_loss:.3f} answer {al} "
                  "acc {ac} gn {grad_norm:.2f} {tok_per_s:.0f} tok/s".format(
                      al="-" if ansl is None else f"{rec['answer_loss']:.3f}",
                      ac="-" if acc is None else f"{rec['answer_acc']:.2f}", **rec), flush=True)
            tok_count, t_log = 0, time.time()
        if time.time() - t_last_ckpt > a.ckpt_every:
            elapsed = time.time() - t0
            save_ckpt()
            t_last_ckpt = time.time()
    elapsed = time.time() - t0
    save_ckpt()
    info = {"script": sys.argv[0], "args": vars(a), "steps": step, "seconds": elapsed, "switch_frac": switch_frac,
            "parameters": nparams, "history": history}
    C.save_hf_dir(model, a.out, a.context, info)
    print(f"train: done: {step} steps in {elapsed:.0f}s; wrote {a.out}", flush=True)


if __name__ == "__main__":
    main()
