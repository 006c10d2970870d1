package data_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/tokenizer"
	"github.com/stretchr/testify/require"
)

// realTokenizer loads a tokenizer that scripts/fetch-tokenizers.sh cached
// (GOPEFT_TOKENIZERS, else $GOPEFT_CACHE/tokenizers, else
// ~/.cache/gopeft/tokenizers, as the tokenizer tests look).
func realTokenizer(t *testing.T, name string) *tokenizer.Tokenizer {
	dir := os.Getenv("GOPEFT_TOKENIZERS")
	if dir == "" {
		base := os.Getenv("GOPEFT_CACHE")
		if base == "" {
			c := os.Getenv("XDG_CACHE_HOME")
			if c == "" {
				home, _ := os.UserHomeDir()
				c = filepath.Join(home, ".cache")
			}
			base = filepath.Join(c, "gopeft")
		}
		dir = filepath.Join(base, "tokenizers")
	}
	path := filepath.Join(dir, name, "tokenizer.json")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: run `make setup` (scripts/fetch-tokenizers.sh): %v", path, err)
	}
	tok, err := tokenizer.Load(path)
	require.NoError(t, err)
	return tok
}

func chat() data.Conversation {
	c, err := data.FromMessages([]data.Message{
		{Role: "system", Content: "你是一个乐于助人的助手。"},
		{Role: "user", Content: "《静夜思》的作者是谁？"}, {Role: "assistant", Content: "李白。"},
		{Role: "user", Content: "Thanks!"}, {Role: "assistant", Content: "You're welcome."},
	})
	if err != nil {
		panic(err)
	}
	return c
}

// With Qwen3's and Llama 3's real tokenizers, encoding the template's
// segments one by one gives the ids of encoding the whole rendered chat
// (as apply_chat_template + encode does), and the labels are exactly the
// answers with their end-of-turn tokens.
func TestRealTokenizers(t *testing.T) {
	cases := []struct {
		tok, tmpl, rendered string
		bos                 int
		answers             []string
	}{
		{"qwen3", "chatml",
			"<|im_start|>system\n你是一个乐于助人的助手。<|im_end|>\n<|im_start|>user\n《静夜思》的作者是谁？<|im_end|>\n<|im_start|>assistant\n李白。<|im_end|>\n" +
				"<|im_start|>user\nThanks!<|im_end|>\n<|im_start|>assistant\nYou're welcome.<|im_end|>",
			-1, []string{"李白。<|im_end|>", "You're welcome.<|im_end|>"}},
		{"llama3", "llama3",
			"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n你是一个乐于助人的助手。<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n《静夜思》的作者是谁？<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n李白。<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nThanks!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nYou're welcome.<|eot_id|>",
			128000, []string{"李白。<|eot_id|>", "You're welcome.<|eot_id|>"}},
	}
	for _, c := range cases {
		t.Run(c.tok, func(t *testing.T) {
			hf := realTokenizer(t, c.tok)
			tok := data.FromTokenizer(hf)
			require.Equal(t, c.bos, tok.SpecialTokens().BOS)
			tmpl, err := data.TemplateByName(c.tmpl)
			require.NoError(t, err)
			ds, err := data.Conversations(tok, []data.Conversation{chat()}, data.Options{Template: tmpl})
			require.NoError(t, err)
			s := ds.Samples[0]
			want, err := hf.EncodeIDs(c.rendered, false)
			require.NoError(t, err)
			ids := make([]int, len(s.InputIDs))
			for i, v := range s.InputIDs {
				ids[i] = int(v)
			}
			require.Equal(t, want, ids)
			// the labels, run by run, are the answers
			var runs []string
			var cur []int
			for i, l := range s.Labels {
				if l == models.IgnoreIndex {
					if cur != nil {
						runs = append(runs, hf.Decode(cur, false))
						cur = nil
					}
					continue
				}
				require.Equal(t, s.InputIDs[i], l)
				cur = append(cur, int(l))
			}
			if cur != nil {
				runs = append(runs, hf.Decode(cur, false))
			}
			require.Equal(t, c.answers, runs)
			require.True(t, strings.HasPrefix(hf.Decode(ids, false), c.rendered[:10]))
		})
	}
}
