package charts_test

import (
	"encoding/xml"
	"fmt"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gopeft/peft/charts"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

// svgDoc is what the tests read back from an SVG: its paths (with their
// stroke and fill colours and points) and its texts.
type svgDoc struct {
	paths []svgPath
	texts []string
}

type svgPath struct {
	stroke, fill string
	pts          [][2]float64
}

func readSVG(t *testing.T, path string) svgDoc {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	dec := xml.NewDecoder(f)
	var doc svgDoc
	root := ""
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if root == "" {
			root = se.Name.Local
		}
		switch se.Name.Local {
		case "path":
			var p svgPath
			for _, a := range se.Attr {
				switch a.Name.Local {
				case "d":
					p.pts = parsePathD(t, a.Value)
				case "style":
					for _, kv := range strings.Split(a.Value, ";") {
						k, v, _ := strings.Cut(kv, ":")
						switch k {
						case "stroke":
							p.stroke = strings.ToUpper(v)
						case "fill":
							p.fill = strings.ToUpper(v)
						}
					}
				}
			}
			doc.paths = append(doc.paths, p)
		case "text":
			var s string
			require.NoError(t, dec.DecodeElement(&s, &se))
			doc.texts = append(doc.texts, strings.TrimSpace(s))
		}
	}
	require.Equal(t, "svg", root, "%s is not an SVG document", path)
	return doc
}

// parsePathD reads the M/L points of a path (the charts draw straight
// segments only; arcs of glyphs are skipped).
func parsePathD(t *testing.T, d string) [][2]float64 {
	var pts [][2]float64
	for _, seg := range strings.FieldsFunc(d, func(r rune) bool { return r == 'M' || r == 'L' || r == 'Z' }) {
		x, y, ok := strings.Cut(seg, ",")
		if !ok {
			continue
		}
		fx, err1 := strconv.ParseFloat(strings.TrimSpace(x), 64)
		fy, err2 := strconv.ParseFloat(strings.TrimSpace(y), 64)
		if err1 != nil || err2 != nil {
			return nil // an arc or other command: not a polyline
		}
		pts = append(pts, [2]float64{fx, fy})
	}
	return pts
}

func hex(c color.RGBA) string { return fmt.Sprintf("#%02X%02X%02X", c.R, c.G, c.B) }

// longestStroke is the number of points of the longest path stroked in c
// (the series itself; its legend sample has two).
func (d svgDoc) longestStroke(c color.RGBA) int {
	n := 0
	for _, p := range d.paths {
		if p.stroke == hex(c) {
			n = max(n, len(p.pts))
		}
	}
	return n
}

func requirePNG(t *testing.T, path string, w, h int) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err, "%s is not a PNG", path)
	require.Equal(t, w, img.Bounds().Dx())
	require.Equal(t, h, img.Bounds().Dy())
}

func f(v float64) *float64 { return &v }

// A run's metrics.jsonl becomes one SVG and one PNG: the train loss has a
// point per logged step, the eval loss one per evaluation, the learning
// rate one per step, each in its colour and named in a legend.
func TestCurvesFromMetrics(t *testing.T) {
	dir := t.TempDir()
	metrics := filepath.Join(dir, train.MetricsFile)
	var lines []string
	for i := 1; i <= 30; i++ {
		r := train.Record{Step: i, Epoch: float64(i) / 10, Loss: f(3/float64(i) + 0.5), LR: f(1e-3 * float64(30-i) / 30)}
		if i%10 == 0 {
			r.EvalLoss = f(3/float64(i) + 0.7)
		}
		b, err := jsonLine(r)
		require.NoError(t, err)
		lines = append(lines, b)
	}
	require.NoError(t, os.WriteFile(metrics, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	recs, err := charts.ReadMetrics(metrics)
	require.NoError(t, err)
	require.Len(t, recs, 30)

	files, err := charts.Curves(recs, "run", filepath.Join(dir, "curves"))
	require.NoError(t, err)
	require.Equal(t, []string{filepath.Join(dir, "curves.svg"), filepath.Join(dir, "curves.png")}, files)
	doc := readSVG(t, files[0])
	require.Equal(t, 30, doc.longestStroke(charts.LossColor))
	require.Equal(t, 3, doc.longestStroke(charts.EvalLossColor))
	require.Equal(t, 30, doc.longestStroke(charts.LRColor))
	for _, want := range []string{"run", "train loss", "eval loss", "learning rate", "step", "loss"} {
		require.Contains(t, doc.texts, want)
	}
	// the loss falls: the series' last point is lower on the page than its
	// first (SVG y grows upwards here: the document flips the y axis)
	for _, p := range doc.paths {
		if p.stroke == hex(charts.LossColor) && len(p.pts) == 30 {
			require.Less(t, p.pts[29][1], p.pts[0][1])
		}
	}
	requirePNG(t, files[1], 672, 672) // 7 x 7 in at vgimg's 96 dpi

	// without learning rates: one panel
	for i := range recs {
		recs[i].LR = nil
	}
	files, err = charts.Curves(recs, "run", filepath.Join(dir, "loss-only"))
	require.NoError(t, err)
	require.Zero(t, readSVG(t, files[0]).longestStroke(charts.LRColor))
	requirePNG(t, files[1], 672, 384)
}

func TestReadMetricsErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "metrics.jsonl")
	require.NoError(t, os.WriteFile(bad, []byte(`{"step":1,"loss":2}`+"\n"+`{"step":2,"loss":`+"\n"), 0o644))
	_, err := charts.ReadMetrics(bad)
	require.ErrorContains(t, err, bad+": line 2")
	empty := filepath.Join(dir, "empty.jsonl")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	_, err = charts.ReadMetrics(empty)
	require.ErrorContains(t, err, "no records")
	_, err = charts.ReadMetrics(filepath.Join(dir, "missing.jsonl"))
	require.Error(t, err)
	_, err = charts.Curves([]charts.Record{{Step: 1, LR: f(1)}}, "", filepath.Join(dir, "x"))
	require.ErrorContains(t, err, "no loss")
}

