//! Session-0 parsing (conv 0 control datagrams): never panics; PING/PONG/RESET carry exactly
//! the u32 after the header and re-emit to the same bytes; trailing bytes (padding) never
//! change an accepted message; a well-formed PING/PONG/RESET is never refused.
#![no_main]

use kcptun::proto::{is_session0, Session0, S0_MAX_EMIT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|p: &[u8]| {
    let r = Session0::parse(p);
    if p.len() >= S0_MAX_EMIT && is_session0(p) && u16::from_be_bytes([p[4], p[5]]) <= 2 {
        assert!(r.is_ok(), "well-formed message refused: {r:?}");
    }
    if !is_session0(p) {
        assert!(r.is_err());
    }
    let Ok(m) = r else { return };
    assert_eq!(m.what(), u16::from_be_bytes([p[4], p[5]]));
    let mut buf = [0u8; S0_MAX_EMIT];
    let n = m.emit(&mut buf);
    if let Session0::Ping(v) | Session0::Pong(v) | Session0::Reset(v) = m {
        assert_eq!(v, u32::from_be_bytes([p[6], p[7], p[8], p[9]]));
        assert_eq!(&buf[..n], &p[..n], "re-emitted bytes differ");
    }
    if !matches!(m, Session0::Listen | Session0::Connect | Session0::Punch) {
        // emit writes only the header of the rendezvous messages (documented), so only the
        // others round-trip.
        assert_eq!(Session0::parse(&buf[..n]), Ok(m));
    }
    let mut padded = p.to_vec();
    padded.extend_from_slice(&[15; 15]);
    assert_eq!(Session0::parse(&padded), Ok(m));
});
