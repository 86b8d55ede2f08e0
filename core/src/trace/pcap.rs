//! pcapng output of a traced flow: one interface per device the flow's frames arrived at
//! (named `netns/device`, e.g. `node1/cbr0`, `pod/default/pod1/eth0`), one Enhanced Packet
//! Block per frame as that device received it, in the order the model moved them, stamped
//! with the flow's virtual time (microseconds; frames within one millisecond are spread a
//! microsecond apart so the order survives). Wireshark and tshark read it; a NAT rewrite shows
//! as the same packet with other addresses on the next device.
//!
//! Loopback traffic inside a pod never reaches a device and is not captured.

use std::collections::BTreeMap;

/// A frame as a device received it, captured during a trace with
/// [`crate::trace::TraceOptions::capture`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    /// The namespace (`node1`, `pod/default/pod1`, `vpc`).
    pub netns: String,
    /// The receiving device.
    pub device: String,
    /// Virtual time, in microseconds.
    pub time_us: u64,
    /// The Ethernet frame.
    pub data: Vec<u8>,
}

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const EPB: u32 = 6;
const LINKTYPE_ETHERNET: u16 = 1;

fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let len = (12 + body.len()) as u32;
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&len.to_le_bytes());
}

/// The frames as a pcapng file (little-endian, one section).
pub fn to_pcapng(frames: &[CapturedFrame]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    option(&mut shb, 4, b"podnet");
    option(&mut shb, 0, &[]);
    block(&mut out, SHB, &shb);
    let mut ifaces: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    for f in frames {
        let key = (f.netns.clone(), f.device.clone());
        if !ifaces.contains_key(&key) {
            ifaces.insert(key.clone(), order.len() as u32);
            order.push(key);
        }
    }
    for (netns, device) in &order {
        let mut idb = Vec::new();
        idb.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        option(&mut idb, 2, format!("{netns}/{device}").as_bytes());
        option(&mut idb, 9, &[6]);
        option(&mut idb, 0, &[]);
        block(&mut out, IDB, &idb);
    }
    let mut last = 0u64;
    for f in frames {
        let ts = f.time_us.max(last + 1);
        last = ts;
        let mut epb = Vec::new();
        epb.extend_from_slice(&ifaces[&(f.netns.clone(), f.device.clone())].to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&f.data);
        epb.resize(epb.len().next_multiple_of(4), 0);
        option(&mut epb, 0, &[]);
        block(&mut out, EPB, &epb);
    }
    out
}
