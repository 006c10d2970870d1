package fsutil

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.json")
	require.NoError(t, WriteFileAtomic(p, []byte("one")))
	require.NoError(t, WriteFileAtomic(p, []byte("two")))
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, "two", string(data))
	// a failed write (missing folder) leaves nothing behind
	require.Error(t, WriteFileAtomic(filepath.Join(dir, "nope", "b.json"), []byte("x")))
	entries, _ := os.ReadDir(dir)
	require.Len(t, entries, 1)
}
