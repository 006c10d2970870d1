package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// Standard file names of a HuggingFace checkpoint folder.
const (
	SingleFileName = "model.safetensors"
	IndexFileName  = "model.safetensors.index.json"
)

// Index is a sharded checkpoint's index file: WeightMap maps each tensor name
// to the shard file (relative to the index's folder) that holds it.
type Index struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

// ReadIndex reads a model.safetensors.index.json file.
func ReadIndex(path string) (*Index, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: read index: %w", err)
	}
	var idx Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%s: index is not valid JSON: %v", path, err)
	}
	if idx.WeightMap == nil {
		return nil, fmt.Errorf("%s: index has no \"weight_map\"", path)
	}
	for name, shard := range idx.WeightMap {
		if shard == "" || !filepath.IsLocal(shard) {
			return nil, fmt.Errorf("%s: \"weight_map\" entry %q: shard %q is not a file name inside the checkpoint folder", path, name, shard)
		}
	}
	return &idx, nil
}

// Shards returns the distinct shard file names of the index, sorted.
func (idx *Index) Shards() []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range idx.WeightMap {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// Set is one view over the tensors of several safetensors files, such as the
// shards of a checkpoint. Tensor names are unique across its files.
type Set struct {
	files []*File
	where map[string]*File
	names []string
}

// OpenDir opens the HuggingFace checkpoint folder dir: model.safetensors if
// it exists, otherwise model.safetensors.index.json and every shard it names.
// With an index, every shard must exist and hold the tensors the weight_map
// assigns to it.
func OpenDir(dir string) (*Set, error) {
	single := filepath.Join(dir, SingleFileName)
	if _, err := os.Stat(single); err == nil {
		return OpenFiles(single)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	indexPath := filepath.Join(dir, IndexFileName)
	if _, err := os.Stat(indexPath); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: no %s or %s in the folder", dir, SingleFileName, IndexFileName)
	}
	idx, err := ReadIndex(indexPath)
	if err != nil {
		return nil, err
	}
	shards := idx.Shards()
	paths := make([]string, len(shards))
	for i, s := range shards {
		paths[i] = filepath.Join(dir, s)
		if _, err := os.Stat(paths[i]); err != nil {
			return nil, fmt.Errorf("%s: shard %q: %w", indexPath, s, err)
		}
	}
	set, err := OpenFiles(paths...)
	if err != nil {
		return nil, err
	}
	byPath := map[string]*File{}
	for _, f := range set.files {
		byPath[f.Path()] = f
	}
	names := make([]string, 0, len(idx.WeightMap))
	for name := range idx.WeightMap {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		shard := idx.WeightMap[name]
		f := byPath[filepath.Join(dir, shard)]
		if _, ok := f.Info(name); !ok {
			set.Close()
			return nil, fmt.Errorf("%s: tensor %q: weight_map names shard %q, which does not contain it", indexPath, name, shard)
		}
	}
	return set, nil
}

// OpenFiles opens the given safetensors files as one Set. A tensor name may
// appear in only one of them.
func OpenFiles(paths ...string) (*Set, error) {
	s := &Set{where: map[string]*File{}}
	for _, p := range paths {
		f, err := Open(p)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.files = append(s.files, f)
		for _, name := range f.order {
			if prev, dup := s.where[name]; dup {
				s.Close()
				return nil, fmt.Errorf("safetensors: tensor %q is in both %s and %s", name, prev.Path(), f.Path())
			}
			s.where[name] = f
			s.names = append(s.names, name)
		}
	}
	sort.Strings(s.names)
	return s, nil
}

// Files returns the set's files in the order they were opened.
func (s *Set) Files() []*File { return append([]*File(nil), s.files...) }

// Names returns every tensor name in the set, sorted.
func (s *Set) Names() []string { return append([]string(nil), s.names...) }

// Info returns the named tensor's description and the file holding it.
func (s *Set) Info(name string) (TensorInfo, *File, bool) {
	f, ok := s.where[name]
	if !ok {
		return TensorInfo{}, nil, false
	}
	info, _ := f.Info(name)
	return info, f, true
}

// Data returns the named tensor's bytes (a slice of its file's
// copy-on-write mapping, valid until Close).
func (s *Set) Data(name string) ([]byte, error) {
	f, ok := s.where[name]
	if !ok {
		files := make([]string, len(s.files))
		for i, f := range s.files {
			files[i] = f.Path()
		}
		return nil, fmt.Errorf("safetensors: tensor %q in none of %v: %w", name, files, ErrNotFound)
	}
	return f.Data(name)
}

// Close closes every file of the set. It is safe to call more than once.
func (s *Set) Close() error {
	var errs []error
	for _, f := range s.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
