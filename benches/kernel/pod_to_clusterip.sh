#!/usr/bin/env bash
# The real kernel on the path of the `established_udp_pod_to_clusterip_remote` figure, measured
# on this machine beside the model: pod2 -> ClusterIP 10.96.0.10:80 (DNAT on node1) -> the VPC
# router -> node2 -> pod3, and the echo back, in network namespaces laid out as the reference
# cluster (addresses, routes, bridges) with the iptables rules the model generates for node1
# and node2 (`podnet iptables-save`), restored into each node's namespace.
#
# Needs root, `ip` and `iptables`; creates namespaces named pnk-*, and deletes them on exit.
# Prints one JSON line as the figures binary does (`kernel_udp_pod_to_clusterip_remote`).
#   SECONDS_PER_RUN=2 benches/kernel/pod_to_clusterip.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
    echo "pod_to_clusterip.sh: needs root, to create network namespaces" >&2
    exit 1
fi
for tool in ip iptables-restore; do
    if ! command -v "$tool" >/dev/null; then
        echo "pod_to_clusterip.sh: needs $tool (Debian: apt-get install iproute2 iptables)" >&2
        exit 1
    fi
done

cargo build --quiet --release -p podnet-benches --example kernel_udp_echo
cargo build --quiet --release --bin podnet
PODNET=target/release/podnet
ECHO=target/release/examples/kernel_udp_echo

NS=(pnk-pod1 pnk-pod2 pnk-node1 pnk-vpc pnk-node2 pnk-pod3)
cleanup() {
    for n in "${NS[@]}"; do
        # What runs in a namespace (the echo server) does not end with it: stop it first.
        ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$n" 2>/dev/null || true
    done
}
trap cleanup EXIT
cleanup
for n in "${NS[@]}"; do
    ip netns add "$n"
    ip -n "$n" link set lo up
done
x() { ip netns exec "$@"; }

# The VPC: one L2 segment (a bridge in the router's namespace) and its router, 192.168.0.254,
# with the cloud route table's routes to each node's pod CIDR. It forwards out the interface a
# packet came in on, so it sends no redirects.
x pnk-vpc ip link add seg0 type bridge
x pnk-vpc ip addr add 192.168.0.254/24 dev seg0
x pnk-vpc ip link set seg0 up
x pnk-vpc sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 \
    net.ipv4.conf.seg0.send_redirects=0

# node N: eth0 on the segment, a cbr0 bridge for its pods, kube-proxy's rules.
node() {
    local n=$1 ns=pnk-node$1
    ip link add eth0 netns "$ns" type veth peer name seg-n"$n" netns pnk-vpc
    x pnk-vpc ip link set seg-n"$n" master seg0 up
    x "$ns" ip addr add 192.168.0."$n"/24 dev eth0
    x "$ns" ip link set eth0 up
    x "$ns" ip link add cbr0 type bridge
    x "$ns" ip addr add 10.244."$n".1/24 dev cbr0
    x "$ns" ip link set cbr0 up
    x "$ns" ip route add default via 192.168.0.254
    x "$ns" sysctl -qw net.ipv4.ip_forward=1
    x pnk-vpc ip route add 10.244."$n".0/24 via 192.168.0."$n"
    "$PODNET" iptables-save --node node"$n" | x "$ns" iptables-restore
}
# pod: eth0 in its namespace, its host end on the node's bridge.
pod() {
    local name=$1 n=$2 ip=$3
    ip link add eth0 netns pnk-"$name" type veth peer name veth-"$name" netns pnk-node"$n"
    x pnk-node"$n" ip link set veth-"$name" master cbr0 up
    x pnk-"$name" ip addr add "$ip"/24 dev eth0
    x pnk-"$name" ip link set eth0 up
    x pnk-"$name" ip route add default via 10.244."$n".1
}
node 1
node 2
pod pod1 1 10.244.1.2
pod pod2 1 10.244.1.3
pod pod3 2 10.244.2.2

# Only pod3 serves: the Service's other endpoint, pod1 on node1, answers port unreachable,
# so the client keeps the first source port whose flow lands on pod3.
ip netns exec pnk-pod3 "$ECHO" serve 0.0.0.0:8080 &
sleep 0.3
x pnk-pod2 "$ECHO" client 10.96.0.10:80 "${SECONDS_PER_RUN:-2}" "${WINDOW:-1}"
