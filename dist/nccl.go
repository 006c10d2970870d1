//go:build nccl

package dist

// Built with -tags nccl the shim includes c10d's ProcessGroupNCCL: it
// needs a CUDA libtorch with NCCL (the official CUDA zip, LIBTORCH=...)
// and CUDA's headers. Not verified on this project's CPU-only machines.

// #cgo CXXFLAGS: -DGOPEFT_NCCL -DUSE_C10D_NCCL -I/usr/local/cuda/include
// #cgo LDFLAGS: -ltorch_cuda -lc10_cuda -L/usr/local/cuda/lib64 -lcudart
import "C"
