"""Goldens for lora's LoftQ quantiser tables: torch.linspace(0.9677083, 0.5, n) in float32 and the
normal-float tables PEFT 0.10's NFQuantizer builds (create_normal_map, asymmetric: quantiles of
N(0, 1) at float32 linspace points, an exact 0, sorted, divided by the largest), for 2, 4 and 8 bits,
with Debian's python3-torch 1.13.1 (AVX2 kernels) and python3-scipy.

Run: /usr/bin/python3 testdata/reference/nf_table_reference.py  (writes nf_table_golden.json here)
"""
import json
import os
import struct

import torch
from scipy.stats import norm


def bits32(t):
    return [struct.unpack("<I", struct.pack("<f", x))[0] for x in t.tolist()]


offset = 0.9677083
linspace = {n: bits32(torch.linspace(offset, 0.5, n)) for n in [2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 128, 129]}
tables = {}
for bits in [2, 4, 8]:
    half = 2 ** bits // 2
    positive = norm.ppf(torch.linspace(offset, 0.5, half + 1)[:-1]).tolist()
    negative = (-norm.ppf(torch.linspace(offset, 0.5, half)[:-1])).tolist()
    values = torch.tensor(positive + [0.0] + negative, dtype=torch.float32).sort().values
    values = values / values.max()
    tables[bits] = bits32(values)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nf_table_golden.json")
with open(out, "w") as f:
    json.dump({"torch": torch.__version__, "offset": offset, "linspace": linspace, "tables": tables}, f)
print("wrote", out)
