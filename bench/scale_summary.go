package main

import (
	"fmt"
	"slices"
	"strings"
)

// scaleMetric is one number of a scale case, from either side's result.
type scaleMetric struct {
	name string
	get  func(c *caseRes) float64
	// ratio: "go/ref" prints Go / reference (speeds; peak RSS, where < 1
	// means Go uses less), "ref/go" reference / Go (times: > 1 means Go is
	// faster), "" none
	ratio string
	// digits after the point (-1: num's three significant digits)
	digits int
}

func (m scaleMetric) fmt(v float64) string {
	if m.digits < 0 {
		return num(v)
	}
	return fmt.Sprintf("%.*f", m.digits, v)
}

var (
	mTokens   = scaleMetric{"tokens/s", func(c *caseRes) float64 { return c.TokensPerS }, "go/ref", -1}
	mDecode   = scaleMetric{"decode tokens/s", func(c *caseRes) float64 { return c.DecodeTokensPerS }, "go/ref", -1}
	mCeiling  = scaleMetric{"% of ceiling", func(c *caseRes) float64 { return 100 * c.CeilingFraction }, "", 1}
	mLoad     = scaleMetric{"load s", func(c *caseRes) float64 { return c.Seconds }, "ref/go", 3}
	mStep     = scaleMetric{"median step s", func(c *caseRes) float64 { return median(nonEmpty(c.Steps)) }, "ref/go", -1}
	mPeak     = scaleMetric{"peak RSS MiB", func(c *caseRes) float64 { return c.PeakRSSMiB }, "go/ref", 0}
	mPeakWork = scaleMetric{"peak RSS after load MiB", func(c *caseRes) float64 { return c.PeakWorkMiB }, "go/ref", 0}
	mAnonLoad = scaleMetric{"RssAnon growth in load, MiB", func(c *caseRes) float64 { return c.AnonAfterLoadMiB - c.AnonBeforeMiB }, "", 1}
	mFileLoad = scaleMetric{"RssFile after load, MiB", func(c *caseRes) float64 { return c.FileAfterLoadMiB }, "", 0}
	mAnon     = scaleMetric{"RssAnon MiB (end)", func(c *caseRes) float64 { return c.RSSAnonMiB }, "", 0}
	mFile     = scaleMetric{"RssFile MiB (end)", func(c *caseRes) float64 { return c.RSSFileMiB }, "", 0}
	mLoss     = scaleMetric{"first loss", func(c *caseRes) float64 {
		if len(c.Losses) == 0 {
			return 0
		}
		return c.Losses[0]
	}, "", 4}
)

func nonEmpty(v []float64) []float64 {
	if len(v) == 0 {
		return []float64{0}
	}
	return v
}

func scaleMetrics(c string) []scaleMetric {
	switch {
	case c == "load":
		return []scaleMetric{mLoad, mAnonLoad, mFileLoad, mPeak}
	case strings.HasPrefix(c, "generate"):
		return []scaleMetric{mTokens, mDecode, mCeiling, mPeak, mPeakWork, mAnon, mFile}
	default:
		return []scaleMetric{mTokens, mStep, mPeak, mPeakWork, mAnon, mFile, mLoss}
	}
}

// summarizeScale prints the scale cases (-model runs): per case, every
// round with each metric on both sides (and Go's advantage where it has a
// direction), then the medians over the usable rounds (as summarize).
func summarizeScale(order []string, byCase map[string]map[int]*pair, maxLoad float64) {
	for _, c := range order {
		rounds := make([]int, 0, len(byCase[c]))
		for r := range byCase[c] {
			rounds = append(rounds, r)
		}
		slices.Sort(rounds)
		model, dtype := "", ""
		for _, r := range rounds {
			for _, x := range []*caseRes{byCase[c][r].g, byCase[c][r].r} {
				if x != nil && x.Model != "" {
					model, dtype = x.Model, x.DType
				}
			}
		}
		ms := scaleMetrics(c)
		fmt.Printf("\n### %s: %s, %s\n\n", c, model, dtype)
		head := []string{"round"}
		align := []string{"---:"}
		for _, m := range ms {
			head = append(head, m.name+": Go", "reference")
			align = append(align, "---:", "---:")
			if m.ratio != "" {
				head = append(head, strings.Replace(strings.Replace(m.ratio, "go", "Go", 1), "ref", "reference", 1))
				align = append(align, "---:")
			}
		}
		head = append(head, "probes Go / reference", "used")
		align = append(align, "---", "---")
		fmt.Println("| " + strings.Join(head, " | ") + " |")
		fmt.Println("| " + strings.Join(align, " | ") + " |")
		vals := make([][3][]float64, len(ms)) // per metric: Go, reference, ratio over the used rounds
		used := 0
		for _, r := range rounds {
			p := byCase[c][r]
			if p.g == nil || p.r == nil || p.g.Error != nil || p.r.Error != nil {
				fmt.Printf("| %d | incomplete round%s |\n", r, strings.Repeat(" |", len(head)-2))
				continue
			}
			ok := "yes"
			if l := loadOf(p.load); l >= maxLoad {
				ok = fmt.Sprintf("no (load %.2f)", l)
			} else if p.g.minProbe() < slowProbe || p.r.minProbe() < slowProbe {
				ok = "no (slow probe)"
			}
			row := []string{fmt.Sprint(r)}
			for i, m := range ms {
				g, rf := m.get(p.g), m.get(p.r)
				row = append(row, m.fmt(g), m.fmt(rf))
				q := ratio(m.ratio, g, rf)
				if m.ratio != "" {
					row = append(row, fmt.Sprintf("%.2f", q))
				}
				if ok == "yes" {
					vals[i][0] = append(vals[i][0], g)
					vals[i][1] = append(vals[i][1], rf)
					vals[i][2] = append(vals[i][2], q)
				}
			}
			if ok == "yes" {
				used++
			}
			row = append(row, fmt.Sprintf("%v / %v", p.g.Probe, p.r.Probe), ok)
			fmt.Println("| " + strings.Join(row, " | ") + " |")
		}
		if used == 0 {
			fmt.Println("\nno usable round")
			continue
		}
		var parts []string
		for i, m := range ms {
			s := fmt.Sprintf("%s Go %s, reference %s", m.name, m.fmt(median(vals[i][0])), m.fmt(median(vals[i][1])))
			if m.ratio != "" {
				s += fmt.Sprintf(" (%s paired %.2f)", m.ratio, median(vals[i][2]))
			}
			parts = append(parts, s)
		}
		fmt.Printf("\nmedians over %d rounds: %s\n", used, strings.Join(parts, "; "))
	}
}

func ratio(kind string, g, r float64) float64 {
	switch {
	case kind == "go/ref" && r != 0:
		return g / r
	case kind == "ref/go" && g != 0:
		return r / g
	}
	return 0
}

// num prints a metric with three significant digits or more.
func num(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}
