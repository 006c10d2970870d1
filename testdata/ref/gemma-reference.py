#!/usr/bin/env python3
"""Independent plain-torch reference for the Gemma family (Gemma 2 and Gemma 3 text), written from
transformers' modeling_gemma2.py / modeling_gemma3.py (eager attention) without importing transformers or
peft. It makes two tiny random checkpoints (gemma2-tiny, gemma3-tiny, a few KB each), a LoRA adapter for each in
PEFT's file format, and golden outputs that models/gemma's tests compare against (<= 1e-4, float32):

  <model>/config.json, model.safetensors, generation_config.json   the checkpoint (tied lm_head, not stored)
  <model>/lora/adapter_config.json, adapter_model.safetensors      LoRA r=4, alpha=8 on every linear of the layers
  <model>/expected.safetensors
    input_ids, attention_mask     int64 [2, 12]; row 1 left-padded by 3 (id 0, mask 0)
    labels                        input_ids with -100 at the padding
    logits, loss                  base model, no position_ids (positions 0..11 for both rows, as HF's forward)
    logits_lora, loss_lora        with the adapter (y = W x + (alpha/r) B A x on each target)
    logits_merged                 the base with W + (alpha/r) B A (merge_and_unload)
    gen_sequences [2, 12+6]       greedy generate(), 6 new tokens, KV cache, generate()'s position ids
    gen_scores [2, 6, V]          (cumsum(mask)-1, padded slots 1), the mask growing by a column of ones
    gen_lora_sequences/_scores    the same with the adapter

The sliding window is 5 positions, smaller than the prompt, so local layers mask by window in the prompt and
in every decoding step; padding masks by cache index (transformers' masking_utils: key j is visible to query i
when j <= i, j > i - sliding_window on local layers, and mask[j] == 1).

    apt-get install -y python3-torch python3-numpy
    python3 testdata/ref/gemma-reference.py      # rewrites testdata/ref/gemma{2,3}-tiny/
"""
import json
import math
import os
import struct

import numpy as np
import torch

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
MIN = torch.finfo(torch.float32).min


# ---- safetensors (F32 / I64), minimal ----
def save_file(tensors, path, metadata=None):
    hdr, blobs, off = {}, [], 0
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        dt = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        b = t.numpy().tobytes()
        hdr[k] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        hdr["__metadata__"] = metadata
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_file(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        dt = {"F32": np.float32, "I64": np.int64}[v["dtype"]]
        out[k] = torch.from_numpy(np.frombuffer(data[a:b], dtype=dt).reshape(v["shape"]).copy())
    return out


# ---- the model, from the config and weights alone ----
def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def rms(x, w, eps):  # Gemma: (1 + w), in float32
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + w.float())).type_as(x)


def rot_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), -1)


def layer_types(c):
    if "layer_types" in c:
        return c["layer_types"]
    n = c["num_hidden_layers"]
    if c["model_type"] == "gemma2":
        return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
    p = c.get("sliding_window_pattern", 6)
    return ["sliding_attention" if (i + 1) % p else "full_attention" for i in range(n)]


def inv_freq(base, d, factor=1.0):
    return 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d)) / factor


