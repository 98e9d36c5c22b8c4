#!/usr/bin/env python3
"""Parity of `unique generate` (CPU engine) with Hugging Face transformers.

Runs where torch + transformers + tokenizers are installed (the GPU machine; no download):

1. Models: for Llama (llama3 RoPE scaling), Mistral, Qwen2 (q/k/v bias) and Qwen3 (q/k norm),
   in fp32 and bf16, creates a small random model with transformers, saves it
   (safetensors), runs `unique generate --attention dense --dump-logits` on a random prompt
   for --steps greedy tokens, then runs transformers on the prompt + our tokens (teacher
   forcing, so both see the same prefix) and compares, per step, the logits
   (max |ours - hf| / max |hf|: fp32 <= 1e-4, bf16 <= 2e-2) and the greedy token (a
   mismatch counts only where hf's top-2 margin is above the tolerance: a near tie may
   flip). transformers runs in fp32 for the fp32 models and in bf16 for the bf16 ones.
2. Tokenizers: builds byte-level BPE tokenizers (GPT-2, Llama 3 and Qwen 2 pre-tokenizer
   regexes; Qwen 2 with its NFC normalizer) and a SentencePiece-style BPE with byte fallback (Llama 2 / Mistral layout)
   with the `tokenizers` library, trained on a built-in text, and checks that
   `unique tokenize` gives the same ids as the library for texts with unicode, whitespace
   runs, digits and special tokens.

3. --model DIR (repeatable): the same logit comparison on a given model directory in its
   stored dtype, e.g. the in-house model models/unique-demo.

Usage: python3 scripts/check_vs_transformers.py [--unique build/unique] [--steps 32] [--quick] [--model DIR]
Exit status 0 when everything matches; a table of results is printed either way.
"""
import argparse
import zlib
import json
import os
import subprocess
import sys
import tempfile

import torch

TEXTS = [
    "Hello world! This is a test.",
    "  leading spaces and   runs of    whitespace\t\ttabs\n\nnewlines\r\n end  ",
    "digits 1234567890 3.14159 2026-11-23 ١٢٣ (Arabic-Indic)",
    "unicode: héllo wörld naïve café — 你好世界 こんにちは 🙂🚀 Ωμέγα",
    "contractions: I'm you're they've it'll we'd DON'T",
    "code: def f(x):\n    return x**2  # comment\n",
    "special tokens inside: <s> and </s> and <|endoftext|> here",
    "",
    "x",
    "NFC: cafe\u0301 A\u030a\u0301 \u1100\u1161\u11a8 q\u0307\u0323 \u212b",
]

CORPUS = (
    "The quick brown fox jumps over the lazy dog. Long-context decoding is limited by memory "
    "bandwidth; top-k sparse attention reads only the pages that matter. In 2026 we read 131072 "
    "tokens. I'm sure you're right, they've said it'll work. 你好世界, héllo wörld! def f(x): return x\n"
) * 20


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}\n{r.stdout[-2000:]}")
    return r.stdout


def make_model(arch, dtype, path, seed):
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512, max_position_embeddings=4096, rms_norm_eps=1e-5)
    if arch == "llama":
        cfg = tf.LlamaConfig(**common, head_dim=32, tie_word_embeddings=False,
                             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                             rope_theta=500000.0)
    elif arch == "mistral":
        cfg = tf.MistralConfig(**common, head_dim=32, sliding_window=None, tie_word_embeddings=False)
    elif arch == "qwen2":
        cfg = tf.Qwen2Config(**common, tie_word_embeddings=True, use_sliding_window=False)
    elif arch == "qwen3":
        cfg = tf.Qwen3Config(**common, head_dim=32, tie_word_embeddings=False, use_sliding_window=False)
    else:
        raise ValueError(arch)
    model = tf.AutoModelForCausalLM.from_config(cfg)
    # Larger-than-default random weights so the logits are far from uniform.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.normal_(0.0, 1.0 / p.shape[1] ** 0.5 * (3.0 if "embed" in name else 1.0))
            elif name.endswith("bias"):
                p.normal_(0.0, 0.2)
            else:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    model.to(dtype).save_pretrained(path, safe_serialization=True)


