package tensor

import lib "github.com/sugarme/gotch/libtch"

// QR is the reduced QR decomposition of a 2-D tensor a [m, n] = q·r with
// q [m, k] (orthonormal columns), r [k, n] upper triangular, k = min(m, n)
// (torch.linalg.qr(a, mode="reduced"), LAPACK's geqrf/orgqr: the signs are
// LAPACK's, the diagonal of r is not made positive).
func (s *Scope) QR(a *T) (q, r *T) {
	if !s.ok(a) {
		return nil, nil
	}
	lib.AtgLinalgQr(s.ptr(), a.c, "reduced")
	out := s.results("linalg_qr", 2)
	return out[0], out[1]
}
