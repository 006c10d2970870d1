package train

import (
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// headProbe forwards to a PEFT model, counting the passes that asked for
// the loss only and those that came back without logits; with plain it
// clears LossOnly (the plain head, logits and ShiftedLoss).
type headProbe struct {
	m                  *peft.Model
	plain              bool
	lossOnly, noLogits int
}

func (p *headProbe) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	if b.LossOnly {
		p.lossOnly++
	}
	nb := *b
	if p.plain {
		nb.LossOnly = false
	}
	out := p.m.ForwardT(s, &nb)
	if out.Logits == nil {
		p.noLogits++
	}
	return out
}

func (p *headProbe) TrainableParams() []nn.NamedParam { return p.m.TrainableParams() }

// The Trainer asks for the loss only (the fused head: no logits), in
// training and evaluation, and its loss curve is the plain head's, with
// and without activation checkpointing.
func TestTrainerFusedLossSameCurve(t *testing.T) {
	for _, ckpt := range []bool{false, true} {
		cfg := Config{LR: 1e-2, BatchSize: 4, MaxSteps: 3, Seed: 2, Checkpointing: ckpt}
		fused := &headProbe{m: tinyLoRA(t, 0, 1)}
		a := fit(t, fused, cfg, 8, 4)
		plain := &headProbe{m: tinyLoRA(t, 0, 1), plain: true}
		b := fit(t, plain, cfg, 8, 4)
		require.Equal(t, 3+1, fused.lossOnly, "3 training passes and 1 evaluation batch")
		require.Equal(t, fused.lossOnly, fused.noLogits)
		require.Equal(t, 0, plain.noLogits)
		require.InDeltaSlice(t, b.Losses(), a.Losses(), 1e-5)
		ea, eb := a.History[len(a.History)-1].EvalLoss, b.History[len(b.History)-1].EvalLoss
		require.NotNil(t, ea)
		require.InDelta(t, *eb, *ea, 1e-5)
	}
}
