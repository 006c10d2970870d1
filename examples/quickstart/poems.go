package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/gopeft/peft/data"
)

// FortuneDir is where Debian's fortunes-zh package installs its files.
const FortuneDir = "/usr/share/games/fortunes"

// FortuneFiles are the two poem collections of fortunes-zh: 唐诗三百首
// (313 records) and 宋诗一百首 (94 records).
var FortuneFiles = []string{"tang300", "song100"}

// Poem is one record of a fortune file.
type Poem struct {
	Title  string   // without 《》 ("静夜思")
	Author string   // without the dates song100 adds ("王禹偁")
	Lines  []string // the verse lines as printed ("床前明月光，疑是地上霜。")
	Source string   // "tang300:17", for errors
}

// Halves splits the poem into its half-lines, the clauses between
// punctuation marks ("床前明月光", "疑是地上霜"), in order.
func (p *Poem) Halves() []string {
	var out []string
	for _, l := range p.Lines {
		for _, h := range strings.FieldsFunc(l, isPunct) {
			if h = strings.TrimSpace(h); h != "" {
				out = append(out, h)
			}
		}
	}
	return out
}

func isPunct(r rune) bool { return strings.ContainsRune("，。？！；：、,.?!;:", r) }

var (
	ansi       = regexp.MustCompile("\x1b\\[[0-9;]*m")
	titleRe    = regexp.MustCompile(`^(?:题目[:：])?\s*《(.+)》`)
	authorRe   = regexp.MustCompile(`^作者[:：]\s*([^（(\s]+)`)
	subheading = regexp.MustCompile(`^其[一二三四五六七八九十]+$`)
)

