#!/usr/bin/env python3
"""The scale benchmark's PyTorch side: ../shared/bench/torch_reference.py's Llama on a real-size HF folder.

    /usr/bin/python3 bench/reference_scale.py --model DIR --case load|generate-b1|generate-b4|train-lora-ckpt
                                              [--dtype auto|float32|bfloat16|float16] [--threads 2]

DIR is a HF checkpoint folder (config.json + model.safetensors or a sharded index), such as the random-weight
folders of `go run ./bench/mkmodel`. The model is torch_reference.py's LlamaForCausalLM (its modules, its
greedy_generate with the torch.cat KV cache, its causal_lm_loss, its PEFT-style LoRA), with what a real
checkpoint in bf16 needs, the way transformers 4.39 + PEFT do it:

- weights in --dtype (auto: config.json's torch_dtype, i.e. from_pretrained(torch_dtype=...)): the modules are
  built on the meta device, then each parameter is allocated in that dtype and copied from the safetensors
  files (read through mmap with a few lines of our own: the safetensors package is not needed);
- Qwen2's q/k/v biases and tied embeddings (lm_head.weight is embed_tokens.weight);
- RMSNorm in float32 and cast back (LlamaRMSNorm), rotary cos/sin cast to the activations' dtype, the causal
  mask built in that dtype (finfo.min), softmax in float32 cast back to the query's dtype, logits .float();
- LoRA adapters in float32 on a bf16 base (PEFT's autocast_adapter_dtype): the adapter path casts x to float32
  and the layer's result back to the base's dtype;
- activation checkpointing per decoder layer as gradient_checkpointing_enable() does it
  (torch.utils.checkpoint, reentrant) with PEFT's enable_input_require_grads on the embeddings' output.
In float32 every one of these is a no-op, and the model computes exactly what torch_reference.py does.

Cases (the same workloads and token ids as `go run ./bench -model DIR`):
  load             wall time of building the model and copying the weights in; RSS after it
  generate-b1      greedy decoding, batch 1, prompt 32, 32 new tokens, 1 warm-up + 2 timed runs
  generate-b4      the same at batch 4 (4 x 32 prompt)
  train-lora-ckpt  LoRA r 8, alpha 16 on q_proj,v_proj (float32 adapters), AdamW lr 1e-4, batch 1 x 512,
                   activation checkpointing, 1 warm-up + 3 timed steps
Token ids come from SplitMix64 (scale_tokens), the same function as the Go side, so both sides see the same
prompts and batches; with the same folder the first training loss and (in float32) the greedy tokens match.

Output: one JSON line with the Go side's fields (bench/scale.go): seconds, tokens/s, peak RSS (VmHWM), RssAnon
and RssFile, and for decoding the bandwidth ceiling: bytes read per decode step (every weight once, lm_head in
full, one embedding row per sequence) over the copy bandwidth measured in this process.
"""
import argparse
import json
import mmap
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

here = os.path.dirname(os.path.abspath(__file__))
ref_path = os.environ.get("REF") or os.path.join(here, "..", "..", "shared", "bench", "torch_reference.py")
sys.path.insert(0, os.path.dirname(os.path.abspath(ref_path)))
ref = __import__(os.path.splitext(os.path.basename(ref_path))[0])

CASES = ["load", "generate-b1", "generate-b4", "train-lora-ckpt"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ST_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool}
MASK64 = (1 << 64) - 1


# ----------------------------------------------------------------------------------------------- token ids
def scale_tokens(seed, n, vocab):
    """n ids in [0, vocab): SplitMix64 from state seed * golden gamma, x mod vocab (bench/scale.go's scaleTokens)."""
    z = (seed * 0x9E3779B97F4A7C15) & MASK64
    out = []
    for _ in range(n):
        z = (z + 0x9E3779B97F4A7C15) & MASK64
        x = z
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
        x ^= x >> 31
        out.append(x % vocab)
    return out


# ------------------------------------------------------------------------- the reference in a checkpoint's dtype
def rms_forward(self, x):  # transformers' LlamaRMSNorm / Qwen2RMSNorm
    dt = x.dtype
    h = x.to(torch.float32)
    var = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(var + self.eps)
    return self.weight * h.to(dt)


