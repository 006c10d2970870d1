package peft

import (
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// BaseAdapterName in a mixed batch marks a row that runs the base model
// without any adapter (HF's "__base__").
const BaseAdapterName = "__base__"

// RowAdapterSetter is implemented by Tuners that can run a different
// adapter on each row of a batch (LoRA). SetRowAdapters gets one adapter
// name (or BaseAdapterName) per batch row, or nil to go back to the normal
// forward; it refuses what the layer cannot do per row (merged adapters,
// DoRA).
type RowAdapterSetter interface {
	SetRowAdapters(names []string) error
}

// ForwardMixed runs a batch whose rows use different adapters (HF's
// `model(..., adapter_names=[...])`): adapterNames holds one adapter name
// per batch row, or BaseAdapterName for the base model alone. Each LoRA
// layer computes the base output once and adds every adapter's update to
// its own rows; modules_to_save layers run each row through that row's
// adapter copy (the original for "__base__" and for adapters without a
// copy). Row i of the result equals row i of a normal forward with only
// adapterNames[i] active.
//
// Errors (recorded in s): a name count that is not the batch size, an
// unknown adapter, a DoRA adapter among the names, merged adapters, or a
// model whose adapters cannot run per row (not LoRA). Under
// DisableAdapters every row gets the base output, as in PEFT.
func (m *Model) ForwardMixed(s *tensor.Scope, b *models.Batch, adapterNames []string) *models.Output {
	if s.Err() != nil {
		return &models.Output{}
	}
	var batch int64
	switch {
	case b.InputIDs != nil:
		batch = b.InputIDs.Size(0)
	case b.InputsEmbeds != nil:
		batch = b.InputsEmbeds.Size(0)
	default:
		return &models.Output{Logits: s.Failf("peft: mixed batch: either input_ids or inputs_embeds is required")}
	}
	if int64(len(adapterNames)) != batch {
		return &models.Output{Logits: s.Failf("peft: mixed batch: %d adapter names for a batch of %d rows (want one per row)", len(adapterNames), batch)}
	}
	for _, n := range adapterNames {
		if _, ok := m.configs[n]; !ok && n != BaseAdapterName {
			return &models.Output{Logits: s.Failf("peft: mixed batch: no adapter %q (have %v, or %q for the base model)", n, m.names, BaseAdapterName)}
		}
	}
	names := append([]string(nil), adapterNames...)
	base := m.BaseModel.Model

	var setters []RowAdapterSetter
	defer func() { // clear everything, on success and on error alike
		for _, st := range setters {
			_ = st.SetRowAdapters(nil)
		}
	}()
	lora := 0
	for _, pt := range tuners(base) {
		t, ok := pt.tuner.(RowAdapterSetter)
		if !ok {
			return &models.Output{Logits: s.Failf("peft: mixed batch: %s (%s) cannot run different adapters per row", pt.path, nn.TypeName(pt.tuner))}
		}
		setters = append(setters, t)
		if err := t.SetRowAdapters(names); err != nil {
			return &models.Output{Logits: s.Failf("peft: mixed batch: %s: %w", pt.path, err)}
		}
		if _, isMTS := t.(*ModulesToSave); !isMTS {
			lora++
		}
	}
	if lora == 0 {
		return &models.Output{Logits: s.Failf("peft: mixed batch: the model's %s adapters cannot run different adapters per row", m.BaseModel.kind)}
	}
	return m.ForwardT(s, b)
}

// SetRowAdapters implements RowAdapterSetter: each row goes through its
// adapter's copy (the original for "__base__" and adapters without one).
func (w *ModulesToSave) SetRowAdapters(names []string) error {
	w.rows = nil
	if names != nil {
		w.rows = append([]string(nil), names...)
	}
	return nil
}

// mixedForward runs each group of rows through its layer.
func (w *ModulesToSave) mixedForward(s *tensor.Scope, x *tensor.T) *tensor.T {
	if x.Size(0) != int64(len(w.rows)) {
		return s.Failf("peft: mixed batch: %d adapter names for an input of %d rows", len(w.rows), x.Size(0))
	}
	// group rows by the layer that serves them, in order of first use
	var layers []nn.Layer
	var groups [][]int64
	for i, name := range w.rows {
		layer := w.Original
		if c, ok := w.Copies.Get(name); ok && name != BaseAdapterName {
			layer = c.(nn.Layer)
		}
		g := -1
		for j, l := range layers {
			if l == layer {
				g = j
			}
		}
		if g < 0 {
			layers = append(layers, layer)
			groups = append(groups, nil)
			g = len(layers) - 1
		}
		groups[g] = append(groups[g], int64(i))
	}
	if len(layers) == 1 {
		return layers[0].Forward(s, x)
	}
	outs := make([]*tensor.T, len(layers))
	inverse := make([]int64, len(w.rows)) // row i of the result is row inverse[i] of cat(outs)
	var at int64
	for g, layer := range layers {
		idx := s.FromInt64(groups[g], int64(len(groups[g])))
		outs[g] = layer.Forward(s, s.IndexSelect(x, 0, idx))
		for _, row := range groups[g] {
			inverse[row] = at
			at++
		}
	}
	return s.IndexSelect(s.Cat(0, outs...), 0, s.FromInt64(inverse, int64(len(inverse))))
}
