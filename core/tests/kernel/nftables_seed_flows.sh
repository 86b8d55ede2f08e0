#!/usr/bin/env bash
# The seed's node-side flows in kube-proxy's nftables mode, through this machine's kernel and
# through podnet, compared: network namespaces laid out as the reference cluster (the VPC
# segment and router, node1..node3 with their cbr0 bridges, br_netfilter on and hairpin on
# every pod port as the model has them, pods pod1..pod4 serving TCP and UDP on 8080), each
# node loaded with what podnet generates for it (`podnet kube-proxy-rules --proxy-mode
# nftables` through `nft -f`, and the egress agent's rules from `podnet iptables-save` through
# iptables-restore). Each flow runs several times in the kernel; every outcome it shows
# (who answered, the source address the server saw, where the reply came from, refused or
# timed out) must be one podnet's `trace --all-outcomes` gives, and every outcome podnet gives
# must show up in the kernel.
#
# Needs root, ip, nft, iptables-restore and python3; namespaces are named pnn-*-$$ and
# deleted on every exit. Usage: core/tests/kernel/nftables_seed_flows.sh [PODNET_BINARY]
set -euo pipefail
cd "$(dirname "$0")/../../.."
HERE=core/tests/kernel
PODNET=${1:-target/debug/podnet}
[ -x "$PODNET" ] || cargo build --quiet --bin podnet
if [ "$(id -u)" != 0 ]; then
    echo "nftables_seed_flows.sh: needs root, to create network namespaces" >&2
    exit 2
fi

S=$$
NS=(vpc node1 node2 node3 pod1 pod2 pod3 pod4)
ns() { echo "pnn-$1-$S"; }
cleanup() {
    for n in "${NS[@]}"; do
        ip netns pids "$(ns "$n")" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$(ns "$n")" 2>/dev/null || true
    done
}
trap cleanup EXIT INT TERM
for n in "${NS[@]}"; do
    ip netns add "$(ns "$n")"
    ip -n "$(ns "$n")" link set lo up
done
x() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

x vpc ip link add seg0 type bridge
x vpc ip addr add 192.168.0.254/24 dev seg0
x vpc ip link set seg0 up
x vpc sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 \
    net.ipv4.conf.seg0.send_redirects=0
node() {
    local n=$1
    ip link add eth0 netns "$(ns node"$n")" type veth peer name seg-n"$n"-$S netns "$(ns vpc)"
    x vpc ip link set seg-n"$n"-$S master seg0 up
    x node"$n" ip addr add 192.168.0."$n"/24 dev eth0
    x node"$n" ip link set eth0 up
    x node"$n" ip link add cbr0 type bridge
    x node"$n" ip addr add 10.244."$n".1/24 dev cbr0
    x node"$n" ip link set cbr0 up
    x node"$n" ip route add default via 192.168.0.254
    x node"$n" sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
    x vpc ip route add 10.244."$n".0/24 via 192.168.0."$n"
    "$PODNET" kube-proxy-rules --proxy-mode nftables --node node"$n" | x node"$n" nft -f -
    "$PODNET" iptables-save --proxy-mode nftables --node node"$n" | x node"$n" iptables-restore
}
pod() {
    local name=$1 n=$2 ip=$3
    ip link add eth0 netns "$(ns "$name")" type veth peer name veth-"$name" netns "$(ns node"$n")"
    x node"$n" ip link set veth-"$name" master cbr0 up
    x node"$n" bridge link set dev veth-"$name" hairpin on
    x "$name" ip addr add "$ip"/24 dev eth0
    x "$name" ip link set eth0 up
    x "$name" ip route add default via 10.244."$n".1
    # Detached: the server is no job of this shell's, so killing it at exit is quiet.
    setsid -f ip netns exec "$(ns "$name")" python3 "$HERE/flow.py" serve pod/default/"$name" \
        >/dev/null 2>&1
}
node 1
node 2
node 3
pod pod1 1 10.244.1.2
pod pod2 1 10.244.1.3
pod pod3 2 10.244.2.2
pod pod4 2 10.244.2.3
sleep 0.5

# FROM (a pod or node namespace), the model's source, TO, protocol, tries.
FLOWS=(
    "pod2 pod/default/pod2 10.96.0.10 80 tcp 16"
    "pod2 pod/default/pod2 10.96.0.10 80 udp 16"
    "pod2 pod/default/pod2 10.96.0.20 80 tcp 4"
    "pod1 pod/default/pod1 10.96.0.10 80 tcp 16"
    "pod2 pod/default/pod2 10.96.0.10 81 tcp 2"
    "pod2 pod/default/pod2 10.96.0.99 80 tcp 2"
    "node3 node/node3 192.168.0.1 30081 tcp 16"
    "node3 node/node3 192.168.0.1 30082 udp 16"
    "node3 node/node3 192.168.0.2 30080 tcp 4"
    "node3 node/node3 10.96.0.20 80 tcp 4"
)
fail=0
total=0
MODEL=$(mktemp) KERNEL=$(mktemp)
trap 'cleanup; rm -f "$MODEL" "$KERNEL"' EXIT INT TERM
for f in "${FLOWS[@]}"; do
    read -r where from ip port proto tries <<<"$f"
    "$PODNET" trace --proxy-mode nftables --all-outcomes --json --from "$from" \
        --to "$ip:$port" --proto "$proto" >"$MODEL" || true  # exit 1: not delivered
    for _ in $(seq "$tries"); do
        x "$where" python3 "$HERE/flow.py" probe "$proto" "$ip" "$port"
    done >"$KERNEL"
    total=$((total + 1))
    if ! python3 - "$from -> $ip:$port/$proto" "$MODEL" "$KERNEL" <<'EOF'; then fail=$((fail + 1)); fi
import json, sys
flow = sys.argv[1]
model = json.load(open(sys.argv[2]))
kernel = open(sys.argv[3]).read().split("\n")[:-1]
model = model if isinstance(model, list) else [model]
def ip(a):
    return a.rsplit(":", 1)[0] if a else None
want = set()
for t in model:
    if t["disposition"] == "delivered":
        want.add((t["delivered_to"], ip(t["server_saw"]), t["reply_from"]))
    else:
        want.add((t["disposition"],))
seen = set()
for line in kernel:
    k = json.loads(line)
    if k["answer"]:
        seen.add((k["answer"], k["saw"], k["reply_from"]))
    else:
        seen.add(({"refused": "rejected", "timeout": "dropped"}.get(k["error"], k["error"]),))
ok = seen == want
print(f"{'agree' if ok else 'DIFFER'}: {flow}: kernel {sorted(seen)}" + ("" if ok else f", podnet {sorted(want)}"))
sys.exit(0 if ok else 1)
EOF
done
echo "agreement: $((total - fail))/$total flows (kube-proxy nftables mode, $(uname -r), $(nft --version))"
[ "$fail" = 0 ]