def load(path, dtype):
    # Loaded the way users load checkpoints: `Module.to(bf16)` would also round the RoPE
    # inv_freq buffer to bf16, from_pretrained keeps it fp32.
    import transformers as tf

    return tf.AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


def check_model(args, arch, dtype, results):
    name = f"{arch}-{'fp32' if dtype == torch.float32 else 'bf16'}"
    with tempfile.TemporaryDirectory() as d:
        make_model(arch, dtype, d, seed=zlib.crc32(name.encode()) % 1000)
        compare_dir(args, name, d, dtype, results)


def check_model_dir(args, path, results):
    """A model directory given with --model (e.g. models/unique-demo), in its stored dtype."""
    cfg = json.load(open(os.path.join(path, "config.json")))
    dtype = torch.float32 if cfg.get("dtype", cfg.get("torch_dtype")) == "float32" else torch.bfloat16
    compare_dir(args, os.path.basename(path.rstrip("/")), path, dtype, results)


def compare_dir(args, name, d, dtype, results):
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    with tempfile.TemporaryDirectory() as tmp:
        model = load(d, dtype)
        g = torch.Generator().manual_seed(7)
        prompt = torch.randint(0, min(512, model.config.vocab_size), (args.prompt_len,), generator=g).tolist()
        dump = os.path.join(tmp, "logits.json")
        run([args.unique, "generate", "--model", d, "--prompt-ids", ",".join(map(str, prompt)),
             "--max-new-tokens", str(args.steps), "--attention", "dense", "--ignore-eos", "--quiet",
             "--kv-dtype", "fp32", "--weights", "auto", "--prefill-chunk", "16", "--dump-logits", dump])
        ours = json.load(open(dump))
        toks = ours["tokens"][0]
        our_logits = torch.tensor(ours["logits"][0], dtype=torch.float64)
        ids = torch.tensor([prompt + toks[:-1]])
        with torch.no_grad():
            hf = model(ids).logits[0, len(prompt) - 1:].double()
            # The exact math on the stored weights: the same model upcast to fp32.
            hf32 = load(d, torch.float32)(ids).logits[0, len(prompt) - 1:].double() if dtype != torch.float32 else hf

        def rel(a, b):
            return max(((a[s] - b[s]).abs().max() / b[s].abs().max()).item() for s in range(len(toks)))

        flips, real_flips = 0, 0
        for s in range(len(toks)):
            top2 = torch.topk(hf[s], 2).values
            if int(hf[s].argmax()) != toks[s]:
                flips += 1
                if (top2[0] - top2[1]).item() > tol * hf[s].abs().max().item():
                    real_flips += 1
        err = rel(our_logits, hf)
        if dtype == torch.float32:
            ok = err <= tol and real_flips == 0
            detail = f"max rel logit err {err:.2e} (tol {tol:g})"
        else:
            # We compute in fp32 on the bf16 weights; transformers in bf16. Pass when we match
            # the fp32 math on the same weights (1e-4) and are within the 2e-2 of the
            # bf16 run, or at least no further from it than its own bf16 rounding error.
            err32, own = rel(our_logits, hf32), rel(hf, hf32)
            ok = err32 <= 1e-4 and (err <= tol or err <= 1.5 * own) and real_flips == 0
            detail = (f"vs hf-bf16 {err:.2e} (tol {tol:g}; hf-bf16's own error vs fp32 math {own:.2e}), "
                      f"vs hf fp32 math on the bf16 weights {err32:.2e} (tol 1e-4)")
        results.append((name, ok, f"{detail} over prefill + {len(toks) - 1} decode steps; greedy mismatches "
                                  f"{flips} (beyond near-ties: {real_flips})"))


