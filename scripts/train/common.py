"""Shared pieces of scripts/train: the byte-level tokenizer, the corpus, the synthetic
retrieval sequences (the engine's passkey and kv templates, src/eval/tasks.cpp), model
configs, HF directory writing and loading of unique_attn's soft-mask module (from the
installed package when present, else from python/unique_attn/*.py directly, so the GPU
machine needs no extension build)."""
import importlib.util
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
BOS, EOS = 256, 257
VOCAB = 264  # 256 bytes + BOS + EOS, padded to a multiple of 8


# --------------------------------------------------------------------------------------
# unique_attn (soft mask + transformers registration)
# --------------------------------------------------------------------------------------
def load_unique_attn():
    """Returns (soft_mask module, hf module)."""
    try:
        import unique_attn.hf as hf  # noqa: F401
        import unique_attn.soft_mask as sm
        return sm, hf
    except ImportError:
        pass
    pkg = os.path.join(REPO, "python", "unique_attn")
    mods = {}
    for name in ("soft_mask", "hf"):
        spec = importlib.util.spec_from_file_location("unique_attn_" + name, os.path.join(pkg, name + ".py"))
        m = importlib.util.module_from_spec(spec)
        sys.modules["unique_attn_" + name] = m
        spec.loader.exec_module(m)
        mods[name] = m
    return mods["soft_mask"], mods["hf"]