def attn_forward(self, x, cos, sin, mask, cache, pos):  # torch_reference's Attention + HF's cast after softmax
    B, L, _ = x.shape
    q = self.q_proj(x).view(B, L, self.H, self.D).transpose(1, 2)
    k = self.k_proj(x).view(B, L, self.KV, self.D).transpose(1, 2)
    v = self.v_proj(x).view(B, L, self.KV, self.D).transpose(1, 2)
    q = q * cos + ref.rotate_half(q) * sin
    k = k * cos + ref.rotate_half(k) * sin
    if cache is not None:
        k, v = cache.update(k, v, pos)
    n_rep = self.H // self.KV
    if n_rep > 1:
        T = k.shape[2]
        k = k[:, :, None].expand(B, self.KV, n_rep, T, self.D).reshape(B, self.H, T, self.D)
        v = v[:, :, None].expand(B, self.KV, n_rep, T, self.D).reshape(B, self.H, T, self.D)
    w = torch.matmul(q, k.transpose(2, 3)) / (self.D ** 0.5)
    if mask is not None:
        w = w + mask
    w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
    o = torch.matmul(w, v).transpose(1, 2).contiguous().reshape(B, L, self.H * self.D)
    return self.o_proj(o)


def lora_forward(self, x):  # PEFT LoraLayer.forward with float32 adapters on a half-precision base
    result = self.base_layer(x)
    dt = result.dtype
    x = x.to(self.lora_A.weight.dtype)
    result = result + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
    return result.to(dt)


ref.RMSNorm.forward = rms_forward
ref.Attention.forward = attn_forward
ref.LoraLinear.forward = lora_forward


class ScaleLlama(ref.LlamaForCausalLM):
    """torch_reference's LlamaForCausalLM in a checkpoint's dtype, with optional activation checkpointing."""

    def __init__(self, c, dtype):
        super().__init__(c)
        self.dtype = dtype
        self.checkpointing = False
        # transformers 4.39 builds the additive causal mask in the activations' dtype
        self.causal_mask = torch.full((c.max_pos, c.max_pos), torch.finfo(dtype).min, dtype=dtype).triu(1)

    def forward(self, ids, cache=None, pos=0, last_logits_only=False):
        B, L = ids.shape
        x = self.model.embed_tokens(ids)
        ckpt = self.checkpointing and self.training
        if ckpt:
            x.requires_grad_(True)  # PEFT's enable_input_require_grads (reentrant checkpointing needs it)
        t = torch.arange(pos, pos + L, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        mask = self.causal_mask[pos:pos + L, :pos + L] if L > 1 else None
        if cache is not None:
            cache.layer = 0
        for layer in self.model.layers:
            if ckpt:
                x = checkpoint(layer, x, cos, sin, mask, cache, pos)
            else:
                x = layer(x, cos, sin, mask, cache, pos)
        x = self.model.norm(x)
        if last_logits_only:
            x = x[:, -1:]
        return self.lm_head(x).float()


class _MetaLinear(nn.Linear):
    def __init__(self, *a, **k):
        k.setdefault("device", "meta")
        super().__init__(*a, **k)


class _MetaEmbedding(nn.Embedding):
    def __init__(self, *a, **k):
        k.setdefault("device", "meta")
        super().__init__(*a, **k)


# ----------------------------------------------------------------------------------------------- checkpoint
def safetensors_files(d):
    single = os.path.join(d, "model.safetensors")
    if os.path.exists(single):
        return [single]
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        idx = json.load(f)
    return [os.path.join(d, s) for s in sorted(set(idx["weight_map"].values()))]


def read_safetensors(path, visit):
    """Calls visit(name, tensor) for every tensor of the file; the tensors are views of a private mapping and
    are only valid during the call."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    try:
        for name, info in hdr.items():
            if name == "__metadata__":
                continue
            dt = ST_DTYPES[info["dtype"]]
            b, e = info["data_offsets"]
            count = (e - b) // torch.empty((), dtype=dt).element_size()
            t = torch.frombuffer(mm, dtype=dt, count=count, offset=8 + n + b).view(info["shape"])
            visit(name, t)
            del t
    finally:
        try:
            mm.close()
        except BufferError:  # a view still alive; the mapping goes with it
            pass


def model_config(d):
    with open(os.path.join(d, "config.json")) as f:
        return json.load(f)


def load_model(d, dtype_name, max_pos):
    """The folder's model with its weights in dtype_name ('auto': config.json's torch_dtype)."""
    cfg = model_config(d)
    if dtype_name == "auto":
        dtype_name = cfg.get("torch_dtype") or "float32"
    dtype = DTYPES[dtype_name]
    heads = cfg["num_attention_heads"]
    c = argparse.Namespace(hidden=cfg["hidden_size"], layers=cfg["num_hidden_layers"], heads=heads,
                           kv_heads=cfg.get("num_key_value_heads") or heads, intermediate=cfg["intermediate_size"],
                           vocab=cfg["vocab_size"], max_pos=max_pos, rope_theta=float(cfg.get("rope_theta", 10000.0)),
                           rms_eps=float(cfg.get("rms_norm_eps", 1e-6)))
    if cfg.get("head_dim") not in (None, c.hidden // heads):
        raise SystemExit("head_dim != hidden_size / num_attention_heads is not supported by torch_reference")
    qwen2 = cfg.get("model_type") == "qwen2"
    qkv_bias = qwen2 or bool(cfg.get("attention_bias"))
    o_bias = bool(cfg.get("attention_bias")) and not qwen2
    tied = bool(cfg.get("tie_word_embeddings", False))

    lin, emb = nn.Linear, nn.Embedding
    nn.Linear, nn.Embedding = _MetaLinear, _MetaEmbedding  # no memory, no random init
    try:
        model = ScaleLlama(c, dtype)
        for layer in model.model.layers:
            a = layer.self_attn
            for name in ("q_proj", "k_proj", "v_proj"):
                m = getattr(a, name)
                setattr(a, name, nn.Linear(m.in_features, m.out_features, bias=qkv_bias))
            a.o_proj = nn.Linear(a.o_proj.in_features, a.o_proj.out_features, bias=o_bias)
    finally:
        nn.Linear, nn.Embedding = lin, emb
    params = {}
    for mod_name, mod in model.named_modules():
        for p_name, p in list(mod._parameters.items()):
            if p is None:
                continue
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if tied and full == "lm_head.weight":
                continue
            np_ = nn.Parameter(torch.empty(p.shape, dtype=dtype))
            mod._parameters[p_name] = np_
            params[full] = np_
    seen = set()

    def visit(name, t):
        if name not in params:
            if tied and name == "lm_head.weight":
                return
            raise SystemExit(f"{d}: unexpected tensor {name}")
        p = params[name]
        if tuple(p.shape) != tuple(t.shape):
            raise SystemExit(f"{d}: {name} has shape {list(t.shape)}, the model expects {list(p.shape)}")
        with torch.no_grad():
            p.copy_(t)
        seen.add(name)

    for path in safetensors_files(d):
        read_safetensors(path, visit)
    missing = sorted(set(params) - seen)
    if missing:
        raise SystemExit(f"{d}: missing tensors {missing[:5]}")
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model, cfg, dtype_name


# ----------------------------------------------------------------------------------------------- measuring
def proc_status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = round(int(v.split()[0]) / 1024, 1)
    return out


def copy_bandwidth_gbps(mib=512, reps=4):
    """memcpy of a mib-MiB buffer by the process's threads, best of reps: (read + written bytes) / s."""
    src = torch.ones(mib << 20, dtype=torch.uint8)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return round(2 * src.numel() / best / 1e9, 2)


