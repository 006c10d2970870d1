package serve

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/tokenizer"
)

// tokenizerCache is where `make setup` (scripts/fetch-tokenizers.sh) puts
// the real tokenizers with their tokenizer_config.json.
func tokenizerCache() string {
	if d := os.Getenv("GOPEFT_TOKENIZERS"); d != "" {
		return d
	}
	if d := os.Getenv("GOPEFT_CACHE"); d != "" {
		return filepath.Join(d, "tokenizers")
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "gopeft", "tokenizers")
}

func realTokenizer(t *testing.T, name string) *tokenizer.Tokenizer {
	t.Helper()
	path := filepath.Join(tokenizerCache(), name, "tokenizer.json")
	tok, err := tokenizer.Load(path)
	if err != nil {
		t.Fatalf("%v (the real tokenizers come with `make setup`)", err)
	}
	return tok
}

var chatMsgs = []Message{
	{Role: "system", Content: "Be brief."},
	{Role: "user", Content: "Hi"},
	{Role: "assistant", Content: "Hello!"},
	{Role: "user", Content: "Bye"},
}

// The models' own templates, rendered as their model cards show the
// format (written out by hand here, not by a Jinja engine).
func TestChatTemplateRealModels(t *testing.T) {
	cases := []struct {
		name, want string
	}{
		{"llama3", "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
			"<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
			"<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>" +
			"<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>" +
			"<|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"qwen3", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" +
			"<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"},
		// Gemma 3 folds the system message into the first user turn.
		{"gemma3", "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n" +
			"<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := realTokenizer(t, c.name)
			ct, err := NewChatTemplate(tok, "")
			if err != nil {
				t.Fatal(err)
			}
			if ct.Source() != "chat_template" {
				t.Fatalf("source %q, want the model's chat_template", ct.Source())
			}
			got, err := ct.Render(chatMsgs)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("rendered\n%q\nwant\n%q", got, c.want)
			}
			ids, err := ct.Encode(chatMsgs)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := tok.EncodeIDs(c.want, false)
			if len(ids) != len(want) {
				t.Fatalf("%d ids, want %d (the template's text encoded without added special tokens)", len(ids), len(want))
			}
			for i := range ids {
				if ids[i] != int64(want[i]) {
					t.Fatalf("id %d: %d, want %d", i, ids[i], want[i])
				}
			}
			// bos appears once: from the template, not added again.
			if bos := tok.Config().BOSToken; bos != "" && strings.Count(got, bos) > 1 {
				t.Fatalf("bos %q appears %d times", bos, strings.Count(got, bos))
			}
		})
	}
}

// raise_exception in a template becomes an error naming its message.
func TestChatTemplateRaiseException(t *testing.T) {
	ct, err := NewChatTemplate(realTokenizer(t, "gemma3"), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = ct.Encode([]Message{{Role: "user", Content: "a"}, {Role: "user", Content: "b"}})
	if err == nil || !strings.Contains(err.Error(), "Conversation roles must alternate") {
		t.Fatalf("err = %v, want the template's raise_exception message", err)
	}
}

// Qwen2-Instruct's template (from its tokenizer_config.json): the default
// system prompt through loop.first and messages[0]['role'].
const qwen2Template = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

// A template written the way many HF templates are: bos_token/eos_token
// variables, loop.last, a raise_exception guard.
const guardTemplate = "{{ bos_token }}{% for m in messages %}{% if m['role'] not in ['user', 'assistant', 'system'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}" +
	"[{{ m['role'] }}]{{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% if loop.last %}|{% endif %}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"

func TestChatTemplateJinjaFeatures(t *testing.T) {
	base := filepath.Join(tokenizerCache(), "qwen3", "tokenizer.json")
	raw, err := os.ReadFile(base)
	if err != nil {
		t.Fatalf("%v (the real tokenizers come with `make setup`)", err)
	}
	for _, c := range []struct {
		name, tmpl string
		msgs       []Message
		want       string
	}{
		{"qwen2 default system", qwen2Template, []Message{{Role: "user", Content: "Hi"}},
			"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"},
		{"qwen2 own system", qwen2Template, []Message{{Role: "system", Content: "S"}, {Role: "user", Content: "Hi"}},
			"<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"},
		{"bos eos loop.last", guardTemplate, []Message{{Role: "user", Content: "a"}, {Role: "assistant", Content: "b"}, {Role: "user", Content: "c"}},
			"<B>[user]a[assistant]b<E>[user]c|[assistant]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "tokenizer.json"), raw, 0o644)
			cfg := `{"bos_token": "<B>", "eos_token": {"content": "<E>"}, "chat_template": ` + jsonString(c.tmpl) + `}`
			os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(cfg), 0o644)
			tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
			if err != nil {
				t.Fatal(err)
			}
			ct, err := NewChatTemplate(tok, "")
			if err != nil {
				t.Fatal(err)
			}
			got, err := ct.Render(c.msgs)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("rendered %q, want %q", got, c.want)
			}
		})
	}
}

func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Without a chat_template the named template of package data lays the
// conversation out, ending where the reply starts.
func TestChatTemplateFallback(t *testing.T) {
	tok := realTokenizer(t, "llama2") // its tokenizer_config.json has no chat_template
	if tok.Config().ChatTemplate != "" {
		t.Fatal("the llama2 tokenizer_config.json gained a chat_template; pick another tokenizer for this test")
	}
	ct, err := NewChatTemplate(tok, "llama2")
	if err != nil {
		t.Fatal(err)
	}
	if ct.Source() != "llama2" {
		t.Fatalf("source %q", ct.Source())
	}
	got, err := ct.Encode(chatMsgs)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, _ := data.TemplateByName("llama2")
	want, err := data.Prompt(data.FromTokenizer(tok), tmpl, data.Conversation{System: "Be brief.",
		Turns: []data.Turn{{User: "Hi", Assistant: "Hello!"}, {User: "Bye"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d ids, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("id %d: %d, want %d", i, got[i], want[i])
		}
	}
	// The prompt ends with [/INST], where the reply starts.
	if s := tok.Decode(toInts(got), false); !strings.HasSuffix(s, "Bye [/INST]") {
		t.Fatalf("prompt %q does not end where the reply starts", s)
	}
	if _, err := ct.Encode([]Message{{Role: "user", Content: "a"}, {Role: "assistant", Content: "b"}}); err == nil {
		t.Fatal("a conversation ending with the assistant was accepted")
	}
	if _, err := NewChatTemplate(tok, "nonesuch"); err == nil || !strings.Contains(err.Error(), "nonesuch") {
		t.Fatalf("unknown fallback: err = %v", err)
	}
}

func toInts(v []int64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}
