// Command gopeft-setup prepares a Go module to build against gopeft: it
// finds libtorch, prepares a copy of gotch v0.9.1 that compiles against
// it, and points the module's go.work at that copy with a replace.
//
// Run it in your own module, after `go get github.com/gopeft/peft`:
//
//	go run github.com/gopeft/peft/cmd/gopeft-setup
//
// (the version is the one your go.mod requires). It is pure Go on purpose:
// it must compile before gotch can, so it imports nothing that links
// libtorch. The repository's own `make setup` (scripts/setup.sh) runs the
// same command with -install.
//
// Steps:
//
//  1. libtorch: $LIBTORCH (or -libtorch), an unzipped official build such
//     as libtorch 2.1.0 cxx11-ABI (CPU or CUDA); otherwise the system's
//     (Debian/Ubuntu: libtorch-dev, and libgloo-dev, whose headers the
//     library's dist and train packages build against). When they are
//     missing, the command says which apt packages to install, and installs
//     them only with -install.
//  2. BLAS: with the system libtorch, libblas.so.3, liblapack.so.3 and
//     libopenblas.so.0 must resolve to the OpenMP OpenBLAS
//     (libopenblas0-openmp); the pthread build makes training ~5x slower.
//     It warns with the command to fix it, and switches them with -install.
//  3. gotch: copies gotch v0.9.1 (from the Go module cache) to
//     $GOPEFT_CACHE (default ~/.cache/gopeft), writes its cgo flags for
//     this libtorch and, against a libtorch older than 2.1, gives each
//     generated wrapper that does not compile a body returning the Go error
//     "<name> is not available in libtorch <version>" (g++ -fsyntax-only
//     finds them). Done once per libtorch; later runs take well under a
//     second.
//  4. go.work: creates the module's go.work (use . and the replace), or
//     adds the replace and the module to an existing one. go.work holds a
//     path of this machine: do not commit it.
//
// It never installs anything else (no demo data, no tokenizers).
//
// When go.work points at a prepared copy that was deleted, the go command
// refuses the workspace before this program runs; GOWORK=off go run … (as
// scripts/setup.sh does) prepares it again and rewrites go.work.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// GotchVersion is the gotch release gopeft's go.mod requires.
const GotchVersion = "v0.9.1"

const gotchModule = "github.com/sugarme/gotch"

// aptPackages are what a Debian/Ubuntu machine needs for the system libtorch.
var aptPackages = []string{"libtorch-dev", "libopenblas0-openmp", "libgloo-dev"}

func main() {
	var o options
	flag.StringVar(&o.libtorch, "libtorch", os.Getenv("LIBTORCH"), "libtorch folder (include/, lib/); default $LIBTORCH, else the system's")
	flag.StringVar(&o.cache, "cache", os.Getenv("GOPEFT_CACHE"), "where prepared gotch copies live; default $GOPEFT_CACHE, else ~/.cache/gopeft")
	flag.StringVar(&o.dir, "C", ".", "run in this folder (the module to set up)")
	flag.BoolVar(&o.install, "install", false, "install missing apt packages and switch the BLAS alternatives (needs root)")
	flag.BoolVar(&o.noWork, "no-work", false, "prepare gotch only; print its folder and do not write go.work")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run github.com/gopeft/peft/cmd/gopeft-setup [flags]\n\n"+
			"Prepares gotch %s for the installed libtorch and writes go.work's replace in the current module.\n\n", GotchVersion)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "gopeft-setup: ERROR:", err)
		os.Exit(1)
	}
}

type options struct {
	libtorch, cache, dir string
	install, noWork      bool
}

func say(format string, args ...any) { fmt.Printf("gopeft-setup: "+format+"\n", args...) }

func warn(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gopeft-setup: WARNING: "+format+"\n", args...)
}

