package main

import (
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/adalora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// The -method adalora spec makes a valid config from the run's length and
// wraps a LLaMA model (every linear layer of the decoder, the norms saved).
func TestAdaLoRASpec(t *testing.T) {
	sp, err := methodSpec("adalora")
	require.NoError(t, err)
	require.Nil(t, sp.config)
	cfg := sp.configSteps(120).(*adalora.Config)
	require.Equal(t, 120, *cfg.TotalStep)
	require.NoError(t, cfg.Validate())
	base, err := llama.Load(filepath.Join("..", "..", "testdata", "hf", "llama-tiny"))
	require.NoError(t, err)
	m, err := peft.New(base, cfg)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	svd, whole := 0, 0
	for _, at := range peft.Tuners(m.Base()) {
		switch at.Tuner.(type) {
		case *adalora.SVDLinear:
			svd++
		case *peft.ModulesToSave:
			whole++
		}
	}
	require.Equal(t, 2*7, svd)     // the 7 linear layers of each decoder layer
	require.Equal(t, 2*2+1, whole) // 2 norms per layer and the final one, trained whole
	require.Contains(t, AllMethods, "adalora")
}
