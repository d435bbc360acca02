//! The KCP engine: a sans-IO state machine with ikcp's semantics (skywind3000/kcp) and the
//! kcptun-libev variant's settings (big-endian headers, stream mode, 4 s maximum RTO,
//! conservative fast-ack). It owns segmentation, acknowledgement, retransmission, windows and
//! RTT estimation for one conversation. It never reads a clock or touches a socket: time is an
//! argument (`u32` milliseconds, wrapping), packets leave through a callback, and
//! [`Kcp::check`] says when the engine next needs to run.
//!
//! Calling convention for the event loop: after [`Kcp::send`] or [`Kcp::input`] call
//! [`Kcp::flush`] at once (new data and ACKs leave immediately); at the deadline from
//! [`Kcp::check`] call [`Kcp::update`] (or `flush`). An idle conversation asks for no wakeups
//! (see [`IDLE_CHECK`]).

mod engine;
mod rate;
mod wire;

#[cfg(test)]
mod tests;

pub use engine::{Kcp, KcpStats, PathControl, PathHint, IDLE_CHECK};
pub use wire::{
    packet_conv, ByteOrder, InputError, SegmentHeader, Segments, CMD_ACK, CMD_PUSH, CMD_WASK,
    CMD_WINS, OVERHEAD,
};

/// Settings of one engine. Defaults are kcptun-libev's.
#[derive(Clone, Debug)]
pub struct KcpConfig {
    /// Bytes of one KCP packet (framing already subtracted). Clamped to at least 50, like ikcp.
    pub mtu: usize,
    /// Send window in segments (0 means ikcp's default, 32).
    pub sndwnd: u16,
    /// Receive window in segments; raised to at least 128 (ikcp's rule).
    pub rcvwnd: u16,
    /// 0: normal (RTO min 100 ms, RTO doubles); 1: RTO min 30 ms, backoff x1.5;
    /// 2: like 1 but backoff by half the current estimate.
    pub nodelay: u32,
    /// Tick in ms, clamped to 10..=5000. Enters the RTO formula; no periodic wakeup here.
    pub interval: u32,
    /// Fast retransmit after this many later ACKs (0 = off).
    pub resend: u32,
    /// `true` = no congestion window (only the send and remote windows limit).
    pub nc: bool,
    /// Upper bound of the RTO estimate in ms (kcptun-libev 4000, ikcp 60000).
    pub rto_max: u32,
    /// Transmissions of one segment after which the link counts as dead (ikcp: 20).
    pub dead_link: u32,
    pub byte_order: ByteOrder,
    /// Stream mode (kcptun-libev always): writes are merged into full segments, `frg` is 0.
    pub stream: bool,
    /// Sender-side rate control (on by default; wire-neutral): paces new data at the
    /// measured bottleneck rate, made up for the path's random loss, caps data in flight at
    /// about two bandwidth-delay products (`nc` then no longer matters; `sndwnd` and the
    /// peer's window still bound the span in flight, and with it the memory), keeps the send
    /// queue near one BDP, retransmits a segment once two sent a reordering window after it
    /// are acknowledged (RACK-like, instead of `resend`; 2 ms until the path is seen to
    /// reorder, then min RTT / 4), resends by time (a smoothed RTT plus the RTT's swing;
    /// mid-transfer at least a quarter of the minimum RTT more) the segments nothing later
    /// can show lost (the tail of a transfer, and the oldest one when it holds the window)
    /// in two copies, probes a lost tail after 1.25 RTT instead of
    /// waiting for the RTO, and sends a small tail segment twice. New conversations start
    /// from what the tunnel knows of the path (rate, RTT, loss, the peer's window). Off =
    /// ikcp's behaviour exactly.
    pub rate_control: bool,
    /// How many times each datagram of ACKs goes out while the received stream has a hole
    /// (1 = once, ikcp's behaviour). KCP acknowledges a segment once and has no selective
    /// ACKs: behind a hole, a lost ACK datagram looks to the sender exactly like lost data
    /// and costs a needless retransmission of every segment it acknowledged. Copies sent
    /// back to back carry the same timestamps, so they add no RTT skew; a kcptun-rs sender
    /// counts a copy once, but ikcp's counts its fast-retransmit evidence twice. Opt-in.
    pub ack_copies: u8,
}

impl Default for KcpConfig {
    fn default() -> Self {
        KcpConfig {
            mtu: 1332,
            sndwnd: 256,
            rcvwnd: 256,
            nodelay: 1,
            interval: 100,
            resend: 0,
            nc: true,
            rto_max: 4000,
            dead_link: 20,
            byte_order: ByteOrder::Big,
            stream: true,
            rate_control: true,
            ack_copies: 1,
        }
    }
}
