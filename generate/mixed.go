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

// WithAdapters makes m run every forward of a generation with the adapter
// choice sel (peft.Selection: adapters summed, Disabled for the base model,
// or Rows for one adapter per batch row — the rows a prompt expands into,
// its samples or beams, then need one name each; RowAdapters names one per
// prompt). The model is not changed, so concurrent generations with
// different selections are independent, and the generation holds the
// model's read lock for all its steps (peft.Model.Hold): adapters cannot
// be loaded, deleted or merged in between. The result is safe for
// concurrent use.
func WithAdapters(m *peft.Model, sel *peft.Selection) Model {
	return &withAdapters{m: m, sel: sel}
}

type withAdapters struct {
	m   *peft.Model
	sel *peft.Selection
}

func (w *withAdapters) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	defer peft.WithSelection(s, w.sel)()
	return w.m.ForwardT(s, b)
}

func (w *withAdapters) Hold(s *tensor.Scope) func() { return w.m.Hold(s) }

func (w *withAdapters) Device() tensor.Device { return w.m.Device() }

func (r *rowAdapters) Hold(s *tensor.Scope) func() { return r.m.Hold(s) }

func (r *rowAdapters) Device() tensor.Device { return r.m.Device() }

// holder is a model whose calls hold a lock for a whole generation
// (peft.Model, and the wrappers above).
type holder interface {
	Hold(s *tensor.Scope) (release func())
}
