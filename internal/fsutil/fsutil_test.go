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

// Issue #19 item 8: an atomically written file gets mode 0644 (the temp
// file it is renamed from is created 0600); a missing chmod passed every
// other test.
func TestWriteFileAtomicMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.json")
	require.NoError(t, WriteFileAtomic(p, []byte("x")))
	st, err := os.Stat(p)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), st.Mode().Perm())
}
