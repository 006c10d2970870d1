package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gopeft/peft/data"
)

// sample is fortune-format text in the two layouts of fortunes-zh (tang300
// with colour codes and full-width colons, song100 with 题目: and dates),
// with a malformed record (no author line) in between and a subheading.
const sample = "\x1b[32m《静夜思》\x1b[m\n\x1b[33m作者：李白\x1b[m\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n%\n" +
	"《无名》\n没有作者这一行\n%\n" +
	"题目:《春居杂兴》二首\n作者:王禹偁（９５４－１００１）\n\n            其一\n\n两株桃杏映篱斜，妆点商山副使家，\n%\n" +
	"《空》\n作者：某人\n%\n"

func TestParseFortunes(t *testing.T) {
	poems, skipped, err := ParseFortunes(strings.NewReader(sample), "sample")
	if err != nil {
		t.Fatal(err)
	}
	want := []Poem{
		{Title: "静夜思", Author: "李白", Lines: []string{"床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"}, Source: "sample:1"},
		{Title: "春居杂兴", Author: "王禹偁", Lines: []string{"两株桃杏映篱斜，妆点商山副使家，"}, Source: "sample:3"},
	}
	if !reflect.DeepEqual(poems, want) {
		t.Fatalf("poems = %#v\nwant %#v", poems, want)
	}
	if len(skipped) != 2 || !strings.HasPrefix(skipped[0], "sample:2: no 作者 line") || !strings.HasPrefix(skipped[1], "sample:4: no verse") {
		t.Fatalf("skipped = %q", skipped)
	}
	if h := poems[0].Halves(); !reflect.DeepEqual(h, []string{"床前明月光", "疑是地上霜", "举头望明月", "低头思故乡"}) {
		t.Fatalf("halves = %q", h)
	}
}

func TestLoadPoemsMissing(t *testing.T) {
	_, err := LoadPoems(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "tang300") || !strings.Contains(err.Error(), "scripts/demo-data.sh") {
		t.Fatalf("err = %v, want one naming tang300 and scripts/demo-data.sh", err)
	}
}

func TestInstructionsAndSplit(t *testing.T) {
	poems := []Poem{
		{Title: "静夜思", Author: "李白", Lines: []string{"床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"}},
		{Title: "送别", Author: "王维", Lines: []string{"下马饮君酒，问君何所之。"}},
		{Title: "送别", Author: "某人", Lines: []string{"甲乙丙丁戊，己庚辛壬癸。"}},
		{Title: "甲", Author: "甲", Lines: []string{"甲，乙。"}},
		{Title: "乙", Author: "乙", Lines: []string{"丙，丁。"}},
	}
	qs := Instructions(poems, 2, 1)
	want := []Question{
		{Kind: TaskAuthor, Prompt: "《静夜思》的作者是谁？", Answer: "李白", Poem: 0},
		{Kind: TaskContinue, Prompt: "续写下一句：床前明月光", Answer: "疑是地上霜", Poem: 0},
		{Kind: TaskContinue, Prompt: "续写下一句：举头望明月", Answer: "低头思故乡", Poem: 0},
		// 《送别》 has two authors: no author question for either.
		{Kind: TaskContinue, Prompt: "续写下一句：下马饮君酒", Answer: "问君何所之", Poem: 1},
		{Kind: TaskContinue, Prompt: "续写下一句：甲乙丙丁戊", Answer: "己庚辛壬癸", Poem: 2},
		// Only two one-character half-lines: too few wrong choices, no question.
		{Kind: TaskAuthor, Prompt: "《甲》的作者是谁？", Answer: "甲", Poem: 3},
		{Kind: TaskAuthor, Prompt: "《乙》的作者是谁？", Answer: "乙", Poem: 4},
	}
	for i := range qs {
		// Wrong choices: other authors, or same-length half-lines of the others.
		for _, w := range qs[i].Wrong {
			if w == qs[i].Answer || len([]rune(w)) != len([]rune(qs[i].Answer)) && qs[i].Kind == TaskContinue {
				t.Fatalf("question %d: wrong choice %q", i, w)
			}
		}
		qs[i].Wrong = nil
	}
	if !reflect.DeepEqual(qs, want) {
		t.Fatalf("questions = %#v", qs)
	}
	tr, te := Split(qs, len(poems), 2, 1)
	if len(tr)+len(te) != len(qs) || len(te) == 0 || len(tr) == 0 {
		t.Fatalf("split %d + %d of %d", len(tr), len(te), len(qs))
	}
	held := map[int]bool{}
	for _, q := range te {
		held[q.Poem] = true
	}
	for _, q := range tr {
		if held[q.Poem] {
			t.Fatalf("poem %d has questions on both sides of the split", q.Poem)
		}
	}
}

// TestLabelsMaskThePrompt builds the training samples through the real
// tokenizer file the example writes and checks that only the answer and
// </s> carry labels.
func TestLabelsMaskThePrompt(t *testing.T) {
	dir := t.TempDir()
	q := Question{Kind: TaskAuthor, Prompt: "《静夜思》的作者是谁？", Answer: "李白"}
	tok, err := WriteCharTokenizer(dir, Chars("问答：\n", q.Prompt, q.Answer))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tokenizer_config.json")); err != nil {
		t.Fatal(err)
	}
	tmpl, err := template()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := data.Instructions(data.FromTokenizer(tok), Records([]Question{q}), data.Options{Template: tmpl})
	if err != nil {
		t.Fatal(err)
	}
	s := ds.Samples[0]
	prompt := "问：" + q.Prompt + "\n答："
	n := 1 + len([]rune(prompt)) // <s> + one token per character
	if len(s.InputIDs) != n+len([]rune(q.Answer))+1 {
		t.Fatalf("input_ids %v: want %d tokens", s.InputIDs, n+3)
	}
	if s.InputIDs[0] != 1 || s.InputIDs[len(s.InputIDs)-1] != 2 {
		t.Fatalf("input_ids %v: want <s> … </s>", s.InputIDs)
	}
	for i, l := range s.Labels {
		if i < n && l != -100 || i >= n && l != s.InputIDs[i] {
			t.Fatalf("labels %v: position %d should be %s", s.Labels, i, map[bool]string{true: "-100", false: "the token"}[i < n])
		}
	}
	var ids []int
	for _, id := range s.InputIDs[n : len(s.InputIDs)-1] {
		ids = append(ids, int(id))
	}
	if got := tok.Decode(ids, true); got != q.Answer {
		t.Fatalf("answer decodes to %q", got)
	}
	if got := tok.Decode([]int{int(s.InputIDs[1]), int(s.InputIDs[2])}, true); got != "问：" {
		t.Fatalf("characters decode to %q (want no spaces between them)", got)
	}
}
