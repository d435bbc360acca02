//! What `/stats` and `/metrics` say, rendered from a [`Snapshot`] the event loop takes on
//! request (never periodically). Pure functions from numbers to text, so they can be tested
//! without sockets.

use std::fmt::Write;
use std::net::SocketAddr;

use crate::stats::{KcpTotals, Stats};

/// One conversation's line in `/stats`.
pub struct Row {
    pub conv: u32,
    pub state: &'static str,
    pub peer: SocketAddr,
    pub age_ms: u64,
    pub rtt: u32,
    pub rto: u32,
    pub waitsnd: usize,
    pub tcp_rx: u64,
    pub tcp_tx: u64,
}

/// Everything the reports need, taken at one instant.
pub struct Snapshot<'a> {
    pub mode: &'static str,
    pub uptime_ms: u64,
    pub stats: &'a Stats,
    /// KCP counters of all conversations, live and gone.
    pub kcp: KcpTotals,
    /// TCP payload bytes including live conversations.
    pub tcp_rx: u64,
    pub tcp_tx: u64,
    pub open: usize,
    pub time_wait: usize,
    pub pending_dials: usize,
    /// Server: peers with a UDP socket of their own.
    pub peer_sockets: usize,
    /// Client: ms since the server was last heard from, and the last PING round trip.
    pub server_silence_ms: Option<u64>,
    pub ping_rtt_ms: Option<u32>,
    pub rows: Vec<Row>,
    /// Rows not listed (the list is capped).
    pub rows_omitted: usize,
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{}.{}s", s, (ms % 1000) / 100),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn pct(num: u64, den: u64) -> String {
    if den == 0 {
        "-".into()
    } else {
        format!("{:.1}%", num as f64 * 100.0 / den as f64)
    }
}

/// The human-readable summary. `prev` is the snapshot time and counters of the previous
/// `/stats` request, for rates over the interval between the two.
pub fn text(s: &Snapshot, prev: Option<(u64, &Stats, u64, u64)>) -> String {
    let st = s.stats;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "kcptun-rs {} ({} mode), up {}",
        env!("CARGO_PKG_VERSION"),
        s.mode,
        duration(s.uptime_ms)
    );
    let _ = writeln!(
        o,
        "conversations: {} open, {} in time_wait, {} pending dials; {} since start, {} refused",
        s.open,
        s.time_wait,
        s.pending_dials,
        st.sessions_opened,
        st.refused_sessions + st.refused_dials
    );
    if let Some(silence) = s.server_silence_ms {
        let _ = writeln!(
            o,
            "server: last heard {} ago, ping rtt {}",
            duration(silence),
            s.ping_rtt_ms.map_or("-".to_string(), |r| format!("{r} ms"))
        );
    }
    let _ = writeln!(
        o,
        "tcp: {} in, {} out | udp: {} in ({} datagrams), {} out ({} datagrams)",
        bytes(s.tcp_rx),
        bytes(s.tcp_tx),
        bytes(st.udp_rx_bytes),
        st.udp_rx_datagrams,
        bytes(st.udp_tx_bytes),
        st.udp_tx_datagrams
    );
    let _ = writeln!(
        o,
        "efficiency: tcp payload / udp bytes: sent {}, received {}",
        pct(s.tcp_rx, st.udp_tx_bytes),
        pct(s.tcp_tx, st.udp_rx_bytes)
    );
    if let Some((ms, p, prx, ptx)) = prev {
        let dt = s.uptime_ms.saturating_sub(ms).max(1) as f64 / 1000.0;
        let rate = |now: u64, then: u64| bytes((now.saturating_sub(then) as f64 / dt) as u64);
        let _ = writeln!(
            o,
            "rates over the last {:.1}s: tcp {}/s in, {}/s out | udp {}/s in, {}/s out",
            dt,
            rate(s.tcp_rx, prx),
            rate(s.tcp_tx, ptx),
            rate(st.udp_rx_bytes, p.udp_rx_bytes),
            rate(st.udp_tx_bytes, p.udp_tx_bytes)
        );
    }
    let _ = writeln!(
        o,
        "kcp: {} segments sent, retransmitted {} ({} on timeout, {} fast), {} received, {} \
         extra ACK datagrams",
        s.kcp.segs_sent,
        pct(s.kcp.retrans_timeout + s.kcp.retrans_fast, s.kcp.segs_sent),
        s.kcp.retrans_timeout,
        s.kcp.retrans_fast,
        s.kcp.segs_recv,
        s.kcp.ack_copies
    );
    let _ = writeln!(
        o,
        "dropped datagrams: {} auth, {} replay, {} short, {} malformed, {} unknown conversation; \
         {} not sent (socket full)",
        st.drop_auth,
        st.drop_replay,
        st.drop_short,
        st.drop_malformed,
        st.drop_unknown_conv,
        st.udp_tx_dropped
    );
    if st.peer_moves + st.udp_reopens > 0 {
        let _ = writeln!(
            o,
            "mobility: {} conversations moved to a new client address, {} udp socket re-opens",
            st.peer_moves, st.udp_reopens
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<10}  {:<12} {:<22} {:>7} {:>13} {:>7} {:>10} {:>10}",
        "conv", "state", "peer", "age", "rtt/rto ms", "waitsnd", "tcp in", "tcp out"
    );
    for r in &s.rows {
        let _ = writeln!(
            o,
            "{:#010x}  {:<12} {:<22} {:>7} {:>13} {:>7} {:>10} {:>10}",
            r.conv,
            r.state,
            r.peer.to_string(),
            duration(r.age_ms),
            format!("{}/{}", r.rtt, r.rto),
            r.waitsnd,
            bytes(r.tcp_rx),
            bytes(r.tcp_tx)
        );
    }
    if s.rows_omitted > 0 {
        let _ = writeln!(o, "... and {} more", s.rows_omitted);
    }
    o
}

