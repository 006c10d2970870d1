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

func TestCouplets(t *testing.T) {
	p := Poem{Lines: []string{
		"床前明月光，疑是地上霜。",
		"举头望明月，低头思故乡。",
		"三字句，不成联。",            // 3 characters: not a regular couplet
		"君不见黄河之水天上来，奔流到海不复回。", // 9 characters
		"两株桃杏映篱斜，妆点商山副使家，",    // a couplet over a line ending in ，
		"五言对七言，七个字的半句诗。",      // unequal halves
		"孤句。", // a half-line without its pair
	}}
	want := []Couplet{{"床前明月光", "疑是地上霜"}, {"举头望明月", "低头思故乡"}, {"两株桃杏映篱斜", "妆点商山副使家"}}
	if got := p.Couplets(); !reflect.DeepEqual(got, want) {
		t.Fatalf("couplets = %q\nwant %q", got, want)
	}
	if s := want[0].String(); s != "床前明月光，疑是地上霜。" {
		t.Fatalf("String() = %q", s)
	}
}

func TestInstructionsAndSplit(t *testing.T) {
	poems := []Poem{
		{Title: "静夜思", Author: "李白", Lines: []string{"床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"}},
		{Title: "长诗", Author: "某人", Lines: []string{
			"春眠不觉晓，处处闻啼鸟。", "夜来风雨声，花落知多少。", "白日依山尽，黄河入海流。", "欲穷千里目，更上一层楼。"}},
		{Title: "江雪", Author: "柳宗元", Lines: []string{"孤舟蓑笠翁，独钓寒江雪。"}},
		{Title: "七言", Author: "某人", Lines: []string{"两株桃杏映篱斜，妆点商山副使家。", "刘郎自爱看花好，不管风吹雨打斜。"}},
		{Title: "乐府", Author: "某人", Lines: []string{"上邪，我欲与君相知。"}}, // no regular couplet
	}
	qs := Instructions(poems, 2) // of 长诗's 4 couplets, the 1st and the 3rd
	five, seven := []string{"四言", "六言", "七言"}, []string{"四言", "五言", "六言"}
	want := []Question{
		{Prompt: "这一联是五言还是七言？床前明月光，疑是地上霜。", Answer: "五言", Poem: 0, Wrong: five},
		{Prompt: "这一联是五言还是七言？举头望明月，低头思故乡。", Answer: "五言", Poem: 0, Wrong: five},
		{Prompt: "这一联是五言还是七言？春眠不觉晓，处处闻啼鸟。", Answer: "五言", Poem: 1, Wrong: five},
		{Prompt: "这一联是五言还是七言？白日依山尽，黄河入海流。", Answer: "五言", Poem: 1, Wrong: five},
		{Prompt: "这一联是五言还是七言？孤舟蓑笠翁，独钓寒江雪。", Answer: "五言", Poem: 2, Wrong: five},
		{Prompt: "这一联是五言还是七言？两株桃杏映篱斜，妆点商山副使家。", Answer: "七言", Poem: 3, Wrong: seven},
		{Prompt: "这一联是五言还是七言？刘郎自爱看花好，不管风吹雨打斜。", Answer: "七言", Poem: 3, Wrong: seven},
	}
	if !reflect.DeepEqual(qs, want) {
		t.Fatalf("questions = %+v\nwant %+v", qs, want)
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
	q := Question{Prompt: FormQuestion + "床前明月光，疑是地上霜。", Answer: "五言"}
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

// The base's vocabulary (the poems' characters and promptChars) covers
// every question built from those poems; a character outside it is an
// error naming the question.
func TestVocabularyCoversTheQuestions(t *testing.T) {
	poems := []Poem{
		{Title: "江雪", Author: "柳宗元", Lines: []string{"千山鸟飞绝，万径人踪灭。", "孤舟蓑笠翁，独钓寒江雪。"}},
		{Title: "七言", Author: "某人", Lines: []string{"两株桃杏映篱斜，妆点商山副使家。"}},
	}
	texts := []string{promptChars}
	for _, p := range poems {
		texts = append(texts, p.Text())
	}
	tok, err := WriteCharTokenizer(t.TempDir(), Chars(texts...))
	if err != nil {
		t.Fatal(err)
	}
	qs := Instructions(poems, 8)
	if len(qs) != 3 {
		t.Fatalf("%d questions: %+v", len(qs), qs)
	}
	if err := covers(tok, qs); err != nil {
		t.Fatal(err)
	}
	qs[0].Prompt += "？未见"
	if err := covers(tok, qs); err == nil || !strings.Contains(err.Error(), qs[0].Prompt) {
		t.Fatalf("err = %v, want one naming %q", err, qs[0].Prompt)
	}
}
