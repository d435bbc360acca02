//! The per-conversation state machine. Mirrors ikcp.c function by function (send, recv,
//! input, flush, check) with three deliberate differences: time comes in as an argument,
//! deadlines are exact instead of rounded to the next `interval` tick, and storage is
//! bounded and reused (queues are `VecDeque`s, payload buffers come from a free list).

use std::cell::{RefCell, RefMut};
use std::collections::VecDeque;
use std::rc::Rc;

use super::rate::{Pacer, RateControl, TxStamp};
use super::wire::{
    ByteOrder, InputError, SegmentHeader, CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, OVERHEAD,
};
use super::KcpConfig;

const RTO_NDL: u32 = 30;
const RTO_MIN: u32 = 100;
const RTO_DEF: u32 = 200;
const WND_SND_DEF: u32 = 32;
const WND_RCV_MIN: u32 = 128;
const THRESH_INIT: u32 = 2;
const THRESH_MIN: u32 = 2;
const PROBE_INIT: u32 = 7000;
const PROBE_LIMIT: u32 = 120_000;
const FASTACK_LIMIT: u32 = 5;
const MAX_FRAGMENTS: usize = WND_RCV_MIN as usize - 1;
/// A segment's backed-off RTO never exceeds this. ikcp lets it grow without bound (hours after
/// 20 transmissions); capping keeps every deadline far inside the 2^31 wrapping horizon.
const SEG_RTO_CAP: u32 = 120_000;
/// Largest payload accepted from the peer even when its mtu is larger than ours; bounds the
/// memory a peer can pin to `rcvwnd` times this.
const MAX_RECV_PAYLOAD: usize = 16 * 1024;

/// Rate control: retransmit after this many ACKs (in separate packets) of segments sent a
/// reordering window later (RACK-like: time tells loss from reordering; see parse_later_acks).
/// 1 was measured worse on the simulated `bad` profile (10 % loss: 44 % vs 53 % of limit).
const RC_FASTRESEND: u32 = 2;
/// Rate control: the reordering window (ms) on a path not seen to reorder: the clock's
/// resolution, and segments sent in the same ms may be acknowledged in any order.
const REO_MIN: u32 = 2;
/// Rate control: the send queue holds about one BDP, at least this many segments and at most
/// half the send window (the session refills it every loop iteration, so it only has to
/// bridge the gaps between refills; a larger one would only add memory).
const RC_QUEUE_MIN: usize = 16;
/// Rate control: a new tail segment at most this long, with at most this many segments
/// unacknowledged, is sent twice (in two packets): interactive messages then survive a
/// single loss without waiting for an RTO, since no later segment would trigger a fast
/// retransmit.
const DUP_MAX_BYTES: usize = 512;
/// Rate control: a segment unacknowledged for this long (and sent `dead_link` times) means
/// the link is dead. It exceeds the client's default silence timer (79 s plus a 3 s probe)
/// with room for keepalives up to ~95 s.
const RC_DEAD_AFTER: u32 = 300_000;
const DUP_MAX_UNACKED: usize = 2;
/// Buffers an idle engine keeps in its pool (the rest is returned to the allocator), and how
/// long without data or ACKs to send counts as idle (ms).
const POOL_IDLE_KEEP: usize = 4;
const TRIM_AFTER: u32 = 1000;

/// What [`Kcp::check`] returns, relative to `now`, when nothing is due: no data in flight or
/// queued, no ACK or probe pending. Far, but well inside the wrapping comparison horizon.
pub const IDLE_CHECK: u32 = 1 << 30;

const ASK_SEND: u8 = 1;
const ASK_TELL: u8 = 2;

/// Signed distance `a - b` on the wrapping u32 line (sequence numbers and timestamps).
#[inline]
fn diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// Rate control's loss timer (see `Kcp::lost_after`).
#[derive(Clone, Copy, Debug)]
struct LossTimer {
    /// How long after its latest transmission a covered segment counts as lost.
    wait: u32,
    /// Only when nothing is queued behind the flight (see `timed_loss`): how long after an
    /// ACK of a segment sent no earlier overtook it (RACK: that ACK's round trip is the one
    /// that counts, not the smoothed RTT, which lags a growing queue).
    overtaken: Option<u32>,
}