def bytes_per_step(model, batch):
    """Bytes of weights a decode step reads: every parameter once, lm_head in full (also when tied to the
    embeddings), and one embedding row per sequence."""
    emb = model.model.embed_tokens.weight
    total = sum(p.numel() * p.element_size() for p in model.parameters() if p is not emb)  # untied lm_head too
    if model.lm_head.weight is emb:
        total += emb.numel() * emb.element_size()
    return total + batch * emb.shape[1] * emb.element_size()


def run_case(a):
    torch.set_num_threads(a.threads)
    probe_before = ref.probe_gflops()
    before = proc_status()
    cfg = model_config(a.model)
    gen = a.case.startswith("generate")
    batch = 4 if a.case == "generate-b4" else (1 if gen else a.batch)
    max_pos = a.prompt + a.new_tokens if gen else a.seq
    t0 = time.perf_counter()
    model, cfg, dtype_name = load_model(a.model, a.dtype, max_pos)
    load_s = time.perf_counter() - t0
    after_load = proc_status()
    peak_load = ref.peak_rss_mib()
    try:  # the work's own peak: VmHWM restarts from the RSS after the load
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        peak_reset = True
    except OSError:
        peak_reset = False
    n_params = sum(p.numel() for p in model.parameters())
    res = {"case": a.case, "impl": "ref", "model": os.path.basename(os.path.normpath(a.model)),
           "model_type": cfg.get("model_type"), "dtype": dtype_name, "load_s": round(load_s, 3)}
    if a.case == "load":
        res["seconds"] = round(load_s, 3)
    elif gen:
        model.eval()
        per_step = bytes_per_step(model, batch)
        stamps = []
        fwd = model.forward

        def timed(*args, **kw):
            out = fwd(*args, **kw)
            stamps.append(time.perf_counter())
            return out

        model.forward = timed
        times, decode, ttft, toks = [], [], None, None
        for r in range(a.runs + 1):  # run 0 is a warm-up
            ids = torch.tensor(scale_tokens(100 + r, batch * a.prompt, cfg["vocab_size"])).view(batch, a.prompt)
            stamps.clear()
            t0 = time.perf_counter()
            out = ref.greedy_generate(model, ids, a.new_tokens, "cat", "all")
            dt = time.perf_counter() - t0
            assert out.shape == (batch, a.prompt + a.new_tokens), out.shape
            if r == 0:
                ttft = since_process_start() - (time.perf_counter() - stamps[0])
            else:
                times.append(dt)
                decode.append(batch * (a.new_tokens - 1) / (stamps[-1] - stamps[0]))
                toks = out[0, a.prompt:].tolist()
        tot = sum(times)
        dec = sorted(decode)[len(decode) // 2]
        res.update({"tokens_per_s": batch * a.new_tokens * a.runs / tot, "decode_tokens_per_s": round(dec, 3),
                    "batch": batch, "prompt_len": a.prompt, "new_tokens": a.new_tokens, "runs": a.runs,
                    "sec_per_generate_mean": tot / a.runs, "step_seconds": [round(x, 4) for x in times],
                    "ttft_s": round(ttft, 3), "bytes_per_step": per_step, "tokens": toks, "kv_cache": "cat", "prefill_logits": "all",
                    "note": "greedy argmax, KV cache; tokens_per_s includes the prefill, decode_tokens_per_s is "
                            "first to last new token"})
    elif a.case == "train-lora-ckpt":
        targets = ["q_proj", "v_proj"]
        ref.add_lora(model, targets, 8, 16, 0.0)
        model.train()
        model.checkpointing = True
        params = [p for p in model.parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in params)
        n_params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4)
        times, losses = [], []
        for step in range(a.warmup + a.steps):
            ids = torch.tensor(scale_tokens(1000 + step, batch * a.seq, cfg["vocab_size"])).view(batch, a.seq)
            t0 = time.perf_counter()
            loss = ref.causal_lm_loss(model(ids), ids)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            losses.append(round(loss.item(), 4))
            if step >= a.warmup:
                times.append(dt)
        tot = sum(times)
        res.update({"tokens_per_s": batch * a.seq * len(times) / tot, "batch": batch, "seq": a.seq,
                    "timed_steps": len(times), "sec_per_step_mean": tot / len(times),
                    "sec_per_step_min": min(times), "step_seconds": [round(x, 4) for x in times],
                    "losses": losses, "trainable": trainable, "optimizer": "AdamW lr=0.0001",
                    "lora": {"r": 8, "alpha": 16, "dropout": 0, "targets": targets, "adapter_dtype": "float32"},
                    "checkpointing": True})
    else:
        raise SystemExit(f"unknown case {a.case}")
    st = proc_status()
    if peak_reset:
        res["peak_rss_after_load_mib"] = st.get("VmHWM")
    res.update({"params": n_params, "peak_rss_mib": max(peak_load, ref.peak_rss_mib()), "rss_mib": st.get("VmRSS"),
                "rss_anon_mib": st.get("RssAnon"), "rss_file_mib": st.get("RssFile"),
                "rss_before_model_mib": before.get("VmRSS"), "rss_anon_before_model_mib": before.get("RssAnon"),
                "rss_anon_after_load_mib": after_load.get("RssAnon"),
                "rss_file_after_load_mib": after_load.get("RssFile"),
                "threads": torch.get_num_threads(), "torch": torch.__version__})
    res.setdefault("trainable", 0)
    if gen:  # after the peak RSS is read: the two 512 MiB buffers would raise it
        bw = copy_bandwidth_gbps()
        ceiling = batch * bw * 1e9 / res["bytes_per_step"]
        res.update({"copy_gbps": bw, "ceiling_tokens_per_s": round(ceiling, 2),
                    "ceiling_fraction": round(res["decode_tokens_per_s"] / ceiling, 3)})
    res["probe_gflops"] = [probe_before, ref.probe_gflops()]
    return res


def since_process_start():
    """Seconds since this process started (/proc/self/stat start time, clock-tick resolution)."""
    with open("/proc/self/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    return up - int(rest[19]) / os.sysconf("SC_CLK_TCK")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", required=True, help="HF checkpoint folder")
    ap.add_argument("--case", required=True, choices=CASES)
    ap.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="weights' dtype (torch_dtype)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=32, help="generation: prompt length")
    ap.add_argument("--new-tokens", type=int, default=32, help="generation: new tokens")
    ap.add_argument("--runs", type=int, default=2, help="generation: timed runs after one warm-up")
    ap.add_argument("--batch", type=int, default=1, help="training batch")
    ap.add_argument("--seq", type=int, default=512, help="training sequence length")
    ap.add_argument("--warmup", type=int, default=1, help="training: warm-up steps")
    ap.add_argument("--steps", type=int, default=3, help="training: timed steps")
    return ap.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(run_case(parse_args())), flush=True)
