//! Config parsing: arbitrary JSON text never panics, and an accepted config yields loop
//! settings and KCP settings inside the documented ranges. Inputs that name a host (not an IP
//! literal) are skipped: resolving them would make the target slow and depend on the network.
#![no_main]

use kcptun::config::Config;
use kcptun::event_loop::Settings;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const ADDR_KEYS: &[&str] = &[
    "listen",
    "connect",
    "kcp_bind",
    "kcp_connect",
    "udp_bind",
    "udp_connect",
    "http_listen",
];

/// True when some address value would go to the resolver.
fn names_a_host(v: &Value) -> bool {
    let Value::Object(m) = v else { return false };
    m.iter().any(|(k, v)| match v {
        Value::String(s) if ADDR_KEYS.contains(&k.as_str()) => match s.rfind(':') {
            Some(i) => {
                let h = s[..i].trim_start_matches('[').trim_end_matches(']');
                !h.is_empty() && h.parse::<std::net::IpAddr>().is_err()
            }
            None => false,
        },
        _ => false,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        if names_a_host(&v) {
            return;
        }
    }
    let Ok(cfg) = Config::from_json_str(text) else {
        return;
    };
    assert!(cfg.is_server() || cfg.is_client());
    for v6 in [false, true] {
        let k = cfg.kcp_config(v6, cfg.method.overhead());
        // kcp.mtu 300..=1500 less IP/UDP headers and the framing overhead: always usable.
        assert!(k.mtu >= 300 - 48 - 40 && k.mtu <= 1500, "kcp mtu {}", k.mtu);
        assert!(k.sndwnd >= 16 && k.rcvwnd >= 16);
    }
    let st = Settings::from_config(&cfg);
    assert!(st.max_sessions >= 1 && st.max_dials >= 1);
    assert!(st.timeouts.idle >= 60_000 && st.timeouts.linger >= 5_000);
    if cfg.has_psk() {
        assert!(cfg.key().is_ok(), "accepted psk does not derive a key");
    }
});