/// When `seg` counts as lost by time alone, if the loss `timer` covers it. With nothing
/// queued: the `tail` (too few segments sent after it for their ACKs to show it lost), its
/// latest transmission a smoothed RTT and a swing ago, and any segment that an ACK of one
/// sent no earlier overtook, a reordering window after that ACK. With data queued behind a
/// flight that holds the window: the `oldest` unacknowledged one. Never past the
/// fast-retransmit limit (then the RTO and its backoff take over).
///
/// Not every segment of a flight with nothing queued behind it, by the smoothed RTT: an
/// echoing server's conversations always have nothing queued, and when a queue grows faster
/// than the smoothed RTT follows, every segment of every one of them passes that timer at
/// once and is resent, in two copies and unpaced, into the full queue. That is one way into
/// the retransmission storms of a 50-connection echo soak on netlab `reorder` (up to 6 times
/// the link's rate for 4 s); the storms had other causes too and outlived this change (the
/// README's "Both directions full" has what ended them). A segment whose ACK only waits in a
/// queue is not overtaken; a lost one is, soon after.
fn timed_loss(timer: Option<LossTimer>, oldest: bool, tail: bool, seg: &Segment) -> Option<u32> {
    let t = timer?;
    if seg.xmit > FASTACK_LIMIT {
        return None;
    }
    let Some(overtaken) = t.overtaken else {
        return oldest.then(|| seg.ts.wrapping_add(t.wait));
    };
    let by_time = tail.then(|| seg.ts.wrapping_add(t.wait));
    let by_ack = seg.overtaken_at.map(|at| at.wrapping_add(overtaken));
    match (by_time, by_ack) {
        (Some(a), Some(b)) => Some(if diff(a, b) < 0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// What rate control learnt about a path, for the next conversations on it; see
/// [`Kcp::path_hint`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PathHint {
    /// Bottleneck bandwidth, bytes of segments per ms.
    pub bw: f64,
    /// Minimum RTT, ms.
    pub min_rtt: u32,
    /// Share of transmissions that were retransmissions (random loss made up for).
    pub loss: f64,
    /// Largest receive window the peer advertised, segments (0: not heard).
    pub peer_wnd: u32,
    /// The path was seen to reorder packets.
    pub reordering: bool,
    /// The largest reordering lag seen lately, ms (see `Kcp::ack_reorder_window`).
    pub reorder_lag: u32,
}

/// Rate control shared by the conversations on one path (the tunnel's conversations with one
/// peer): one model of the path (bottleneck rate, minimum RTT, data in flight), measured from
/// all their ACKs, and a pacing rate that the conversations with data queued split evenly.
/// Per-conversation controllers each saw the others' queue as their own and their rates added
/// up past the bottleneck (50 conversations through a 100 ms queue: 25-38% of full-size
/// datagrams dropped, one segment lost 15 times in a row). Cloning shares; a conversation
/// joins with [`Kcp::join_path`]. Single-threaded by design (the event loop owns everything).
#[derive(Clone, Debug)]
pub struct PathControl(Rc<RefCell<RateControl>>);

impl PathControl {
    /// A path nothing is known about yet; `mtu` as in [`KcpConfig`].
    pub fn new(mtu: usize) -> PathControl {
        PathControl(Rc::new(RefCell::new(RateControl::new(mtu.max(50)))))
    }

    /// A fresh path that starts from an earlier one's [`PathHint`] (at its rate, cruising).
    pub fn seeded(mtu: usize, hint: PathHint) -> PathControl {
        let p = PathControl::new(mtu);
        p.0.borrow_mut().seed(hint);
        p
    }

    /// Handles to this path: the conversations that joined it plus the caller's own.
    pub fn handles(&self) -> usize {
        Rc::strong_count(&self.0)
    }

    /// What the path's model knows (see [`Kcp::path_hint`]).
    pub fn hint(&self) -> Option<PathHint> {
        self.0.borrow().path()
    }

    /// Conversations on this path with data queued.
    pub fn backlogged(&self) -> usize {
        self.0.borrow().backlogged()
    }

    /// Conversations on this path with data queued or in flight.
    pub fn active(&self) -> usize {
        self.0.borrow().active()
    }

    /// A packet on this path was seen to overtake another (the reordering window widens).
    #[cfg(test)]
    pub(crate) fn reorders(&self) -> bool {
        self.0.borrow().reordering()
    }

    /// Bytes of first transmissions in flight on this path (all its conversations).
    pub fn inflight(&self) -> usize {
        self.0.borrow().inflight()
    }

    fn get(&self) -> RefMut<'_, RateControl> {
        self.0.borrow_mut()
    }
}

/// Counters for monitoring; cheap, never reset by the engine.
#[derive(Clone, Debug, Default)]
pub struct KcpStats {
    /// Packets handed to `out` and their bytes.
    pub pkts_out: u64,
    pub bytes_out: u64,
    /// Packets given to `input` and their bytes (accepted or not).
    pub pkts_in: u64,
    pub bytes_in: u64,
    /// Packets `input` refused (or stopped parsing) as malformed / foreign.
    pub input_errors: u64,
    /// PUSH segments sent for the first time, and their payload bytes.
    pub segs_sent: u64,
    pub data_bytes_sent: u64,
    /// Retransmissions after an RTO expired / triggered by duplicate ACKs.
    pub retrans_timeout: u64,
    pub retrans_fast: u64,
    /// PUSH segments received (including duplicates) and payload bytes handed to `recv`.
    pub segs_recv: u64,
    pub data_bytes_recv: u64,
    /// ACK segments sent and received.
    pub acks_sent: u64,
    pub acks_recv: u64,
    /// Window probes (WASK) sent.
    pub probes_sent: u64,
    /// Extra copies of small tail segments, and tail-loss probes (rate control).
    pub dup_sent: u64,
    pub tlp_sent: u64,
    /// Extra copies of ACK datagrams sent behind a hole (`KcpConfig::ack_copies`).
    pub ack_copies_sent: u64,
}

struct Segment {
    sn: u32,
    ts: u32,
    frg: u8,
    resendts: u32,
    rto: u32,
    fastack: u32,
    xmit: u32,
    /// When it first left (rate control's dead-link rule).
    first_tx: u32,
    /// Acknowledged out of order; kept in place until `snd_una` passes it so `snd_buf` stays
    /// indexable by `sn - snd_una`.
    acked: bool,
    /// When an ACK of a segment that left no earlier than this copy came first: its own ACK
    /// is lost or reordered (see `timed_loss`).
    overtaken_at: Option<u32>,
    /// Rate control: the delivery state when this copy left.
    stamp: TxStamp,
    data: Vec<u8>,
}

impl Segment {
    fn new(data: Vec<u8>) -> Segment {
        Segment {
            sn: 0,
            ts: 0,
            frg: 0,
            resendts: 0,
            rto: 0,
            fastack: 0,
            xmit: 0,
            first_tx: 0,
            acked: false,
            overtaken_at: None,
            stamp: TxStamp::default(),
            data,
        }
    }
}

/// One KCP conversation.
pub struct Kcp {
    conv: u32,
    order: ByteOrder,
    stream: bool,
    mtu: usize,
    mss: usize,

    snd_una: u32,
    snd_nxt: u32,
    rcv_nxt: u32,

    ssthresh: u32,
    rx_rttval: u32,
    rx_srtt: u32,
    rx_rto: u32,
    rx_minrto: u32,
    rto_max: u32,

    snd_wnd: u32,
    rcv_wnd: u32,
    rmt_wnd: u32,
    cwnd: u32,
    incr: u32,
    probe: u8,
    ts_probe: u32,
    probe_wait: u32,

    current: u32,
    interval: u32,
    nodelay: u32,
    fastresend: u32,
    nocwnd: bool,
    dead_link: u32,
    dead: bool,

    snd_queue: VecDeque<Segment>,
    /// In flight, contiguous in `sn` from `snd_una`.
    snd_buf: VecDeque<Segment>,
    /// Segments in `snd_buf` not yet acknowledged.
    nsnd_buf: usize,
    /// Out-of-order arrivals, sorted by `sn`, all inside `[rcv_nxt, rcv_nxt + rcv_wnd)`.
    rcv_buf: VecDeque<Segment>,
    /// In-order data waiting for `recv`; `rcv_off` bytes of the front one are consumed.
    rcv_queue: VecDeque<Segment>,
    rcv_off: usize,
    rcv_bytes: usize,
    /// `(sn, ts)` of PUSH segments to acknowledge at the next flush.
    acklist: Vec<(u32, u32)>,
    /// Free payload buffers (capacity about `mss`).
    pool: Vec<Vec<u8>>,
    /// One packet being assembled by `flush`.
    buffer: Vec<u8>,
    /// Sender-side rate control (`KcpConfig::rate_control`): this conversation's own model,
    /// or one shared with the others on its path ([`Kcp::join_path`]).
    rc: Option<PathControl>,
    /// This conversation's pacer, its first transmissions in flight (bytes, counted in the
    /// model's flight too), whether it is counted as having data queued, and whether as
    /// having data in flight or queued.
    pacer: Pacer,
    rc_own: usize,
    backlogged: bool,
    active: bool,
    /// Last flush with data or ACKs to send (idle-memory trimming).
    busy_at: u32,
    /// Tail-loss probe: the last ACK progress or new transmission, and whether the probe for
    /// it went out.
    tlp_base: u32,
    tlp_sent: bool,
    /// Send time of the latest-sent segment acknowledged so far (rate control: an earlier
    /// one acknowledged after it was overtaken, and the path reorders).
    acked_ts: Option<u32>,
    /// When the last PUSH segment arrived (wrapping ms; diagnostics only).
    last_push_at: u32,
    /// ACK hold (`set_ack_hold`): how long ACKs may wait for a reply to ride along (ms, 0 =
    /// never), since when they wait, whether the newest in-order segment was shorter than
    /// the MSS (the end of a message: a reply may follow), and whether a pending ACK tells
    /// of a hole (a segment out of order, or one that filled a gap): that goes at once.
    ack_hold: u32,
    ack_held_since: Option<u32>,
    rcv_last_short: bool,
    ack_now: bool,
    /// `KcpConfig::ack_copies`, at least 1.
    ack_copies: u8,

    stats: KcpStats,
}

impl Kcp {
    pub fn new(conv: u32, cfg: &KcpConfig) -> Kcp {
        let mtu = cfg.mtu.max(50);
        let mut kcp = Kcp {
            conv,
            order: cfg.byte_order,
            stream: cfg.stream,
            mtu,
            mss: mtu - OVERHEAD,
            snd_una: 0,
            snd_nxt: 0,
            rcv_nxt: 0,
            ssthresh: THRESH_INIT,
            rx_rttval: 0,
            rx_srtt: 0,
            rx_rto: RTO_DEF,
            rx_minrto: RTO_MIN,
            rto_max: 60_000,
            snd_wnd: WND_SND_DEF,
            rcv_wnd: WND_RCV_MIN,
            rmt_wnd: WND_RCV_MIN,
            // ikcp starts at 0 and only raises it to 1 at the end of the first flush, so with
            // the congestion window on its first segment would wait a whole tick.
            cwnd: 1,
            incr: (mtu - OVERHEAD) as u32,
            probe: 0,
            ts_probe: 0,
            probe_wait: 0,
            current: 0,
            interval: 100,
            nodelay: 0,
            fastresend: 0,
            nocwnd: false,
            dead_link: 20,
            dead: false,
            snd_queue: VecDeque::new(),
            snd_buf: VecDeque::new(),
            nsnd_buf: 0,
            rcv_buf: VecDeque::new(),
            rcv_queue: VecDeque::new(),
            rcv_off: 0,
            rcv_bytes: 0,
            acklist: Vec::new(),
            pool: Vec::new(),
            buffer: Vec::with_capacity(mtu),
            rc: cfg.rate_control.then(|| PathControl::new(mtu)),
            pacer: Pacer::default(),
            rc_own: 0,
            backlogged: false,
            active: false,
            busy_at: 0,
            tlp_base: 0,
            tlp_sent: true,
            acked_ts: None,
            last_push_at: 0,
            ack_hold: 0,
            ack_held_since: None,
            rcv_last_short: false,
            ack_now: false,
            ack_copies: cfg.ack_copies.max(1),
            stats: KcpStats::default(),
        };
        kcp.set_nodelay(cfg.nodelay, cfg.interval, cfg.resend, cfg.nc);
        kcp.set_wndsize(cfg.sndwnd, cfg.rcvwnd);
        kcp.set_rto_max(cfg.rto_max);
        kcp.dead_link = if cfg.dead_link == 0 {
            20
        } else {
            cfg.dead_link
        };
        kcp
    }

    // ---------------------------------------------------------------- settings and getters

    /// ikcp_nodelay: all four at once (every value is applied, none means "keep").
    pub fn set_nodelay(&mut self, nodelay: u32, interval: u32, resend: u32, nc: bool) {
        self.nodelay = nodelay;
        self.rx_minrto = if nodelay != 0 { RTO_NDL } else { RTO_MIN };
        self.interval = interval.clamp(10, 5000);
        self.fastresend = resend;
        self.nocwnd = nc;
    }

    /// ikcp_wndsize. The receive window only grows (shrinking it under data already accepted
    /// would break the window invariant), and is at least 128.
    pub fn set_wndsize(&mut self, sndwnd: u16, rcvwnd: u16) {
        if sndwnd > 0 {
            self.snd_wnd = u32::from(sndwnd);
        }
        self.rcv_wnd = self.rcv_wnd.max(u32::from(rcvwnd)).max(WND_RCV_MIN);
    }

    /// Upper bound of the RTO estimate (at least the minimum RTO).
    pub fn set_rto_max(&mut self, rto_max: u32) {
        self.rto_max = rto_max.clamp(self.rx_minrto, SEG_RTO_CAP);
        self.rx_rto = self.rx_rto.min(self.rto_max);
    }

    /// Lets ACKs wait up to `ms` for a reply to carry them, when that is all there is to
    /// send and the data they acknowledge ended a message (0, the default and ikcp's
    /// behaviour: every flush sends its ACKs). A request/response exchange then costs one
    /// datagram each way instead of two: on a path whose jitter keeps packet order, the
    /// reply sent just behind a lone ACK arrives at the later of two delays (netlab `bad`,
    /// +/-10 ms: +4 ms at the median, each way). The peer sees round trips up to `ms` longer
    /// for such messages; bulk data (full segments), holes, window probes and anything of
    /// our own in flight are acknowledged at once.
    pub fn set_ack_hold(&mut self, ms: u32) {
        self.ack_hold = ms;
    }

    /// While ACKs are held: when they go out at the latest. `None` when nothing is held,
    /// or the ACKs pending must go now.
    fn ack_release(&self) -> Option<u32> {
        let quiet = self.ack_hold > 0
            && !self.ack_now
            && self.rcv_last_short
            && self.rcv_buf.is_empty()
            && self.snd_queue.is_empty()
            && self.nsnd_buf == 0
            && self.probe == 0
            && self.rmt_wnd != 0;
        if !quiet || self.acklist.is_empty() {
            return None;
        }
        let since = self.ack_held_since.unwrap_or(self.current);
        Some(since.wrapping_add(self.ack_hold))
    }

    pub fn conv(&self) -> u32 {
        self.conv
    }

    pub fn mss(&self) -> usize {
        self.mss
    }

    /// The next sequence number expected from the peer: it advances only with new data.
    pub fn rcv_nxt(&self) -> u32 {
        self.rcv_nxt
    }

    /// Smoothed RTT in ms (0 before the first ACK).
    pub fn rtt(&self) -> u32 {
        self.rx_srtt
    }

    /// Current RTO estimate in ms.
    pub fn rto(&self) -> u32 {
        self.rx_rto
    }

    /// Congestion window in segments (meaningless with `nc`).
    pub fn cwnd(&self) -> u32 {
        self.cwnd
    }

    /// The peer's last advertised free receive window, in segments.
    pub fn remote_wnd(&self) -> u32 {
        self.rmt_wnd
    }

    /// Rate control's model: (bottleneck estimate in bytes/ms, minimum RTT in ms, in-flight
    /// cap in bytes, bytes in flight); `None` when rate control is off.
    pub fn rate_estimate(&self) -> Option<(f64, Option<u32>, usize, usize)> {
        self.rc.as_ref().map(|rc| {
            let rc = rc.get();
            (rc.bw(), rc.min_rtt(), rc.cwnd(), rc.inflight())
        })
    }

    /// One line of sender state for a log (why is this conversation stuck?): sequence
    /// numbers, queues, windows, timers, the oldest unacknowledged segment, rate control.
    pub fn describe(&self) -> String {
        let oldest = self.snd_buf.iter().find(|s| !s.acked).map_or_else(
            || "none".to_string(),
            |s| {
                format!(
                    "sn {} xmit {} rto {} resend in {} ms",
                    s.sn,
                    s.xmit,
                    s.rto,
                    diff(s.resendts, self.current)
                )
            },
        );
        // Before the model's borrow below: both windows borrow it too.
        let (reo, ack_reo) = (self.reorder_window(), self.ack_reorder_window());
        let rc = self.rc.as_ref().map_or_else(
            || "off".to_string(),
            |rc| {
                let rc = rc.get();
                format!(
                    "{} bw {:.1} B/ms min_rtt {:?} cwnd {} B inflight {} B (own {} B) backlogged {} \
                     reordering window {reo} ms (ACKs {ack_reo} ms)",
                    rc.phase(),
                    rc.bw(),
                    rc.min_rtt(),
                    rc.cwnd(),
                    rc.inflight(),
                    self.rc_own,
                    rc.backlogged()
                )
            },
        );
        let last_in = if self.stats.segs_recv == 0 {
            "never".to_string()
        } else {
            format!("{} ms ago", diff(self.current, self.last_push_at))
        };
        format!(
            "una {} nxt {} rcv_nxt {} queue {} flight {} rcv_buf {} rcv_queue {} rmt_wnd {} \
             srtt {} rto {} segs in {} last in {last_in}; oldest unacked: {oldest}; rc: {rc}",
            self.snd_una,
            self.snd_nxt,
            self.rcv_nxt,
            self.snd_queue.len(),
            self.nsnd_buf,
            self.rcv_buf.len(),
            self.rcv_queue.len(),
            self.rmt_wnd,
            self.rx_srtt,
            self.rx_rto,
            self.stats.segs_recv,
        )
    }

    /// `(sn, xmit)` of the oldest unacknowledged segment in flight, if any.
    pub fn oldest_unacked(&self) -> Option<(u32, u32)> {
        self.snd_buf
            .iter()
            .find(|s| !s.acked)
            .map(|s| (s.sn, s.xmit))
    }

    /// What rate control learnt about the path (bandwidth, minimum RTT), for
    /// [`Kcp::seed_path`] of the next conversation with the same peer. `None` before it knows.
    pub fn path_hint(&self) -> Option<PathHint> {
        self.rc.as_ref()?.hint()
    }

    /// Shares `path`'s rate control from now on (see [`PathControl`]). Only a fresh engine
    /// joins (nothing sent or queued yet); without rate control this does nothing.
    pub fn join_path(&mut self, path: &PathControl) {
        if self.rc.is_none() || self.stats.segs_sent > 0 || self.backlogged {
            return;
        }
        self.rc = Some(path.clone());
        let (rtt, wnd) = {
            let rc = path.0.borrow();
            (rc.min_rtt(), rc.peer_wnd())
        };
        if let Some(rtt) = rtt {
            self.expect_rtt(rtt);
        }
        self.expect_wnd(wnd);
    }

    /// Until the peer's first packet says otherwise, assume the receive window it advertised
    /// on the same path before (ikcp assumes 128 segments: a 200 ms x 20 Mbit/s path then
    /// carries a third of its BDP in the first round trip).
    fn expect_wnd(&mut self, wnd: u32) {
        if self.stats.pkts_in == 0 && wnd > self.rmt_wnd {
            self.rmt_wnd = wnd;
        }
    }

    /// What the path's RTT is known to be (from another conversation, or the client's
    /// keepalive pings) before this conversation measured its own: the first RTO starts at
    /// twice it, never below the usual initial 200 ms. On a 200 ms path that default fired
    /// for the whole first flight, a round trip's worth of needless retransmissions.
    pub fn expect_rtt(&mut self, rtt: u32) {
        if self.rx_srtt == 0 && rtt > 0 {
            let rto = u64::from(rtt) * 2;
            let rto = rto.clamp(u64::from(self.rx_minrto), u64::from(self.rto_max)) as u32;
            self.rx_rto = self.rx_rto.max(rto);
        }
    }

    /// Leaves the path's rate control for good: this conversation's data in flight and its
    /// place in the backlog are no longer the path's. For a conversation that is over (it
    /// only answers late packets from now on); it continues without rate control.
    pub fn leave_path(&mut self) {
        if let Some(rc) = self.rc.take() {
            let mut rc = rc.get();
            rc.forget_inflight(self.rc_own);
            if self.backlogged {
                rc.set_backlogged(false);
            }
            if self.active {
                rc.set_active(false);
            }
        }
        self.rc_own = 0;
        self.backlogged = false;
        self.active = false;
    }

    /// Counts this conversation in the path's backlog while its queue holds data, and among
    /// its active conversations while it has data queued or in flight.
    fn sync_backlog(&mut self) {
        let on = !self.snd_queue.is_empty();
        if on != self.backlogged {
            self.backlogged = on;
            if let Some(rc) = &self.rc {
                rc.get().set_backlogged(on);
            }
        }
        let active = on || self.rc_own > 0;
        if active != self.active {
            self.active = active;
            if let Some(rc) = &self.rc {
                rc.get().set_active(active);
            }
        }
    }

    /// A new conversation starts from an earlier one's [`PathHint`] (at its rate, cruising,
    /// with the peer's window): bulk transfers on fresh connections skip startup. Ignored
    /// once data has been acknowledged, or without rate control.
    pub fn seed_path(&mut self, hint: PathHint) {
        if let Some(rc) = &self.rc {
            rc.get().seed(hint);
            self.expect_rtt(hint.min_rtt);
            self.expect_wnd(hint.peer_wnd);
        }
    }

    pub fn stats(&self) -> &KcpStats {
        &self.stats
    }

    /// Segments queued, not yet in flight.
    pub fn queued(&self) -> usize {
        self.snd_queue.len()
    }

    /// Segments not yet acknowledged plus segments queued (ikcp_waitsnd).
    pub fn waitsnd(&self) -> usize {
        self.nsnd_buf + self.snd_queue.len()
    }

    /// A segment has been transmitted `dead_link` times without an ACK.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Nothing unacknowledged, nothing queued, no ACK or window message pending.
    pub fn is_idle(&self) -> bool {
        self.nsnd_buf == 0
            && self.snd_queue.is_empty()
            && self.acklist.is_empty()
            && self.probe == 0
    }

    // ------------------------------------------------------------------------ buffer pool

    fn alloc_buf(&mut self) -> Vec<u8> {
        self.pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.mss))
    }

    fn free_buf(&mut self, mut buf: Vec<u8>) {
        // Oversized buffers (from a peer with a larger mtu) are not worth keeping; the pool
        // never holds more than the windows could need at once.
        let limit = 2 * (self.snd_wnd as usize + self.rcv_wnd as usize);
        let cap = buf.capacity();
        if cap >= self.mss && cap <= 2 * self.mss && self.pool.len() < limit {
            buf.clear();
            self.pool.push(buf);
        }
    }

    // --------------------------------------------------------------------------- send side

    /// The limit of `snd_queue` in segments: one send window waiting behind one in flight.
    /// With rate control: about one BDP (once measured), so TCP backpressure keeps the
    /// queue inside the tunnel short.
    fn queue_limit(&self) -> usize {
        // On a shared path, this conversation's share of the BDP: n conversations each queueing
        // a whole one would hold n round trips of data (and memory) inside the tunnel.
        let share = |rc: &PathControl| {
            let rc = rc.get();
            let n = rc.backlogged() + usize::from(!self.backlogged);
            Some(rc.bdp()? / n.max(1))
        };
        match self.rc.as_ref().and_then(share) {
            Some(bdp) => {
                (bdp / self.mtu).clamp(RC_QUEUE_MIN, (self.snd_wnd as usize / 2).max(RC_QUEUE_MIN))
            }
            None => self.snd_wnd as usize,
        }
    }

    /// How many more bytes `send` would accept now.
    pub fn send_capacity(&self) -> usize {
        let free = self.queue_limit().saturating_sub(self.snd_queue.len()) * self.mss;
        let tail = match self.snd_queue.back() {
            Some(last) if self.stream => self.mss - last.data.len().min(self.mss),
            _ => 0,
        };
        free + tail
    }

    /// Queues bytes and returns how many were taken (0 when the queue is full). Stream mode:
    /// fills the last queued segment first, takes a prefix when short of room. Message mode:
    /// all or nothing, at most 127 fragments; an empty message is a zero-length segment.
    pub fn send(&mut self, data: &[u8]) -> usize {
        let n = if self.stream {
            self.send_stream(data)
        } else {
            self.send_message(data)
        };
        self.sync_backlog();
        n
    }

    fn send_stream(&mut self, data: &[u8]) -> usize {
        let mss = self.mss;
        let mut taken = 0;
        if let Some(last) = self.snd_queue.back_mut() {
            let n = (mss - last.data.len().min(mss)).min(data.len());
            last.data.extend_from_slice(&data[..n]);
            taken = n;
        }
        while taken < data.len() && self.snd_queue.len() < self.queue_limit() {
            let n = (data.len() - taken).min(mss);
            let mut buf = self.alloc_buf();
            buf.extend_from_slice(&data[taken..taken + n]);
            self.snd_queue.push_back(Segment::new(buf));
            taken += n;
        }
        taken
    }

    fn send_message(&mut self, data: &[u8]) -> usize {
        let count = data.len().div_ceil(self.mss).max(1);
        if count > MAX_FRAGMENTS || self.snd_queue.len() + count > self.queue_limit() {
            return 0;
        }
        let mut chunks = data.chunks(self.mss);
        for i in 0..count {
            let mut buf = self.alloc_buf();
            buf.extend_from_slice(chunks.next().unwrap_or(&[]));
            let mut seg = Segment::new(buf);
            seg.frg = (count - i - 1) as u8;
            self.snd_queue.push_back(seg);
        }
        data.len()
    }

    // ------------------------------------------------------------------------ receive side

    /// Bytes ready for `recv`. Stream mode: everything in order; message mode: the size of
    /// the next complete message (0 if none).
    pub fn peek_size(&self) -> usize {
        if self.stream {
            return self.rcv_bytes;
        }
        let Some(first) = self.rcv_queue.front() else {
            return 0;
        };
        if first.frg == 0 {
            return first.data.len();
        }
        if self.rcv_queue.len() < usize::from(first.frg) + 1 {
            return 0;
        }
        let mut len = 0;
        for seg in &self.rcv_queue {
            len += seg.data.len();
            if seg.frg == 0 {
                break;
            }
        }
        len
    }

    /// Copies received bytes into `buf`. Stream mode: as many as fit. Message mode: one whole
    /// message, or 0 if `buf` is too small for it.
    pub fn recv(&mut self, buf: &mut [u8]) -> usize {
        if self.rcv_queue.is_empty() || buf.is_empty() {
            return 0;
        }
        let recover = self.rcv_queue.len() >= self.rcv_wnd as usize;
        let n = if self.stream {
            self.recv_stream(buf)
        } else {
            self.recv_message(buf)
        };
        self.stats.data_bytes_recv += n as u64;
        self.move_rcv_buf();
        // The window was full and has reopened: tell the peer at the next flush instead of
        // letting it wait for its next probe.
        if recover && self.rcv_queue.len() < self.rcv_wnd as usize {
            self.probe |= ASK_TELL;
        }
        n
    }

    fn recv_stream(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.rcv_queue.front() else {
                break;
            };
            let avail = &front.data[self.rcv_off..];
            let k = avail.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&avail[..k]);
            n += k;
            self.rcv_off += k;
            if self.rcv_off == front.data.len() {
                self.rcv_off = 0;
                if let Some(seg) = self.rcv_queue.pop_front() {
                    self.free_buf(seg.data);
                }
            }
        }
        self.rcv_bytes -= n;
        n
    }

    fn recv_message(&mut self, buf: &mut [u8]) -> usize {
        let size = self.peek_size();
        if size == 0 && self.rcv_queue.front().is_some_and(|s| s.frg != 0) {
            return 0;
        }
        if size > buf.len() {
            return 0;
        }
        let mut n = 0;
        while let Some(seg) = self.rcv_queue.pop_front() {
            buf[n..n + seg.data.len()].copy_from_slice(&seg.data);
            n += seg.data.len();
            self.rcv_bytes -= seg.data.len();
            let last = seg.frg == 0;
            self.free_buf(seg.data);
            if last {
                break;
            }
        }
        n
    }

    /// Moves segments that became in-order from `rcv_buf` to `rcv_queue` (window permitting).
    fn move_rcv_buf(&mut self) {
        while self.rcv_queue.len() < self.rcv_wnd as usize {
            match self.rcv_buf.front() {
                Some(seg) if seg.sn == self.rcv_nxt => {}
                _ => break,
            }
            if let Some(seg) = self.rcv_buf.pop_front() {
                self.rcv_last_short = seg.data.len() < self.mss;
                self.rcv_bytes += seg.data.len();
                self.rcv_queue.push_back(seg);
                self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            }
        }
    }

    fn wnd_unused(&self) -> u16 {
        let used = self.rcv_queue.len() as u32;
        self.rcv_wnd.saturating_sub(used).min(u32::from(u16::MAX)) as u16
    }

    // ------------------------------------------------------------------------------ input

    /// Processes one packet (one or more segments) from the peer. Segments before a bad one
    /// take effect; the bad one and the rest are dropped and the error returned. Trailing
    /// bytes shorter than a header are ignored.
    pub fn input(&mut self, now: u32, data: &[u8]) -> Result<(), InputError> {
        self.current = now;
        self.stats.pkts_in += 1;
        self.stats.bytes_in += data.len() as u64;
        if data.len() < OVERHEAD {
            self.stats.input_errors += 1;
            return Err(InputError::Short);
        }
        let prev_una = self.snd_una;
        // Rate control judges every RTT sample of a packet against the smoothed RTT from
        // before it: a run of low samples (an ACK packet that skipped the path's delay) must
        // not lower the bar for each other.
        let srtt_before = self.rx_srtt;
        let mut maxack: Option<(u32, u32)> = None;
        let mut top: Option<(u32, u32)> = None;
        let mut result = Ok(());
        let mut rest = data;
        while let Some(hdr) = SegmentHeader::parse(rest, self.order) {
            let body = &rest[OVERHEAD..];
            if hdr.conv != self.conv {
                result = Err(InputError::Conv);
                break;
            }
            let len = hdr.len as usize;
            if len > body.len() || len > MAX_RECV_PAYLOAD.max(self.mss) {
                result = Err(InputError::Length);
                break;
            }
            if !matches!(hdr.cmd, CMD_PUSH | CMD_ACK | CMD_WASK | CMD_WINS) {
                result = Err(InputError::Cmd);
                break;
            }
            let (payload, tail) = body.split_at(len);
            rest = tail;

            self.rmt_wnd = u32::from(hdr.wnd);
            // An ACK's own segment first, then its cumulative `una` (ikcp does the reverse;
            // the state after both is the same): acknowledged by its own entry, a segment
            // gives rate control an exact sample and shows whether it was overtaken.
            if hdr.cmd != CMD_ACK {
                self.parse_una(hdr.una);
            }
            match hdr.cmd {
                CMD_ACK => {
                    self.stats.acks_recv += 1;
                    // Only an ACK that acknowledges something is evidence for rate control
                    // and fast retransmit: a second one for a segment (a copy of an ACK
                    // datagram, the ACK of a needless resend) tells nothing new.
                    let new = self.is_unacked(hdr.sn);
                    let rtt = diff(self.current, hdr.ts);
                    if rtt >= 0 {
                        self.update_rtt(rtt as u32);
                        if let (true, Some(rc)) = (new, &self.rc) {
                            rc.get()
                                .on_rtt(now, rtt as u32, srtt_before, self.rx_rttval);
                        }
                    }
                    self.parse_ack(hdr.sn, hdr.ts);
                    self.parse_una(hdr.una);
                    if !new {
                        continue;
                    }
                    if top.is_none_or(|(sn, _)| diff(hdr.sn, sn) > 0) {
                        top = Some((hdr.sn, hdr.ts));
                    }
                    // Conservative fast-ack: the ACK that counts is the one for the most
                    // recently sent segment, not merely the highest sn.
                    maxack = match maxack {
                        None => Some((hdr.sn, hdr.ts)),
                        Some((sn, ts)) if diff(hdr.sn, sn) > 0 && diff(hdr.ts, ts) > 0 => {
                            Some((hdr.sn, hdr.ts))
                        }
                        keep => keep,
                    };
                }
                CMD_PUSH => {
                    self.stats.segs_recv += 1;
                    self.last_push_at = now;
                    self.parse_push(&hdr, payload);
                }
                CMD_WASK => self.probe |= ASK_TELL,
                _ => {} // WINS: the window field was all it carried
            }
        }
        if result.is_err() {
            self.stats.input_errors += 1;
        }
        if let (Some(fast), Some(top)) = (maxack, top) {
            self.parse_later_acks(fast, top);
        }
        if let Some(rc) = &self.rc {
            rc.get().on_input_done(now, self.rmt_wnd);
            self.sync_backlog();
        } else if diff(self.snd_una, prev_una) > 0 {
            self.on_ack_progress();
        }
        result
    }

    fn update_rtt(&mut self, rtt: u32) {
        if self.rx_srtt == 0 {
            self.rx_srtt = rtt.max(1);
            self.rx_rttval = rtt / 2;
        } else {
            let delta = u64::from(rtt.abs_diff(self.rx_srtt));
            self.rx_rttval = ((3 * u64::from(self.rx_rttval) + delta) / 4) as u32;
            self.rx_srtt = ((7 * u64::from(self.rx_srtt) + u64::from(rtt)) / 8).max(1) as u32;
        }
        let rto =
            u64::from(self.rx_srtt) + u64::from(self.interval).max(4 * u64::from(self.rx_rttval));
        self.rx_rto = rto.clamp(u64::from(self.rx_minrto), u64::from(self.rto_max)) as u32;
    }

    /// Drops acknowledged segments from the front of `snd_buf` and advances `snd_una`.
    fn shrink_buf(&mut self) {
        while self.snd_buf.front().is_some_and(|s| s.acked) {
            if let Some(seg) = self.snd_buf.pop_front() {
                self.free_buf(seg.data);
            }
        }
        self.snd_una = self.snd_buf.front().map_or(self.snd_nxt, |s| s.sn);
    }

    fn parse_una(&mut self, una: u32) {
        while self.snd_buf.front().is_some_and(|s| diff(una, s.sn) > 0) {
            if let Some(seg) = self.snd_buf.pop_front() {
                if !seg.acked {
                    self.nsnd_buf -= 1;
                    if let Some(rc) = &self.rc {
                        let bytes = OVERHEAD + seg.data.len();
                        rc.get()
                            .on_acked(self.current, bytes, &seg.stamp, None, seg.xmit);
                        self.rc_own = self.rc_own.saturating_sub(bytes);
                        (self.tlp_base, self.tlp_sent) = (self.current, false);
                    }
                }
                self.free_buf(seg.data);
            }
        }
        self.shrink_buf();
    }

    /// Where segment `sn` sits in `snd_buf`, if it is in flight (`[snd_una, snd_nxt)`).
    fn flight_index(&self, sn: u32) -> Option<usize> {
        (diff(sn, self.snd_una) >= 0 && diff(sn, self.snd_nxt) < 0)
            .then(|| sn.wrapping_sub(self.snd_una) as usize)
    }

    /// Whether `sn` is in flight and not yet acknowledged.
    fn is_unacked(&self, sn: u32) -> bool {
        self.flight_index(sn)
            .and_then(|i| self.snd_buf.get(i))
            .is_some_and(|seg| !seg.acked)
    }

    fn parse_ack(&mut self, sn: u32, ts: u32) {
        let Some(seg) = self.flight_index(sn).and_then(|i| self.snd_buf.get_mut(i)) else {
            return;
        };
        if !seg.acked {
            seg.acked = true;
            if let Some(rc) = &self.rc {
                let bytes = OVERHEAD + seg.data.len();
                let mut rc = rc.get();
                // How long before the latest first transmission acknowledged so far this
                // copy left: 2 ms or more (the clock's resolution) and it was overtaken.
                let overtaken = self.acked_ts.map_or(0, |latest| diff(latest, ts));
                if seg.xmit > 1 && ts != seg.ts {
                    // The ACK of an earlier copy: that copy arrived, late, and the
                    // retransmission was not needed (it is no loss to make up for). Such
                    // copies are the ones reordering went furthest with: their lag counts.
                    rc.undo_resent(bytes);
                    if overtaken >= 2 {
                        rc.note_reordering(overtaken as u32);
                    }
                } else if seg.xmit == 1 && ts == seg.ts {
                    match self.acked_ts {
                        Some(_) if overtaken >= 2 => rc.note_reordering(overtaken as u32),
                        Some(_) if overtaken >= 0 => {}
                        _ => self.acked_ts = Some(ts),
                    }
                }
                rc.on_acked(self.current, bytes, &seg.stamp, Some(ts), seg.xmit);
                self.rc_own = self.rc_own.saturating_sub(bytes);
                (self.tlp_base, self.tlp_sent) = (self.current, false);
            }
            let data = std::mem::take(&mut seg.data);
            self.nsnd_buf -= 1;
            self.free_buf(data);
        }
        self.shrink_buf();
    }

    /// Rate control: how much later a segment may arrive than one sent after it without
    /// counting as lost (0 without rate control or before the first measurement). Like
    /// RACK's, it stays small until the path has been seen to reorder: a quarter of the
    /// minimum RTT on a path that keeps order only delays every repair (netlab `bad`: 50 ms
    /// of each 250 ms repair round).
    fn reorder_window(&self) -> u32 {
        let Some(rc) = self.rc.as_ref().map(|rc| rc.get()) else {
            return 0;
        };
        match rc.min_rtt() {
            Some(rtt) if rc.reordering() => (rtt / 4).max(2 * self.rx_rttval).max(1),
            Some(_) => REO_MIN,
            None => 0,
        }
    }

    /// Rate control: the reordering window for later ACKs (see `parse_later_acks`), which once
    /// the path is seen to reorder also spans the largest lag seen lately, up to a smoothed
    /// RTT (RACK widens its window after needless repairs, to the same bound). One packet
    /// that comes early makes all those sent up to its lag before it look overtaken, and
    /// such ACKs add up: on netlab `reorder` (jitter of +-5 ms each way, 1% of the packets
    /// skipping the 25 ms delay) the narrower window made 12% of all segments needless
    /// retransmissions, against 1% of the packets dropped at the queue. The loss timer
    /// (`lost_after`) keeps the narrower one: what overtook came early, the overtaken are
    /// not late (with the lag in the timer too, 8 parallel downloads on `reorder` fell to
    /// their slow mode of 82-85 Mbit/s in 18 rounds of 45, against 13 of 50 without: weak
    /// evidence, the reasoning decided).
    fn ack_reorder_window(&self) -> u32 {
        let window = self.reorder_window();
        match self.rc.as_ref().map_or(0, |rc| rc.get().reorder_lag()) {
            0 => window,
            lag => window.max(lag.saturating_add(1).min(self.rx_srtt)),
        }
    }

    /// Rate control: how long after its latest transmission an unacknowledged segment counts
    /// as lost by time alone (RACK's timer: a smoothed RTT plus the reordering window), and
    /// for which segments (see `timed_loss`):
    /// - when nothing is queued, the tail and the segments a later one's ACK overtook: no
    ///   later segment will leave whose ACKs could show a loss (netlab `bad`: a lost
    ///   retransmission among the last segments of a transfer held its end back by 600-900
    ///   ms, waiting for the RTO and its backoff);
    /// - the oldest once the flight spans half the window: it holds the window, and a chain
    ///   of losses of that one segment stalls the sender (netlab `bad`, windows of 2048: a
    ///   segment lost five times in a row stopped a transfer for 0.4 s).
    ///
    /// Both kinds of retransmission go out in two copies: in the tail the link has room, and
    /// a second loss of either costs the whole conversation another round trip.
    fn lost_after(&self) -> Option<LossTimer> {
        if self.rc.is_none() || self.rx_srtt == 0 {
            return None;
        }
        // The timer also waits out the RTT's own swings (jitter need not reorder): four mean
        // deviations in the tail. Mid-transfer at least a quarter of the minimum RTT too:
        // there a queue of our own grows faster than the smoothed RTT follows, and a
        // needless resend costs the link, not only the tail's idle time.
        let min_rtt = self
            .rc
            .as_ref()
            .and_then(|rc| rc.get().min_rtt())
            .unwrap_or(0);
        let swing = self
            .reorder_window()
            .max(min_rtt / 16)
            .max(4 * self.rx_rttval);
        if self.snd_queue.is_empty() {
            return Some(LossTimer {
                wait: self.rx_srtt + swing,
                overtaken: Some(swing.max(self.ack_reorder_window())),
            });
        }
        let wait = self.rx_srtt + swing.max(min_rtt / 4);
        let span = self.snd_nxt.wrapping_sub(self.snd_una);
        (span > self.send_window() / 2).then_some(LossTimer {
            wait,
            overtaken: None,
        })
    }

    /// Later ACKs of one input packet: `fast`, the ACK of the most recently sent segment,
    /// counts towards fast retransmit for the segments before it; `top`, the highest segment
    /// it acknowledged, overtook the unacknowledged ones before it that left no later than
    /// it did (see `timed_loss`). Both as (sn, ts).
    fn parse_later_acks(&mut self, fast: (u32, u32), top: (u32, u32)) {
        // `top` is at or above `fast`: once `una` passed it, it passed both.
        if self.flight_index(top.0).is_none() {
            return;
        }
        // Rate control: a later ACK counts only for segments sent a reordering window
        // (on a path seen to reorder, a quarter of the minimum RTT and the lag seen) before
        // the acknowledged one, so jitter that reorders packets does not look like loss.
        // On a jittery path packets overtake each other by up to the jitter's spread, so
        // the window is at least twice the RTT's mean deviation (netlab `reorder`, +-5 ms
        // each way: a quarter of min RTT alone retransmitted a third of all segments).
        let reo = self.ack_reorder_window() as i32;
        let now = self.current;
        for seg in self.snd_buf.iter_mut() {
            if diff(top.0, seg.sn) <= 0 {
                break;
            }
            if seg.acked {
                continue;
            }
            if diff(fast.0, seg.sn) > 0 && diff(fast.1, seg.ts) >= reo {
                seg.fastack += 1;
            }
            if seg.overtaken_at.is_none() && diff(top.1, seg.ts) >= 0 {
                seg.overtaken_at = Some(now);
            }
        }
    }

    fn parse_push(&mut self, hdr: &SegmentHeader, payload: &[u8]) {
        let sn = hdr.sn;
        if diff(sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) >= 0 {
            return; // beyond the window: no ACK, the peer will retry
        }
        // Bounded: a flush empties the list; between flushes a packet adds at most
        // mtu / 24 entries, and a flood without flushes is capped here.
        if self.acklist.len() < 4 * self.rcv_wnd as usize {
            self.acklist.push((sn, hdr.ts));
        }
        if diff(sn, self.rcv_nxt) < 0 {
            return; // duplicate of delivered data: ACK only
        }
        let off = sn.wrapping_sub(self.rcv_nxt);
        if off != 0 || !self.rcv_buf.is_empty() {
            self.ack_now = true; // out of order, or filling a gap: the sender waits on it
        }
        // rcv_buf is sorted; in-order arrival (the common case) appends.
        let pos = self
            .rcv_buf
            .partition_point(|s| s.sn.wrapping_sub(self.rcv_nxt) < off);
        if self.rcv_buf.get(pos).is_some_and(|s| s.sn == sn) {
            return;
        }
        let mut buf = self.alloc_buf();
        buf.extend_from_slice(payload);
        let mut seg = Segment::new(buf);
        seg.sn = sn;
        seg.ts = hdr.ts;
        seg.frg = hdr.frg;
        self.rcv_buf.insert(pos, seg);
        self.move_rcv_buf();
    }

    // ---------------------------------------------------------------- congestion control
    // Sender-side window logic lives in these three functions so a later pacing / BBR-like
    // controller can replace them.

    /// How many segments may be in flight.
    fn send_window(&self) -> u32 {
        if self.rc.is_some() {
            // The rate controller's byte cap (about two BDPs) limits the flight; the windows
            // only bound the span, and with it the memory of `snd_buf`.
            return self.rmt_wnd.min(self.snd_wnd);
        }
        let wnd = self.snd_wnd.min(self.rmt_wnd);
        if self.nocwnd {
            wnd
        } else {
            wnd.min(self.cwnd)
        }
    }

    /// `snd_una` advanced: grow the congestion window (ikcp's slow start / avoidance).
    fn on_ack_progress(&mut self) {
        if self.cwnd >= self.rmt_wnd {
            return;
        }
        let mss = self.mss as u64;
        if self.cwnd < self.ssthresh {
            self.cwnd += 1;
            self.incr = self.incr.saturating_add(self.mss as u32);
        } else {
            let mut incr = u64::from(self.incr).max(mss);
            incr += (mss * mss) / incr + mss / 16;
            if (u64::from(self.cwnd) + 1) * mss <= incr {
                self.cwnd = incr.div_ceil(mss.max(1)).min(u64::from(u32::MAX)) as u32;
            }
            self.incr = incr.min(u64::from(u32::MAX)) as u32;
        }
        if self.cwnd > self.rmt_wnd {
            self.cwnd = self.rmt_wnd;
            self.incr = self.rmt_wnd.saturating_mul(self.mss as u32);
        }
    }

    /// After a flush: react to fast retransmits (`fast`) and timeouts (`lost`).
    fn on_flush_losses(&mut self, fast: bool, lost: bool, cwnd_used: u32) {
        if fast {
            let inflight = self.snd_nxt.wrapping_sub(self.snd_una);
            self.ssthresh = (inflight / 2).max(THRESH_MIN);
            self.cwnd = self.ssthresh.saturating_add(self.fastresend_threshold());
            self.incr = self.cwnd.saturating_mul(self.mss as u32);
        }
        if lost {
            self.ssthresh = (cwnd_used / 2).max(THRESH_MIN);
            self.cwnd = 1;
            self.incr = self.mss as u32;
        }
        if self.cwnd < 1 {
            self.cwnd = 1;
            self.incr = self.mss as u32;
        }
    }

    fn fastresend_threshold(&self) -> u32 {
        if self.rc.is_some() {
            RC_FASTRESEND
        } else if self.fastresend > 0 {
            self.fastresend
        } else {
            u32::MAX
        }
    }

    // ------------------------------------------------------------------------------ flush

    /// Emits everything due at `now`: ACKs, window probes, new data the windows allow, and
    /// retransmissions. Each packet handed to `out` is at most `mtu` bytes.
    pub fn flush<F: FnMut(&[u8])>(&mut self, now: u32, mut out: F) {
        self.current = now;
        // Memory goes back at the first flush after a quiet second (a keepalive, say), not
        // at every momentarily empty flush: that would allocate per packet in a bulk flow.
        if diff(now, self.busy_at) >= TRIM_AFTER as i32 {
            self.trim_idle();
        }
        if !self.acklist.is_empty() || self.nsnd_buf > 0 || !self.snd_queue.is_empty() {
            self.busy_at = now;
        }
        match self.ack_release() {
            Some(at) if diff(at, now) > 0 => {
                // Held for a reply; there is nothing else to send (see `ack_release`).
                self.ack_held_since.get_or_insert(now);
                return;
            }
            _ => {
                self.ack_held_since = None;
                self.ack_now = false;
            }
        }
        let mut pkt = std::mem::take(&mut self.buffer);
        pkt.clear();
        let wnd = self.wnd_unused();
        let mut ctl = SegmentHeader {
            conv: self.conv,
            cmd: CMD_ACK,
            frg: 0,
            wnd,
            ts: 0,
            sn: 0,
            una: self.rcv_nxt,
            len: 0,
        };

        // Behind a hole every ACK counts (the cumulative `una` cannot stand in for a lost
        // one): with `ack_copies` the ACKs then travel alone, each datagram that many times.
        let copies = if self.rcv_buf.is_empty() {
            1
        } else {
            self.ack_copies
        };
        for i in 0..self.acklist.len() {
            (ctl.sn, ctl.ts) = self.acklist[i];
            if copies > 1 && pkt.len() + OVERHEAD > self.mtu {
                self.emit_copies(&mut pkt, copies, &mut out);
            }
            self.put(&mut pkt, &ctl, &[], &mut out);
        }
        if copies > 1 {
            self.emit_copies(&mut pkt, copies, &mut out);
        }
        self.stats.acks_sent += self.acklist.len() as u64;
        self.acklist.clear();

        self.update_probe();
        if self.probe & ASK_SEND != 0 {
            ctl.cmd = CMD_WASK;
            (ctl.sn, ctl.ts) = (0, 0);
            self.put(&mut pkt, &ctl, &[], &mut out);
            self.stats.probes_sent += 1;
        }
        if self.probe & ASK_TELL != 0 {
            ctl.cmd = CMD_WINS;
            (ctl.sn, ctl.ts) = (0, 0);
            self.put(&mut pkt, &ctl, &[], &mut out);
        }
        self.probe = 0;

        let cwnd = self.send_window();
        self.move_queue_to_flight(cwnd);
        self.sync_backlog();

        let resent = self.fastresend_threshold();
        let rtomin = if self.nodelay == 0 {
            self.rx_rto >> 3
        } else {
            0
        };
        let (mut fast, mut lost) = (false, false);
        // Rate control repairs loss from later ACKs; the timer is for the tail. It must not
        // fire on a queueing-delay swing (every timed-out segment is resent at once) nor on
        // a lost ACK behind a hole (cumulative `una` covers it one repair later).
        let rto = if self.rc.is_some() {
            // Bounded like the estimate itself (a smoothed RTT of minutes after an outage
            // made a segment wait 215 s for its first retransmission: fuzz target kcp_model).
            self.rx_rto
                .max(2 * self.rx_srtt)
                .min(self.rto_max.max(self.rx_rto))
        } else {
            self.rx_rto
        };
        if self.tlp_due(now) {
            // Nothing follows the tail to trigger a fast retransmit: resend the newest
            // unacknowledged segment; its ACK then shows which older ones are missing.
            if let Some(seg) = self.snd_buf.iter_mut().rev().find(|s| !s.acked) {
                seg.fastack = seg.fastack.max(resent);
                self.stats.tlp_sent += 1;
            }
            self.tlp_sent = true;
        }
        let timer = self.lost_after();
        let mut oldest = true;
        let nbuf = self.snd_buf.len();
        for i in 0..nbuf {
            let seg = &mut self.snd_buf[i];
            if seg.acked {
                continue;
            }
            let tail = nbuf - i <= resent as usize;
            let lost_at = timed_loss(timer, oldest, tail, seg);
            oldest = false;
            let mut dup = false;
            if seg.xmit == 0 {
                dup = self.rc.is_some()
                    && seg.data.len() <= DUP_MAX_BYTES
                    && i + 1 == nbuf
                    && self.snd_queue.is_empty()
                    && self.nsnd_buf <= DUP_MAX_UNACKED;
                seg.xmit = 1;
                seg.first_tx = now;
                seg.rto = rto;
                (self.tlp_base, self.tlp_sent) = (now, false);
                seg.resendts = now.wrapping_add(seg.rto + rtomin);
                self.stats.segs_sent += 1;
                self.stats.data_bytes_sent += seg.data.len() as u64;
            } else if diff(now, seg.resendts) >= 0 {
                if let Some(rc) = &self.rc {
                    let bytes = OVERHEAD + seg.data.len();
                    seg.stamp = rc
                        .get()
                        .on_transmit(&mut self.pacer, now, bytes, false, false);
                }
                seg.xmit += 1;
                let step = match self.nodelay {
                    0 => seg.rto.max(rto),
                    1 => seg.rto / 2,
                    _ => rto / 2,
                };
                // With rate control the pacer, not the timer, bounds the sending rate, so
                // a segment's backoff stops at the RTO bound: a conversation whose
                // retransmissions met a few full queues must not starve for minutes.
                let cap = if self.rc.is_some() {
                    self.rto_max
                } else {
                    SEG_RTO_CAP
                };
                seg.rto = seg.rto.saturating_add(step).min(cap);
                seg.resendts = now.wrapping_add(seg.rto);
                lost = true;
                self.stats.retrans_timeout += 1;
            } else if seg.xmit <= FASTACK_LIMIT
                && (seg.fastack >= resent || lost_at.is_some_and(|at| diff(now, at) >= 0))
            {
                if let Some(rc) = &self.rc {
                    let bytes = OVERHEAD + seg.data.len();
                    seg.stamp = rc
                        .get()
                        .on_transmit(&mut self.pacer, now, bytes, false, false);
                }
                seg.xmit += 1;
                seg.fastack = 0;
                seg.resendts = now.wrapping_add(seg.rto);
                fast = true;
                self.stats.retrans_fast += 1;
                dup = lost_at.is_some();
            } else {
                continue;
            }
            seg.ts = now;
            seg.overtaken_at = None;
            // With rate control the backoff stops at rto_max, so `dead_link` transmissions
            // come much sooner than ikcp's; the link also has to have been silent for
            // RC_DEAD_AFTER, long enough for a client whose NAT mapping vanished to notice
            // (its silence timer) and come back from a new port.
            if seg.xmit >= self.dead_link
                && (self.rc.is_none() || diff(now, seg.first_tx) >= RC_DEAD_AFTER as i32)
            {
                self.dead = true;
            }
            let hdr = SegmentHeader {
                conv: self.conv,
                cmd: CMD_PUSH,
                frg: seg.frg,
                wnd,
                ts: now,
                sn: seg.sn,
                una: self.rcv_nxt,
                len: seg.data.len() as u32,
            };
            // Split borrow: the payload lives in snd_buf, the packet in `pkt`.
            let need = OVERHEAD + seg.data.len();
            if pkt.len() + need > self.mtu && !pkt.is_empty() {
                Self::emit_packet(&mut self.stats, &mut pkt, &mut out);
            }
            let start = pkt.len();
            pkt.resize(start + OVERHEAD, 0);
            hdr.emit(&mut pkt[start..], self.order);
            pkt.extend_from_slice(&self.snd_buf[i].data);
            if dup {
                // The copy goes in a packet of its own: a lost datagram takes only one.
                Self::emit_packet(&mut self.stats, &mut pkt, &mut out);
                pkt.resize(OVERHEAD, 0);
                hdr.emit(&mut pkt[..], self.order);
                pkt.extend_from_slice(&self.snd_buf[i].data);
                if let Some(rc) = &self.rc {
                    rc.get().charge(&mut self.pacer, need);
                }
                self.stats.dup_sent += 1;
            }
        }
        if !pkt.is_empty() {
            Self::emit_packet(&mut self.stats, &mut pkt, &mut out);
        }
        self.buffer = pkt;
        if self.rc.is_none() {
            self.on_flush_losses(fast, lost, cwnd);
        }
    }

    /// Probe timeout: 1.25 smoothed RTTs (plus 2 ms of timer slack) after the last progress.
    fn tlp_deadline(&self) -> Option<u32> {
        if self.rc.is_none() || self.tlp_sent || self.nsnd_buf == 0 || !self.snd_queue.is_empty() {
            return None;
        }
        if self.rx_srtt == 0 {
            return None; // no RTT measured yet: the RTO (200 ms initially) is the probe
        }
        let pto = self.rx_srtt + self.rx_srtt / 4 + 2;
        Some(self.tlp_base.wrapping_add(pto))
    }

    fn tlp_due(&self, now: u32) -> bool {
        self.tlp_deadline().is_some_and(|at| diff(now, at) >= 0)
    }

    /// Gives memory back after a burst: an idle conversation keeps a few buffers only.
    /// Heap bytes this engine holds (payload buffers and queue capacity), for memory
    /// accounting and tests.
    pub fn heap_bytes(&self) -> usize {
        let seg = std::mem::size_of::<Segment>();
        let queued = |q: &VecDeque<Segment>| {
            q.capacity() * seg + q.iter().map(|s| s.data.capacity()).sum::<usize>()
        };
        queued(&self.snd_queue)
            + queued(&self.snd_buf)
            + queued(&self.rcv_buf)
            + queued(&self.rcv_queue)
            + self.pool.iter().map(Vec::capacity).sum::<usize>()
            + self.pool.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.acklist.capacity() * 8
            + self.buffer.capacity()
    }

    /// Gives back the memory a busy past left behind (free payload buffers, queue capacity)
    /// at once: for a conversation that is over but lingers to answer late packets.
    pub fn release_memory(&mut self) {
        self.trim(0);
    }

    fn trim_idle(&mut self) {
        self.trim(POOL_IDLE_KEEP);
    }

    fn trim(&mut self, keep: usize) {
        self.busy_at = self.current;
        if self.pool.len() > keep {
            self.pool.truncate(keep);
            self.pool.shrink_to_fit();
        }
        self.snd_buf.shrink_to(8);
        self.rcv_buf.shrink_to(8);
        self.snd_queue.shrink_to(8);
        if self.rcv_queue.is_empty() && self.rcv_queue.capacity() > 64 {
            self.rcv_queue.shrink_to(8);
        }
        if self.acklist.capacity() > 256 {
            self.acklist.shrink_to(16);
        }
    }

    /// ikcp_update, deadline driven: flushes when something is due at `now` (see `check`).
    /// There is no periodic tick, so calling it early is cheap and does nothing.
    pub fn update<F: FnMut(&[u8])>(&mut self, now: u32, out: F) {
        if diff(self.check(now), now) <= 0 {
            self.flush(now, out);
        }
    }

    /// Absolute time (wrapping ms) at which `update`/`flush` is next needed: `now` when
    /// something is due, else the earliest retransmission or probe deadline (or, once after
    /// a burst, the moment to give free buffers back), else `now + IDLE_CHECK` (idle costs
    /// no wakeups).
    pub fn check(&self, now: u32) -> u32 {
        if self.probe != 0 {
            return now;
        }
        let mut deadline = now.wrapping_add(IDLE_CHECK);
        if !self.acklist.is_empty() {
            match self.ack_release() {
                // Held (by a flush, or about to be: the hold starts at the next flush).
                Some(at) if self.ack_held_since.is_some() && diff(at, now) > 0 => deadline = at,
                _ => return now,
            }
        }
        if self.rmt_wnd == 0 {
            if self.probe_wait == 0 {
                return now; // the probe timer starts at the next flush
            }
            deadline = self.ts_probe;
        }
        if let Some(front) = self.snd_queue.front() {
            if diff(self.snd_nxt, self.snd_una.wrapping_add(self.send_window())) < 0 {
                match self.rc.as_ref().map(|rc| rc.get()) {
                    None => return now,
                    // A full in-flight cap waits for ACKs (input wakes the loop: the cap
                    // only holds a conversation back that has data of its own in flight);
                    // the pacer names the exact release time.
                    Some(rc) if !rc.cwnd_full(OVERHEAD + front.data.len(), self.rc_own) => {
                        let at = rc.release_time(&self.pacer, now);
                        if at == now {
                            return now;
                        }
                        deadline = at;
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(at) = self.tlp_deadline() {
            if diff(at, deadline) < 0 {
                deadline = at;
            }
        }
        if self.pool.len() > POOL_IDLE_KEEP {
            // One wakeup a quiet second after a burst, so the flush there gives the free
            // buffers back (an idle conversation would otherwise keep them until its next
            // packet, minutes away).
            let mut at = self.busy_at.wrapping_add(TRIM_AFTER);
            if diff(at, now) < 0 {
                at = now;
            }
            if diff(at, deadline) < 0 {
                deadline = at;
            }
        }
        let resent = self.fastresend_threshold();
        let timer = self.lost_after();
        let mut oldest = true;
        let nbuf = self.snd_buf.len();
        for (i, seg) in self.snd_buf.iter().enumerate().filter(|(_, s)| !s.acked) {
            if seg.xmit == 0 || (seg.fastack >= resent && seg.xmit <= FASTACK_LIMIT) {
                return now;
            }
            let mut at = seg.resendts;
            let tail = nbuf - i <= resent as usize;
            if let Some(lost_at) = timed_loss(timer, oldest, tail, seg) {
                if diff(lost_at, at) < 0 {
                    at = lost_at;
                }
            }
            oldest = false;
            if diff(at, deadline) < 0 {
                deadline = at;
            }
        }
        if diff(deadline, now) <= 0 {
            now
        } else {
            deadline
        }
    }

    /// Window probing while the peer advertises a zero window (ikcp's backoff 7 s .. 120 s).
    fn update_probe(&mut self) {
        if self.rmt_wnd != 0 {
            self.ts_probe = 0;
            self.probe_wait = 0;
            return;
        }
        if self.probe_wait == 0 {
            self.probe_wait = PROBE_INIT;
            self.ts_probe = self.current.wrapping_add(self.probe_wait);
        } else if diff(self.current, self.ts_probe) >= 0 {
            self.probe_wait = self.probe_wait.max(PROBE_INIT);
            self.probe_wait = (self.probe_wait + self.probe_wait / 2).min(PROBE_LIMIT);
            self.ts_probe = self.current.wrapping_add(self.probe_wait);
            self.probe |= ASK_SEND;
        }
    }

    fn move_queue_to_flight(&mut self, cwnd: u32) {
        while diff(self.snd_nxt, self.snd_una.wrapping_add(cwnd)) < 0 {
            let last = self.snd_queue.len() == 1;
            if let (Some(rc), Some(front)) = (&self.rc, self.snd_queue.front_mut()) {
                let mut rc = rc.get();
                let bytes = OVERHEAD + front.data.len();
                if !rc.can_send(&self.pacer, self.current, bytes, self.rc_own) {
                    break;
                }
                // The last queued data leaving with room to spare, and no other conversation
                // on the path waiting to send: application-limited.
                let app_limited = last && rc.backlogged() <= 1;
                front.stamp =
                    rc.on_transmit(&mut self.pacer, self.current, bytes, true, app_limited);
                self.rc_own += bytes;
            }
            let Some(mut seg) = self.snd_queue.pop_front() else {
                break;
            };
            seg.sn = self.snd_nxt;
            seg.ts = self.current;
            seg.resendts = self.current;
            seg.rto = self.rx_rto;
            seg.fastack = 0;
            seg.xmit = 0;
            seg.acked = false;
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            self.snd_buf.push_back(seg);
            self.nsnd_buf += 1;
        }
    }

    /// Appends one control segment to `pkt`, sending `pkt` first if it would overflow.
    fn put<F: FnMut(&[u8])>(
        &mut self,
        pkt: &mut Vec<u8>,
        hdr: &SegmentHeader,
        payload: &[u8],
        out: &mut F,
    ) {
        if pkt.len() + OVERHEAD + payload.len() > self.mtu && !pkt.is_empty() {
            Self::emit_packet(&mut self.stats, pkt, out);
        }
        let start = pkt.len();
        pkt.resize(start + OVERHEAD, 0);
        hdr.emit(&mut pkt[start..], self.order);
        pkt.extend_from_slice(payload);
    }

    /// Sends `pkt` `copies` times (each copy is sealed on its own, with its own nonce).
    fn emit_copies<F: FnMut(&[u8])>(&mut self, pkt: &mut Vec<u8>, copies: u8, out: &mut F) {
        if pkt.is_empty() {
            return;
        }
        for _ in 1..copies {
            self.stats.pkts_out += 1;
            self.stats.bytes_out += pkt.len() as u64;
            self.stats.ack_copies_sent += 1;
            out(pkt);
        }
        Self::emit_packet(&mut self.stats, pkt, out);
    }

    fn emit_packet<F: FnMut(&[u8])>(stats: &mut KcpStats, pkt: &mut Vec<u8>, out: &mut F) {
        stats.pkts_out += 1;
        stats.bytes_out += pkt.len() as u64;
        out(pkt);
        pkt.clear();
    }
}

#[cfg(test)]
impl Kcp {
    /// Starts both sequence spaces at the given numbers (wraparound tests).
    pub(crate) fn test_set_seq(&mut self, snd: u32, rcv: u32) {
        assert!(self.snd_buf.is_empty() && self.rcv_buf.is_empty());
        (self.snd_una, self.snd_nxt, self.rcv_nxt) = (snd, snd, rcv);
    }

    /// Lengths of snd_queue, snd_buf, rcv_buf, rcv_queue, acklist, pool.
    pub(crate) fn test_sizes(&self) -> [usize; 6] {
        [
            self.snd_queue.len(),
            self.snd_buf.len(),
            self.rcv_buf.len(),
            self.rcv_queue.len(),
            self.acklist.len(),
            self.pool.len(),
        ]
    }
}

impl std::fmt::Debug for Kcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kcp")
            .field("conv", &format_args!("{:#010x}", self.conv))
            .field("snd_una", &self.snd_una)
            .field("snd_nxt", &self.snd_nxt)
            .field("rcv_nxt", &self.rcv_nxt)
            .field("waitsnd", &self.waitsnd())
            .field("rto", &self.rx_rto)
            .finish_non_exhaustive()
    }
}

impl Drop for Kcp {
    fn drop(&mut self) {
        self.leave_path();
    }
}