/// Prometheus text exposition format (version 0.0.4).
pub fn prometheus(s: &Snapshot) -> String {
    let st = s.stats;
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(o, "# HELP kcptun_{name} {help}");
        let _ = writeln!(o, "# TYPE kcptun_{name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(o, "kcptun_{name} {v}");
            } else {
                let _ = writeln!(o, "kcptun_{name}{{{labels}}} {v}");
            }
        }
    };
    let f = |v: u64| v as f64;
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since start.",
        &[("", s.uptime_ms as f64 / 1000.0)],
    );
    metric(
        "conversations",
        "gauge",
        "Conversations by state.",
        &[
            ("state=\"open\"", s.open as f64),
            ("state=\"time_wait\"", s.time_wait as f64),
        ],
    );
    metric(
        "pending_dials",
        "gauge",
        "TCP connects in progress.",
        &[("", s.pending_dials as f64)],
    );
    metric(
        "udp_peer_sockets",
        "gauge",
        "Peers with a UDP socket of their own (flood isolation).",
        &[("", s.peer_sockets as f64)],
    );
    metric(
        "udp_peer_sockets_opened_total",
        "counter",
        "UDP sockets opened for peers since start.",
        &[("", f(st.peer_sockets_opened))],
    );
    metric(
        "conversations_opened_total",
        "counter",
        "Conversations opened since start.",
        &[("", f(st.sessions_opened))],
    );
    metric(
        "conversations_refused_total",
        "counter",
        "Conversations or dials refused at a limit.",
        &[
            ("limit=\"sessions\"", f(st.refused_sessions)),
            ("limit=\"dials\"", f(st.refused_dials)),
        ],
    );
    metric(
        "dial_failures_total",
        "counter",
        "TCP connects to the target that failed.",
        &[("", f(st.dial_failures))],
    );
    metric(
        "tcp_bytes_total",
        "counter",
        "TCP payload bytes.",
        &[
            ("direction=\"in\"", f(s.tcp_rx)),
            ("direction=\"out\"", f(s.tcp_tx)),
        ],
    );
    metric(
        "udp_bytes_total",
        "counter",
        "UDP payload bytes on the wire.",
        &[
            ("direction=\"in\"", f(st.udp_rx_bytes)),
            ("direction=\"out\"", f(st.udp_tx_bytes)),
        ],
    );
    metric(
        "udp_datagrams_total",
        "counter",
        "UDP datagrams.",
        &[
            ("direction=\"in\"", f(st.udp_rx_datagrams)),
            ("direction=\"out\"", f(st.udp_tx_datagrams)),
        ],
    );
    metric(
        "dropped_datagrams_total",
        "counter",
        "Datagrams dropped, by reason.",
        &[
            ("reason=\"auth\"", f(st.drop_auth)),
            ("reason=\"replay\"", f(st.drop_replay)),
            ("reason=\"short\"", f(st.drop_short)),
            ("reason=\"malformed\"", f(st.drop_malformed)),
            ("reason=\"unknown_conversation\"", f(st.drop_unknown_conv)),
            ("reason=\"send_buffer_full\"", f(st.udp_tx_dropped)),
        ],
    );
    metric(
        "resets_sent_total",
        "counter",
        "Session-0 RESETs sent.",
        &[("", f(st.resets_sent))],
    );
    metric(
        "peer_moves_total",
        "counter",
        "Conversations moved to a client's new address (NAT rebinding).",
        &[("", f(st.peer_moves))],
    );
    metric(
        "udp_reopens_total",
        "counter",
        "Times the client re-opened its UDP socket after the server went silent.",
        &[("", f(st.udp_reopens))],
    );
    metric(
        "kcp_segments_sent_total",
        "counter",
        "KCP data segments sent for the first time (retransmissions are counted apart).",
        &[("", f(s.kcp.segs_sent))],
    );
    metric(
        "kcp_retransmits_total",
        "counter",
        "KCP retransmissions, by trigger.",
        &[
            ("trigger=\"timeout\"", f(s.kcp.retrans_timeout)),
            ("trigger=\"fast\"", f(s.kcp.retrans_fast)),
        ],
    );
    metric(
        "kcp_segments_received_total",
        "counter",
        "KCP data segments received.",
        &[("", f(s.kcp.segs_recv))],
    );
    metric(
        "kcp_ack_copies_total",
        "counter",
        "Extra copies of ACK datagrams sent behind holes (kcp.ack_copies).",
        &[("", f(s.kcp.ack_copies))],
    );
    if let Some(rtt) = s.ping_rtt_ms {
        metric(
            "server_rtt_seconds",
            "gauge",
            "Round trip of the last PING to the server.",
            &[("", rtt as f64 / 1000.0)],
        );
    }
    if let Some(silence) = s.server_silence_ms {
        metric(
            "server_silence_seconds",
            "gauge",
            "Seconds since the server was last heard from.",
            &[("", silence as f64 / 1000.0)],
        );
    }
    let srtt: Vec<u32> = s.rows.iter().filter(|r| r.rtt > 0).map(|r| r.rtt).collect();
    if !srtt.is_empty() {
        let avg = srtt.iter().map(|&r| r as f64).sum::<f64>() / srtt.len() as f64;
        metric(
            "conversation_rtt_seconds",
            "gauge",
            "Mean smoothed RTT over the listed conversations.",
            &[("", avg / 1000.0)],
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(stats: &Stats) -> Snapshot<'_> {
        Snapshot {
            mode: "client",
            uptime_ms: 3_723_000,
            stats,
            kcp: KcpTotals {
                segs_sent: 1000,
                retrans_timeout: 10,
                retrans_fast: 40,
                segs_recv: 900,
                ack_copies: 6,
            },
            tcp_rx: 5 << 20,
            tcp_tx: 1234,
            open: 2,
            time_wait: 1,
            pending_dials: 0,
            peer_sockets: 0,
            server_silence_ms: Some(400),
            ping_rtt_ms: Some(52),
            rows: vec![Row {
                conv: 0x1a2b3c4d,
                state: "established",
                peer: "10.0.0.1:29900".parse().unwrap(),
                age_ms: 12_000,
                rtt: 52,
                rto: 200,
                waitsnd: 3,
                tcp_rx: 2048,
                tcp_tx: 10,
            }],
            rows_omitted: 0,
        }
    }

    #[test]
    fn text_report_has_the_numbers() {
        let stats = Stats {
            drop_auth: 7,
            udp_tx_bytes: 6 << 20,
            ..Stats::default()
        };
        let t = text(&snapshot(&stats), None);
        assert!(t.contains("(client mode), up 1h02m"), "{t}");
        assert!(t.contains("2 open, 1 in time_wait"));
        assert!(t.contains("retransmitted 5.0% (10 on timeout, 40 fast), 900 received, 6 extra"));
        assert!(t.contains("7 auth"));
        assert!(t.contains("sent 83.3%"), "{t}");
        assert!(t.contains("0x1a2b3c4d  established  10.0.0.1:29900"));
        assert!(t.contains("52/200"));
    }

    #[test]
    fn prometheus_lines_are_well_formed() {
        let stats = Stats {
            drop_replay: 3,
            ..Stats::default()
        };
        let p = prometheus(&snapshot(&stats));
        assert!(p.contains("kcptun_dropped_datagrams_total{reason=\"replay\"} 3\n"));
        assert!(p.contains("# TYPE kcptun_kcp_retransmits_total counter\n"));
        assert!(p.contains("kcptun_server_rtt_seconds 0.052\n"));
        assert!(p.contains("kcptun_kcp_ack_copies_total 6\n"));
        for line in p.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("kcptun_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        for line in p.lines().filter(|l| l.starts_with("# TYPE")) {
            if line.ends_with(" counter") {
                assert!(
                    line.split(' ').nth(2).unwrap().ends_with("_total"),
                    "{line}"
                );
            }
        }
    }
}
