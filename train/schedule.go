package train

import (
	"fmt"
	"math"
)

// Schedule names (HF's lr_scheduler_type).
const (
	Linear   = "linear"   // warmup, then linear decay to 0 at the last step (HF's default)
	Cosine   = "cosine"   // warmup, then half a cosine down to 0
	Constant = "constant" // warmup, then constant
)

// LRAt is the learning rate of optimizer step step (0-based) out of total,
// as transformers' schedulers give it: a linear warmup from 0 over warmup
// steps, then
//
//	linear:   peak · (total − step) / (total − warmup)
//	cosine:   peak · ½ · (1 + cos(π · (step − warmup) / (total − warmup)))
//	constant: peak
//
// (never below 0). The first step of a warmup runs at 0, as in HF.
func LRAt(schedule string, peak float64, step, warmup, total int) (float64, error) {
	if step < warmup {
		return peak * float64(step) / float64(max(1, warmup)), nil
	}
	switch schedule {
	case Linear, "":
		return peak * math.Max(0, float64(total-step)/float64(max(1, total-warmup))), nil
	case Cosine:
		p := float64(step-warmup) / float64(max(1, total-warmup))
		return peak * math.Max(0, 0.5*(1+math.Cos(math.Pi*p))), nil
	case Constant:
		return peak, nil
	}
	return 0, fmt.Errorf("train: unknown schedule %q (linear, cosine, constant)", schedule)
}
