package orthtest

import (
	"strconv"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// RequireEstimate asserts that peft.EstimateMemory's trainable count for
// llama-tiny with method, r and the fixture's target_modules equals the
// fixture's print_trainable_parameters count.
func RequireEstimate(t *testing.T, fixture, method string, r int) {
	shape, err := peft.ReadModelShape(testutil.Fixtures(t, "llama-tiny"))
	require.NoError(t, err)
	cfg := testutil.ReadJSON(t, testutil.Fixtures(t, "adapters", "llama-tiny", fixture, peft.ConfigName))
	var targets []string
	for _, v := range cfg["target_modules"].([]any) {
		targets = append(targets, v.(string))
	}
	est, err := peft.EstimateMemory(shape, peft.MemoryOptions{Method: method, R: r, TargetModules: targets})
	require.NoError(t, err)
	line := testutil.OpenExpected(t, "llama-tiny__"+fixture).Meta(t, "print_trainable_parameters")
	n := strings.TrimPrefix(line[:strings.Index(line, " ||")], "trainable params: ")
	want, err := strconv.ParseInt(strings.ReplaceAll(n, ",", ""), 10, 64)
	require.NoError(t, err)
	require.Equal(t, want, est.Trainable)
}
