package peft_test

import (
	"encoding/json"
	"testing"

	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// target_modules as PEFT writes it: a list, a regex string, or null.
func TestTargetsJSON(t *testing.T) {
	for _, tc := range []struct {
		js   string
		want peft.Targets
	}{
		{`["q_proj","v_proj"]`, peft.TargetList("q_proj", "v_proj")},
		{`".*\\.q_proj"`, peft.TargetRegex(`.*\.q_proj`)},
		{`null`, peft.Targets{}},
		{`[]`, peft.TargetList()},
	} {
		var got peft.Targets
		require.NoError(t, json.Unmarshal([]byte(tc.js), &got), tc.js)
		require.Equal(t, tc.want.Regex, got.Regex, tc.js)
		require.Equal(t, len(tc.want.List), len(got.List), tc.js)
		require.Equal(t, tc.want.IsSet(), got.IsSet(), tc.js)
		back, err := json.Marshal(got)
		require.NoError(t, err)
		require.JSONEq(t, tc.js, string(back))
	}
	require.Error(t, json.Unmarshal([]byte(`3`), new(peft.Targets)))
	require.ErrorContains(t, peft.TargetRegex("(").Validate(), `regex "("`)
}

func TestTargetsMatchAndLayerIndex(t *testing.T) {
	l := peft.TargetList("q_proj", "layer.*.output.dense")
	require.True(t, l.Matches("model.layers.0.self_attn.q_proj"))
	require.True(t, l.Matches("q_proj"))
	require.False(t, l.Matches("model.layers.0.self_attn.xq_proj"), "whole components only")
	require.True(t, l.Matches("bert.encoder.layer.3.output.dense"))
	require.False(t, l.Matches("bert.encoder.layer.3.attention.output.dense"))
	re := peft.TargetRegex(`.*\.(q|v)_proj`)
	require.True(t, re.Matches("model.layers.1.self_attn.v_proj"))
	require.False(t, re.Matches("model.layers.1.self_attn.v_proj.base_layer"), "a regex matches the whole path")

	for _, tc := range []struct {
		path     string
		patterns []string
		idx      int
		ok       bool
	}{
		{"model.layers.3.self_attn.q_proj", nil, 3, true},
		{"transformer.h.11.attn.c_attn", nil, 11, true},
		{"bert.encoder.layer.2.attention.self.query", nil, 2, true},
		{"model.layers.3.self_attn.q_proj", []string{"layers"}, 3, true},
		{"transformer.h.4.attn.c_attn", []string{"layers"}, 0, false},
		{"lm_head", nil, 0, false},
	} {
		idx, ok := peft.LayerIndex(tc.path, tc.patterns)
		require.Equal(t, tc.ok, ok, tc.path)
		require.Equal(t, tc.idx, idx, tc.path)
	}
}
