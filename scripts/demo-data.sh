#!/usr/bin/env bash
# make demo's data: the Tang and Song poems examples/quickstart trains on
# (Debian's fortunes-zh, GPL), read from /usr/share/games/fortunes and never
# copied into the repository. Only make demo runs this; make setup, make
# test and cmd/gopeft-setup never install it.
set -euo pipefail

if [ -f /usr/share/games/fortunes/tang300 ] && [ -f /usr/share/games/fortunes/song100 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "demo-data: ERROR: make demo needs Debian's fortunes-zh poems in /usr/share/games/fortunes (no apt-get here)" >&2
  exit 1
fi
echo "demo-data: installing fortunes-zh (Tang and Song poems for make demo) with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq fortunes-zh >/dev/null 2>&1 ||
  { apt-get update -qq && apt-get install -y -qq fortunes-zh >/dev/null; }
