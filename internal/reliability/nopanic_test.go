package reliability

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// allowed are the exceptions, each with its reason: "path:function".
var allowed = map[string]string{
	// F16ToF32/BF16ToF32/Float32s/Int64s: a length mismatch between the
	// caller's own slices (programmer error, like copy's contract); data
	// from File.Data always holds a whole number of elements (the header's
	// shape and offsets are checked when the file is opened).
	"safetensors/convert.go:checkLen": "caller's slice lengths, never file data",
}

// programs and tools are not library code: they may exit.
var skipDirs = map[string]bool{"cmd": true, "examples": true, "bench": true, "scripts": true, "testdata": true}

// Issue #19: no panic, os.Exit, log.Fatal*/Panic* or Must* call in library
// code (non-test, non-main files), except regexp.MustCompile of a constant
// pattern (it cannot fail) and the allowlist above.
func TestNoPanicInLibraryCode(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	var found []string
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "_") || skipDirs[rel] || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		if f.Name.Name == "main" {
			return nil
		}
		imports := map[string]string{} // local name → import path
		for _, im := range f.Imports {
			p := strings.Trim(im.Path.Value, `"`)
			name := p[strings.LastIndex(p, "/")+1:]
			if im.Name != nil {
				name = im.Name.Name
			}
			imports[name] = p
		}
		for _, decl := range f.Decls {
			fn := "(package level)"
			if fd, ok := decl.(*ast.FuncDecl); ok {
				fn = fd.Name.Name
			}
			ast.Inspect(decl, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				what := ""
				switch fun := call.Fun.(type) {
				case *ast.Ident:
					if fun.Name == "panic" && fun.Obj == nil {
						what = "panic"
					} else if strings.HasPrefix(fun.Name, "Must") {
						what = fun.Name
					}
				case *ast.SelectorExpr:
					pkg := ""
					if id, ok := fun.X.(*ast.Ident); ok {
						pkg = imports[id.Name]
					}
					name := fun.Sel.Name
					switch {
					case pkg == "os" && name == "Exit":
						what = "os.Exit"
					case pkg == "log" && (strings.HasPrefix(name, "Fatal") || strings.HasPrefix(name, "Panic")):
						what = "log." + name
					case pkg == "regexp" && strings.HasPrefix(name, "MustCompile"):
						if len(call.Args) == 1 {
							if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
								return true // a constant pattern cannot fail
							}
						}
						what = "regexp." + name + " of a non-constant pattern"
					case strings.HasPrefix(name, "Must"):
						what = name
					}
				}
				if what == "" {
					return true
				}
				key := filepath.ToSlash(rel) + ":" + fn
				if _, ok := allowed[key]; ok {
					return true
				}
				found = append(found, fset.Position(call.Pos()).String()+": "+what+" in "+fn)
				return true
			})
		}
		return nil
	})
	require.NoError(t, err)
	sort.Strings(found)
	require.Empty(t, found, "library code that can panic or end the process:\n%s", strings.Join(found, "\n"))
}
