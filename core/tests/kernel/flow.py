#!/usr/bin/env python3
"""The two ends of a flow in a network namespace, for nftables_seed_flows.sh.

  flow.py serve NAME          TCP and UDP on 0.0.0.0:8080; every request is answered with
                              "NAME PEER_IP" (who answered, the source address it saw)
  flow.py probe PROTO IP PORT one request; prints JSON {"answer", "saw", "reply_from",
                              "error"}: error "refused" (RST or ICMP port unreachable),
                              "unreachable" (another ICMP error) or "timeout"
"""

import json
import socket
import sys
import threading


def serve(name: str) -> None:
    def tcp() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 8080))
        s.listen(64)
        while True:
            c, peer = s.accept()
            try:
                c.settimeout(2)
                c.recv(64)
                c.sendall(f"{name} {peer[0]}".encode())
            except OSError:
                pass
            finally:
                c.close()

    threading.Thread(target=tcp, daemon=True).start()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", 8080))
    while True:
        _, peer = u.recvfrom(64)
        u.sendto(f"{name} {peer[0]}".encode(), peer)


def probe(proto: str, ip: str, port: int) -> None:
    out = {"answer": None, "saw": None, "reply_from": None, "error": None}
    try:
        if proto == "tcp":
            s = socket.create_connection((ip, port), timeout=1.5)
            s.settimeout(1.5)
            s.sendall(b"x")
            data = s.recv(64)
            out["reply_from"] = f"{s.getpeername()[0]}:{s.getpeername()[1]}"
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(1.5)
            s.connect((ip, port))
            s.send(b"x")
            data, peer = s.recvfrom(64)
            out["reply_from"] = f"{peer[0]}:{peer[1]}"
        name, saw = data.decode().split()
        out["answer"], out["saw"] = name, saw
    except ConnectionRefusedError:
        out["error"] = "refused"
    except (socket.timeout, TimeoutError):
        out["error"] = "timeout"
    except OSError as e:
        out["error"] = f"unreachable ({e.strerror})"
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        probe(sys.argv[2], sys.argv[3], int(sys.argv[4]))
