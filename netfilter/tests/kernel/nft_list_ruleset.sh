#!/usr/bin/env bash
# Loads netfilter/tests/data/kube-proxy-overall.nft with `nft -f` in a private network
# namespace and checks that `nft list ruleset` prints exactly
# netfilter/tests/data/kube-proxy-overall.nft-list-ruleset, the listing podnet's nft module is
# golden-tested against. Root; the namespace is deleted on every exit.
# Usage: nft_list_ruleset.sh           (check)
#        nft_list_ruleset.sh --print   (print what this machine's nft lists)
set -euo pipefail
DATA=$(cd "$(dirname "$0")/../data" && pwd)
NS="podnet-nft-$$"
ip netns add "$NS"
trap 'ip netns del "$NS" 2>/dev/null || true' EXIT INT TERM
ip netns exec "$NS" nft -f "$DATA/kube-proxy-overall.nft"
if [ "${1:-}" = "--print" ]; then
  ip netns exec "$NS" nft list ruleset
else
  diff -u "$DATA/kube-proxy-overall.nft-list-ruleset" <(ip netns exec "$NS" nft list ruleset)
  echo "nft list ruleset ($(nft --version)) prints the golden listing"
fi
