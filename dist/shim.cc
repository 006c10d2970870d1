// gopeft's shim over libtorch's c10d: TCPStore rendezvous, a Gloo (or
// NCCL) process group, and the collectives the Trainer needs. No exception
// leaves this file: each entry point turns it into an error string.
#define USE_C10D_GLOO 1
#include "shim.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef GOPEFT_NCCL
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

struct gp_group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  int rank = 0, world = 1, backend = GP_GLOO;
};

namespace {

char *dup(const std::string &s) {
  char *p = static_cast<char *>(std::malloc(s.size() + 1));
  if (p) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

template <typename F>
int guard(char **err, F &&f) {
  try {
    f();
    return 0;
  } catch (const c10::Error &e) {
    *err = dup(trim(e.what_without_backtrace()));
  } catch (const std::exception &e) {
    *err = dup(trim(e.what()));
  } catch (...) {
    *err = dup("unknown C++ exception");
  }
  return -1;
}

at::Tensor &tensor_of(void *p) { return *static_cast<at::Tensor *>(p); }

c10d::ReduceOp reduce_op(const gp_group *g, int op) {
  switch (op) {
  case GP_SUM:
    return c10d::ReduceOp::SUM;
  case GP_AVG: // Gloo has no AVG: sum, then divide (see finish_avg)
    return g->backend == GP_NCCL ? c10d::ReduceOp::AVG : c10d::ReduceOp::SUM;
  case GP_MIN:
    return c10d::ReduceOp::MIN;
  case GP_MAX:
    return c10d::ReduceOp::MAX;
  }
  throw std::invalid_argument("unknown reduce op " + std::to_string(op));
}

void finish_avg(const gp_group *g, int op, at::Tensor &t) {
  if (op == GP_AVG && g->backend != GP_NCCL) t.div_(g->world);
}

void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>> &works) {
  // every work is waited for, so that none is left running on buffers the
  // caller frees; the first failure is rethrown
  std::exception_ptr first;
  for (auto &w : works) {
    try {
      w->wait();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

// bucket_dtype is how a tensor travels in a coalesced bucket.
at::ScalarType bucket_dtype(const at::Tensor &t) {
  auto st = t.scalar_type();
  if (st == at::kDouble) return at::kDouble;
  if (at::isFloatingType(st)) return at::kFloat;
  return st;
}

} // namespace

extern "C" {

int gp_nccl_available(void) {
#ifdef GOPEFT_NCCL
  return 1;
#else
  return 0;
#endif
}

gp_group *gp_init(const gp_init_opts *o, char **err) {
  gp_group *g = new gp_group;
  g->rank = o->rank;
  g->world = o->world;
  g->backend = o->backend;
  int rc = guard(err, [&] {
    std::chrono::milliseconds timeout(o->timeout_ms);
    if (o->backend == GP_NCCL) {
#ifndef GOPEFT_NCCL
      throw std::runtime_error(
          "the NCCL backend is not compiled in: build with -tags nccl against a CUDA libtorch with NCCL "
          "(Debian's libtorch is CPU-only)");
#endif
    }
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(o->port);
    so.isServer = o->rank == 0 && !o->agent_store;
    so.numWorkers = static_cast<std::size_t>(o->world);
    so.waitWorkers = !o->agent_store;
    so.timeout = timeout;
    so.multiTenant = true;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(o->host, so);
    if (o->prefix && *o->prefix) store = c10::make_intrusive<c10d::PrefixStore>(o->prefix, store);
    store->setTimeout(timeout);
    g->store = store;
    if (o->backend == GP_GLOO) {
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      if (o->gloo_iface && *o->gloo_iface)
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(o->gloo_iface));
      else if (o->gloo_host && *o->gloo_host)
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(o->gloo_host));
      else
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      g->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, o->rank, o->world, opts);
    } else {
#ifdef GOPEFT_NCCL
      // blocking wait: a failed or timed-out collective throws in wait()
      // (returned as an error) instead of NCCL's asynchronous handling,
      // which tears the process down
      if (!std::getenv("NCCL_BLOCKING_WAIT")) setenv("NCCL_BLOCKING_WAIT", "1", 0);
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      g->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o->rank, o->world, opts);
#endif
    }
  });
  if (rc != 0) {
    delete g;
    return nullptr;
  }
  return g;
}

void gp_free(gp_group *g) {
  if (!g) return;
  try {
    delete g;
  } catch (...) {
  }
}