class Gemma:
    def __init__(self, d):
        self.c = json.load(open(os.path.join(d, "config.json")))
        self.w = load_file(os.path.join(d, "model.safetensors"))
        c = self.c
        self.g3 = c["model_type"] == "gemma3_text"
        self.types = layer_types(c)
        self.hooks = {}  # linear name -> fn(x, W, y) -> y
        rs = c.get("rope_scaling") or {}
        factor = rs.get("factor", 1.0) if rs.get("rope_type", rs.get("type")) == "linear" else 1.0
        self.inv = {"full_attention": inv_freq(c["rope_theta"], c["head_dim"], factor)}
        self.inv["sliding_attention"] = inv_freq(c["rope_local_base_freq"], c["head_dim"]) if self.g3 else self.inv["full_attention"]

    def W(self, k):
        if k == "lm_head.weight":
            return self.w["model.embed_tokens.weight"]
        return self.w[k]

    def lin(self, name, x):
        W = self.W(name + ".weight")
        y = x @ W.t()
        f = self.hooks.get(name)
        return f(x, W, y) if f else y

    def forward(self, ids, mask, pos, cache=None):
        """ids [B, L]; mask [B, past+L] (1/0); pos [B, L]; cache: list of (k, v) per layer or None.
        Returns logits [B, L, V] and the new cache."""
        c = self.c
        B, L = ids.shape
        past = 0 if cache is None else cache[0][0].shape[2]
        T = past + L
        H, KV, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        eps = c["rms_norm_eps"]
        x = self.w["model.embed_tokens.weight"][ids] * torch.tensor(c["hidden_size"] ** 0.5, dtype=torch.float32)
        rope = {}
        for t, inv in self.inv.items():
            fr = pos[:, :, None].float() * inv[None, None, :]
            emb = torch.cat((fr, fr), -1)
            rope[t] = (emb.cos()[:, None], emb.sin()[:, None])
        qi = torch.arange(past, T)[:, None]
        kj = torch.arange(T)[None, :]
        allowed = {"full_attention": kj <= qi}
        allowed["sliding_attention"] = (kj <= qi) & (kj > qi - c["sliding_window"])
        masks = {}
        for t, a in allowed.items():
            ok = a[None, None] & (mask[:, None, None, :] == 1)
            masks[t] = torch.zeros(B, 1, L, T).masked_fill(~ok, MIN)
        new_cache = []
        for i, t in enumerate(self.types):
            p = f"model.layers.{i}."
            h = rms(x, self.w[p + "input_layernorm.weight"], eps)
            q = self.lin(p + "self_attn.q_proj", h).view(B, L, H, D).transpose(1, 2)
            k = self.lin(p + "self_attn.k_proj", h).view(B, L, KV, D).transpose(1, 2)
            v = self.lin(p + "self_attn.v_proj", h).view(B, L, KV, D).transpose(1, 2)
            if self.g3:
                q = rms(q, self.w[p + "self_attn.q_norm.weight"], eps)
                k = rms(k, self.w[p + "self_attn.k_norm.weight"], eps)
            cos, sin = rope[t]
            q = q * cos + rot_half(q) * sin
            k = k * cos + rot_half(k) * sin
            if cache is not None:
                k = torch.cat((cache[i][0], k), 2)
                v = torch.cat((cache[i][1], v), 2)
            new_cache.append((k, v))
            k = k.repeat_interleave(H // KV, 1)
            v = v.repeat_interleave(H // KV, 1)
            s = (q @ k.transpose(2, 3)) * c["query_pre_attn_scalar"] ** -0.5
            cap = c.get("attn_logit_softcapping")
            if cap is not None:
                s = torch.tanh(s / cap) * cap
            s = s + masks[t]
            a = torch.softmax(s.float(), -1) @ v
            a = self.lin(p + "self_attn.o_proj", a.transpose(1, 2).reshape(B, L, H * D))
            x = x + rms(a, self.w[p + "post_attention_layernorm.weight"], eps)
            h = rms(x, self.w[p + "pre_feedforward_layernorm.weight"], eps)
            m = self.lin(p + "mlp.down_proj", gelu_tanh(self.lin(p + "mlp.gate_proj", h)) * self.lin(p + "mlp.up_proj", h))
            x = x + rms(m, self.w[p + "post_feedforward_layernorm.weight"], eps)
        x = rms(x, self.w["model.norm.weight"], eps)
        logits = self.lin("lm_head", x)
        cap = c.get("final_logit_softcapping")
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits, new_cache


def shifted_loss(logits, labels):
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


def generate(model, ids, mask, steps):
    """Greedy decoding as transformers' generate(): generation-style position ids, KV cache."""
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    logits, cache = model.forward(ids, mask, pos)
    seq, scores = ids, []
    nxt = pos[:, -1:] + 1
    for step in range(steps):
        last = logits[:, -1]
        scores.append(last)
        tok = last.argmax(-1, keepdim=True)
        seq = torch.cat((seq, tok), 1)
        if step == steps - 1:
            break
        mask = torch.cat((mask, torch.ones_like(tok)), 1)
        logits, cache = model.forward(tok, mask, nxt, cache)
        nxt = nxt + 1
    return seq, torch.stack(scores, 1)


# ---- fixtures ----
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
R, ALPHA = 4, 8


def make_checkpoint(name, cfg, seed):
    d = os.path.join(HERE, name)
    os.makedirs(os.path.join(d, "lora"), exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g) * 0.3
    h, hd, H, KV, I = cfg["hidden_size"], cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"]
    w = {"model.embed_tokens.weight": rnd(cfg["vocab_size"], h) / 6, "model.norm.weight": rnd(h)}
    shapes = {"self_attn.q_proj": (H * hd, h), "self_attn.k_proj": (KV * hd, h), "self_attn.v_proj": (KV * hd, h),
              "self_attn.o_proj": (h, H * hd), "mlp.gate_proj": (I, h), "mlp.up_proj": (I, h), "mlp.down_proj": (h, I)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for k, s in shapes.items():
            w[p + k + ".weight"] = rnd(*s)
        for n in ["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"]:
            w[p + n + ".weight"] = rnd(h)
        if cfg["model_type"] == "gemma3_text":
            w[p + "self_attn.q_norm.weight"] = rnd(hd)
            w[p + "self_attn.k_norm.weight"] = rnd(hd)
    save_file(w, os.path.join(d, "model.safetensors"), {"format": "pt"})
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    json.dump({"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0}, open(os.path.join(d, "generation_config.json"), "w"), indent=2)
    # LoRA: A and B both random (a trained adapter), PEFT's key names
    ad = {}
    for i in range(cfg["num_hidden_layers"]):
        for k, (o, n) in shapes.items():
            base = f"base_model.model.model.layers.{i}.{k}"
            ad[base + ".lora_A.weight"] = rnd(R, n)
            ad[base + ".lora_B.weight"] = rnd(o, R)
    save_file(ad, os.path.join(d, "lora", "adapter_model.safetensors"), {"format": "pt"})
    json.dump({"base_model_name_or_path": name, "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
               "init_lora_weights": True, "lora_alpha": ALPHA, "lora_dropout": 0.0, "modules_to_save": None,
               "peft_type": "LORA", "r": R, "target_modules": TARGETS, "task_type": "CAUSAL_LM",
               "use_dora": False, "use_rslora": False},
              open(os.path.join(d, "lora", "adapter_config.json"), "w"), indent=2)
    return d


def lora_hooks(d):
    ad = load_file(os.path.join(d, "lora", "adapter_model.safetensors"))
    hooks, deltas = {}, {}
    for k in ad:
        if k.endswith(".lora_A.weight"):
            name = k[len("base_model.model."):-len(".lora_A.weight")]
            A, Bm = ad[k], ad[k.replace("lora_A", "lora_B")]
            hooks[name] = (lambda A, Bm: lambda x, W, y: y + (x @ A.t() @ Bm.t()) * (ALPHA / R))(A, Bm)
            deltas[name + ".weight"] = (Bm @ A) * (ALPHA / R)
    return hooks, deltas


def golden(name, d):
    V = json.load(open(os.path.join(d, "config.json")))["vocab_size"]
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, V, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.int64)
    mask[1, :3] = 0
    ids[1, :3] = 0
    labels = ids.masked_fill(mask == 0, -100)
    pos = torch.arange(12)[None].expand(2, 12)
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    m = Gemma(d)
    with torch.no_grad():
        out["logits"], _ = m.forward(ids, mask, pos)
        out["loss"] = shifted_loss(out["logits"], labels)
        out["gen_sequences"], out["gen_scores"] = generate(m, ids, mask, 6)
        hooks, deltas = lora_hooks(d)
        m.hooks = hooks
        out["logits_lora"], _ = m.forward(ids, mask, pos)
        out["loss_lora"] = shifted_loss(out["logits_lora"], labels)
        out["gen_lora_sequences"], out["gen_lora_scores"] = generate(m, ids, mask, 6)
        merged = Gemma(d)
        for k, dw in deltas.items():
            merged.w[k] = merged.w[k] + dw
        out["logits_merged"], _ = merged.forward(ids, mask, pos)
    diff = (out["logits_lora"] - out["logits"]).abs().max().item()
    save_file(out, os.path.join(d, "expected.safetensors"),
              {"generator": "testdata/ref/gemma-reference.py", "torch": torch.__version__, "max_abs_lora_minus_base": f"{diff:.4g}"})
    print(name, "max |lora - base| =", round(diff, 4), "generated:", out["gen_sequences"][:, 12:].tolist())


COMMON = {"hidden_size": 32, "intermediate_size": 32, "head_dim": 16, "vocab_size": 96, "rms_norm_eps": 1e-6,
          "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh", "initializer_range": 0.02,
          "attention_bias": False, "attention_dropout": 0.0, "max_position_embeddings": 128, "sliding_window": 5,
          "query_pre_attn_scalar": 24, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
          "torch_dtype": "float32", "use_cache": True}
GEMMA2 = dict(COMMON, architectures=["Gemma2ForCausalLM"], model_type="gemma2", num_hidden_layers=4,
              num_attention_heads=2, num_key_value_heads=2, rope_theta=10000.0, attn_logit_softcapping=2.0,
              final_logit_softcapping=3.0, cache_implementation="hybrid")
GEMMA3 = dict(COMMON, architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", num_hidden_layers=6,
              num_attention_heads=2, num_key_value_heads=1, rope_theta=1000000.0, rope_local_base_freq=10000.0,
              rope_scaling={"rope_type": "linear", "factor": 2.0}, sliding_window_pattern=6,
              attn_logit_softcapping=None, final_logit_softcapping=None)

if __name__ == "__main__":
    for name, cfg, seed in [("gemma2-tiny", GEMMA2, 1), ("gemma3-tiny", GEMMA3, 2)]:
        golden(name, make_checkpoint(name, cfg, seed))
