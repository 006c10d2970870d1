package peft

import (
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

type heldKey struct{ m *Model }

// Hold takes the read side of the model's lock for every call run in s
// until release is called: the model's adapters and weights cannot change
// in between (changes wait). The forwards take it themselves for one call;
// a caller that runs several calls as one (generate does, for all the
// steps of a generation) holds it across them. Holding it again in the
// same scope is a no-op. Do not change the model from the goroutine that
// holds it (that waits for itself).
func (m *Model) Hold(s *tensor.Scope) (release func()) {
	if s.Value(heldKey{m}) != nil {
		return func() {}
	}
	m.mu.RLock()
	s.SetValue(heldKey{m}, true)
	return func() {
		s.SetValue(heldKey{m}, nil)
		m.mu.RUnlock()
	}
}

// ForwardT runs the wrapped model in scope s with the adapters of the call
// (the Selection attached to s, else the model's active adapters). With a
// prompt-learning adapter, the batch first gets its virtual tokens (see
// promptBatch): prompt tuning / P-tuning logits have P extra leading
// positions, as in PEFT; a first call with UseCache puts the virtual tokens
// into the cache, and later calls with that cache inject nothing more.
// Attention masks always cover the caller's tokens only.
func (m *Model) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	if s.Err() != nil {
		return &models.Output{}
	}
	defer m.Hold(s)()
	if err := m.checkCall(s, b); err != nil {
		return &models.Output{Logits: s.Fail(err)}
	}
	if d := m.Device(); d.IsCUDA() { // the prompt paths create tensors before the base runs
		defer s.SetDevice(s.SetDevice(d))
		b.ToDevice(s, d)
	}
	if pc, enc := m.callPrompt(s); pc != nil {
		b = m.promptBatch(s, pc, enc, b)
		if s.Err() != nil {
			return &models.Output{}
		}
	}
	out := m.BaseModel.Model.ForwardT(s, b)
	m.addLossTerms(s, out) // a method's term in the loss (LossTermer)
	return out
}

// Forward runs the wrapped model (public entry point), with the adapters
// of the call (see ForwardT).
func (m *Model) Forward(s *tensor.Scope, in models.Inputs) (*models.Outputs, error) {
	if s == nil {
		return nil, fmt.Errorf("peft: forward: nil scope (make one with tensor.NewScope or tensor.NoGradScope)")
	}
	defer m.Hold(s)()
	if SelectionOf(s) == nil {
		if pc, _ := m.callPrompt(s); pc == nil && !m.hasLossTerm() {
			return m.BaseModel.Model.Forward(s, in)
		}
	}
	return models.Run(s, "peft", m.ForwardT, in)
}

// ForwardWith is Forward with the adapter choice sel for this call only
// (nil: the model's own): sel.Adapters run summed, sel.Disabled runs the
// base model, sel.Rows gives each batch row its adapter (ForwardMixed).
// The model is not changed, so concurrent calls with different selections
// are independent. An adapter the model does not have is an error.
func (m *Model) ForwardWith(s *tensor.Scope, in models.Inputs, sel *Selection) (*models.Outputs, error) {
	if s == nil {
		return nil, fmt.Errorf("peft: forward: nil scope (make one with tensor.NewScope or tensor.NoGradScope)")
	}
	defer WithSelection(s, sel)()
	return models.Run(s, "peft", m.ForwardT, in)
}

// ForwardMixed runs a batch whose rows use different adapters (HF's
// `model(..., adapter_names=[...])`): adapterNames holds one adapter name
// per batch row, or BaseAdapterName for the base model alone. Each LoRA
// layer computes the base output once and adds every adapter's update to
// its own rows; modules_to_save layers run each row through that row's
// adapter copy (the original for "__base__" and for adapters without a
// copy). Row i of the result equals row i of a normal forward with only
// adapterNames[i] active. It is ForwardT with Selection{Rows: adapterNames}.
//
// Errors (recorded in s): a name count that is not the batch size, an
// unknown adapter, a DoRA adapter among the names, merged adapters, or a
// model whose adapters cannot run per row (not LoRA). Under
// DisableAdapters every row gets the base output, as in PEFT.
func (m *Model) ForwardMixed(s *tensor.Scope, b *models.Batch, adapterNames []string) *models.Output {
	if s.Err() != nil {
		return &models.Output{}
	}
	if adapterNames == nil {
		adapterNames = []string{}
	}
	defer WithSelection(s, &Selection{Rows: adapterNames})()
	return m.ForwardT(s, b)
}

// checkCall validates the Selection of the call in s against the model:
// known adapter names, one adapter for prompt learning, and for a mixed
// batch one name per row and layers that can run them.
func (m *Model) checkCall(s *tensor.Scope, b *models.Batch) error {
	sel := SelectionOf(s)
	if sel == nil {
		return nil
	}
	for _, n := range sel.Adapters {
		if _, ok := m.configs[n]; !ok {
			return fmt.Errorf("peft: no adapter %q (have %v)", n, m.names)
		}
	}
	if m.PromptEncoder != nil && len(sel.Adapters) > 1 {
		return fmt.Errorf("peft: prompt-learning models run one adapter per call, not %v", sel.Adapters)
	}
	if sel.Rows == nil {
		return nil
	}
	var batch int64
	switch {
	case b.InputIDs != nil:
		batch = b.InputIDs.Size(0)
	case b.InputsEmbeds != nil:
		batch = b.InputsEmbeds.Size(0)
	default:
		return fmt.Errorf("peft: mixed batch: either input_ids or inputs_embeds is required")
	}
	if int64(len(sel.Rows)) != batch {
		return fmt.Errorf("peft: mixed batch: %d adapter names for a batch of %d rows (want one per row)", len(sel.Rows), batch)
	}
	for _, n := range sel.Rows {
		if _, ok := m.configs[n]; !ok && n != BaseAdapterName {
			return fmt.Errorf("peft: mixed batch: no adapter %q (have %v, or %q for the base model)", n, m.names, BaseAdapterName)
		}
	}
	if m.PromptEncoder != nil {
		return fmt.Errorf("peft: mixed batch: %s adapters cannot run different adapters per row", m.BaseModel.kind)
	}
	if m.disabled || sel.Disabled {
		return nil // every row gets the base output
	}
	rowTuners := 0
	for _, pt := range tuners(m.BaseModel.Model) {
		t, ok := pt.tuner.(RowChecker)
		if !ok {
			return fmt.Errorf("peft: mixed batch: %s (%s) cannot run different adapters per row", pt.path, nn.TypeName(pt.tuner))
		}
		if err := t.CheckRows(sel.Rows); err != nil {
			return fmt.Errorf("peft: mixed batch: %s: %w", pt.path, err)
		}
		if _, isMTS := t.(*ModulesToSave); !isMTS {
			rowTuners++
		}
	}
	if rowTuners == 0 {
		return fmt.Errorf("peft: mixed batch: the model's %s adapters cannot run different adapters per row", m.BaseModel.kind)
	}
	return nil
}

// RowsSupported reports whether the model can run a different adapter on
// each row of a batch (Selection.Rows, ForwardMixed): its method's layers
// implement RowChecker (LoRA, modules_to_save) and it is not prompt
// learning. Merged or DoRA adapters can still refuse a given call.
func (m *Model) RowsSupported() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.PromptEncoder != nil {
		return false
	}
	n := 0
	for _, pt := range tuners(m.BaseModel.Model) {
		if _, ok := pt.tuner.(RowChecker); !ok {
			return false
		}
		n++
	}
	return n > 0
}
