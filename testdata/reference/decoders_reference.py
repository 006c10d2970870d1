#!/usr/bin/env python3
"""Tiny random Qwen3 and Phi-3 checkpoints, LoRA adapters for them, and golden logits from an independent
plain-torch forward (no transformers, no peft), written from transformers' modeling_qwen3.py / modeling_phi3.py
and modeling_rope_utils.py (v5) and PEFT's LoRA formula.

    /usr/bin/python3 testdata/reference/decoders_reference.py    # Debian's python3-torch 1.13 is enough

Writes, under testdata/hf/:
  qwen3-tiny/, phi3-tiny/                    config.json + model.safetensors (float32, seeded random weights)
  adapters/{qwen3-tiny,phi3-tiny}/lora/      a PEFT LoRA adapter (random A and B, so that it changes the logits)
  expected/{qwen3-tiny,phi3-tiny}__ref.safetensors
      input_ids, attention_mask (row 1 left-padded), logits (no position_ids: 0..L-1 as HF's forward),
      logits_lora (the adapter active), position_ids_far + logits_far (positions from 100: past the original
      context, where yarn/longrope switch), logits_far_lora.
Qwen3 uses yarn scaling (attention factor ≠ 1) and untied head; Phi-3 longrope with partial_rotary_factor 0.75
(Phi-4-mini's) and a tied head.
"""
import json
import math
import os
import struct

import torch

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
HF = os.path.join(HERE, "..", "hf")
MIN = torch.finfo(torch.float32).min


def write_safetensors(path, tensors, meta=None):
    hdr, blobs, off = {}, [], 0
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        if t.dtype == torch.float32:
            dt, b = "F32", struct.pack("<%df" % t.numel(), *t.flatten().tolist())
        else:
            dt, b = "I64", struct.pack("<%dq" % t.numel(), *t.flatten().tolist())
        hdr[k] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hdr["__metadata__"] = dict(meta or {"format": "pt"})
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---- rope (modeling_rope_utils.py v5) ----------------------------------------------------------------------
def inv_freq(cfg, seq_len):
    rs = cfg.get("rope_scaling") or {}
    rtype = rs.get("rope_type", rs.get("type", "default"))
    base = cfg.get("rope_theta", 10000.0)
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    dim = int(hd * cfg.get("partial_rotary_factor", 1.0))
    max_pos = cfg["max_position_embeddings"]
    orig = cfg.get("original_max_position_embeddings", rs.get("original_max_position_embeddings", max_pos))
    freqs = base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)
    if rtype == "default":
        return 1.0 / freqs, 1.0
    if rtype == "yarn":
        f = rs.get("factor") or max_pos / orig
        att = rs.get("attention_factor") or (1.0 if f <= 1 else 0.1 * math.log(f) + 1.0)
        fast, slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

        def cd(rot):
            return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

        lo, hi = max(math.floor(cd(fast)), 0), min(math.ceil(cd(slow)), dim - 1)
        if lo == hi:
            hi += 0.001
        keep = 1 - torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - lo) / (hi - lo), 0, 1)
        return (1.0 / (f * freqs)) * (1 - keep) + (1.0 / freqs) * keep, att
    if rtype == "longrope":
        f = rs.get("factor") or max_pos / orig
        att = rs.get("attention_factor") or (1.0 if f <= 1 else math.sqrt(1 + math.log(f) / math.log(orig)))
        ext = rs["long_factor"] if seq_len > orig else rs["short_factor"]
        return 1.0 / (torch.tensor(ext, dtype=torch.float32) * freqs), att
    raise ValueError(rtype)


def rot_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), -1)


def rope_apply(x, cos, sin):
    rd = cos.shape[-1]
    xr, xp = x[..., :rd], x[..., rd:]
    return torch.cat((xr * cos + rot_half(xr) * sin, xp), -1)


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


