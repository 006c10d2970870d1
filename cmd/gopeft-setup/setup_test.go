package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const generatedSample = `// generated
tensor *atg_abs(tensor self) {
  PROTECT(
    auto outputs__ = torch::abs(*self);
    return new torch::Tensor(outputs__);
  )
  return nullptr;
}
void atg_nested(tensor *out__, tensor self) {
  PROTECT(
    auto outputs__ = torch::nested_thing(*self);
    out__[0] = new torch::Tensor(outputs__);
  )
}
int64_t atg_sparse_dim(tensor self) {
  PROTECT(
    return self->sparse_dim_v2();
  )
  return 0;
}
`

// The wrappers the compiler's lines point into get an error body (with a
// return for non-void ones); the others stay as they were.
func TestStubRewritesOnlyRejectedWrappers(t *testing.T) {
	path := filepath.Join(t.TempDir(), generated)
	if err := os.WriteFile(path, []byte(generatedSample), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := stub(path, map[int]bool{12: true, 18: true}, "1.13.1") // inside atg_nested and atg_sparse_dim
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("stubbed %d wrappers, want 2", n)
	}
	b, _ := os.ReadFile(path)
	got := string(b)
	want := `// generated
tensor *atg_abs(tensor self) {
  PROTECT(
    auto outputs__ = torch::abs(*self);
    return new torch::Tensor(outputs__);
  )
  return nullptr;
}
void atg_nested(tensor *out__, tensor self) {
  torch_last_err = strdup("atg_nested is not available in libtorch 1.13.1");
}
int64_t atg_sparse_dim(tensor self) {
  torch_last_err = strdup("atg_sparse_dim is not available in libtorch 1.13.1");
  return 0;
}
`
	if got != want {
		t.Fatalf("after stub:\n%s\nwant:\n%s", got, want)
	}
	if n, err := stub(path, map[int]bool{1: true}, "1.13.1"); err != nil || n != 0 {
		t.Fatalf("a line outside any wrapper: stubbed %d, err %v; want 0, nil", n, err)
	}
	if _, err := stub(filepath.Join(t.TempDir(), "missing.h"), nil, "1"); err == nil {
		t.Fatal("a missing file: no error")
	}
}

func TestVersionFromHeader(t *testing.T) {
	h := "#pragma once\n#define TORCH_VERSION_MAJOR 2\n#define TORCH_VERSION_MINOR 1\n#define TORCH_VERSION_PATCH 0\n#define TORCH_VERSION \"2.1.0\"\n"
	if v := versionFromHeader(h); v != "2.1.0" {
		t.Fatalf("version %q, want 2.1.0", v)
	}
	if v := versionFromHeader("#define TORCH_VERSION_MAJOR 2\n"); v != "" {
		t.Fatalf("an incomplete header gave %q", v)
	}
}

// The system libtorch's key is the one scripts/setup.sh used before this
// command existed, so prepared copies stay valid; a LIBTORCH folder gets
// its own copy.
func TestCacheKey(t *testing.T) {
	if k := cacheKey(&torch{version: "1.13.1", system: true}); k != "gotch-v0.9.1-libtorch-1.13.1-cpu" {
		t.Fatalf("key %q", k)
	}
	a := cacheKey(&torch{version: "2.1.0", cuda: true, root: "/opt/libtorch"})
	b := cacheKey(&torch{version: "2.1.0", cuda: true, root: "/opt/other"})
	if !strings.HasPrefix(a, "gotch-v0.9.1-libtorch-2.1.0-cuda-") || a == b {
		t.Fatalf("keys %q and %q", a, b)
	}
}

func TestLibGoFlags(t *testing.T) {
	cpu := libGo(&torch{version: "2.1.0", lib: "/opt/t/lib"}, []string{"-I/opt/t/include"})
	for _, want := range []string{"package libtch", "-L/opt/t/lib -Wl,-rpath,/opt/t/lib", "-I/opt/t/include", "import \"C\""} {
		if !strings.Contains(cpu, want) {
			t.Fatalf("lib.go lacks %q:\n%s", want, cpu)
		}
	}
	if strings.Contains(cpu, "torch_cuda") {
		t.Fatal("a CPU libtorch links CUDA")
	}
	if !strings.Contains(libGo(&torch{version: "2.1.0", lib: "/l", cuda: true}, nil), "-ltorch_cuda") {
		t.Fatal("a CUDA libtorch does not link torch_cuda")
	}
}

