#!/usr/bin/env python3
"""Independent reference for the RoPE scaling rules of transformers (modeling_rope_utils.py, v5).

Written from the published formulas, in plain torch (float32 as transformers keeps inv_freq), without
transformers. For each case it records the config block, the head size, the sequence length of the call
(max position id + 1), the inverse frequencies and the attention scaling, in rope_golden.json beside this
file. models/rope_test.go parses the same config with models.ParseRope and compares.

Run: /usr/bin/python3 testdata/reference/rope_reference.py   (Debian's python3-torch 1.13 is enough)
"""
import json
import math
import os

import torch


def rope(cfg, head_dim, seq_len):
    block = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    rtype = block.get("rope_type", block.get("type", "default"))
    base = block.get("rope_theta", cfg.get("rope_theta", 10000.0))
    partial = block.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    dim = int(head_dim * partial)
    max_pos = cfg["max_position_embeddings"]
    orig = block.get("original_max_position_embeddings", max_pos)
    if "original_max_position_embeddings" in cfg and rtype in ("llama3", "yarn", "longrope"):
        orig = cfg["original_max_position_embeddings"]
    idx = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    att = 1.0
    if rtype in ("default", "linear"):
        inv = 1.0 / (base ** idx)
        if rtype == "linear":
            inv = inv / block["factor"]
    elif rtype == "dynamic":
        f = block["factor"]
        L = max(seq_len, max_pos)
        b = base * ((f * L / max_pos) - (f - 1)) ** (dim / (dim - 2))
        inv = 1.0 / (b ** idx)
    elif rtype == "llama3":
        inv = 1.0 / (base ** idx)
        f, lo, hi = block["factor"], block["low_freq_factor"], block["high_freq_factor"]
        lo_w, hi_w = orig / lo, orig / hi
        wave = 2 * math.pi / inv
        scaled = torch.where(wave > lo_w, inv / f, inv)
        smooth = (orig / wave - lo) / (hi - lo)
        mid = (1 - smooth) * scaled / f + smooth * scaled
        is_mid = (wave >= hi_w) & (wave <= lo_w)
        inv = torch.where(is_mid, mid, scaled)
    elif rtype == "yarn":
        f = block.get("factor") or max_pos / orig
        att = block.get("attention_factor")
        ms, msa = block.get("mscale"), block.get("mscale_all_dim")

        def mscale(s, m=1.0):
            return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0

        if att is None:
            att = mscale(f, ms) / mscale(f, msa) if (ms and msa) else mscale(f)
        fast, slow = block.get("beta_fast") or 32, block.get("beta_slow") or 1

        def corr_dim(rot):
            return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

        lo, hi = corr_dim(fast), corr_dim(slow)
        if block.get("truncate", True):
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, dim - 1)
        if lo == hi:
            hi += 0.001
        ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - lo) / (hi - lo), 0, 1)
        keep = 1 - ramp
        freqs = base ** (torch.arange(0, dim, 2).float() / dim)
        inv = (1.0 / (f * freqs)) * (1 - keep) + (1.0 / freqs) * keep
    elif rtype in ("longrope", "su"):
        f = block.get("factor") or max_pos / orig
        att = block.get("attention_factor")
        if att is None:
            att = 1.0 if f <= 1 else math.sqrt(1 + math.log(f) / math.log(orig))
        ext = block["long_factor"] if seq_len > orig else block["short_factor"]
        inv = 1.0 / (torch.tensor(ext, dtype=torch.float32) * base ** idx)
    else:
        raise ValueError(rtype)
    return inv.float().tolist(), float(att)


def cases():
    c = []

    def add(name, cfg, head_dim, seq_lens):
        for L in seq_lens:
            inv, att = rope(cfg, head_dim, L)
            c.append({"name": f"{name}@{L}", "config": cfg, "head_dim": head_dim, "seq_len": L,
                      "inv_freq": inv, "attention_factor": att})

    add("default", {"max_position_embeddings": 128, "rope_theta": 10000.0}, 16, [10])
    add("default-v5-rope_parameters", {"max_position_embeddings": 128,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}}, 128, [10])
    add("linear", {"max_position_embeddings": 128, "rope_theta": 10000.0,
        "rope_scaling": {"type": "linear", "factor": 4.0}}, 16, [10])
    add("dynamic", {"max_position_embeddings": 64, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, 16, [32, 64, 65, 200])
    add("llama3-tiny", {"max_position_embeddings": 512, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64}}, 16, [10])
    add("llama3.1-8b", {"max_position_embeddings": 131072, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192}}, 128, [10])
    add("yarn", {"max_position_embeddings": 256, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}}, 32, [10])
    add("yarn-qwen-style", {"max_position_embeddings": 32768, "rope_theta": 1000000.0,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}, 128, [10])
    add("yarn-options", {"max_position_embeddings": 256, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "yarn", "factor": 8.0, "attention_factor": 1.25, "beta_fast": 16.0,
                         "beta_slow": 2.0, "truncate": False, "original_max_position_embeddings": 64}}, 32, [10])
    add("yarn-mscale", {"max_position_embeddings": 256, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "yarn", "factor": 40.0, "mscale": 0.707, "mscale_all_dim": 1.0,
                         "original_max_position_embeddings": 64}}, 32, [10])
    add("yarn-no-factor", {"max_position_embeddings": 256, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "yarn", "original_max_position_embeddings": 32}}, 32, [10])
    short = [1.0 + 0.05 * i for i in range(6)]
    long = [1.0 + 0.9 * i for i in range(6)]
    add("longrope-phi3-partial", {"max_position_embeddings": 256, "original_max_position_embeddings": 64,
        "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
        "rope_scaling": {"type": "longrope", "short_factor": short, "long_factor": long}}, 16, [10, 64, 65, 300])
    add("longrope-factor-attention", {"max_position_embeddings": 256, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "longrope", "factor": 2.0, "attention_factor": 1.1,
                         "original_max_position_embeddings": 64,
                         "short_factor": short + [1.3, 1.4], "long_factor": long + [6.0, 7.0]}}, 16, [10, 100])
    return c


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rope_golden.json")
    with open(out, "w") as f:
        json.dump({"note": "made by rope_reference.py (plain torch %s)" % torch.__version__, "cases": cases()}, f, indent=1)
        f.write("\n")
    print("wrote", out)