func run(o options) error {
	torch, err := findTorch(o.libtorch, o.install)
	if err != nil {
		return err
	}
	if torch.system {
		checkBLAS(torch.arch, o.install)
	}
	cache := o.cache
	if cache == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("no cache folder: set GOPEFT_CACHE (%w)", err)
		}
		cache = filepath.Join(base, "gopeft")
	}
	gotch, err := prepareGotch(cache, torch)
	if err != nil {
		return err
	}
	if o.noWork {
		fmt.Println(gotch)
		return nil
	}
	root, err := moduleRoot(o.dir)
	if err != nil {
		return err
	}
	changed, err := writeWork(root, gotch)
	if err != nil {
		return err
	}
	if changed {
		say("wrote %s (gotch from %s)", filepath.Join(root, "go.work"), gotch)
	}
	kind := "CPU"
	if torch.cuda {
		kind = "CUDA"
	}
	say("ok: libtorch %s (%s), gotch %s", torch.version, kind, GotchVersion)
	return nil
}

// torch is an installed libtorch.
type torch struct {
	inc, lib, version string
	cuda, system      bool
	arch              string // multiarch triple, for the system libtorch
	root              string // $LIBTORCH, when given
}

func findTorch(dir string, install bool) (*torch, error) {
	if dir != "" {
		dir, err := filepath.Abs(dir)
		if err != nil {
			return nil, err
		}
		t := &torch{inc: filepath.Join(dir, "include"), lib: filepath.Join(dir, "lib"), root: dir}
		if !exists(filepath.Join(t.inc, "torch/csrc/api/include/torch/torch.h")) {
			return nil, fmt.Errorf("LIBTORCH=%s has no include/torch/csrc/api/include/torch/torch.h (want an unzipped libtorch, cxx11 ABI)", dir)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "build-version")); err == nil {
			t.version, _, _ = strings.Cut(strings.TrimSpace(string(b)), "+")
		}
		return t.finish()
	}
	arch := multiarch()
	t := &torch{inc: "/usr/include", lib: "/usr/lib/" + arch, system: true, arch: arch}
	haveTorch := exists(filepath.Join(t.inc, "torch/csrc/api/include/torch/torch.h")) && exists(filepath.Join(t.lib, "libtorch.so"))
	haveBLAS := dpkgInstalled("libopenblas0-openmp")
	// Gloo's headers: package dist (c10d's process groups, which
	// train.Trainer links) compiles against them; libtorch-dev does not
	// pull them in.
	haveGloo := exists("/usr/include/gloo/algorithm.h")
	if !haveTorch || !haveBLAS || !haveGloo {
		var missing []string
		for _, p := range []struct {
			name string
			have bool
		}{{"libtorch-dev", haveTorch}, {"libopenblas0-openmp", haveBLAS}, {"libgloo-dev", haveGloo}} {
			if !p.have {
				missing = append(missing, p.name)
			}
		}
		hint := "apt-get install " + strings.Join(missing, " ")
		switch {
		case install && hasCommand("apt-get"):
			say("installing %s with apt-get", strings.Join(missing, " "))
			if err := aptInstall(missing); err != nil {
				return nil, fmt.Errorf("%s failed: %w", hint, err)
			}
		case !haveTorch:
			return nil, fmt.Errorf("no libtorch found. On Debian/Ubuntu: sudo %s (then run this again); "+
				"or unzip libtorch 2.1.0 (cxx11 ABI) from pytorch.org and set LIBTORCH=/path/to/libtorch", hint)
		case !haveGloo:
			return nil, fmt.Errorf("no Gloo headers (/usr/include/gloo): the library's train and dist packages build "+
				"against them. On Debian/Ubuntu: sudo %s (then run this again)", hint)
		default:
			warn("libopenblas0-openmp is not installed: libtorch's matmuls will be slow (sudo %s)", hint)
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "libtorch-dev").Output(); err == nil {
		t.version, _, _ = strings.Cut(strings.TrimSpace(string(out)), "+")
	}
	return t.finish()
}

// finish fills the version from version.h when the packaging did not say,
// and detects CUDA.
func (t *torch) finish() (*torch, error) {
	if t.version == "" {
		b, err := os.ReadFile(filepath.Join(t.inc, "torch/csrc/api/include/torch/version.h"))
		if err == nil {
			t.version = versionFromHeader(string(b))
		}
	}
	if t.version == "" {
		return nil, fmt.Errorf("cannot tell the libtorch version under %s (no build-version, no torch/version.h)", t.inc)
	}
	t.cuda = exists(filepath.Join(t.lib, "libtorch_cuda.so"))
	return t, nil
}

