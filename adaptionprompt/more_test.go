package adaptionprompt_test

import (
	"encoding/json"
	"testing"

	"github.com/gopeft/peft/adaptionprompt"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// Keys a newer PEFT writes survive a re-save; the fields are PEFT's.
func TestConfigKeepsUnknownKeys(t *testing.T) {
	cfg, err := peft.ParseConfig("adapter_config.json", []byte(`{"peft_type": "ADAPTION_PROMPT", "adapter_len": 4,
		"adapter_layers": 2, "target_modules": "self_attn", "peft_version": "0.17.0", "task_type": "CAUSAL_LM"}`))
	require.NoError(t, err)
	c := cfg.(*adaptionprompt.Config)
	require.Equal(t, 4, c.AdapterLen)
	require.Equal(t, 2, c.AdapterLayers)
	js, err := c.MarshalJSON()
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(js, &out))
	require.Equal(t, "0.17.0", out["peft_version"])
	require.Equal(t, "ADAPTION_PROMPT", out["peft_type"])
	require.Equal(t, "self_attn", out["target_modules"])
	require.Equal(t, true, out["inference_mode"])
}

// Activation checkpointing gives the adapter (and every other parameter)
// the gradients of a plain backward pass.
func TestCheckpointingSameGradients(t *testing.T) {
	m, err := peft.Load(loadLlama(t), adapterDir(t), peft.Trainable())
	require.NoError(t, err)
	testutil.RequireCheckpointingSameGradients(t, m, func(s *tensor.Scope, ck *models.Checkpoint) *models.Batch {
		b := idsBatch(s)
		b.Checkpoint = ck
		return b
	})
}

// On a bfloat16 base the float32 adapter is cast to the activations'
// dtype: the logits stay close to the float32 ones.
func TestBFloat16Base(t *testing.T) {
	e := testutil.OpenExpected(t, fixture)
	base := testutil.Load(t, llama.Load, "llama-tiny", models.WithDType("bfloat16"))
	m, err := peft.Load(base, adapterDir(t))
	require.NoError(t, err)
	got, _ := testutil.LogitsOf(t, m, e)
	d := testutil.MaxDiff(got, e.F32(t, "logits"))
	t.Logf("bfloat16 vs PEFT's float32 logits: %.3g", d)
	require.Less(t, d, 0.1)
}

// A batch with an adapter per row (peft.Selection.Rows) is refused with
// an error naming the method.
func TestPerRowAdaptersRefused(t *testing.T) {
	m, err := peft.Load(loadLlama(t), adapterDir(t))
	require.NoError(t, err)
	s := tensor.NoGradScope()
	defer s.Close()
	defer peft.WithSelection(s, &peft.Selection{Rows: []string{"default", peft.BaseAdapterName}})()
	m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, 2, 8)})
	require.ErrorContains(t, s.Err(), "(AdaptedAttention) cannot run different adapters per row")
}
