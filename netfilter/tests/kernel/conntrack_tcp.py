#!/usr/bin/env python3
"""Observes Linux's TCP connection tracking in network namespaces, for the expectations of
the conntrack tests (run as root; needs iproute2, iptables and conntrack-tools).

Three namespaces: a client (10.99.1.1), a router that tracks connections in FORWARD, and a
server (10.99.2.2) echoing on port 5000. Each experiment prints what `conntrack -L -o
extended` shows in the router at chosen moments, and checks the facts the conntrack tests in
`netfilter/src/conntrack.rs` cite (exit status 1 when the kernel disagrees; `./scripts/test`
runs it as root):

  syn-retransmit  a connect to a server that drops SYNs (the client retransmits at 1, 3, 7 s)
  loose-pickup    the router's table flushed mid-connection, then the client's data, the
                  server's answer and the client's next segment, one at a time
  rst             a SYN to a closed port (answered by a RST), then a RST on an established
                  connection

The namespaces (prefix pnk-) are deleted afterwards, also on failure.
Usage: sudo python3 netfilter/tests/kernel/conntrack_tcp.py [EXPERIMENT...]
"""

import socket
import struct
import subprocess
import sys
import time

NS = ("pnk-a", "pnk-r", "pnk-b")


def sh(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True).stdout


def netns(ns: str, *args: str) -> str:
    return sh("ip", "netns", "exec", ns, *args)


def ct() -> str:
    return netns("pnk-r", "conntrack", "-L", "-p", "tcp", "-o", "extended").strip()


def timeout(line: str) -> int:
    """The remaining seconds of a `conntrack -L -o extended` line (`ipv4 2 tcp 6 119 ...`)."""
    return int(line.split()[4])


def check(ok: bool, fact: str, seen: str) -> None:
    if not ok:
        raise SystemExit(f"the kernel disagrees: {fact}\n  conntrack shows: {seen!r}")


def raw_drop(iface: str, on: bool) -> None:
    netns("pnk-r", "iptables", "-t", "raw", "-A" if on else "-D", "PREROUTING", "-i", iface, "-j", "DROP")


def up() -> subprocess.Popen:
    for n in NS:
        sh("ip", "netns", "add", n)
        netns(n, "ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "a-r", "netns", "pnk-a", "type", "veth", "peer", "name", "r-a", "netns", "pnk-r")
    sh("ip", "link", "add", "b-r", "netns", "pnk-b", "type", "veth", "peer", "name", "r-b", "netns", "pnk-r")
    for ns, dev, addr, gw in (("pnk-a", "a-r", "10.99.1.1/24", "10.99.1.254"), ("pnk-b", "b-r", "10.99.2.2/24", "10.99.2.254")):
        netns(ns, "ip", "addr", "add", addr, "dev", dev)
        netns(ns, "ip", "link", "set", dev, "up")
        netns(ns, "ip", "route", "add", "default", "via", gw)
    for dev, addr in (("r-a", "10.99.1.254/24"), ("r-b", "10.99.2.254/24")):
        netns("pnk-r", "ip", "addr", "add", addr, "dev", dev)
        netns("pnk-r", "ip", "link", "set", dev, "up")
    netns("pnk-r", "sysctl", "-qw", "net.ipv4.ip_forward=1")
    # A conntrack match makes the namespace track connections.
    netns("pnk-r", "iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED,RELATED,INVALID", "-j", "ACCEPT")
    netns("pnk-r", "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1")
    server = subprocess.Popen(["ip", "netns", "exec", "pnk-b", sys.executable, "-c", """
import socket, threading
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", 5000)); l.listen()
def echo(c):
    try:
        while (d := c.recv(100)):
            c.sendall(d)
    except OSError:
        pass
while True:
    threading.Thread(target=echo, args=(l.accept()[0],), daemon=True).start()
"""])
    time.sleep(0.5)
    return server


def down() -> None:
    for n in NS:
        subprocess.run(["ip", "netns", "del", n], capture_output=True)


def syn_retransmit() -> None:
    netns("pnk-b", "iptables", "-I", "INPUT", "1", "-p", "tcp", "--syn", "-j", "DROP")
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("10.99.2.2", 5000))
    except BlockingIOError:
        pass
    t0 = time.time()
    first = None
    for at in (0.5, 1.5, 3.5, 7.5, 9.5):
        time.sleep(max(0, at - (time.time() - t0)))
        line = ct()
        print(f"syn-retransmit {at:>4} s: {line}")
        first = first or line
    check("SYN_SENT" in line and "[UNREPLIED]" in line, "still SYN_SENT and unreplied", line)
    check(timeout(first) - timeout(line) >= 8, "retransmits do not renew the timeout", line)
    check(" packets=1 " in line, "retransmits are not counted", line)
    s.close()
    netns("pnk-b", "iptables", "-D", "INPUT", "1")


def loose_pickup() -> None:
    s = socket.create_connection(("10.99.2.2", 5000))
    s.sendall(b"a")
    s.recv(10)
    netns("pnk-r", "conntrack", "-F")
    raw_drop("r-b", True)
    s.sendall(b"b")
    time.sleep(0.3)
    line = ct()
    print(f"loose-pickup after the client's segment: {line}")
    check("ESTABLISHED" in line and "[UNREPLIED]" in line and "ASSURED" not in line,
          "a pickup is ESTABLISHED, unreplied, not assured", line)
    check(timeout(line) <= 300, "a pickup gets the 300 s unacknowledged timeout", line)
    raw_drop("r-a", True)
    raw_drop("r-b", False)
    seen = []
    t0 = time.time()
    while time.time() - t0 < 2:
        out = ct()
        state = " ".join(w for w in out.split() if not w.isdigit())
        if not seen or seen[-1][0] != state:
            seen.append((state, out))
        time.sleep(0.005)
    for _, out in seen:
        print(f"loose-pickup as the server's answers arrive: {out}")
    check(any("ASSURED" not in o and "UNREPLIED" not in o and timeout(o) <= 300 for _, o in seen),
          "the first answer leaves it replied, unassured, at 300 s", str(seen))
    last = seen[-1][1]
    check("[ASSURED]" in last and timeout(last) > 431000, "then ASSURED with five days", last)
    raw_drop("r-a", False)
    s.close()


def rst() -> None:
    s = socket.socket()
    try:
        s.connect(("10.99.2.2", 5001))
    except ConnectionRefusedError:
        pass
    time.sleep(0.2)
    line = ct()
    print(f"rst after a SYN to a closed port: {line!r}")
    check(line == "", "a RST before any reply kills the entry", line)
    s = socket.create_connection(("10.99.2.2", 5000))
    s.sendall(b"a")
    s.recv(10)
    time.sleep(0.2)
    print(f"rst established: {ct()}")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    time.sleep(0.3)
    line = ct()
    print(f"rst 0.3 s after the client's RST: {line}")
    check("CLOSE" in line and timeout(line) <= 10, "a RST closes for 10 s", line)


EXPERIMENTS = {"syn-retransmit": syn_retransmit, "loose-pickup": loose_pickup, "rst": rst}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--in-client":
        for name in sys.argv[2:]:
            netns("pnk-r", "conntrack", "-F")
            EXPERIMENTS[name]()
        return
    names = sys.argv[1:] or list(EXPERIMENTS)
    down()
    server = None
    try:
        server = up()
        subprocess.run(["ip", "netns", "exec", "pnk-a", sys.executable, __file__, "--in-client", *names], check=True)
    finally:
        if server:
            server.kill()
        down()


if __name__ == "__main__":
    main()
