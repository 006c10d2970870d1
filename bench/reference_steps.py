#!/usr/bin/env python3
"""Run one case of ../shared/bench/torch_reference.py unchanged and add its per-step times to its JSON line.

    /usr/bin/python3 bench/reference_steps.py --case forward [any torch_reference.py flag]

torch_reference.py reports the mean step time (and the minimum for training cases) but not the individual steps.
On a shared host single steps can take 3-10x longer while a neighbour runs, and one such step moves the mean a
lot; bench/compare.sh compares the median step as well, so it needs every step. This wrapper imports the
reference, lets its run_case() run exactly as it does from the command line, and records the list of step times
the case passes to sum() (the only list of floats it sums). The output is the reference's JSON line plus
"step_seconds". Set REF to the reference script's path if it is not at ../shared/bench/torch_reference.py.
"""
import builtins
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
ref_path = os.environ.get("REF") or os.path.join(here, "..", "..", "shared", "bench", "torch_reference.py")
sys.path.insert(0, os.path.dirname(os.path.abspath(ref_path)))
ref = __import__(os.path.splitext(os.path.basename(ref_path))[0])

captured = []


def _sum(xs, *args):
    if isinstance(xs, list) and xs and all(isinstance(x, float) for x in xs):
        captured.append(list(xs))
    return builtins.sum(xs, *args)


ref.sum = _sum  # a module global shadows the builtin inside torch_reference's functions


def since_process_start():
    """Seconds since this process started (/proc/self/stat start time, clock-tick resolution)."""
    with open("/proc/self/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    return up - int(rest[19]) / os.sysconf("SC_CLK_TCK")


first_token = []
_forward = ref.LlamaForCausalLM.forward


def _timed_forward(self, *args, **kwargs):
    out = _forward(self, *args, **kwargs)
    if not first_token:  # the warm-up run's prefill: its argmax is the first token
        first_token.append(since_process_start())
    return out

a = ref.parse_args()
if not a.case:
    sys.exit("reference_steps.py runs one case: pass --case")
if a.case.startswith("generate"):
    ref.LlamaForCausalLM.forward = _timed_forward
res = ref.run_case(a.case, a)
if first_token:
    res["ttft_s"] = round(first_token[0], 3)
if captured:
    res["step_seconds"] = [round(x, 4) for x in captured[-1]]
print(json.dumps(res), flush=True)
