package tensor

import lib "github.com/sugarme/gotch/libtch"

// Ifft2Real is the real part of torch.fft.ifft2(t) over t's last two
// dimensions (norm "backward": the sum is divided by their product), for
// a real t: FourierFT's ΔW = Re(ifft2(spectrum)). Autograd flows through
// to t. The result is a strided view of the complex transform (the scope
// owns both).
func (s *Scope) Ifft2Real(t *T) *T {
	if !s.ok(t) {
		return nil
	}
	sh := t.Shape()
	if len(sh) < 2 {
		return s.Failf("tensor: ifft2 needs at least 2 dimensions, got shape %v", sh)
	}
	size := []int64{sh[len(sh)-2], sh[len(sh)-1]}
	lib.AtgFftIfft2(s.ptr(), t.c, size, len(size), []int64{-2, -1}, 2, "backward")
	c := s.result("fft_ifft2")
	if c == nil {
		return nil
	}
	lib.AtgReal(s.ptr(), c.c)
	return s.result("real")
}
