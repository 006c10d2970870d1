"""Goldens for lora's svdLowRank (init_lora_weights="pissa_niter_N"): torch.svd_lowrank on fixed
matrices after torch.manual_seed(seed), with the torch the fixtures use (Debian python3-torch 1.13.1).

Run: /usr/bin/python3 testdata/reference/svd_lowrank_reference.py  (writes svd_lowrank_golden.json here)
"""
import json
import os

import torch

torch.set_num_threads(1)
cases = []
for i, (m, n, q, niter) in enumerate([(24, 40, 4, 2), (32, 32, 4, 2), (48, 20, 3, 1), (12, 16, 6, 0), (16, 6, 6, 1)]):
    torch.manual_seed(100 + i)
    w = torch.randn(m, n) * 0.05
    seed = 7 + i
    torch.manual_seed(seed)
    u, s, v = torch.svd_lowrank(w, q, niter=niter)
    cases.append({"m": m, "n": n, "q": q, "niter": niter, "seed": seed, "w": w.flatten().tolist(),
                  "u": u.flatten().tolist(), "s": s.tolist(), "v": v.flatten().tolist()})
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "svd_lowrank_golden.json")
with open(out, "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases}, f)
print("wrote", out)
