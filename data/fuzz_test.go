package data

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// readTwice writes data to a file named name and reads it twice with read:
// no panic, and the same records (or the same error) both times.
func readTwice[T any](t *testing.T, name string, data []byte, read func(string) ([]T, error)) []T {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	a, errA := read(p)
	b, errB := read(p)
	if (errA == nil) != (errB == nil) || (errA != nil && errA.Error() != errB.Error()) {
		t.Fatalf("two reads: %v, then %v", errA, errB)
	}
	if errA == nil && !reflect.DeepEqual(a, b) {
		t.Fatalf("two reads differ")
	}
	return a
}

var fuzzNames = []string{"train.json", "train.jsonl"}

// FuzzReadInstructions: any bytes as an alpaca JSON or JSONL file read
// without a panic, the same way twice.
func FuzzReadInstructions(f *testing.F) {
	f.Add([]byte(`[{"instruction": "say hi", "input": "", "output": "hi"}, {"instruction": "x"}]`), uint8(0))
	f.Add([]byte("{\"instruction\": \"a\", \"output\": \"b\", \"history\": [[\"q\", \"r\"]]}\n{\"output\": null}\n\n"), uint8(1))
	f.Add([]byte("\ufeff[{\"instruction\": 3}]"), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		recs := readTwice(t, fuzzNames[int(which)%2], data, ReadInstructions)
		for _, name := range []string{"raw", "alpaca"} {
			tmpl, err := TemplateByName(name)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = Instructions(fuzzTok{}, recs, Options{Template: tmpl})
		}
	})
}

// FuzzReadConversations: any bytes as a ShareGPT or OpenAI dialogue file
// read without a panic, the same way twice.
func FuzzReadConversations(f *testing.F) {
	f.Add([]byte(`[{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}], "system": "be brief"}]`), uint8(0))
	f.Add([]byte("{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n{\"messages\": []}\n"), uint8(1))
	f.Add([]byte(`[{"conversations": [{"from": "robot", "value": "?"}]}, {}]`), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		recs := readTwice(t, fuzzNames[int(which)%2], data, ReadConversations)
		for _, c := range recs {
			_ = c.Err()
		}
		for _, name := range []string{"raw", "chatml"} {
			if tmpl, err := TemplateByName(name); err == nil {
				_, _ = Conversations(fuzzTok{}, recs, Options{Template: tmpl})
			}
		}
	})
}

// fuzzTok maps byte b to id 10+b.
type fuzzTok struct{}

func (fuzzTok) Encode(text string, _ bool) ([]int, error) {
	out := make([]int, len(text))
	for i := 0; i < len(text); i++ {
		out[i] = 10 + int(text[i])
	}
	return out, nil
}

func (fuzzTok) SpecialTokens() SpecialTokens { return SpecialTokens{BOS: 1, EOS: 2, PAD: 0} }
