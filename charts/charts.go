// Package charts draws what people would rather look at than read: a
// training run's loss, eval loss and learning rate from the Trainer's
// metrics.jsonl, and peft.EstimateMemory's breakdown per method as stacked
// bars. Every chart is written as SVG and PNG (gonum/plot), each file
// atomically: a reader sees the old file or the new one, never half of one.
//
// The functions are safe for concurrent use (they share no state).
package charts

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"os"
	"strings"

	"github.com/gopeft/peft/internal/fsutil"
	"github.com/gopeft/peft/peft"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Series colours, fixed so that a chart reads the same from run to run.
var (
	LossColor     = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff} // train loss
	EvalLossColor = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff} // eval loss
	LRColor       = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff} // learning rate
	// ComponentColors colour the memory components in MemoryComponents' order.
	ComponentColors = []color.RGBA{
		{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}, {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, {R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
		{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, {R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, {R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	}
)

// MemoryComponents are the stacked parts of a MemoryBars chart, bottom up,
// as `peft estimate` names its columns.
var MemoryComponents = []string{"framework", "weights", "activations", "gradients", "optimizer", "allocator"}

// Record is the part of a train.Record (one line of the Trainer's
// metrics.jsonl) the charts draw; the JSON keys are the Trainer's.
type Record struct {
	Step     int      `json:"step"`
	Loss     *float64 `json:"loss,omitempty"`
	LR       *float64 `json:"lr,omitempty"`
	EvalLoss *float64 `json:"eval_loss,omitempty"`
}

// ReadMetrics reads a Trainer's metrics.jsonl (one train.Record a line).
// A line that is not a record is an error naming the file and line.
func ReadMetrics(path string) ([]Record, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var recs []Record
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var r Record
		dec := json.NewDecoder(strings.NewReader(line))
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("%s: line %d: %v", path, n, err)
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%s: no records", path)
	}
	return recs, nil
}

// Curves draws a run's curves against the optimizer step: train loss and
// eval loss in the upper panel, the learning rate in the lower one. It
// writes base+".svg" and base+".png" and returns their paths. Records
// without a value for a series are skipped for it; a run with no loss at
// all is an error.
func Curves(recs []Record, title, base string) ([]string, error) {
	var loss, eval, lr plotter.XYs
	for _, r := range recs {
		x := float64(r.Step)
		if r.Loss != nil {
			loss = append(loss, plotter.XY{X: x, Y: *r.Loss})
		}
		if r.EvalLoss != nil {
			eval = append(eval, plotter.XY{X: x, Y: *r.EvalLoss})
		}
		if r.LR != nil {
			lr = append(lr, plotter.XY{X: x, Y: *r.LR})
		}
	}
	if len(loss) == 0 && len(eval) == 0 {
		return nil, errors.New("charts: the records hold no loss")
	}
	top := plot.New()
	top.Title.Text = title
	top.X.Label.Text = "step"
	top.Y.Label.Text = "loss"
	top.Legend.Top = true
	if err := addLine(top, "train loss", loss, LossColor, false); err != nil {
		return nil, err
	}
	if err := addLine(top, "eval loss", eval, EvalLossColor, true); err != nil {
		return nil, err
	}
	panels := []*plot.Plot{top}
	if len(lr) > 0 {
		bottom := plot.New()
		bottom.X.Label.Text = "step"
		bottom.Y.Label.Text = "learning rate"
		bottom.Legend.Top = true
		if err := addLine(bottom, "learning rate", lr, LRColor, false); err != nil {
			return nil, err
		}
		bottom.X.Min, bottom.X.Max = top.X.Min, top.X.Max
		panels = append(panels, bottom)
	}
	h := 4 * vg.Inch
	if len(panels) == 2 {
		h = 7 * vg.Inch
	}
	return write(base, 7*vg.Inch, h, func(c draw.Canvas) {
		if len(panels) == 1 {
			panels[0].Draw(c)
			return
		}
		// one column of panels whose x axes line up
		tiles := draw.Tiles{Rows: 2, Cols: 1, PadY: 6 * vg.Millimeter, PadTop: 2 * vg.Millimeter,
			PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
		cs := plot.Align([][]*plot.Plot{{panels[0]}, {panels[1]}}, tiles, c)
		panels[0].Draw(cs[0][0])
		panels[1].Draw(cs[1][0])
	})
}

func addLine(p *plot.Plot, name string, xys plotter.XYs, c color.RGBA, points bool) error {
	if len(xys) == 0 {
		return nil
	}
	l, err := plotter.NewLine(xys)
	if err != nil {
		return fmt.Errorf("charts: %s: %v", name, err)
	}
	l.Color = c
	l.Width = vg.Points(1.5)
	p.Add(l)
	if points {
		s, err := plotter.NewScatter(xys)
		if err != nil {
			return fmt.Errorf("charts: %s: %v", name, err)
		}
		s.Color = c
		s.Shape = draw.CircleGlyph{}
		p.Add(s)
		p.Legend.Add(name, l, s)
		return nil
	}
	p.Legend.Add(name, l)
	return nil
}

// MemoryBars draws estimates as one stacked bar per method (the
// MemoryComponents bottom up), in GiB when the largest total reaches
// 1 GiB and in MiB below. It writes base+".svg" and base+".png" and
// returns their paths.
func MemoryBars(es []*peft.MemoryEstimate, title, base string) ([]string, error) {
	if len(es) == 0 {
		return nil, errors.New("charts: no estimates")
	}
	var top int64
	for _, e := range es {
		top = max(top, e.Total)
	}
	unit, name := float64(1<<20), "MiB"
	if top >= 1<<30 {
		unit, name = float64(1<<30), "GiB"
	}
	parts := func(e *peft.MemoryEstimate) []int64 {
		return []int64{e.Overhead, e.Weights, e.Activations, e.Gradients, e.OptimizerStates, e.Allocator}
	}
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = "peak memory (" + name + ")"
	p.Legend.Top = true
	p.Legend.Left = true
	labels := make([]string, len(es))
	for i, e := range es {
		labels[i] = e.Method
	}
	p.NominalX(labels...)
	var below *plotter.BarChart
	bars := make([]*plotter.BarChart, len(MemoryComponents))
	for c := range MemoryComponents {
		vals := make(plotter.Values, len(es))
		for i, e := range es {
			vals[i] = float64(parts(e)[c]) / unit
		}
		b, err := plotter.NewBarChart(vals, vg.Points(28))
		if err != nil {
			return nil, fmt.Errorf("charts: %s: %v", MemoryComponents[c], err)
		}
		b.Color = ComponentColors[c]
		b.LineStyle.Width = 0
		if below != nil {
			b.StackOn(below)
		}
		below = b
		bars[c] = b
		p.Add(b)
	}
	// the legend lists the top of the stack first, as it is drawn
	for c := len(bars) - 1; c >= 0; c-- {
		p.Legend.Add(MemoryComponents[c], bars[c])
	}
	// room at the sides of the bars, and above them for the legend
	p.X.Min, p.X.Max = -0.6, float64(len(es))-0.4
	p.Y.Min, p.Y.Max = 0, 1.45*float64(top)/unit
	w := vg.Points(float64(65*len(es) + 180))
	return write(base, w, 4.5*vg.Inch, p.Draw)
}

// write renders draw into base.svg and base.png.
func write(base string, w, h vg.Length, drawTo func(draw.Canvas)) ([]string, error) {
	svg := vgsvg.New(w, h)
	drawTo(draw.New(svg))
	png := vgimg.PngCanvas{Canvas: vgimg.New(w, h)}
	drawTo(draw.New(png))
	var paths []string
	for _, f := range []struct {
		ext string
		to  func(*bytes.Buffer) error
	}{
		{".svg", func(b *bytes.Buffer) error { _, err := svg.WriteTo(b); return err }},
		{".png", func(b *bytes.Buffer) error { _, err := png.WriteTo(b); return err }},
	} {
		var buf bytes.Buffer
		if err := f.to(&buf); err != nil {
			return paths, fmt.Errorf("charts: %s%s: %v", base, f.ext, err)
		}
		if err := fsutil.WriteFileAtomic(base+f.ext, buf.Bytes()); err != nil {
			return paths, fmt.Errorf("charts: %s%s: %v", base, f.ext, err)
		}
		paths = append(paths, base+f.ext)
	}
	return paths, nil
}
