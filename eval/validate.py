#!/usr/bin/env python3
"""Sanity checks for the bundled knowledge base and the eval cases (stdlib only).

Run from the repository root:  python3 eval/validate.py
Exits 1 if anything is wrong; prints warnings for sections outside the
recommended length (they still pass).
"""
import csv, json, os, re, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KB = os.path.join(ROOT, "knowledge")
EVAL = os.path.join(ROOT, "eval")
INTENTS = {"query", "complaint", "refund", "cancel", "praise", "other"}
# The handoff keywords of the documented example config: a case that expects
# no handoff must not contain one.
HANDOFF_KEYWORDS = ["lawsuit", "media", "投诉", "起诉", "媒体曝光", "人工"]

errors, warnings = [], []
sources = {}  # source id -> text an answer is taken from


def err(msg):
    errors.append(msg)


def md_sections(text):
    """(heading, body) per heading section, after the front matter."""
    out, head, body = [], None, []
    for line in text.splitlines():
        if re.match(r"^#{1,6} ", line):
            if head is not None:
                out.append((head, "\n".join(body).strip()))
            head, body = line.lstrip("#").strip(), []
        else:
            body.append(line)
    if head is not None:
        out.append((head, "\n".join(body).strip()))
    return out


def size(text):
    """Words for English, Chinese characters / 1.6 (about one English word each)."""
    cjk = len(re.findall(r"[\u4e00-\u9fff]", text))
    words = len(re.findall(r"[A-Za-z0-9][A-Za-z0-9'.,%$¥–-]*", text))
    return words + cjk * 10 // 16


for dirpath, _, files in os.walk(KB):
    for name in sorted(files):
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, KB).replace(os.sep, "/")
        text = open(path, encoding="utf-8").read()
        if name.endswith(".md"):
            m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
            if not m or "title:" not in m.group(1) or "tags:" not in m.group(1):
                err(f"{rel}: front matter with title and tags missing")
            sources[rel] = text
            for head, body in md_sections(text):
                n = size(body)
                if body and not 40 <= n <= 200:
                    warnings.append(f"{rel} § {head}: size {n} outside 40–200")
            if not name.endswith(".zh.md") and not os.path.exists(path[:-3] + ".zh.md"):
                err(f"{rel}: no Chinese sibling {name[:-3]}.zh.md")
        elif name.endswith(".jsonl"):
            for i, line in enumerate(text.splitlines(), 1):
                try:
                    e = json.loads(line)
                except ValueError as x:
                    err(f"{rel}:{i}: bad JSON: {x}")
                    continue
                if set(e) != {"id", "question", "answer", "alternates"}:
                    err(f"{rel}:{i}: keys {sorted(e)}")
                if not 3 <= len(e.get("alternates", [])) <= 6:
                    err(f"{rel}:{i}: {len(e.get('alternates', []))} alternates")
                sid = f"{rel}#{e.get('id')}"
                if sid in sources:
                    err(f"{rel}:{i}: duplicate id {e.get('id')}")
                sources[sid] = e.get("answer", "")
        elif name.endswith(".csv"):
            rows = list(csv.reader(text.splitlines()))
            if rows[0] != ["id", "question", "answer", "alternates"]:
                err(f"{rel}: header {rows[0]}")
            for i, r in enumerate(rows[1:], 2):
                if len(r) != 4:
                    err(f"{rel}:{i}: {len(r)} columns")
                    continue
                if not 3 <= len(r[3].split("|")) <= 6:
                    err(f"{rel}:{i}: {len(r[3].split('|'))} alternates")
                sources[f"{rel}#{r[0]}"] = r[2]
        else:
            err(f"{rel}: not a knowledge file (.md, .jsonl, .csv)")

faq_ids = {s.split("#", 1)[1] for s in sources if "#" in s}
for i in faq_ids:
    other = i[:-3] if i.endswith("-zh") else i + "-zh"
    if other not in faq_ids:
        err(f"FAQ id {i}: no {'English' if i.endswith('-zh') else 'Chinese'} counterpart {other}")


def load_cases(name):
    cases = []
    for i, line in enumerate(open(os.path.join(EVAL, name), encoding="utf-8"), 1):
        try:
            c = json.loads(line)
        except ValueError as x:
            err(f"eval/{name}:{i}: bad JSON: {x}")
            continue
        if not c.get("message"):
            err(f"eval/{name}:{i}: no message")
        if "expect_intent" in c and c["expect_intent"] not in INTENTS:
            err(f"eval/{name}:{i}: intent {c['expect_intent']}")
        if c.get("expect_handoff") is False:
            hit = [k for k in HANDOFF_KEYWORDS if k in c["message"].lower()]
            if hit:
                err(f"eval/{name}:{i}: expects no handoff but contains keyword {hit}")
        cases.append((i, c))
    return cases


for i, c in load_cases("bundled.jsonl"):
    src = c.get("expect_source")
    if src not in sources:
        err(f"eval/bundled.jsonl:{i}: unknown source {src}")
        continue
    for s in c.get("expect_contains", []):
        if s not in sources[src]:
            err(f"eval/bundled.jsonl:{i}: {s!r} not in {src}")

for i, c in load_cases("intents.jsonl"):
    if "expect_source" in c:
        err(f"eval/intents.jsonl:{i}: intent cases carry no expect_source")
    if "expect_intent" not in c or "expect_handoff" not in c:
        err(f"eval/intents.jsonl:{i}: needs expect_intent and expect_handoff")

for w in warnings:
    print("warning:", w)
for e in errors:
    print("error:", e)
print(f"{len(sources)} sources, {len(errors)} errors, {len(warnings)} warnings")
sys.exit(1 if errors else 0)
