//! The ICMP reply parser reads untrusted bytes from the network: it never panics on any layout,
//! and what it takes for an echo reply lies within the bytes given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketkit::ping::icmp::{HEADER_BYTES, Layout, Packet, parse};

fuzz_target!(|bytes: &[u8]| {
    for layout in [Layout::V4WithIpHeader, Layout::V4, Layout::V6] {
        if let Packet::EchoReply { payload, icmp_bytes, .. } = parse(bytes, layout) {
            assert!(icmp_bytes >= HEADER_BYTES && icmp_bytes <= bytes.len());
            assert_eq!(payload.len(), icmp_bytes - HEADER_BYTES);
        }
    }
});
