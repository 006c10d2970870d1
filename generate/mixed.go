package generate

import (
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// RowAdapters makes m run prompt i of a batch through adapter names[i] (or
// peft.BaseAdapterName for the base model alone), with PEFT's mixed-batch
// inference (peft.Model.ForwardMixed, LoRA adapters). The rows a prompt
// expands into — its samples or beams — use the prompt's adapter.
func RowAdapters(m *peft.Model, names []string) Model {
	return &rowAdapters{m: m, names: append([]string(nil), names...)}
}

type rowAdapters struct {
	m     *peft.Model
	names []string
}

func (r *rowAdapters) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	var rows int64
	switch {
	case b.InputIDs != nil:
		rows = b.InputIDs.Size(0)
	case b.InputsEmbeds != nil:
		rows = b.InputsEmbeds.Size(0)
	}
	if len(r.names) == 0 || rows%int64(len(r.names)) != 0 {
		return &models.Output{Logits: s.Failf("generate: %d adapter names for a batch of %d rows (want one per prompt)", len(r.names), rows)}
	}
	k := int(rows) / len(r.names)
	names := make([]string, 0, rows)
	for _, n := range r.names {
		for j := 0; j < k; j++ {
			names = append(names, n)
		}
	}
	return r.m.ForwardMixed(s, b, names)
}