class Decoder:
    """Qwen3ForCausalLM / Phi3ForCausalLM, eager attention, float32."""

    def __init__(self, cfg, w):
        self.c, self.w, self.lora = cfg, w, None

    def lin(self, name, x):
        y = x @ self.w[name + ".weight"].t()
        if self.lora is not None:
            A = self.lora["tensors"].get("base_model.model." + name + ".lora_A.weight")
            if A is not None:
                B = self.lora["tensors"]["base_model.model." + name + ".lora_B.weight"]
                y = y + (x @ A.t() @ B.t()) * self.lora["scale"]
        return y

    def forward(self, ids, mask, pos=None, window=None):
        c = self.c
        Bn, L = ids.shape
        H, KV = c["num_attention_heads"], c["num_key_value_heads"]
        D = c.get("head_dim") or c["hidden_size"] // H
        eps = c["rms_norm_eps"]
        if pos is None:
            pos = torch.arange(L).unsqueeze(0)
        inv, att = inv_freq(c, int(pos.max()) + 1)
        fr = pos.float().unsqueeze(-1) * inv  # [B, L, d/2]
        emb = torch.cat((fr, fr), -1)
        cos, sin = (emb.cos() * att).unsqueeze(1), (emb.sin() * att).unsqueeze(1)
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
        if window is not None:  # sliding window: key j visible from query i when i - j < window
            i_, j_ = torch.arange(L).view(L, 1), torch.arange(L).view(1, L)
            causal = causal | (i_ - j_ >= window)
        masked = causal.view(1, 1, L, L) | (mask == 0).view(Bn, 1, 1, L)
        add = torch.zeros(Bn, 1, L, L).masked_fill(masked, MIN)
        x = self.w["model.embed_tokens.weight"][ids]
        phi = c["model_type"] == "phi3"
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = rms(x, self.w[p + "input_layernorm.weight"], eps)
            if phi:
                qkv = self.lin(p + "self_attn.qkv_proj", h)
                q, k, v = qkv.split([H * D, KV * D, KV * D], -1)
            else:
                q, k, v = (self.lin(p + "self_attn." + n, h) for n in ("q_proj", "k_proj", "v_proj"))
            q, k, v = q.view(Bn, L, H, D), k.view(Bn, L, KV, D), v.view(Bn, L, KV, D)
            if not phi:  # Qwen3: per-head RMSNorm on head_dim before rotary
                q = rms(q, self.w[p + "self_attn.q_norm.weight"], eps)
                k = rms(k, self.w[p + "self_attn.k_norm.weight"], eps)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            q, k = rope_apply(q, cos, sin), rope_apply(k, cos, sin)
            k = k.repeat_interleave(H // KV, 1)
            v = v.repeat_interleave(H // KV, 1)
            s = q @ k.transpose(2, 3) * D ** -0.5 + add
            o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(Bn, L, H * D)
            x = x + self.lin(p + "self_attn.o_proj", o)
            h = rms(x, self.w[p + "post_attention_layernorm.weight"], eps)
            if phi:
                gate, up = self.lin(p + "mlp.gate_up_proj", h).chunk(2, -1)
            else:
                gate, up = self.lin(p + "mlp.gate_proj", h), self.lin(p + "mlp.up_proj", h)
            x = x + self.lin(p + "mlp.down_proj", torch.nn.functional.silu(gate) * up)
        x = rms(x, self.w["model.norm.weight"], eps)
        head = "model.embed_tokens" if c.get("tie_word_embeddings") else "lm_head"
        return x @ self.w[head + ".weight"].t()


def make(name, cfg, shapes, targets, seed):
    g = torch.Generator().manual_seed(seed)
    w = {}
    for k, shp in shapes.items():
        if k.endswith("norm.weight"):
            w[k] = 1 + 0.2 * torch.randn(shp, generator=g)
        else:
            w[k] = 0.15 * torch.randn(shp, generator=g)
    d = os.path.join(HF, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    write_safetensors(os.path.join(d, "model.safetensors"), w)

    r, alpha = 4, 8
    lora = {}
    for k in sorted(w):
        mod = k[: -len(".weight")]
        if mod.split(".")[-1] in targets:
            out, inp = w[k].shape
            lora["base_model.model." + mod + ".lora_A.weight"] = 0.3 * torch.randn(r, inp, generator=g)
            lora["base_model.model." + mod + ".lora_B.weight"] = 0.3 * torch.randn(out, r, generator=g)
    ad = os.path.join(HF, "adapters", name, "lora")
    os.makedirs(ad, exist_ok=True)
    write_safetensors(os.path.join(ad, "adapter_model.safetensors"), lora)
    acfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
            "target_modules": sorted(targets), "bias": "none", "fan_in_fan_out": False, "init_lora_weights": True,
            "use_rslora": False, "use_dora": False, "modules_to_save": None, "layers_to_transform": None,
            "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {}, "base_model_name_or_path": name,
            "inference_mode": True}
    with open(os.path.join(ad, "adapter_config.json"), "w") as f:
        json.dump(acfg, f, indent=2, sort_keys=True)
        f.write("\n")

    m = Decoder(cfg, w)
    ids = torch.randint(0, cfg["vocab_size"], (2, 10), generator=g)
    mask = torch.ones(2, 10, dtype=torch.int64)
    mask[1, :3] = 0
    far = (100 + torch.arange(10)).unsqueeze(0).repeat(2, 1)
    ones = torch.ones(2, 10, dtype=torch.int64)
    out = {"input_ids": ids, "attention_mask": mask, "position_ids_far": far}
    with torch.no_grad():
        out["logits"] = m.forward(ids, mask)
        out["logits_far"] = m.forward(ids, ones, far)
        if cfg["model_type"] == "phi3":  # Phi3 (like Mistral) masks outside config.sliding_window
            out["logits_window4"] = m.forward(ids, mask, None, 4)
            out["logits_far_window4"] = m.forward(ids, ones, far, 4)
        m.lora = {"tensors": lora, "scale": alpha / r}
        out["logits_lora"] = m.forward(ids, mask)
        out["logits_far_lora"] = m.forward(ids, ones, far)
    write_safetensors(os.path.join(HF, "expected", name + "__ref.safetensors"), out,
                      {"format": "pt", "made_by": "testdata/reference/decoders_reference.py (torch %s)" % torch.__version__})
    print(name, "ok", {k: tuple(v.shape) for k, v in out.items()})


def layer_shapes(n, per_layer, extra):
    s = dict(extra)
    for i in range(n):
        for k, v in per_layer.items():
            s[f"model.layers.{i}.{k}"] = v
    return s


if __name__ == "__main__":
    h, H, KV, D, I, V, n = 32, 4, 2, 16, 48, 96, 2
    qwen3 = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": h, "intermediate_size": I,
             "num_hidden_layers": n, "num_attention_heads": H, "num_key_value_heads": KV, "head_dim": D,
             "vocab_size": V, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 128,
             "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
             "attention_bias": False, "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "float32",
             "use_sliding_window": False, "bos_token_id": 1, "eos_token_id": 2}
    make("qwen3-tiny", qwen3, layer_shapes(n, {
        "self_attn.q_proj.weight": (H * D, h), "self_attn.k_proj.weight": (KV * D, h),
        "self_attn.v_proj.weight": (KV * D, h), "self_attn.o_proj.weight": (h, H * D),
        "self_attn.q_norm.weight": (D,), "self_attn.k_norm.weight": (D,),
        "mlp.gate_proj.weight": (I, h), "mlp.up_proj.weight": (I, h), "mlp.down_proj.weight": (h, I),
        "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,)},
        {"model.embed_tokens.weight": (V, h), "model.norm.weight": (h,), "lm_head.weight": (V, h)}),
        ["q_proj", "v_proj", "down_proj"], 3)

    rd = int(D * 0.75) // 2
    phi3 = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 64, "intermediate_size": I,
            "num_hidden_layers": n, "num_attention_heads": H, "num_key_value_heads": KV, "vocab_size": V,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 128,
            "original_max_position_embeddings": 32, "partial_rotary_factor": 0.75,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0 + 0.1 * i for i in range(rd)],
                             "long_factor": [1.0 + 1.5 * i for i in range(rd)]},
            "tie_word_embeddings": True, "hidden_act": "silu", "torch_dtype": "float32", "sliding_window": None,
            "attention_dropout": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "bos_token_id": 1, "eos_token_id": 2}
    h = 64
    make("phi3-tiny", phi3, layer_shapes(n, {
        "self_attn.qkv_proj.weight": ((H + 2 * KV) * D, h), "self_attn.o_proj.weight": (h, H * D),
        "mlp.gate_up_proj.weight": (2 * I, h), "mlp.down_proj.weight": (h, I),
        "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,)},
        {"model.embed_tokens.weight": (V, h), "model.norm.weight": (h,)}),
        ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], 4)
