//! Helpers of the hardening tests (issue 8): counters from the SIGTERM line, RSS, CPU time,
//! file descriptors, processes started under a wrapper (prlimit), sealing test datagrams.
//! Kept apart from the shared harness, which others edit at the same time.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use crate::harness::{Proc, PSK};
use kcptun::framing::{key_from_psk, Framer, Method};

/// The counters of the last "stopped: ... counters: Stats { name: N, .. }" line of a log.
pub fn parse_counters(log: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Some(line) = log.lines().rev().find(|l| l.contains("counters: Stats {")) else {
        return out;
    };
    let body = &line[line.find("Stats {").unwrap() + 7..];
    for field in body.trim_end_matches(['}', ' ']).split(',') {
        if let Some((k, v)) = field.split_once(':') {
            if let Ok(v) = v.trim().parse() {
                out.insert(k.trim().to_string(), v);
            }
        }
    }
    out
}

/// Stops `p` with SIGTERM and returns the counters it logged on the way out.
pub fn stop_and_count(p: &mut Proc) -> HashMap<String, u64> {
    p.signal(15);
    assert!(
        p.wait_exit(Duration::from_secs(5)).is_some(),
        "{} did not exit on SIGTERM",
        p.name
    );
    let c = parse_counters(&p.log_text());
    assert!(!c.is_empty(), "{}: no counters line in the log", p.name);
    c
}

/// Resident set size of a process in KiB (VmRSS), 0 when it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// Number of open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// As [`start`], but the binary runs under `wrapper` (e.g. `["prlimit", "--nofile=40", "--"]`).
pub fn start_wrapped(name: &str, config: &serde_json::Value, wrapper: &[&str]) -> Proc {
    crate::harness::start_with(name, config, wrapper)
}

/// A framer with the harness key (xchacha20poly1305_ietf).
pub fn test_framer() -> Framer {
    kcptun::framing::init().unwrap();
    Framer::new(
        Method::XChaCha20Poly1305Ietf,
        Some(key_from_psk(PSK).unwrap()),
    )
    .unwrap()
}

/// Seals `plain` into one datagram, unpadded.
pub fn seal(f: &mut Framer, plain: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    buf[..plain.len()].copy_from_slice(plain);
    let n = f.seal(&mut buf, plain.len(), plain.len());
    buf.truncate(n);
    buf
}

/// Counter `name`, 0 when absent.
pub fn get(c: &HashMap<String, u64>, name: &str) -> u64 {
    c.get(name).copied().unwrap_or(0)
}