func TestFindTorchRejectsAFolderWithoutHeaders(t *testing.T) {
	dir := t.TempDir()
	_, err := findTorch(dir, false)
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "torch.h") {
		t.Fatalf("err = %v, want one naming %s and torch.h", err, dir)
	}
	inc := filepath.Join(dir, "include/torch/csrc/api/include/torch")
	if err := os.MkdirAll(inc, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(inc, "torch.h"), nil, 0o644)
	os.WriteFile(filepath.Join(inc, "version.h"), []byte("#define TORCH_VERSION_MAJOR 2\n#define TORCH_VERSION_MINOR 1\n#define TORCH_VERSION_PATCH 0\n"), 0o644)
	tt, err := findTorch(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if tt.version != "2.1.0" || tt.system || tt.cuda || tt.lib != filepath.Join(dir, "lib") {
		t.Fatalf("torch %+v", tt)
	}
	os.WriteFile(filepath.Join(dir, "build-version"), []byte("2.1.0+cpu\n"), 0o644)
	if tt, err = findTorch(dir, false); err != nil || tt.version != "2.1.0" {
		t.Fatalf("with build-version: %+v, %v", tt, err)
	}
}

func TestModuleRoot(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "go.mod"), []byte("module example.com/x\n\ngo 1.22\n"), 0o644)
	sub := filepath.Join(root, "a", "b")
	os.MkdirAll(sub, 0o755)
	if got, err := moduleRoot(sub); err != nil || got != root {
		t.Fatalf("moduleRoot = %q, %v; want %q", got, err, root)
	}
	if _, err := moduleRoot("/"); err == nil || !strings.Contains(err.Error(), "go mod init") {
		t.Fatalf("no module: err = %v", err)
	}
}

// go.work is created with the module's go version, left alone when
// current, and edited (not replaced) when the user already has one.
func TestWriteWork(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "go.mod"), []byte("module example.com/x\n\ngo 1.22\n"), 0o644)
	changed, err := writeWork(root, "/cache/gotch")
	if err != nil || !changed {
		t.Fatalf("first write: %v, %v", changed, err)
	}
	b, _ := os.ReadFile(filepath.Join(root, "go.work"))
	want := "go 1.22\n\nuse .\n\nreplace github.com/sugarme/gotch v0.9.1 => /cache/gotch\n"
	if string(b) != want {
		t.Fatalf("go.work:\n%s\nwant:\n%s", b, want)
	}

	mine := "go 1.22\n\nuse ./tools\n"
	os.WriteFile(filepath.Join(root, "go.work"), []byte(mine), 0o644)
	os.MkdirAll(filepath.Join(root, "tools"), 0o755)
	if changed, err = writeWork(root, "/cache/gotch2"); err != nil || !changed {
		t.Fatalf("edit: %v, %v", changed, err)
	}
	b, _ = os.ReadFile(filepath.Join(root, "go.work"))
	for _, w := range []string{"./tools", "\t.\n", "github.com/sugarme/gotch v0.9.1 => /cache/gotch2"} {
		if !strings.Contains(string(b), w) {
			t.Fatalf("edited go.work lacks %q:\n%s", w, b)
		}
	}
	if changed, err = writeWork(root, "/cache/gotch2"); err != nil || changed {
		t.Fatalf("a second run changed go.work: %v, %v", changed, err)
	}

	os.WriteFile(filepath.Join(root, "go.mod"), []byte("module example.com/x\n"), 0o644)
	os.Remove(filepath.Join(root, "go.work"))
	if _, err := writeWork(root, "/c"); err == nil || !strings.Contains(err.Error(), "go directive") {
		t.Fatalf("go.mod without go line: err = %v", err)
	}
}