# --------------------------------------------------------------------------------------
# tokenizer: byte-level BPE without merges (ids = byte values), BOS 256, EOS 257
# --------------------------------------------------------------------------------------
def bytes_to_unicode():
    """GPT-2's byte -> printable character map (the engine's byte_char, tiny_model.cpp)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer_json() -> dict:
    m = bytes_to_unicode()
    vocab = {m[b]: b for b in range(256)}
    special = lambda i, s: {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                            "normalized": False, "special": True}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(BOS, "<|begin_of_text|>"), special(EOS, "<|end_of_text|>")],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [BOS],
                                                     "tokens": ["<|begin_of_text|>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": []},
    }


def encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


# --------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------
MODEL_SIZES = {
    # ~8.9M parameters: 17.7 MB in bf16 (kept in the repo)
    "demo": dict(hidden_size=384, intermediate_size=768, num_hidden_layers=6, num_attention_heads=6,
                 num_key_value_heads=6, head_dim=64),
    "small": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=2,
                  num_key_value_heads=2, head_dim=64),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=2, head_dim=32),
}


def llama_config(size: str, context: int):
    from transformers import LlamaConfig
    c = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=context, rms_norm_eps=1e-5,
                    rope_theta=500000.0, hidden_act="silu", tie_word_embeddings=True, bos_token_id=BOS,
                    eos_token_id=EOS, attention_bias=False, mlp_bias=False, attention_dropout=0.0,
                    initializer_range=0.02, **MODEL_SIZES[size])
    c.architectures = ["LlamaForCausalLM"]
    return c


def save_hf_dir(model, out_dir: str, context: int, extra: dict = None):
    """config.json (LlamaForCausalLM), model.safetensors (bf16), tokenizer.json,
    tokenizer_config.json, generation_config.json."""
    import torch
    os.makedirs(out_dir, exist_ok=True)
    impl = model.config._attn_implementation
    for k in [k for k in vars(model.config) if k.startswith("unique_")]:
        delattr(model.config, k)
    model.config._attn_implementation = "sdpa"
    m = model.to(torch.bfloat16)
    m.config.torch_dtype = "bfloat16"
    m.save_pretrained(out_dir, safe_serialization=True)
    model.to(torch.float32)
    model.config._attn_implementation = impl
    # the config of a plain dense Llama (the attention implementation is a runtime choice)
    cfg_path = os.path.join(out_dir, "config.json")
    cfg = json.load(open(cfg_path))
    cfg.pop("_attn_implementation", None)
    cfg.pop("attn_implementation", None)
    cfg["torch_dtype"] = cfg.get("torch_dtype", cfg.get("dtype", "bfloat16"))
    json.dump(cfg, open(cfg_path, "w"), indent=2)
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(), f, indent=1, ensure_ascii=False)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                   "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context}, f, indent=2)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": BOS, "eos_token_id": EOS, "do_sample": False}, f, indent=2)
    if extra:
        with open(os.path.join(out_dir, "training_info.json"), "w") as f:
            json.dump(extra, f, indent=2)


# --------------------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------------------
class Corpus:
    def __init__(self, root: str, split: str):
        meta = json.load(open(os.path.join(root, "meta.json")))
        self.data = np.fromfile(os.path.join(root, f"{split}.bin"), dtype=np.uint8)
        self.docs = meta[split]["docs"]
        self.by_source = {}
        for d in self.docs:
            self.by_source.setdefault(d["source"], []).append(d)
        self.spans = {s: np.array([(d["offset"], d["bytes"]) for d in ds], dtype=np.int64)
                      for s, ds in self.by_source.items()}

    def sources(self):
        return sorted(self.spans)

    def window(self, rng, source: str, n: int) -> np.ndarray:
        """n bytes from a random position of `source` documents (a document longer than n
        when there is one; shorter documents are concatenated in order)."""
        sp = self.spans[source]
        w = sp[:, 1].astype(np.float64)
        i = rng.choice(len(sp), p=w / w.sum())
        off, size = sp[i]
        if size >= n:
            s = off + rng.integers(0, size - n + 1)
            return self.data[s:s + n].astype(np.int64)
        out = []
        got = 0
        while got < n:
            off, size = sp[i % len(sp)]
            take = min(size, n - got)
            out.append(self.data[off:off + take])
            got += take
            i += 1
        return np.concatenate(out).astype(np.int64)


# --------------------------------------------------------------------------------------
# synthetic retrieval sequences (templates of src/eval/tasks.cpp)
# --------------------------------------------------------------------------------------
ADJ = ["red", "blue", "green", "silent", "ancient", "golden", "bitter", "quiet", "brave", "hollow", "bright",
       "frozen", "gentle", "hidden", "iron", "lonely", "narrow", "proud", "rapid", "silver", "swift", "wild",
       "wooden", "young", "dusty", "empty", "heavy", "humble", "lucky", "noble", "pale", "rusty"]
NOUN = ["river", "mountain", "lantern", "garden", "castle", "falcon", "harbor", "meadow", "tower", "valley",
        "anchor", "bridge", "candle", "desert", "engine", "forest", "island", "ladder", "mirror", "needle",
        "orchard", "pepper", "quarry", "saddle", "temple", "violin", "wagon", "window", "barrel", "compass",
        "dragon", "shadow"]
PASSKEY_INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                 "I will quiz you about the important information there.")
KV_INTRO = ("Some special magic numbers are hidden within the following text. Make sure to memorize them. "
            "I will quiz you about the numbers afterwards.")


def _digits(rng, n):
    return "".join(str(int(d)) for d in rng.integers(0, 10, n))


def _sentence_cut(h: np.ndarray, at: int) -> int:
    """The position just after a '.' followed by ' ' nearest to `at` (+-200 bytes), else at; the
    needle (starting with a space) goes there, as the engine's sentence_boundary puts it."""
    lo, hi = max(0, at - 200), min(len(h), at + 200)
    seg = h[lo:hi]
    idx = np.nonzero((seg[:-1] == ord(".")) & (seg[1:] == ord(" ")))[0]
    if len(idx) == 0:
        return at
    best = idx[np.argmin(np.abs(idx + lo + 1 - at))]
    return int(best + lo + 1)


def _assemble(rng, corpus, hay_source, L, intro, needles, fracs, tail):
    """[BOS] intro haystack-with-needles tail, exactly L tokens (tail = list of (text, is_answer)).
    Returns tokens int64 [L] and the answer mask bool [L]."""
    pieces_len = 1 + len(intro.encode()) + sum(len(t.encode()) for n in needles for t, _ in n) + \
        sum(len(t.encode()) for t, _ in tail)
    hl = L - pieces_len
    if hl < 16:
        raise ValueError(f"context {L} too short for the synthetic task ({pieces_len} fixed tokens)")
    h = corpus.window(rng, hay_source, hl)
    cuts = [_sentence_cut(h, int(f * hl)) for f in fracs]
    order = np.argsort(cuts, kind="stable")
    toks, ans = [np.array([BOS])], [np.zeros(1, bool)]

    def put(text, a):
        t = encode(text)
        toks.append(t)
        ans.append(np.full(len(t), a))
    put(intro, False)
    pos = 0
    for i in order:
        c = cuts[i]
        toks.append(h[pos:c])
        ans.append(np.zeros(c - pos, bool))
        pos = c
        for text, a in needles[i]:
            put(text, a)
    toks.append(h[pos:])
    ans.append(np.zeros(len(h) - pos, bool))
    for text, a in tail:
        put(text, a)
    t, a = np.concatenate(toks), np.concatenate(ans)
    assert len(t) == L, (len(t), L)
    return t, a


