//! Sender performance on simulated versions of the netlab profiles (wan, lossy, bad, bursty,
//! reorder): goodput against the link's limit, wire efficiency (payload bytes / bytes put on
//! the link in the data direction) and retransmissions, with and without rate control, for
//! the default and the lab's fast3-like settings. The assertions are the floors the engine
//! must keep; the table is the quick check while tuning:
//! `cargo test --release --test kcp_perf -- --nocapture`

#[path = "common/sim.rs"]
mod sim;

use kcptun::kcp::{Kcp, KcpConfig, PathHint};
use sim::{run, Link, LinkConfig, Rng, Side};

struct Profile {
    name: &'static str,
    link: LinkConfig,
    bytes: usize,
}

fn profiles() -> Vec<Profile> {
    // Bandwidth in bytes per ms of KCP packets; queues in bytes (drain time x rate).
    let mk = |delay, loss, bw: u64, queue_ms: u64| LinkConfig {
        bandwidth: bw,
        queue: bw * queue_ms,
        ..LinkConfig::lossy(delay, loss)
    };
    let big = if cfg!(debug_assertions) { 1 } else { 4 };
    vec![
        Profile {
            name: "wan",
            link: mk(25, 0.001, 12_500, 50),
            bytes: big * 4_000_000,
        },
        Profile {
            name: "lossy",
            link: mk(50, 0.02, 6_250, 100),
            bytes: big * 2_000_000,
        },
        Profile {
            name: "bad",
            // +-10 ms of jitter that keeps order, as the lab's emulator does by default.
            link: LinkConfig {
                jitter: 20,
                keep_order: true,
                ..mk(90, 0.10, 2_500, 200)
            },
            bytes: big * 1_000_000,
        },
        Profile {
            name: "bursty",
            link: LinkConfig {
                burst_enter: 0.005,
                burst_exit: 0.25,
                burst_loss: 1.0,
                ..mk(50, 0.0, 6_250, 100)
            },
            bytes: big * 2_000_000,
        },
        Profile {
            name: "reorder",
            link: LinkConfig {
                jitter: 5,
                reorder: 0.01,
                reorder_extra: 5,
                dup: 0.005,
                ..mk(25, 0.0, 12_500, 50)
            },
            bytes: big * 4_000_000,
        },
        Profile {
            // The netlab emulator's `reorder` (netem-like): 20-30 ms each way, 1% of packets
            // skip the delay and overtake everything in flight, 0.5% duplicated. Those express
            // packets once made min RTT 20 ms on a 40-60 ms path and jitter made every round
            // look queued: 4 Mbit/s of 100 in the lab.
            name: "express",
            link: LinkConfig {
                jitter: 10,
                express: 0.01,
                dup: 0.005,
                ..mk(20, 0.0, 12_500, 50)
            },
            bytes: big * 4_000_000,
        },
    ]
}

/// The lab's fast3-like settings (bench/forwarders/kcptun-rs-fast3.json).
fn fast3_cfg(rc: bool) -> KcpConfig {
    KcpConfig {
        sndwnd: 2048,
        rcvwnd: 2048,
        interval: 10,
        resend: 2,
        ..sim::forwarder_defaults(rc)
    }
}

#[derive(Debug, Clone, Copy)]
struct Result {
    /// Goodput as a share of the link limit (payload share of each packet, minus loss).
    of_limit: f64,
    /// Payload bytes / bytes the link accepted in the data direction.
    efficiency: f64,
    retrans: u64,
    dups: u64,
    hint: Option<PathHint>,
}

fn one_way(p: &Profile, cfg: &KcpConfig, seed: u64, hint: Option<PathHint>) -> Result {
    let data = Rng::new(seed).bytes(p.bytes);
    let mut a = Kcp::new(9, cfg);
    if let Some(h) = hint {
        a.seed_path(h);
    }
    let mut b = Kcp::new(9, cfg);
    let mut ab = Link::new(p.link.clone(), seed * 2 + 1);
    let mut ba = Link::new(p.link.clone(), seed * 2 + 2);
    let out = {
        let mut sa = Side::new(&mut a, &data);
        let mut sb = Side::new(&mut b, &[]);
        run(&mut sa, &mut sb, &mut ab, &mut ba, 1000, seed, 3_600_000)
    };
    let st = a.stats();
    if std::env::var_os("KCP_PERF_TRACE").is_some() {
        eprintln!(
            "  {} rc={:?} end={} drops={}/{} est={:?} rto={} srtt={} fast={} timeout={}",
            p.name,
            cfg.rate_control,
            out.done_ab,
            ab.dropped,
            ab.sent,
            a.rate_estimate(),
            a.rto(),
            a.rtt(),
            st.retrans_fast,
            st.retrans_timeout
        );
    }
    let mss = (cfg.mtu - 24) as f64;
    let limit = p.link.bandwidth as f64 * (1.0 - p.link.loss) * mss / cfg.mtu as f64;
    let goodput = p.bytes as f64 / out.done_ab as f64;
    Result {
        of_limit: goodput / limit,
        efficiency: p.bytes as f64 / st.bytes_out as f64,
        retrans: st.retrans_fast + st.retrans_timeout,
        dups: st.dup_sent,
        hint: a.path_hint(),
    }
}

#[test]
fn goodput_and_efficiency_table() {
    println!();
    println!(
        "{:>8} {:>8} {:>3} | {:>7} {:>7} {:>7} {:>5}",
        "profile", "config", "rc", "%limit", "effic.", "retrans", "dups"
    );
    let mut fails = Vec::new();
    let only = std::env::var("KCP_PERF_ONLY").unwrap_or_default();
    for p in profiles()
        .into_iter()
        .filter(|p| only.is_empty() || only.contains(p.name))
    {
        for (cname, mk) in [
            ("default", sim::forwarder_defaults as fn(bool) -> KcpConfig),
            ("fast3", fast3_cfg),
        ] {
            // Off, on, and on with the path learnt by an earlier conversation (a fresh
            // connection to the same peer, as the lab's bulk phases make).
            let mut hint = None;
            for (rc, label) in [(false, "off"), (true, "on"), (true, "hnt")] {
                let seed = std::env::var("KCP_PERF_SEED").map_or(7, |s| s.parse().unwrap_or(7));
                let r = one_way(&p, &mk(rc), seed, if label == "hnt" { hint } else { None });
                if label == "on" {
                    hint = r.hint;
                }
                println!(
                    "{:>8} {:>8} {:>3} | {:>6.1}% {:>6.1}% {:>7} {:>5}",
                    p.name,
                    cname,
                    label,
                    r.of_limit * 100.0,
                    r.efficiency * 100.0,
                    r.retrans,
                    r.dups
                );
                if rc && !cfg!(debug_assertions) {
                    // Floors a little under what the engine reaches (release, seed 7): these
                    // transfers are short, so startup weighs more than in the lab's.
                    let (min_limit, min_eff) = match p.name {
                        "wan" | "reorder" => (0.80, 0.95),
                        // 73% fresh, 82% with a path hint (seed 7); over seeds 1-8 63-75%
                        // and 60-84% (fbbfc5f). Before the minimum RTT resisted early
                        // packets most hinted runs spiralled down (7-20%), and until it
                        // paired samples of separate packets one seed of eight still did.
                        "express" => (0.35, 0.75),
                        "lossy" | "bursty" => (0.60, 0.92),
                        _ => (0.45, 0.75),
                    };
                    if r.of_limit < min_limit || r.efficiency < min_eff {
                        fails.push((p.name, cname, r));
                    }
                }
            }
        }
    }
    assert!(fails.is_empty(), "below the floors: {fails:?}");
}
