package tokenizer

import (
	"fmt"
	"unicode/utf8"
)

// wordPieceModel is HF's WordPiece (BERT): greedy longest-match-first
// with a continuing-subword prefix.
type wordPieceModel struct {
	*vocabulary
	unkTok   string
	prefix   string
	maxChars int
}

func (m *wordPieceModel) tokenize(p piece, dst []int32, sc *scratch) ([]int32, error) {
	w := p.text()
	if w == "" {
		return dst, nil
	}
	unk := func() ([]int32, error) {
		id, ok := m.ids[m.unkTok]
		if !ok {
			return dst, fmt.Errorf("tokenizer: WordPiece unk_token %q is not in the vocabulary", m.unkTok)
		}
		return append(dst, id), nil
	}
	if utf8.RuneCountInString(w) > m.maxChars {
		return unk()
	}
	n := len(dst)
	for start := 0; start < len(w); {
		end := len(w)
		found := int32(-1)
		for start < end {
			sub := w[start:end]
			if start > 0 {
				sub = m.prefix + sub
			}
			if id, ok := m.ids[sub]; ok {
				found = id
				break
			}
			_, size := utf8.DecodeLastRuneInString(w[start:end])
			end -= size
		}
		if found < 0 {
			dst = dst[:n]
			return unk()
		}
		dst = append(dst, found)
		start = end
	}
	return dst, nil
}

// wordLevelModel maps each piece to its id, or to unk.
type wordLevelModel struct {
	*vocabulary
	unkTok string
}

func (m *wordLevelModel) tokenize(p piece, dst []int32, sc *scratch) ([]int32, error) {
	w := p.text()
	if w == "" {
		return dst, nil
	}
	if id, ok := m.ids[w]; ok {
		return append(dst, id), nil
	}
	if id, ok := m.ids[m.unkTok]; ok {
		return append(dst, id), nil
	}
	return dst, fmt.Errorf("tokenizer: WordLevel unk_token %q is not in the vocabulary", m.unkTok)
}