// Each method's bar stacks the estimate's components: per component, the
// bars' heights are in the ratio of the estimates' values.
func TestMemoryBars(t *testing.T) {
	const mib = 1 << 20
	es := []*peft.MemoryEstimate{
		{Method: "full", Overhead: 200 * mib, Weights: 1024 * mib, Activations: 300 * mib, Gradients: 1024 * mib, OptimizerStates: 2048 * mib, Allocator: 240 * mib},
		{Method: "lora", Overhead: 200 * mib, Weights: 1030 * mib, Activations: 310 * mib, Gradients: 6 * mib, OptimizerStates: 12 * mib, Allocator: 248 * mib},
	}
	for _, e := range es {
		e.Total = e.Overhead + e.Weights + e.Activations + e.Gradients + e.OptimizerStates + e.Allocator
	}
	dir := t.TempDir()
	files, err := charts.MemoryBars(es, "memory", filepath.Join(dir, "memory"))
	require.NoError(t, err)
	doc := readSVG(t, files[0])
	value := func(e *peft.MemoryEstimate, c int) float64 {
		return float64([]int64{e.Overhead, e.Weights, e.Activations, e.Gradients, e.OptimizerStates, e.Allocator}[c])
	}
	for c, name := range charts.MemoryComponents {
		require.Contains(t, doc.texts, name)
		var heights []float64 // bars of this component, left to right; the legend swatch last
		for _, p := range doc.paths {
			if p.fill == hex(charts.ComponentColors[c]) && len(p.pts) >= 4 {
				lo, hi := p.pts[0][1], p.pts[0][1]
				for _, q := range p.pts {
					lo, hi = min(lo, q[1]), max(hi, q[1])
				}
				heights = append(heights, hi-lo)
			}
		}
		require.Len(t, heights, len(es)+1, name)
		require.InDelta(t, value(es[0], c)/value(es[1], c), heights[0]/heights[1], 0.01*value(es[0], c)/value(es[1], c), name)
	}
	require.Contains(t, doc.texts, "full")
	require.Contains(t, doc.texts, "lora")
	require.Contains(t, doc.texts, "peak memory (GiB)")
	requirePNG(t, files[1], (65*2+180)*96/72, 432)

	_, err = charts.MemoryBars(nil, "", filepath.Join(dir, "none"))
	require.ErrorContains(t, err, "no estimates")
}

// Each group gets a grey bar (before) and a blue one (after) whose heights
// are in the ratio of the values, each labelled with its percentage; the
// group labels and the legend are texts of the SVG.
func TestAccuracy(t *testing.T) {
	dir := t.TempDir()
	groups := []charts.BeforeAfter{{Label: "LoRA", Before: 0, After: 0.96}, {Label: "IA3", Before: 0.1, After: 0.48}}
	files, err := charts.Accuracy(groups, "held-out accuracy", filepath.Join(dir, "accuracy"))
	require.NoError(t, err)
	require.Equal(t, []string{filepath.Join(dir, "accuracy.svg"), filepath.Join(dir, "accuracy.png")}, files)
	doc := readSVG(t, files[0])
	bars := func(c color.RGBA) (xs, heights []float64) {
		for _, p := range doc.paths {
			if p.fill == hex(c) && len(p.pts) >= 4 {
				lo, hi := p.pts[0][1], p.pts[0][1]
				for _, q := range p.pts {
					lo, hi = min(lo, q[1]), max(hi, q[1])
				}
				xs = append(xs, p.pts[0][0])
				heights = append(heights, hi-lo)
			}
		}
		return xs, heights
	}
	// before: a zero-height bar for LoRA, IA3's, then the legend swatch
	bx, bh := bars(charts.BeforeColor)
	ax, ah := bars(charts.AfterColor)
	require.Len(t, bh, 3)
	require.Len(t, ah, 3)
	require.InDelta(t, 0, bh[0], 1e-6)
	require.InDelta(t, 0.96/0.48, ah[0]/ah[1], 0.01)
	require.InDelta(t, 0.48/0.1, ah[1]/bh[1], 0.05)
	// the after bar stands right of its before bar, the groups in order
	require.Less(t, bx[0], ax[0])
	require.Less(t, ax[0], bx[1])
	require.Less(t, bx[1], ax[1])
	for _, want := range []string{"held-out accuracy", "LoRA", "IA3", "before tuning", "after tuning", "accuracy (%)", "0%", "96%", "10%", "48%"} {
		require.Contains(t, doc.texts, want)
	}
	requirePNG(t, files[1], 480, 432) // 5 in (the minimum width) × 4.5 in at 96 dpi

	_, err = charts.Accuracy(nil, "", filepath.Join(dir, "none"))
	require.ErrorContains(t, err, "no accuracies")
	_, err = charts.Accuracy([]charts.BeforeAfter{{Label: "prompt", Before: 0, After: 1.5}}, "", filepath.Join(dir, "bad"))
	require.ErrorContains(t, err, "prompt")
}
