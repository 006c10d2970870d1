// C interface of gopeft's shim over libtorch's c10d (see dist.go). Every
// function catches C++ exceptions: a failure returns -1 (or NULL) and sets
// *err to a malloc'd message the caller frees.
#ifndef GOPEFT_DIST_SHIM_H
#define GOPEFT_DIST_SHIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gp_group gp_group;

typedef struct {
  const char *host;      // MASTER_ADDR
  int port;              // MASTER_PORT
  int rank, world;       // RANK, WORLD_SIZE
  int agent_store;       // 1: a launcher (torchrun) hosts the TCPStore server
  const char *prefix;    // key prefix in the store ("" none)
  int backend;           // GP_GLOO or GP_NCCL
  int64_t timeout_ms;    // store, rendezvous and collective timeout
  const char *gloo_host; // Gloo: address to bind ("" = resolve the hostname)
  const char *gloo_iface;// Gloo: network interface ("" = unused)
} gp_init_opts;

enum { GP_GLOO = 0, GP_NCCL = 1 };
enum { GP_SUM = 0, GP_AVG = 1, GP_MIN = 2, GP_MAX = 3 };

// gp_nccl_available is 1 when the shim was built with the NCCL backend.
int gp_nccl_available(void);

gp_group *gp_init(const gp_init_opts *o, char **err);
void gp_free(gp_group *g);

// The tensors are libtch handles (torch::Tensor*).
int gp_allreduce(gp_group *g, void **ts, int n, int op, char **err);
int gp_broadcast(gp_group *g, void **ts, int n, int root, char **err);
int gp_barrier(gp_group *g, char **err);
// gp_allreduce_coalesced reduces the tensors (grads=1: their gradients,
// zero-filled where a tensor has none) through flat buckets of at most
// cap_bytes; floating tensors travel as float32 (float64 as float64).
int gp_allreduce_coalesced(gp_group *g, void **ts, int n, int op, int64_t cap_bytes, int grads, char **err);

#ifdef __cplusplus
}
#endif
#endif