var versionDefine = regexp.MustCompile(`(?m)^#define TORCH_VERSION_(MAJOR|MINOR|PATCH) (\d+)`)

// versionFromHeader reads MAJOR.MINOR.PATCH from torch/version.h.
func versionFromHeader(h string) string {
	v := map[string]string{}
	for _, m := range versionDefine.FindAllStringSubmatch(h, -1) {
		v[m[1]] = m[2]
	}
	if v["MAJOR"] == "" || v["MINOR"] == "" || v["PATCH"] == "" {
		return ""
	}
	return v["MAJOR"] + "." + v["MINOR"] + "." + v["PATCH"]
}

// checkBLAS makes sure the BLAS alternatives resolve to the OpenMP
// OpenBLAS: python3-torch pulls in the pthread build, which wins the
// alternatives by priority and fights libtorch's OpenMP threads.
func checkBLAS(arch string, install bool) {
	if !hasCommand("update-alternatives") {
		return
	}
	for _, name := range []string{"libblas.so.3", "liblapack.so.3", "libopenblas.so.0"} {
		alt := name + "-" + arch
		want := "/usr/lib/" + arch + "/openblas-openmp/" + name
		out, _ := exec.Command("update-alternatives", "--query", alt).Output()
		cur := ""
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "Value: "); ok {
				cur = strings.TrimSpace(v)
			}
		}
		if cur == want {
			continue
		}
		if cur == "" {
			cur = "nothing"
		}
		fix := "update-alternatives --set " + alt + " " + want
		switch {
		case !exists(want):
			warn("%s resolves to %s, not the OpenMP OpenBLAS: matmuls will be slow (sudo apt-get install libopenblas0-openmp)", name, cur)
		case install:
			say("%s resolved to %s; switching it to the OpenMP OpenBLAS", name, cur)
			if out, err := exec.Command("update-alternatives", "--set", alt, want).CombinedOutput(); err != nil {
				warn("%s failed (%v): %s", fix, err, bytes.TrimSpace(out))
			}
		default:
			warn("%s resolves to %s, not the OpenMP OpenBLAS: training is ~5x slower (sudo %s)", name, cur, fix)
		}
	}
}

// cacheKey names the prepared gotch copy for this libtorch.
func cacheKey(t *torch) string {
	kind := "cpu"
	if t.cuda {
		kind = "cuda"
	}
	key := fmt.Sprintf("gotch-%s-libtorch-%s-%s", GotchVersion, t.version, kind)
	if t.root != "" {
		h := sha256.Sum256([]byte(t.root))
		key += "-" + hex.EncodeToString(h[:4])
	}
	return key
}

// prepareGotch returns the folder of a gotch copy built for t, making it
// when absent.
func prepareGotch(cache string, t *torch) (string, error) {
	dst := filepath.Join(cache, cacheKey(t))
	if exists(filepath.Join(dst, ".gopeft-ready")) {
		return dst, nil
	}
	say("preparing gotch %s for libtorch %s in %s (a minute or two)", GotchVersion, t.version, dst)
	src, err := downloadGotch()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cache, filepath.Base(dst)+".tmp.")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // left only on failure: the ready copy is renamed away
	if err := copyTree(src, tmp); err != nil {
		return "", fmt.Errorf("copying %s: %w", src, err)
	}
	inc := []string{"-I" + t.inc, "-I" + filepath.Join(t.inc, "torch/csrc/api/include")}
	if err := os.WriteFile(filepath.Join(tmp, "libtch", "lib.go"), []byte(libGo(t, inc)), 0o644); err != nil {
		return "", err
	}
	n, err := patchLibtch(filepath.Join(tmp, "libtch"), t.version, inc)
	if err != nil {
		return "", err
	}
	say("libtch compiles against libtorch %s (%d wrappers stubbed)", t.version, n)
	if err := os.WriteFile(filepath.Join(tmp, ".gopeft-ready"), nil, 0o644); err != nil {
		return "", err
	}
	if err := os.RemoveAll(dst); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// libGo is gotch's libtch/lib.go with the cgo flags of this libtorch.