def train_tokenizers(d):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    out = {}
    regexes = {
        "gpt2": None,
        "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    }
    for name, rx in regexes.items():
        tok = Tokenizer(models.BPE(ignore_merges=(name == "llama3")))
        if rx is None:
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        else:
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(rx), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        if name == "qwen2":
            tok.normalizer = normalizers.NFC()  # as Qwen's tokenizer.json
        trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<s>", "</s>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator([CORPUS], trainer)
        if name == "llama3":
            tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
        path = os.path.join(d, f"{name}.json")
        tok.save(path)
        out[name] = path
    # SentencePiece-style BPE with byte fallback (Llama 2 / Mistral tokenizer.json layout).
    spm = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    spm.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    spm.train_from_iterator([CORPUS], trainer)
    vocab = spm.get_vocab()
    j = json.loads(spm.to_str())
    # Byte tokens <0x00>..<0xFF> right after the specials, trained pieces after them.
    new_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        new_vocab[f"<0x{b:02X}>"] = 3 + b
    for t, i in sorted(vocab.items(), key=lambda x: x[1]):
        if t not in new_vocab:
            new_vocab[t] = len(new_vocab)
    j["model"]["vocab"] = new_vocab
    j["added_tokens"] = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t, i in (("<unk>", 0), ("<s>", 1), ("</s>", 2))]
    j["post_processor"] = {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    path = os.path.join(d, "spm.json")
    with open(path, "w") as f:
        json.dump(j, f, ensure_ascii=False)
    out["sentencepiece"] = path
    return out


def check_tokenizers(args, results):
    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as d:
        for name, path in train_tokenizers(d).items():
            ref = Tokenizer.from_file(path)
            bad = []
            for text in TEXTS:
                want = ref.encode(text).ids
                got = json.loads(run([args.unique, "tokenize", "--model", path, "--text", text]))
                if got != want:
                    bad.append((text, want[:20], got[:20]))
                dec = json.loads(run([args.unique, "tokenize", "--model", path, "--decode", ",".join(map(str, want))]))
                if dec != ref.decode(want, skip_special_tokens=False) and name != "sentencepiece":
                    bad.append((text, "decode", dec))
            detail = "all texts match" if not bad else f"{len(bad)} mismatches, first: {bad[0]!r}"
            results.append((f"tokenizer-{name}", not bad, detail))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unique", default=None, help="path of the unique binary (default: build*/unique)")
    ap.add_argument("--steps", type=int, default=33, help="generated tokens (prefill + steps-1 decode steps)")
    ap.add_argument("--prompt-len", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="fp32 llama + qwen3 and the tokenizers only")
    ap.add_argument("--model", action="append", default=[],
                    help="also compare this model directory (repeatable; e.g. models/unique-demo)")
    ap.add_argument("--only-models", action="store_true", help="only the --model directories")
    args = ap.parse_args()
    if args.unique is None:
        for c in ("build/unique", "build-gpu/unique", "build-eng/unique"):
            if os.path.exists(c):
                args.unique = c
                break
    if not args.unique:
        sys.exit("no unique binary found: pass --unique")
    torch.set_grad_enabled(False)
    results = []
    archs = ["llama", "qwen3"] if args.quick else ["llama", "mistral", "qwen2", "qwen3"]
    dtypes = [torch.float32] if args.quick else [torch.float32, torch.bfloat16]
    for path in args.model:
        try:
            check_model_dir(args, path, results)
        except Exception as e:
            results.append((path, False, f"error: {e}"))
    for arch in (archs if not args.only_models else []):
        for dt in dtypes:
            try:
                check_model(args, arch, dt, results)
            except Exception as e:  # report and go on with the other models
                results.append((f"{arch}-{dt}", False, f"error: {e}"))
    try:
        if not args.only_models:
            check_tokenizers(args, results)
    except Exception as e:
        results.append(("tokenizers", False, f"error: {e}"))
    width = max(len(r[0]) for r in results)
    for name, ok, detail in results:
        print(f"{name:<{width}}  {'PASS' if ok else 'FAIL'}  {detail}")
    sys.exit(0 if all(ok for _, ok, _ in results) else 1)


if __name__ == "__main__":
    main()
