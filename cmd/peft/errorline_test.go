package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The CLI prints "peft: " once, whether or not the error came from the
// library (whose errors start with "peft: ").
func TestErrorLineHasOnePrefix(t *testing.T) {
	require.Equal(t, "peft: no command given", errorLine(errors.New("no command given")))
	dir := t.TempDir() // an adapter of a method nobody registered: the library's error
	require.NoError(t, os.WriteFile(filepath.Join(dir, "adapter_config.json"), []byte(`{"peft_type": "NOPE"}`), 0o644))
	err := run([]string{"inspect", dir}, &bytes.Buffer{}, &bytes.Buffer{})
	require.Error(t, err)
	line := errorLine(err)
	require.Regexp(t, `^peft: peft: `, "peft: "+err.Error(), "the library's error starts with the prefix")
	require.Contains(t, line, `peft_type "NOPE" is not registered`)
	require.Regexp(t, `^peft: `, line)
	require.NotContains(t, line, "peft: peft:")
}