int gp_allreduce(gp_group *g, void **ts, int n, int op, char **err) {
  return guard(err, [&] {
    at::NoGradGuard ng;
    c10d::AllreduceOptions ao;
    ao.reduceOp = reduce_op(g, op);
    std::vector<at::Tensor> bufs;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (int i = 0; i < n; i++) {
      at::Tensor &t = tensor_of(ts[i]);
      bufs.push_back(t.is_contiguous() ? t : t.contiguous());
    }
    for (auto &b : bufs) {
      std::vector<at::Tensor> v{b};
      works.push_back(g->pg->allreduce(v, ao));
    }
    wait_all(works);
    for (int i = 0; i < n; i++) {
      finish_avg(g, op, bufs[i]);
      at::Tensor &t = tensor_of(ts[i]);
      if (!bufs[i].is_same(t)) t.copy_(bufs[i]);
    }
  });
}

int gp_broadcast(gp_group *g, void **ts, int n, int root, char **err) {
  return guard(err, [&] {
    at::NoGradGuard ng;
    c10d::BroadcastOptions bo;
    bo.rootRank = root;
    std::vector<at::Tensor> bufs;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (int i = 0; i < n; i++) {
      at::Tensor &t = tensor_of(ts[i]);
      bufs.push_back(t.is_contiguous() ? t : t.contiguous());
    }
    for (auto &b : bufs) {
      std::vector<at::Tensor> v{b};
      works.push_back(g->pg->broadcast(v, bo));
    }
    wait_all(works);
    for (int i = 0; i < n; i++) {
      at::Tensor &t = tensor_of(ts[i]);
      if (!bufs[i].is_same(t)) t.copy_(bufs[i]);
    }
  });
}

int gp_barrier(gp_group *g, char **err) {
  return guard(err, [&] {
    auto w = g->pg->barrier(c10d::BarrierOptions());
    w->wait();
  });
}

int gp_allreduce_coalesced(gp_group *g, void **ts, int n, int op, int64_t cap_bytes, int grads, char **err) {
  return guard(err, [&] {
    at::NoGradGuard ng;
    c10d::AllreduceOptions ao;
    ao.reduceOp = reduce_op(g, op);
    std::vector<at::Tensor> targets;
    for (int i = 0; i < n; i++) {
      at::Tensor &t = tensor_of(ts[i]);
      if (!grads) {
        targets.push_back(t);
        continue;
      }
      if (!t.mutable_grad().defined()) t.mutable_grad() = at::zeros_like(t);
      targets.push_back(t.mutable_grad());
    }
    // buckets per (device, travelling dtype), in the tensors' order, each
    // at most cap_bytes unless one tensor alone is larger
    struct bucket {
      std::vector<size_t> members;
      int64_t bytes = 0;
      at::Tensor flat;
    };
    std::vector<bucket> buckets;
    std::map<std::pair<std::string, int>, size_t> open; // key -> index of the open bucket
    for (size_t i = 0; i < targets.size(); i++) {
      const at::Tensor &t = targets[i];
      auto dt = bucket_dtype(t);
      int64_t bytes = t.numel() * static_cast<int64_t>(c10::elementSize(dt));
      auto key = std::make_pair(t.device().str(), static_cast<int>(dt));
      auto it = open.find(key);
      if (it == open.end() || (buckets[it->second].bytes + bytes > cap_bytes && !buckets[it->second].members.empty())) {
        buckets.emplace_back();
        open[key] = buckets.size() - 1;
        it = open.find(key);
      }
      buckets[it->second].members.push_back(i);
      buckets[it->second].bytes += bytes;
    }
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto &b : buckets) {
      std::vector<at::Tensor> parts;
      for (size_t i : b.members) parts.push_back(targets[i].reshape({-1}).to(bucket_dtype(targets[i])));
      b.flat = at::cat(parts);
      std::vector<at::Tensor> v{b.flat};
      works.push_back(g->pg->allreduce(v, ao));
    }
    wait_all(works);
    for (auto &b : buckets) {
      finish_avg(g, op, b.flat);
      int64_t off = 0;
      for (size_t i : b.members) {
        at::Tensor &t = targets[i];
        t.copy_(b.flat.narrow(0, off, t.numel()).view(t.sizes()));
        off += t.numel();
      }
    }
  });
}

} // extern "C"
