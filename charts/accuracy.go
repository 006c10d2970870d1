package charts

import (
	"errors"
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Colours of an Accuracy chart's two bars per group.
var (
	BeforeColor = color.RGBA{R: 0xb0, G: 0xb0, B: 0xb0, A: 0xff} // before tuning
	AfterColor  = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff} // after tuning
)

// BeforeAfter is one group of an Accuracy chart: a method's score before
// and after tuning, as fractions in [0, 1].
type BeforeAfter struct {
	Label         string
	Before, After float64
}

// Accuracy draws one pair of bars per group — before tuning in grey, after
// in blue, each labelled with its percentage — on a 0–100 % axis. It
// writes base+".svg" and base+".png" and returns their paths. A value that
// is not a number in [0, 1] is an error naming its group.
func Accuracy(groups []BeforeAfter, title, base string) ([]string, error) {
	if len(groups) == 0 {
		return nil, errors.New("charts: no accuracies")
	}
	before := make(plotter.Values, len(groups))
	after := make(plotter.Values, len(groups))
	labels := make([]string, len(groups))
	var tags plotter.XYLabels
	for i, g := range groups {
		for _, v := range []float64{g.Before, g.After} {
			if math.IsNaN(v) || v < 0 || v > 1 {
				return nil, fmt.Errorf("charts: %s: accuracy %v is not in [0, 1]", g.Label, v)
			}
		}
		before[i], after[i] = 100*g.Before, 100*g.After
		labels[i] = g.Label
		// the percentages above the bars; x in category units, a bar's
		// width to either side of the group's centre
		for k, v := range []float64{before[i], after[i]} {
			tags.XYs = append(tags.XYs, plotter.XY{X: float64(i) + []float64{-0.2, 0.2}[k], Y: v + 2})
			tags.Labels = append(tags.Labels, fmt.Sprintf("%.0f%%", v))
		}
	}
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = "accuracy (%)"
	p.Legend.Top = true
	p.Legend.Left = true
	p.NominalX(labels...)
	// A group is 1 unit of the x axis wide, its bars centred 0.2 to
	// either side of it; a bar's width is in points, about 0.36 of a unit
	// (the y axis takes about 60 points of the width), 36 points at most.
	width := max(vg.Points(float64(len(groups))*70+120), 5*vg.Inch)
	w := min(0.36*(width-vg.Points(60))/vg.Length(float64(len(groups))+0.2), vg.Points(36))
	for k, vals := range []plotter.Values{before, after} {
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return nil, fmt.Errorf("charts: %v", err)
		}
		b.LineStyle.Width = 0
		b.Color = []color.RGBA{BeforeColor, AfterColor}[k]
		b.XMin = []float64{-0.2, 0.2}[k]
		p.Add(b)
		p.Legend.Add([]string{"before tuning", "after tuning"}[k], b)
	}
	l, err := plotter.NewLabels(tags)
	if err != nil {
		return nil, fmt.Errorf("charts: %v", err)
	}
	for i := range l.TextStyle {
		l.TextStyle[i].XAlign = draw.XCenter
	}
	p.Add(l)
	// room at the sides, and above the bars for the legend
	p.X.Min, p.X.Max = -0.6, float64(len(groups))-0.4
	p.Y.Min, p.Y.Max = 0, 130
	p.Y.Tick.Marker = plot.ConstantTicks([]plot.Tick{{Value: 0, Label: "0"}, {Value: 25, Label: "25"},
		{Value: 50, Label: "50"}, {Value: 75, Label: "75"}, {Value: 100, Label: "100"}})
	return write(base, width, 4.5*vg.Inch, p.Draw)
}
