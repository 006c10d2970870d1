package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// record is one line of a compare.sh results file: a case's JSON line from
// one side, tagged with its round.
type record struct {
	Round  int     `json:"round"`
	Side   string  `json:"side"` // "go" or "ref"
	Load   string  `json:"load"` // /proc/loadavg when the round started
	Result caseRes `json:"result"`
}

type caseRes struct {
	Case       string    `json:"case"`
	TokensPerS float64   `json:"tokens_per_s"`
	Batch      float64   `json:"batch"`
	Seq        float64   `json:"seq"`
	NewTokens  float64   `json:"new_tokens"` // generation cases: tokens per run and row
	Steps      []float64 `json:"step_seconds"`
	PeakRSSMiB float64   `json:"peak_rss_mib"`
	Probe      []float64 `json:"probe_gflops"`
	Error      any       `json:"error"`

	// the scale cases (-model; scale.go, reference_scale.py)
	Model            string    `json:"model"`
	DType            string    `json:"dtype"`
	Seconds          float64   `json:"seconds"` // load
	LoadS            float64   `json:"load_s"`
	DecodeTokensPerS float64   `json:"decode_tokens_per_s"`
	CeilingTokensPS  float64   `json:"ceiling_tokens_per_s"`
	CeilingFraction  float64   `json:"ceiling_fraction"`
	CopyGBps         float64   `json:"copy_gbps"`
	RSSAnonMiB       float64   `json:"rss_anon_mib"`
	RSSFileMiB       float64   `json:"rss_file_mib"`
	AnonBeforeMiB    float64   `json:"rss_anon_before_model_mib"`
	AnonAfterLoadMiB float64   `json:"rss_anon_after_load_mib"`
	FileAfterLoadMiB float64   `json:"rss_file_after_load_mib"`
	Losses           []float64 `json:"losses"`
	TTFT             float64   `json:"ttft_s"`
	PeakWorkMiB      float64   `json:"peak_rss_after_load_mib"`
}

// pair is one round of a case: the Go and the reference result.
type pair struct {
	g, r *caseRes
	load string
}

// medianTokens is the tokens of one step (batch·seq; batch·new tokens for
// a generation run) over the median step time (0 without step times).
func (c caseRes) medianTokens() float64 {
	if len(c.Steps) == 0 || c.Batch == 0 {
		return 0
	}
	per := c.Seq
	if c.NewTokens > 0 {
		per = c.NewTokens
	}
	return c.Batch * per / median(c.Steps)
}

// loadOf is the 1-minute load average of a /proc/loadavg string (0 if none).
func loadOf(s string) float64 {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// slowProbe is the probe (GFLOP/s) under which a run counts as disturbed.
const slowProbe = 100

func (c caseRes) minProbe() float64 {
	if len(c.Probe) == 0 {
		return 0
	}
	return slices.Min(c.Probe)
}

// summarize prints, per case, every round (Go, reference, ratio, probes)
// and the medians over the rounds that started with the 1-minute load
// average under maxLoad and whose probes on both sides are ≥ 100.
func summarize(path string, maxLoad float64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	byCase := map[string]map[int]*pair{}
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var rec record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		c := rec.Result.Case
		if c == "" || c == "env" {
			continue
		}
		if byCase[c] == nil {
			byCase[c] = map[int]*pair{}
			order = append(order, c)
		}
		p := byCase[c][rec.Round]
		if p == nil {
			p = &pair{}
			byCase[c][rec.Round] = p
		}
		res := rec.Result
		p.load = rec.Load
		if rec.Side == "go" {
			p.g = &res
		} else {
			p.r = &res
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for _, c := range order {
		for _, p := range byCase[c] {
			if (p.g != nil && p.g.Model != "") || (p.r != nil && p.r.Model != "") {
				summarizeScale(order, byCase, maxLoad)
				return nil
			}
		}
	}
	for _, c := range order {
		rounds := make([]int, 0, len(byCase[c]))
		for r := range byCase[c] {
			rounds = append(rounds, r)
		}
		slices.Sort(rounds)
		fmt.Printf("\n### %s\n\n", c)
		fmt.Println("| round | Go tokens/s | reference tokens/s | Go / reference | median step: Go | reference | Go / reference | probe GFLOP/s Go | probe reference | peak RSS MiB Go / ref | used |")
		fmt.Println("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- |")
		var gs, rs, ratios, gm, rm, gsm, rsm, mratios []float64
		for _, r := range rounds {
			p := byCase[c][r]
			if p.g == nil || p.r == nil || p.g.Error != nil || p.r.Error != nil || p.g.TokensPerS == 0 || p.r.TokensPerS == 0 {
				fmt.Printf("| %d | incomplete round | | | | | | | | | no |\n", r)
				continue
			}
			used := "yes"
			if l := loadOf(p.load); l >= maxLoad {
				used = fmt.Sprintf("no (load %.2f)", l)
			} else if p.g.minProbe() < slowProbe || p.r.minProbe() < slowProbe {
				used = "no (slow probe)"
			} else {
				gs = append(gs, p.g.TokensPerS)
				rs = append(rs, p.r.TokensPerS)
				ratios = append(ratios, p.g.TokensPerS/p.r.TokensPerS)
				gm = append(gm, p.g.PeakRSSMiB)
				rm = append(rm, p.r.PeakRSSMiB)
				if g, r := p.g.medianTokens(), p.r.medianTokens(); g > 0 && r > 0 {
					gsm = append(gsm, g)
					rsm = append(rsm, r)
					mratios = append(mratios, g/r)
				}
			}
			g, rf := p.g.medianTokens(), p.r.medianTokens()
			mr := 0.0
			if rf > 0 {
				mr = g / rf
			}
			fmt.Printf("| %d | %.1f | %.1f | %.3f | %.1f | %.1f | %.3f | %v | %v | %.0f / %.0f | %s |\n", r, p.g.TokensPerS, p.r.TokensPerS,
				p.g.TokensPerS/p.r.TokensPerS, g, rf, mr, p.g.Probe, p.r.Probe, p.g.PeakRSSMiB, p.r.PeakRSSMiB, used)
		}
		if len(gs) == 0 {
			fmt.Println("\nno usable round")
			continue
		}
		fmt.Printf("\nmedians over %d rounds: Go %.1f tokens/s, reference %.1f tokens/s, ratio of medians %.3f, "+
			"median of paired ratios %.3f; peak RSS MiB Go %.0f, reference %.0f\n",
			len(gs), median(gs), median(rs), median(gs)/median(rs), median(ratios), median(gm), median(rm))
		if len(gsm) > 0 {
			fmt.Printf("median-step tokens/s over %d rounds: Go %.1f, reference %.1f, ratio of medians %.3f, median of paired ratios %.3f\n",
				len(gsm), median(gsm), median(rsm), median(gsm)/median(rsm), median(mratios))
		}
	}
	return nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