def passkey_sample(rng, corpus, L, hay_source="kjv", depth=None):
    key = _digits(rng, 5)
    depth = rng.uniform(0, 1) if depth is None else depth
    needle = [(" The pass key is", False), (" " + key, False), (". Remember it. " + key + " is the pass key.", False)]
    tail = [(" What is the pass key? The pass key is", False), (" " + key, True), (".", False)]
    return _assemble(rng, corpus, hay_source, L, PASSKEY_INTRO, [needle], [depth], tail)


def kv_sample(rng, corpus, L, hay_source="kjv", n_keys=None, n_questions=None):
    n = int(rng.integers(1, max(1, min(16, (L - 250) // 180)) + 1)) if n_keys is None else n_keys
    keys = []
    while len(keys) < n:
        k = ADJ[rng.integers(len(ADJ))] + "-" + NOUN[rng.integers(len(NOUN))]
        if k not in keys:
            keys.append(k)
    vals = [_digits(rng, 7) for _ in range(n)]
    needles = [[(" The special magic number for " + k + " is", False), (" " + v, True), (".", False)]
               for k, v in zip(keys, vals)]
    fracs = list(rng.uniform(0, 1, n))
    nq = int(rng.integers(1, n + 1)) if n_questions is None else n_questions
    tail = []
    for i in rng.permutation(n)[:nq]:
        tail += [(" What is the special magic number for " + keys[i] + "? The special magic number for " + keys[i]
                  + " is", False), (" " + vals[i], True), (".", False)]
    t, a = _assemble(rng, corpus, hay_source, L, KV_INTRO, needles, fracs, tail)
    # only the answers after the questions are retrieval targets (needle values are random)
    q0 = L - sum(len(x.encode()) for x, _ in tail)
    a[:q0] = False
    return t, a


def text_sample(rng, corpus, L, source):
    t = np.concatenate([[BOS], corpus.window(rng, source, L - 1)])
    return t, np.zeros(L, bool)


def make_batch(rng, corpus, B, L, synth_frac=0.5, text_sources=None):
    """tokens [B, L] int64, answer mask [B, L] bool (targets: positions whose token is an answer)."""
    text_sources = text_sources or corpus.sources()
    toks, ans = [], []
    for _ in range(B):
        r = rng.uniform()
        hay = "kjv" if ("kjv" in corpus.spans and rng.uniform() < 0.75) else text_sources[rng.integers(len(text_sources))]
        if r < synth_frac / 2:
            t, a = passkey_sample(rng, corpus, L, hay)
        elif r < synth_frac:
            t, a = kv_sample(rng, corpus, L, hay)
        else:
            t, a = text_sample(rng, corpus, L, text_sources[rng.integers(len(text_sources))])
        toks.append(t)
        ans.append(a)
    return np.stack(toks), np.stack(ans)


def lr_at(frac, peak, warmup_frac=0.03, final=0.1):
    if frac < warmup_frac:
        return peak * max(frac / warmup_frac, 0.02)
    p = min(1.0, (frac - warmup_frac) / max(1e-9, 1 - warmup_frac))
    return peak * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * p)))


def lm_losses(logits, tokens, answer):
    """Next-token losses: (text CE mean, answer CE mean or None, answer token accuracy or None).
    logits [B, L, V] for inputs tokens [B, L]; position i predicts tokens[i + 1]."""
    import torch
    import torch.nn.functional as F
    lg = logits[:, :-1].float()
    tg = tokens[:, 1:]
    a = answer[:, 1:]
    ce = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tg.reshape(-1), reduction="none").view_as(tg)
    text = ce[~a].mean()
    if a.any():
        acc = (lg.argmax(-1) == tg)[a].float().mean()
        return text, ce[a].mean(), acc
    return text, None, None
