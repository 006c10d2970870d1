// Package safetensors reads and writes the HuggingFace safetensors checkpoint
// format without any dependency beyond the Go standard library, and opens
// sharded checkpoints described by a model.safetensors.index.json file.
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of
// JSON header and then the raw data buffer. The header maps every tensor name
// to its dtype, shape and [begin, end) byte range inside the data buffer, and
// may carry a "__metadata__" object of string pairs. Tensors are stored
// row-major and little-endian.
//
// Open maps a file into memory copy-on-write (syscall.Mmap with MAP_PRIVATE)
// and validates the whole header up front, so that File.Data can hand out
// slices of the mapping without copying. The file is never written: a write
// to such a slice gives the writing process a private copy of that page
// (this is what lets a model's frozen weights be views of the file and a
// merge still change one of them). Pages that are only read stay the
// kernel's page cache, shared between processes and evictable. The slices
// become invalid once the File is closed. Copy the bytes (or decode them with Float32s, Int64s,
// F16ToF32, BF16ToF32) when they must outlive the File.
//
// Write produces files in the same layout as the Python library (tensors
// sorted by name, header padded with spaces to a multiple of 8 bytes) and
// replaces the destination atomically.
package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
)

// DType is a safetensors element type name as it appears in the header.
type DType string

// The element types this package understands.
const (
	F64  DType = "F64"
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I64  DType = "I64"
	I32  DType = "I32"
	I16  DType = "I16"
	I8   DType = "I8"
	U8   DType = "U8"
	Bool DType = "BOOL"
)

// Size returns the number of bytes per element, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case F64, I64:
		return 8
	case F32, I32:
		return 4
	case F16, BF16, I16:
		return 2
	case I8, U8, Bool:
		return 1
	}
	return 0
}

// ErrNotFound is wrapped by the errors returned when a tensor name is absent.
var ErrNotFound = errors.New("tensor not found")

// metadataKey is the reserved header key holding free-form string metadata.
const metadataKey = "__metadata__"

// TensorInfo describes one tensor of a file. Begin and End are byte offsets
// relative to the start of the data buffer (not of the file).
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64
	Begin int64
	End   int64
}

// NumElements returns the product of the shape (1 for a scalar).
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// numBytes returns numel(shape)*size, or an error if a dimension is negative
// or the product overflows int64.
func numBytes(shape []int64, size int) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d in shape %v", d, shape)
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("shape %v is too large", shape)
		}
		n *= d
	}
	if n > math.MaxInt64/int64(size) {
		return 0, fmt.Errorf("shape %v is too large", shape)
	}
	return n * int64(size), nil
}

// File is an open, memory-mapped safetensors file. Its read methods may be
// called from several goroutines at once, but not concurrently with Close.
type File struct {
	path   string
	mm     []byte // whole file mapping; nil once closed
	data   []byte // the data buffer, a sub-slice of mm
	infos  map[string]TensorInfo
	order  []string
	meta   map[string]string
	closed bool
}

// Open maps the safetensors file at path (copy-on-write) and validates its header:
// the JSON must parse, every dtype must be known, every data_offsets range
// must match its shape and dtype, lie inside the data buffer and not overlap
// another tensor.
func Open(path string) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: open: %w", err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: stat: %w", path, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s: is a directory, not a safetensors file", path)
	}
	size := st.Size()
	if size < 8 {
		return nil, fmt.Errorf("%s: file is %d bytes, shorter than the 8-byte header length", path, size)
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("%s: file of %d bytes is too large to map", path, size)
	}
	mm, err := syscall.Mmap(int(fd.Fd()), 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	f := &File{path: path, mm: mm}
	if err := f.parse(); err != nil {
		_ = syscall.Munmap(mm)
		return nil, err
	}
	return f, nil
}

// headerEntry is one tensor's header object; pointers detect missing fields.
type headerEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

