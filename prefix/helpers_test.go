package prefix_test

import (
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models/llama"
)

func adapterDir(t testing.TB, name string) string {
	return testutil.Fixtures(t, "adapters", "llama-tiny", name)
}

func loadBase(t testing.TB) *llama.Model {
	base, err := llama.Load(filepath.Join(testutil.Fixtures(t), "llama-tiny"))
	if err != nil {
		t.Fatal(err)
	}
	return base
}

// openExpected opens the llama-tiny golden file of a case.
func openExpected(t testing.TB, name string) *testutil.Expected {
	return testutil.OpenExpected(t, "llama-tiny__"+name)
}
