package data

import (
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/tensor"
)

// PadSide is where padding goes.
type PadSide int

const (
	// PadRight pads after the tokens: for training, where every row starts
	// at position 0.
	PadRight PadSide = iota
	// PadLeft pads before the tokens: for generation, where every row's
	// next token is at the same last position.
	PadLeft
)

// Collator pads samples to a batch, dynamically: to the longest row (and
// up to a multiple of PadToMultipleOf when set). Padding has attention
// mask 0 and label -100.
type Collator struct {
	PadID           int64
	Side            PadSide
	PadToMultipleOf int
}

// Batch is a padded batch as row-major [Size, Len] int64 slices.
type Batch struct {
	InputIDs      []int64
	AttentionMask []int64
	Labels        []int64 // nil when no sample had labels (prompts)
	Size, Len     int
	// Tokens is the number of real (unpadded) tokens.
	Tokens int
	// Targets is the number of positions the shifted loss counts.
	Targets int
	// TaskIDs are the samples' task ids when every sample has one
	// (Sample.TaskID), else nil.
	TaskIDs []int64
}

// Collate pads samples into a batch.
func (c Collator) Collate(samples []Sample) *Batch {
	L := 0
	hasLabels := false
	for _, s := range samples {
		L = max(L, len(s.InputIDs))
		hasLabels = hasLabels || s.Labels != nil
	}
	if m := c.PadToMultipleOf; m > 1 && L%m != 0 {
		L += m - L%m
	}
	B := len(samples)
	b := &Batch{Size: B, Len: L, InputIDs: make([]int64, B*L), AttentionMask: make([]int64, B*L)}
	for _, s := range samples {
		if s.TaskID == nil {
			b.TaskIDs = nil
			break
		}
		b.TaskIDs = append(b.TaskIDs, *s.TaskID)
	}
	if hasLabels {
		b.Labels = make([]int64, B*L)
	}
	for r, s := range samples {
		row := b.InputIDs[r*L : (r+1)*L]
		mask := b.AttentionMask[r*L : (r+1)*L]
		off := 0
		if c.Side == PadLeft {
			off = L - len(s.InputIDs)
		}
		for i := range row {
			row[i] = c.PadID
		}
		copy(row[off:], s.InputIDs)
		for i := range s.InputIDs {
			m := int64(1)
			if s.AttentionMask != nil {
				m = s.AttentionMask[i]
			}
			mask[off+i] = m
		}
		b.Tokens += len(s.InputIDs)
		if hasLabels {
			lab := b.Labels[r*L : (r+1)*L]
			for i := range lab {
				lab[i] = models.IgnoreIndex
			}
			copy(lab[off:], s.Labels)
			for i := 1; i < L; i++ {
				if lab[i] != models.IgnoreIndex {
					b.Targets++
				}
			}
		}
	}
	return b
}

// Inputs returns the batch as a model's public inputs, tensors owned by
// scope s (see models.Inputs).
func (b *Batch) Inputs(s *tensor.Scope) (models.Inputs, error) {
	mb := b.ModelBatch(s)
	if err := s.Err(); err != nil {
		return models.Inputs{}, fmt.Errorf("data: batch: %w", err)
	}
	return models.Inputs{InputIDs: mb.InputIDs, AttentionMask: mb.AttentionMask, Labels: mb.Labels, TaskIDs: mb.TaskIDs}, nil
}

// ModelBatch returns the batch as tensors of scope s (the library's
// internal form, for the trainer).
func (b *Batch) ModelBatch(s *tensor.Scope) *models.Batch {
	shape := []int64{int64(b.Size), int64(b.Len)}
	mb := &models.Batch{
		InputIDs:      s.FromInt64(b.InputIDs, shape...),
		AttentionMask: s.FromInt64(b.AttentionMask, shape...),
	}
	if b.Labels != nil {
		mb.Labels = s.FromInt64(b.Labels, shape...)
	}
	if b.TaskIDs != nil {
		mb.TaskIDs = s.FromInt64(b.TaskIDs, int64(b.Size))
	}
	return mb
}