func (f *File) parse() error {
	p := f.path
	fileSize := int64(len(f.mm))
	n := binary.LittleEndian.Uint64(f.mm[:8])
	if n > uint64(fileSize-8) {
		return fmt.Errorf("%s: truncated: header length %d exceeds the %d bytes that follow it", p, n, fileSize-8)
	}
	hdr := f.mm[8 : 8+int64(n)]
	f.data = f.mm[8+int64(n):]
	dataLen := int64(len(f.data))

	var raw json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return fmt.Errorf("%s: header is not valid JSON: %v", p, err)
	}
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%s: header is not valid JSON: %v", p, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("%s: header is not valid JSON: want an object, got %v", p, tok)
	}
	f.infos = map[string]TensorInfo{}
	seenMeta := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%s: header is not valid JSON: %v", p, err)
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("%s: header is not valid JSON: unexpected %v", p, tok)
		}
		if key == metadataKey {
			if seenMeta {
				return fmt.Errorf("%s: header has %q twice", p, metadataKey)
			}
			seenMeta = true
			var meta map[string]string
			if err := dec.Decode(&meta); err != nil {
				return fmt.Errorf("%s: header field %q: must map strings to strings: %v", p, metadataKey, err)
			}
			f.meta = meta
			continue
		}
		if _, dup := f.infos[key]; dup {
			return fmt.Errorf("%s: tensor %q appears twice in the header", p, key)
		}
		var e headerEntry
		if err := dec.Decode(&e); err != nil {
			return fmt.Errorf("%s: tensor %q: invalid header entry: %v", p, key, err)
		}
		info, err := checkEntry(key, e, dataLen)
		if err != nil {
			return fmt.Errorf("%s: tensor %q: %v", p, key, err)
		}
		f.infos[key] = info
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return fmt.Errorf("%s: header is not valid JSON: %v", p, err)
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return fmt.Errorf("%s: header is not valid JSON after the top-level object: %v", p, err)
		}
		return fmt.Errorf("%s: header is not valid JSON: unexpected %v after the top-level object", p, tok)
	}

	f.order = make([]string, 0, len(f.infos))
	for name := range f.infos {
		f.order = append(f.order, name)
	}
	sort.Slice(f.order, func(i, j int) bool {
		a, b := f.infos[f.order[i]], f.infos[f.order[j]]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		if a.End != b.End {
			return a.End < b.End
		}
		return a.Name < b.Name
	})
	// Sorted by Begin, two non-empty ranges overlap iff one starts before
	// the furthest end seen so far. Empty tensors occupy no bytes.
	var last *TensorInfo
	for _, name := range f.order {
		info := f.infos[name]
		if info.Begin == info.End {
			continue
		}
		if last != nil && info.Begin < last.End {
			return fmt.Errorf("%s: tensors %q [%d, %d) and %q [%d, %d) overlap",
				p, last.Name, last.Begin, last.End, info.Name, info.Begin, info.End)
		}
		if last == nil || info.End > last.End {
			i := info
			last = &i
		}
	}
	return nil
}

func checkEntry(name string, e headerEntry, dataLen int64) (TensorInfo, error) {
	if e.DType == nil {
		return TensorInfo{}, errors.New(`missing field "dtype"`)
	}
	if e.Shape == nil {
		return TensorInfo{}, errors.New(`missing field "shape"`)
	}
	if e.DataOffsets == nil {
		return TensorInfo{}, errors.New(`missing field "data_offsets"`)
	}
	dt := DType(*e.DType)
	if dt.Size() == 0 {
		return TensorInfo{}, fmt.Errorf("unknown dtype %q", *e.DType)
	}
	shape := *e.Shape
	if shape == nil {
		shape = []int64{}
	}
	want, err := numBytes(shape, dt.Size())
	if err != nil {
		return TensorInfo{}, fmt.Errorf(`field "shape": %v`, err)
	}
	off := *e.DataOffsets
	if len(off) != 2 {
		return TensorInfo{}, fmt.Errorf(`field "data_offsets" must have 2 elements, has %d`, len(off))
	}
	begin, end := off[0], off[1]
	if begin < 0 || end < begin {
		return TensorInfo{}, fmt.Errorf(`field "data_offsets" [%d, %d] is not a valid range`, begin, end)
	}
	if end-begin != want {
		return TensorInfo{}, fmt.Errorf(`field "data_offsets" [%d, %d] spans %d bytes but shape %v of %s needs %d`,
			begin, end, end-begin, shape, dt, want)
	}
	if end > dataLen {
		return TensorInfo{}, fmt.Errorf(`truncated: field "data_offsets" [%d, %d] lies beyond the %d-byte data buffer`,
			begin, end, dataLen)
	}
	return TensorInfo{Name: name, DType: dt, Shape: shape, Begin: begin, End: end}, nil
}

// Path returns the path the file was opened with.
func (f *File) Path() string { return f.path }

// Names returns the tensor names in file order (sorted by data offset).
func (f *File) Names() []string { return append([]string(nil), f.order...) }