func libGo(t *torch, inc []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "// Code generated by gopeft's cmd/gopeft-setup for libtorch %s. DO NOT EDIT.\n\n", t.version)
	b.WriteString("package libtch\n\n")
	fmt.Fprintf(&b, "// #cgo LDFLAGS: -lstdc++ -ltorch -lc10 -ltorch_cpu -L%s -Wl,-rpath,%s\n", t.lib, t.lib)
	if t.cuda {
		b.WriteString("// #cgo LDFLAGS: -L/usr/local/cuda/lib64 -lcuda -lcudart -lcublas -lcudnn -lnvrtc -lc10_cuda -ltorch_cuda\n")
	}
	b.WriteString("// #cgo CFLAGS: -I${SRCDIR} -O3 -Wall -Wno-unused-variable -Wno-deprecated-declarations -Wno-c++11-narrowing -Wno-sign-compare -Wno-unused-function\n")
	fmt.Fprintf(&b, "// #cgo CXXFLAGS: -std=c++17 -I${SRCDIR} -O3 -Wno-deprecated-declarations %s\n", strings.Join(inc, " "))
	b.WriteString("import \"C\"\n")
	return b.String()
}

// downloadGotch returns gotch's folder in the Go module cache, downloading
// it through the module proxy when needed.
func downloadGotch() (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", gotchModule+"@"+GotchVersion)
	cmd.Dir = os.TempDir() // outside any module or workspace
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &info); jerr == nil && info.Error != "" {
		return "", fmt.Errorf("go mod download %s@%s: %s", gotchModule, GotchVersion, info.Error)
	}
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w: %s", gotchModule, GotchVersion, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if info.Dir == "" || !exists(info.Dir) {
		return "", fmt.Errorf("go mod download %s@%s gave no folder", gotchModule, GotchVersion)
	}
	return info.Dir, nil
}

// moduleRoot is the folder of the go.mod that governs dir.
func moduleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if exists(filepath.Join(d, "go.mod")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod in %s or above: run gopeft-setup inside your Go module (go mod init first)", dir)
		}
	}
}

var goDirective = regexp.MustCompile(`(?m)^go (\S+)`)

// writeWork makes root's go.work use root and replace gotch with the
// prepared copy; it reports whether the file changed.
func writeWork(root, gotch string) (bool, error) {
	work := filepath.Join(root, "go.work")
	old, err := os.ReadFile(work)
	if errors.Is(err, os.ErrNotExist) {
		mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
		if err != nil {
			return false, err
		}
		m := goDirective.FindSubmatch(mod)
		if m == nil {
			return false, fmt.Errorf("%s: no go directive", filepath.Join(root, "go.mod"))
		}
		text := fmt.Sprintf("go %s\n\nuse .\n\nreplace %s %s => %s\n", m[1], gotchModule, GotchVersion, gotch)
		return true, writeAtomic(work, []byte(text))
	}
	if err != nil {
		return false, err
	}
	cmd := exec.Command("go", "work", "edit", "-use=.", "-replace="+gotchModule+"@"+GotchVersion+"="+gotch, work)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return false, fmt.Errorf("go work edit %s: %w: %s", work, err, bytes.TrimSpace(out))
	}
	now, err := os.ReadFile(work)
	return !bytes.Equal(old, now), err
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// copyTree copies the regular files and folders of src into dst (which
// exists), writable by the owner (the module cache is read-only).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func hasCommand(name string) bool { _, err := exec.LookPath(name); return err == nil }

func multiarch() string {
	if out, err := exec.Command("gcc", "-print-multiarch").Output(); err == nil {
		if a := strings.TrimSpace(string(out)); a != "" {
			return a
		}
	}
	return "x86_64-linux-gnu"
}

func dpkgInstalled(pkg string) bool {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", pkg).Output()
	return err == nil && strings.Contains(string(out), "install ok installed")
}

func aptInstall(pkgs []string) error {
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq"}, pkgs...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return err
		}
	}
	return nil
}