// ParseFortunes reads fortune-format records (separated by lines holding a
// single %) of Chinese poems: a title line 《…》 (song100 prefixes it with
// 题目:), an author line 作者：… and the verse. ANSI colour codes are
// removed. A record without a title, an author or a verse line is skipped
// and reported in skipped ("name:N: reason"); name is used in those messages.
func ParseFortunes(r io.Reader, name string) (poems []Poem, skipped []string, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	var rec []string
	n := 0
	flush := func() {
		n++
		if len(rec) == 0 {
			return
		}
		p, why := parseRecord(rec)
		if why != "" {
			skipped = append(skipped, fmt.Sprintf("%s:%d: %s", name, n, why))
		} else {
			p.Source = fmt.Sprintf("%s:%d", name, n)
			poems = append(poems, p)
		}
		rec = rec[:0]
	}
	for sc.Scan() {
		line := strings.TrimSpace(ansi.ReplaceAllString(sc.Text(), ""))
		if line == "%" {
			flush()
			continue
		}
		if line != "" {
			rec = append(rec, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	flush()
	return poems, skipped, nil
}

func parseRecord(lines []string) (Poem, string) {
	var p Poem
	m := titleRe.FindStringSubmatch(lines[0])
	if m == nil {
		return p, fmt.Sprintf("no 《title》 line (first line %q)", lines[0])
	}
	p.Title = strings.TrimSpace(m[1])
	if len(lines) < 2 {
		return p, "no 作者 line"
	}
	a := authorRe.FindStringSubmatch(lines[1])
	if a == nil {
		return p, fmt.Sprintf("no 作者 line (second line %q)", lines[1])
	}
	p.Author = a[1]
	for _, l := range lines[2:] {
		if subheading.MatchString(l) || !utf8.ValidString(l) {
			continue
		}
		p.Lines = append(p.Lines, l)
	}
	if len(p.Lines) == 0 {
		return p, "no verse"
	}
	return p, ""
}

// LoadPoems reads FortuneFiles from dir.
func LoadPoems(dir string) ([]Poem, error) {
	var all []Poem
	for _, f := range FortuneFiles {
		path := filepath.Join(dir, f)
		fh, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s is missing: install Debian's fortunes-zh package (make demo does: scripts/demo-data.sh)", path)
		}
		if err != nil {
			return nil, err
		}
		ps, _, err := ParseFortunes(fh, f)
		fh.Close()
		if err != nil {
			return nil, err
		}
		if len(ps) == 0 {
			return nil, fmt.Errorf("%s: no poem could be read (is it the fortunes-zh file?)", path)
		}
		all = append(all, ps...)
	}
	return all, nil
}

// Text is how a poem reads in the base model's training corpus.
func (p *Poem) Text() string {
	return "《" + p.Title + "》\n作者：" + p.Author + "\n" + strings.Join(p.Lines, "\n")
}

// The task: 这一联是五言还是七言？<couplet> → 五言 or 七言. The answer
// follows from the couplet in the question (the length of its half-lines),
// so it can be given for any couplet, also of a poem never trained on: the
// model has to learn the rule, not the poem.
const FormQuestion = "这一联是五言还是七言？"

// Forms are the answers by half-line length, and the wrong choices.
var Forms = map[int]string{4: "四言", 5: "五言", 6: "六言", 7: "七言"}

// Question is one instruction with its expected answer.
type Question struct {
	Prompt string
	Answer string
	Poem   int      // index of the poem it was built from
	Wrong  []string // wrong choices, for rank classification
}

// Couplet is two half-lines of the same length, 5 or 7 characters: the
// regular couplet (联) of 五言 and 七言 verse.
type Couplet struct{ First, Second string }

// String is the couplet as printed: 床前明月光，疑是地上霜。
func (c Couplet) String() string { return c.First + "，" + c.Second + "。" }

// Couplets pairs the poem's half-lines in order (first with second, third
// with fourth, …) and keeps the regular pairs, from the whole poem.
func (p *Poem) Couplets() []Couplet {
	h := p.Halves()
	var out []Couplet
	for j := 0; j+1 < len(h); j += 2 {
		n := utf8.RuneCountInString(h[j])
		if (n == 5 || n == 7) && utf8.RuneCountInString(h[j+1]) == n {
			out = append(out, Couplet{h[j], h[j+1]})
		}
	}
	return out
}

// Instructions builds the instruction task from poems: up to maxPairs
// couplets of each poem, spread over the whole poem (all of them when it
// has no more), each asked 这一联是五言还是七言？<couplet> → 五言 or 七言.
// Each question also gets three wrong choices for rank classification: the
// other forms (四言, 六言, and 七言 or 五言).
func Instructions(poems []Poem, maxPairs int) []Question {
	var qs []Question
	for i, p := range poems {
		cs := p.Couplets()
		if len(cs) > maxPairs {
			picked := make([]Couplet, maxPairs)
			for j := range picked {
				picked[j] = cs[j*len(cs)/maxPairs]
			}
			cs = picked
		}
		for _, c := range cs {
			n := utf8.RuneCountInString(c.First)
			q := Question{Prompt: FormQuestion + c.String(), Answer: Forms[n], Poem: i}
			for _, m := range []int{4, 5, 6, 7} {
				if m != n {
					q.Wrong = append(q.Wrong, Forms[m])
				}
			}
			qs = append(qs, q)
		}
	}
	return qs
}

// Split puts every heldOut-th poem (by index, after a seeded shuffle) in
// the held-out set, so no question about a held-out poem is trained on.
func Split(qs []Question, nPoems int, heldOut int, seed int64) (train, test []Question) {
	order := data.Order(nPoems, seed, 0, true)
	held := map[int]bool{}
	for k, i := range order {
		if k%heldOut == 0 {
			held[i] = true
		}
	}
	for _, q := range qs {
		if held[q.Poem] {
			test = append(test, q)
		} else {
			train = append(train, q)
		}
	}
	return train, test
}

// Records turns questions into alpaca records for data.Instructions.
func Records(qs []Question) []data.Instruction {
	out := make([]data.Instruction, len(qs))
	for i, q := range qs {
		out[i] = data.Instruction{Instruction: q.Prompt, Output: q.Answer, Source: fmt.Sprintf("question %d", i)}
	}
	return out
}

// Chars is the sorted set of characters of texts.
func Chars(texts ...string) []string {
	set := map[rune]bool{}
	for _, t := range texts {
		for _, r := range t {
			set[r] = true
		}
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, string(r))
	}
	sort.Strings(out)
	return out
}
