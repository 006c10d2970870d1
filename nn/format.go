package nn

import (
	"strings"
)

// Format prints m as a tree in the style of PyTorch's print(model):
//
//	LlamaForCausalLM(
//	  (model): LlamaModel(
//	    (embed_tokens): Embedding(512, 64)
//	    ...
func Format(m Module) string {
	var b strings.Builder
	format(&b, m, 0)
	return b.String()
}

func format(b *strings.Builder, m Module, depth int) {
	b.WriteString(TypeName(m))
	b.WriteString("(")
	kids := Children(m)
	extra := ""
	if e, ok := m.(interface{ ExtraRepr() string }); ok {
		extra = e.ExtraRepr()
	}
	if len(kids) == 0 {
		b.WriteString(extra)
		b.WriteString(")")
		return
	}
	b.WriteString("\n")
	pad := strings.Repeat("  ", depth+1)
	if extra != "" {
		b.WriteString(pad + extra + "\n")
	}
	for _, c := range kids {
		b.WriteString(pad + "(" + c.Name + "): ")
		format(b, c.Module, depth+1)
		b.WriteString("\n")
	}
	b.WriteString(strings.Repeat("  ", depth) + ")")
}
