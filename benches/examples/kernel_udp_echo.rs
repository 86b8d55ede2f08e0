//! The real kernel's side of the end-to-end figure: a UDP echo over Linux sockets, for
//! `benches/kernel/pod_to_clusterip.sh`, which runs it inside network namespaces laid out as
//! the reference cluster's pod → ClusterIP → remote pod path.
//!
//! `kernel_udp_echo serve ADDR:PORT` echoes every datagram back to its sender. Both ends poll
//! their socket without sleeping (each takes a core), so that the figure is the kernel's
//! work on the packets rather than the time a sleeping process takes to wake.
//! `kernel_udp_echo client ADDR:PORT SECONDS [WINDOW]` sends the model's UDP payload (18
//! bytes, a 64-byte frame on the wire) and waits for its echo, one exchange at a time as the
//! model's flow does (or with `WINDOW` datagrams in flight), in batches of 500 exchanges (1,000
//! packets, the model's batch), for about `SECONDS`; then prints one JSON line as the figures
//! binary does (`kernel_udp_pod_to_clusterip_remote`, `..._window_W` with a window; packets a
//! second: median, min and max of the batches).
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// The model's UDP payload (`TraceOptions` default for UDP flows).
const PAYLOAD: &[u8] = b"hello from podnet\n";
/// Exchanges a batch.
const BATCH: u32 = 500;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("serve") if args.len() == 3 => serve(&args[2]),
        Some("client") if (4..=5).contains(&args.len()) => {
            let window = args.get(4).map_or(Ok(1), |w| w.parse::<u32>()).ok().filter(|&w| w > 0);
            match (args[3].parse::<f64>(), window) {
                (Ok(secs), Some(window)) => client(&args[2], secs, window),
                _ => Err(format!("SECONDS [WINDOW]: not numbers: {:?}", &args[3..])),
            }
        }
        _ => {
            Err("usage: kernel_udp_echo serve ADDR:PORT | client ADDR:PORT SECONDS [WINDOW]".into())
        }
    };
    if let Err(e) = result {
        eprintln!("kernel_udp_echo: {e}");
        std::process::exit(1);
    }
}

fn serve(addr: &str) -> Result<(), String> {
    let s = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    // Polled without sleeping, as the client waits: what is measured is the packets' way
    // through the kernel, not how fast the scheduler wakes a sleeping process.
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = match s.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(format!("recv: {e}")),
        };
        s.send_to(&buf[..n], from).map_err(|e| format!("send to {from}: {e}"))?;
    }
}

fn client(dst: &str, secs: f64, window: u32) -> Result<(), String> {
    let mut buf = [0u8; 2048];
    let send = |s: &UdpSocket| s.send(PAYLOAD).map(|_| ()).map_err(|e| format!("send: {e}"));
    let echo = |s: &UdpSocket, buf: &mut [u8]| -> Result<(), String> {
        let waiting = Instant::now();
        let n = loop {
            match s.recv(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if waiting.elapsed() > Duration::from_secs(1) {
                        return Err("no echo within 1 s".into());
                    }
                }
                Err(e) => return Err(format!("recv: {e}")),
            }
        };
        if &buf[..n] != PAYLOAD {
            return Err(format!("the echo differs: {:?}", &buf[..n]));
        }
        Ok(())
    };
    let exchange = |s: &UdpSocket, buf: &mut [u8]| send(s).and_then(|()| echo(s, buf));
    // The first exchange makes the conntrack entries and the neighbours; the rest follow them.
    // Only the remote endpoint serves: a source port whose first datagram the Service sends
    // elsewhere is refused (ICMP port unreachable), and the next port is tried, as the model's
    // figure picks a port that lands on the remote pod.
    let mut s = None;
    for _ in 0..64 {
        let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
        sock.connect(dst).map_err(|e| format!("connect {dst}: {e}"))?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        match exchange(&sock, &mut buf) {
            Ok(()) => {
                s = Some(sock);
                break;
            }
            Err(e) if e.contains("refused") || e.starts_with("no echo") => continue,
            Err(e) => return Err(e),
        }
    }
    let s = s.ok_or("64 source ports had no echo: nothing serves the remote endpoint")?;
    // With a window, that many datagrams are kept in flight: each echo sends the next.
    for _ in 0..window {
        send(&s)?;
    }
    let mut rates = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs || rates.len() < 3 {
        let t = Instant::now();
        for _ in 0..BATCH {
            echo(&s, &mut buf)?;
            send(&s)?;
        }
        rates.push(f64::from(2 * BATCH) / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let name = match window {
        1 => "kernel_udp_pod_to_clusterip_remote".to_string(),
        w => format!("kernel_udp_pod_to_clusterip_remote_window_{w}"),
    };
    println!(
        "{{\"iterations\":{},\"max\":{:.1},\"median\":{:.1},\"min\":{:.1},\"name\":\"{name}\",\"unit\":\"pkt/s\"}}",
        rates.len() as u64 * u64::from(2 * BATCH),
        rates[rates.len() - 1],
        rates[rates.len() / 2],
        rates[0],
    );
    Ok(())
}