// Info returns the description of the named tensor.
func (f *File) Info(name string) (TensorInfo, bool) {
	info, ok := f.infos[name]
	if ok {
		info.Shape = append([]int64{}, info.Shape...)
	}
	return info, ok
}

// Data returns the named tensor's bytes as a slice of the copy-on-write
// mapping (no copy; writes never reach the file). The slice is valid until
// Close.
func (f *File) Data(name string) ([]byte, error) {
	if f.closed {
		return nil, fmt.Errorf("%s: tensor %q: file is closed", f.path, name)
	}
	info, ok := f.infos[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: %w", f.path, name, ErrNotFound)
	}
	return f.data[info.Begin:info.End:info.End], nil
}

// Metadata returns a copy of the header's "__metadata__" map (nil if absent).
func (f *File) Metadata() map[string]string {
	if f.meta == nil {
		return nil
	}
	m := make(map[string]string, len(f.meta))
	for k, v := range f.meta {
		m[k] = v
	}
	return m
}

// Close unmaps the file. It is safe to call more than once; slices returned
// by Data must not be used afterwards.
func (f *File) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	mm := f.mm
	f.mm, f.data = nil, nil
	if err := syscall.Munmap(mm); err != nil {
		return fmt.Errorf("%s: munmap: %w", f.path, err)
	}
	return nil
}

// Tensor is one tensor to write: row-major, little-endian bytes.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  []byte
}

// Write stores tensors and optional metadata as a safetensors file at path.
// Tensors may be given in any order; they are written sorted by name. Every
// name must be non-empty, unique and not "__metadata__", every dtype known and
// len(Data) must equal numel(Shape)*DType.Size(). The file is written to a
// temporary file in the same directory, fsynced and renamed over path, so a
// failed Write never leaves a partial file at path.
func Write(path string, tensors []Tensor, metadata map[string]string) error {
	sorted := append([]Tensor(nil), tensors...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })

	var hdr bytes.Buffer
	hdr.WriteByte('{')
	if len(metadata) > 0 {
		m, err := json.Marshal(metadata) // keys sorted
		if err != nil {
			return fmt.Errorf("%s: metadata: %v", path, err)
		}
		hdr.WriteString(`"` + metadataKey + `":`)
		hdr.Write(m)
	}
	var off int64
	for i, t := range sorted {
		if t.Name == "" {
			return fmt.Errorf("%s: tensor %d (after sorting by name) has an empty name", path, i)
		}
		if t.Name == metadataKey {
			return fmt.Errorf("%s: tensor name %q is reserved", path, t.Name)
		}
		if i > 0 && sorted[i-1].Name == t.Name {
			return fmt.Errorf("%s: tensor %q is given twice", path, t.Name)
		}
		if t.DType.Size() == 0 {
			return fmt.Errorf("%s: tensor %q: unknown dtype %q", path, t.Name, string(t.DType))
		}
		want, err := numBytes(t.Shape, t.DType.Size())
		if err != nil {
			return fmt.Errorf("%s: tensor %q: %v", path, t.Name, err)
		}
		if int64(len(t.Data)) != want {
			return fmt.Errorf("%s: tensor %q: has %d bytes of data but shape %v of %s needs %d",
				path, t.Name, len(t.Data), t.Shape, t.DType, want)
		}
		if hdr.Len() > 1 {
			hdr.WriteByte(',')
		}
		name, _ := json.Marshal(t.Name) // a string always marshals
		hdr.Write(name)
		hdr.WriteString(`:{"dtype":"` + string(t.DType) + `","shape":[`)
		for k, d := range t.Shape {
			if k > 0 {
				hdr.WriteByte(',')
			}
			hdr.WriteString(strconv.FormatInt(d, 10))
		}
		hdr.WriteString(`],"data_offsets":[` + strconv.FormatInt(off, 10) + "," + strconv.FormatInt(off+want, 10) + "]}")
		off += want
	}
	hdr.WriteByte('}')
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}

	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("%s: create temporary file: %w", path, err)
	}
	tmpName := tmp.Name()
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()

	w := bufio.NewWriterSize(tmp, 1<<20)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(hdr.Len()))
	w.Write(n[:])
	w.Write(hdr.Bytes())
	for _, t := range sorted {
		w.Write(t.Data)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("%s: write: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("%s: chmod: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("%s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: close: %w", path, err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("%s: rename: %w", path, err)
	}
	committed = true
	// Make the rename durable; some filesystems refuse to fsync a directory,
	// which is not worth failing a completed write for.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
