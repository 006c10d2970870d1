package vera_test

import (
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/vera"
)

func loadLlama(t testing.TB) models.Model {
	return testutil.Load(t, llama.Load, "llama-tiny")
}

// llama-tiny__vera (PEFT 0.13.2, r 16 on q_proj and v_proj, projections
// saved): adapted, disabled and merged logits, merged weights, the saved
// files, and the trainable count of a fresh adapter.
func TestVeRAFixture(t *testing.T) {
	testutil.RequireMethodFixture(t, testutil.MethodFixture{
		Name: "vera", Base: loadLlama, Mergeable: true,
		Fresh: func(base models.Model) (*peft.Model, error) {
			return vera.Wrap(base, &vera.Config{R: 16, ProjectionPRNGKey: 24301, TargetModules: peft.TargetList("q_proj", "v_proj")})
		},
	})
}
