//! Sender-side rate control for one path: a BBR-like model (bottleneck bandwidth and minimum
//! RTT, both measured from ACKs), pacers that release new segments at a gain times the
//! bandwidth estimate, and an in-flight cap of about two bandwidth-delay products, lowered
//! after a round that overflowed the bottleneck's queue (BBRv2's inflight_hi). The model
//! may be shared by several conversations on the same path (`PathControl`): their ACKs all
//! feed it, each conversation with data queued paces itself at an even share of the rate,
//! and each with data queued or in flight may fill an even share of the cap. With it
//! the windows size themselves and the bottleneck queue stays short, so random loss is
//! repaired by retransmission instead of being answered by a smaller window, and the sender
//! does not overrun the queue and repair its own drops.
//!
//! It is wire-neutral: it only decides *when* the engine sends. Units are wire bytes of
//! segments (payload plus the 24-byte header) and the engine's milliseconds; rates are bytes
//! per ms. Rate samples follow the delivery-rate estimation of the BBR drafts (each
//! transmission remembers how much had been delivered when it left).

use super::PathHint;

/// Gain of the startup phase (2/ln 2): doubles the delivery rate every round trip.
const STARTUP_GAIN: f64 = 2.885;
/// Probe-bandwidth pacing gains, one phase per minimum RTT.
const CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// In-flight cap in bandwidth-delay products once the pipe is full.
const CWND_GAIN: f64 = 2.0;
/// The bandwidth estimate is the largest sample of the last this many round trips.
const BW_ROUNDS: usize = 10;
/// The minimum RTT is the smallest sample of the last this many ms.
const MIN_RTT_WINDOW: u32 = 10_000;
/// A smoothed RTT under half the minimum replaces it after this many samples in a row.
const LOW_SRTT_SAMPLES: u32 = 8;
/// Startup ends after this many round trips without 25 % bandwidth growth.
const FULL_BW_ROUNDS: u32 = 3;
/// A round whose smallest RTT exceeds the minimum by a quarter of it (and at least this many
/// ms, for jitter on short paths) saw a standing queue.
const QUEUE_MIN_MS: u32 = 3;
/// ... judged only from a round with at least this many RTT samples. On a jittery path the
/// smallest of a few samples often sits above the minimum with no queue at all; a verdict
/// from such a round cut the bandwidth estimate, the lower rate gave still fewer samples per
/// round, and the estimate spiralled down (netlab `reorder`, 5 ms jitter: 4 Mbit/s of 100).
const QUEUE_MIN_SAMPLES: u32 = 8;
/// The ACKs' reordering window spans the largest lag of the last one to two epochs of this
/// many round trips (RACK keeps its widened window for 16 recoveries).
const REO_EPOCH_ROUNDS: u64 = 16;
/// Random loss the pacing rate makes up for, at most (see `loss`): beyond this, loss is
/// more likely the path's congestion than noise, and sending faster would feed it.
const LOSS_COMP_MAX: f64 = 0.2;
/// A round's loss ratio counts only with at least this many transmissions in it.
const LOSS_MIN_PKTS: u64 = 16;
/// A round overflowed the bottleneck's queue when its retransmissions exceed twice the random
/// loss measured so far by this share of its transmissions, while a queue stood all round.
/// Not much less: an echoing server measures no random loss (its rounds are app-limited), and
/// with 3% the 50-connection echo soak on netlab `lossy` (2% loss each way) echoed 5% less
/// (not so with the cap's share change alone); the overflowing rounds on `reorder` resent
/// 10-30%.
const CONG_LOSS_MARGIN: f64 = 0.08;
/// After such a round the flight is capped at this share of the largest flight of the round
/// (BBRv2's beta) ...
const CONG_BETA: f64 = 0.7;
/// ... and the cap grows back by 1/this of itself per round in which the flight reached it.
const CONG_REGROW: usize = 32;
/// Before the first measurement: how many full segments may leave unpaced.
pub(super) const INIT_CWND_SEGS: usize = 32;
/// Pacing lets this many ms of rate accumulate (the loop's clock has ms resolution).
const BURST_MS: f64 = 2.0;
/// ... but never less than this many packets.
const BURST_MIN_PKTS: usize = 4;

/// What a transmission remembers for its rate sample.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TxStamp {
    delivered: u64,
    delivered_time: u32,
    first_sent: u32,
    sent: u32,
    app_limited: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Startup,
    Drain,
    ProbeBw,
}

#[derive(Clone, Debug)]
pub(super) struct RateControl {
    mtu: usize,
    /// Wire bytes acknowledged so far, and when the last of them was.
    delivered: u64,
    delivered_time: u32,
    first_sent_time: u32,
    /// Non-zero while samples are limited by the application (no data to send), not the path.
    app_limited_until: u64,
    /// Bytes sent and not yet acknowledged (first transmissions only).
    inflight: usize,
    /// The newest transmission acknowledged by the current input, and bytes acknowledged.
    sample: Option<TxStamp>,
    acked: usize,

    bw_max: [(u64, f64); BW_ROUNDS],
    bw: f64,
    min_rtt: u32,
    min_rtt_stamp: u32,
    /// Smallest sample since `min_rtt_stamp`'s window started: the next window's estimate.
    min_rtt_next: u32,
    /// The smallest plausible RTT sample of the previous input packet, and of this one.
    prev_packet_min_rtt: Option<u32>,
    packet_min_rtt: u32,
    /// Consecutive samples whose smoothed RTT stood under half the minimum.
    low_srtt_samples: u32,
    /// Smallest RTT sample of the current round, and the delivery at its start: a round
    /// whose every sample is well above the minimum means a standing queue of our making.
    round_min_rtt: u32,
    /// ... and the second-smallest: what the standing-queue checks use, so that one packet
    /// that skipped the path's delay does not hide a queue.
    round_min2_rtt: u32,
    round_rtt_samples: u32,
    /// The minimum RTT came from a path hint: this path's first two samples replace it.
    min_rtt_tentative: bool,
    /// The engine's RTT mean deviation: jitter widens what counts as a standing queue.
    rttvar: u32,
    round_start_delivered: u64,
    round_start_time: u32,
    /// The current round began with data in flight, so its average delivery rate is the
    /// path's. Not so for the first round after the pipe ran empty (or of a new model): its
    /// start is the last round boundary, maybe minutes ago, and its first flight was small.
    round_busy: bool,

    round: u64,
    next_round_delivered: u64,
    mode: Mode,
    full_bw: f64,
    full_bw_rounds: u32,
    cycle_idx: usize,
    cycle_stamp: u32,
    /// The estimate when the current probing (gain > 1) phase began.
    cycle_bw: f64,
    pacing_gain: f64,
    cwnd_gain: f64,
    cwnd: usize,
    /// Conversations sharing this model (one per conversation on a shared path) that have
    /// data queued: each paces itself at this share of the rate.
    backlogged: usize,
    /// ... and those with data queued or in flight: each may fill this share of the cap.
    active: usize,
    /// Bytes transmitted this round, and how many of them were retransmissions.
    round_sent: u64,
    round_resent: u64,
    /// The largest flight of this round.
    round_max_inflight: usize,
    /// Some of this round's ACKs came in startup or drain.
    round_uncruising: bool,
    /// The largest flight of the rounds since startup began, until a cruising round ends
    /// without overflow (0 then; see `update_inflight_hi`).
    overshoot_flight: usize,
    /// Cap on the flight learnt from rounds that overflowed the bottleneck's queue (see
    /// `round_congested`); `usize::MAX` until one did.
    inflight_hi: usize,
    /// Smoothed share of transmissions that were retransmissions (rounds without a standing
    /// queue only): the path's random loss. The bandwidth estimate counts what arrived, so
    /// pacing at it alone leaves the bottleneck idle for the lost share of every round
    /// (netlab `bad`, 10 % loss: 92 % of the link carried); the pacing rate makes up for it.
    loss: f64,
    /// Largest receive window a peer advertised on this path (segments).
    peer_wnd: u32,
    /// A segment was seen to overtake another on this path (see `Kcp::reorder_window`).
    reordering: bool,
    /// How far behind a segment sent after it a segment has been seen to arrive (ms): the
    /// largest such lag of the current epoch of `REO_EPOCH_ROUNDS` rounds and of the one
    /// before, so the window for ACKs (`Kcp::ack_reorder_window`) covers what the path did
    /// lately and forgets it once the path stops.
    reo_lag: [u32; 2],
    reo_epoch_round: u64,
}

/// One conversation's pacer: tokens of its share of the path's pacing rate. Kept per
/// conversation (not in the shared model) so that conversations woken in the same
/// millisecond do not race for one bucket: each gets its own share whatever the loop's order.
#[derive(Clone, Debug, Default)]
pub(super) struct Pacer {
    tokens: f64,
    last_refill: u32,
}

impl RateControl {
    pub(super) fn new(mtu: usize) -> RateControl {
        RateControl {
            mtu,
            delivered: 0,
            delivered_time: 0,
            first_sent_time: 0,
            app_limited_until: 0,
            inflight: 0,
            sample: None,
            acked: 0,
            bw_max: [(0, 0.0); BW_ROUNDS],
            bw: 0.0,
            min_rtt: u32::MAX,
            min_rtt_stamp: 0,
            min_rtt_next: u32::MAX,
            prev_packet_min_rtt: None,
            packet_min_rtt: u32::MAX,
            low_srtt_samples: 0,
            round_min_rtt: u32::MAX,
            round_min2_rtt: u32::MAX,
            round_rtt_samples: 0,
            min_rtt_tentative: false,
            rttvar: 0,
            round_start_delivered: 0,
            round_start_time: 0,
            round_busy: false,
            round: 0,
            next_round_delivered: 0,
            mode: Mode::Startup,
            full_bw: 0.0,
            full_bw_rounds: 0,
            cycle_idx: 0,
            cycle_stamp: 0,
            cycle_bw: 0.0,
            pacing_gain: STARTUP_GAIN,
            cwnd_gain: CWND_GAIN,
            cwnd: INIT_CWND_SEGS * mtu,
            backlogged: 0,
            active: 0,
            round_sent: 0,
            round_resent: 0,
            round_max_inflight: 0,
            round_uncruising: false,
            overshoot_flight: 0,
            inflight_hi: usize::MAX,
            loss: 0.0,
            peer_wnd: 0,
            reordering: false,
            reo_lag: [0; 2],
            reo_epoch_round: 0,
        }
    }

    // ------------------------------------------------------------------------ estimates

    /// Bottleneck bandwidth estimate in bytes per ms (0 before the first sample).
    pub(super) fn bw(&self) -> f64 {
        self.bw
    }

    /// Minimum RTT in ms (`None` before the first sample).
    pub(super) fn min_rtt(&self) -> Option<u32> {
        (self.min_rtt != u32::MAX).then_some(self.min_rtt)
    }

    /// Bandwidth-delay product in bytes (`None` before the first rate sample).
    pub(super) fn bdp(&self) -> Option<usize> {
        let rtt = self.min_rtt()?;
        (self.bw > 0.0).then(|| (self.bw * f64::from(rtt.max(1))) as usize)
    }

    /// The model's phase, pacing gain and loss compensation, for logs.
    pub(super) fn phase(&self) -> String {
        format!(
            "{:?} x{:.2} loss {:.3}",
            self.mode, self.pacing_gain, self.loss
        )
    }

    pub(super) fn inflight(&self) -> usize {
        self.inflight
    }

    pub(super) fn cwnd(&self) -> usize {
        self.cwnd
    }

    /// Gain times the estimate, but never below one initial window per minimum RTT: the
    /// first samples of an interactive flow are tiny (and a long outage yields tiny ones
    /// too); pacing at them would hold small messages back for whole round trips and could
    /// never measure its way out.
    pub(super) fn pacing_rate(&self) -> Option<f64> {
        if self.bw <= 0.0 {
            return None;
        }
        let floor = (INIT_CWND_SEGS * self.mtu) as f64 / f64::from(self.min_rtt.clamp(1, 60_000));
        let rate = self.pacing_gain * self.bw / (1.0 - self.loss.min(LOSS_COMP_MAX));
        Some(rate.max(floor))
    }

    /// One conversation's share of the pacing rate: the rate split evenly between the
    /// conversations with data queued.
    fn share_rate(&self) -> Option<f64> {
        Some(self.pacing_rate()? / self.backlogged.max(1) as f64)
    }

    /// Tokens a pacer may hold: 2 ms of its share, at least a few packets (one when shared
    /// by many, so that many conversations waking together do not add up to a burst).
    fn burst(&self, rate: f64) -> f64 {
        let pkts = (BURST_MIN_PKTS / self.backlogged.max(1)).max(1);
        (rate * BURST_MS).max((pkts * self.mtu) as f64)
    }

    fn tokens_at(&self, p: &Pacer, now: u32) -> f64 {
        match self.share_rate() {
            None => f64::INFINITY,
            Some(rate) => {
                // The clock only moves forward; a distance past half the u32 range means a
                // long idle time. No other cap: a debt (retransmissions charged at a tiny
                // rate) must be paid off as time passes, or its release time stays out of
                // reach for good (a cap of 10 s on the elapsed time did that: 16 queued
                // segments never left on a healed path, found by fuzz target kcp_shared).
                let elapsed = now.wrapping_sub(p.last_refill);
                let burst = self.burst(rate);
                if elapsed > i32::MAX as u32 {
                    return burst;
                }
                (p.tokens + rate * f64::from(elapsed)).min(burst)
            }
        }
    }

    /// A conversation's queue went from empty to not (`true`) or back.
    pub(super) fn set_backlogged(&mut self, on: bool) {
        if on {
            self.backlogged += 1;
        } else {
            self.backlogged = self.backlogged.saturating_sub(1);
        }
    }

    /// A conversation came to have data queued or in flight (`true`), or no longer has.
    pub(super) fn set_active(&mut self, on: bool) {
        if on {
            self.active += 1;
        } else {
            self.active = self.active.saturating_sub(1);
        }
    }

    /// Conversations with data queued.
    pub(super) fn backlogged(&self) -> usize {
        self.backlogged
    }

    /// Conversations with data queued or in flight.
    pub(super) fn active(&self) -> usize {
        self.active
    }

    /// A conversation leaves the path with `bytes` of first transmissions unacknowledged.
    pub(super) fn forget_inflight(&mut self, bytes: usize) {
        self.inflight = self.inflight.saturating_sub(bytes);
    }

    /// What the model learnt about the path, once bandwidth and RTT are measured and the
    /// estimate is not from startup's first rounds.
    pub(super) fn path(&self) -> Option<PathHint> {
        let min_rtt = self.min_rtt()?;
        (self.bw > 0.0 && self.mode != Mode::Startup).then_some(PathHint {
            bw: self.bw,
            min_rtt,
            loss: self.loss,
            peer_wnd: self.peer_wnd,
            reordering: self.reordering,
            reorder_lag: self.reorder_lag(),
        })
    }

    /// A retransmission of `bytes` turned out needless (an earlier copy was acknowledged).
    pub(super) fn undo_resent(&mut self, bytes: usize) {
        self.round_resent = self.round_resent.saturating_sub(bytes as u64);
    }

    /// Share of transmissions the pacing rate makes up for (see `loss`).
    #[cfg(test)]
    pub(super) fn loss(&self) -> f64 {
        self.loss
    }

    /// The cap on the flight learnt from overflowing rounds, if any (see `inflight_hi`).
    #[cfg(test)]
    pub(super) fn inflight_hi(&self) -> Option<usize> {
        (self.inflight_hi != usize::MAX).then_some(self.inflight_hi)
    }

    /// The path reorders packets.
    pub(super) fn reordering(&self) -> bool {
        self.reordering
    }

    /// A segment was acknowledged after one sent `lag` ms after it.
    pub(super) fn note_reordering(&mut self, lag: u32) {
        self.reordering = true;
        self.reo_lag[0] = self.reo_lag[0].max(lag);
    }

    /// The largest reordering seen lately (ms; see `reo_lag`).
    pub(super) fn reorder_lag(&self) -> u32 {
        self.reo_lag[0].max(self.reo_lag[1])
    }

    /// Largest receive window a peer advertised on this path (0: none heard).
    pub(super) fn peer_wnd(&self) -> u32 {
        self.peer_wnd
    }

    /// Starts from what earlier conversations learnt about the same path, which nobody uses
    /// now: its rate (with its random loss made up for), cruising in probe-bandwidth. The
    /// first probe finds more room and the first queued round less. (Half the rate and
    /// startup spent about a second of a 200 ms path finding the rate again: sim `bad`, 74% of
    /// the limit against 84%.)
    pub(super) fn seed(&mut self, hint: PathHint) {
        let PathHint {
            bw,
            min_rtt,
            loss,
            peer_wnd,
            reordering,
            reorder_lag,
        } = hint;
        self.peer_wnd = self.peer_wnd.max(peer_wnd);
        self.reordering |= reordering;
        self.reo_lag[0] = self.reo_lag[0].max(reorder_lag);
        if !bw.is_finite() || bw <= 0.0 || self.delivered > 0 || min_rtt == 0 || min_rtt == u32::MAX
        {
            return;
        }
        if loss.is_finite() && loss > 0.0 {
            self.loss = loss.min(LOSS_COMP_MAX);
        }
        self.bw = bw;
        self.bw_max[0] = (0, bw);
        // Tentative: this conversation's first measurement replaces it. A hint can
        // carry a minimum from a packet that skipped the path's delay, and a minimum only
        // ever falls, so a kept one would hold every later conversation's BDP too low.
        self.min_rtt = min_rtt;
        self.min_rtt_tentative = true;
        self.cwnd = self
            .cwnd
            .max((CWND_GAIN * bw * f64::from(min_rtt)) as usize);
        self.full_bw = bw;
        self.cycle_bw = bw;
        self.mode = Mode::ProbeBw;
        self.cycle_idx = 2;
        self.pacing_gain = CYCLE[2];
    }

    // --------------------------------------------------------------------------- sending

    /// May a new segment of `bytes` leave now? (In-flight cap and pacer.) On a shared path a
    /// conversation under its even share of the cap (split between the conversations with
    /// data queued or in flight; `own`: its bytes in flight) may always send: the others'
    /// flight must not starve it (a conversation whose peer went away keeps its flight until
    /// it is reset), and only its own ACKs wake it.
    pub(super) fn can_send(&self, p: &Pacer, now: u32, bytes: usize, own: usize) -> bool {
        !self.cwnd_full(bytes, own) && self.tokens_at(p, now) > 0.0
    }

    /// The in-flight cap, not the pacer, is what holds new data back.
    pub(super) fn cwnd_full(&self, bytes: usize, own: usize) -> bool {
        // `active` counts the backlogged conversations too (queued data is active).
        let share = self.cwnd / self.active.max(1);
        own > 0 && self.inflight + bytes > self.cwnd.max(bytes) && own + bytes > share
    }

    /// When the pacer next lets a segment go (`now` if it would now).
    pub(super) fn release_time(&self, p: &Pacer, now: u32) -> u32 {
        let t = self.tokens_at(p, now);
        if t > 0.0 {
            return now;
        }
        let rate = self.share_rate().unwrap_or(f64::INFINITY);
        let mut wait = ((-t) / rate).floor() as u32 + 1;
        // Rounding may leave the balance at zero at that ms: the pacer must be due when it
        // says, or the loop wakes for nothing.
        while t + rate * f64::from(wait) <= 0.0 && wait < u32::MAX / 4 {
            wait += 1;
        }
        now.wrapping_add(wait.max(1))
    }

    /// A transmission of `bytes` leaves at `now`: charge the pacer, count a first
    /// transmission as in flight, and return the stamp for its rate sample.
    pub(super) fn on_transmit(
        &mut self,
        p: &mut Pacer,
        now: u32,
        bytes: usize,
        first: bool,
        app_limited: bool,
    ) -> TxStamp {
        p.tokens = match self.share_rate() {
            Some(rate) => self.debt_capped(rate, self.tokens_at(p, now) - bytes as f64),
            None => 0.0,
        };
        p.last_refill = now;
        if self.inflight == 0 {
            self.first_sent_time = now;
            self.delivered_time = now;
            self.round_busy = false;
        }
        if first {
            self.inflight += bytes;
            self.round_max_inflight = self.round_max_inflight.max(self.inflight);
        } else {
            self.round_resent += bytes as u64;
        }
        self.round_sent += bytes as u64;
        if app_limited {
            self.app_limited_until = (self.delivered + self.inflight as u64).max(1);
        }
        TxStamp {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent: self.first_sent_time,
            sent: now,
            app_limited: self.app_limited_until != 0,
        }
    }

    /// An extra copy of `bytes` left (not a transmission of its own for the model).
    pub(super) fn charge(&self, p: &mut Pacer, bytes: usize) {
        if let Some(rate) = self.share_rate() {
            p.tokens = self.debt_capped(rate, p.tokens - bytes as f64);
        }
    }

    /// Retransmissions are never held back, but they are charged; a storm of them (after an
    /// outage every segment times out) could pile up a debt that holds new data for minutes
    /// at a low rate (fuzz: kcp_model, 50 s). The debt stops at one minimum RTT of pacing.
    fn debt_capped(&self, rate: f64, tokens: f64) -> f64 {
        let rtt = f64::from(self.min_rtt.clamp(1, 60_000));
        tokens.max(-(rate * rtt).max(self.burst(rate)))
    }

    // ------------------------------------------------------------------------ receiving

    /// A segment of `bytes` whose latest copy left with `stamp` was acknowledged (the first
    /// time). `echo` is the ACK's `ts` (`None` for a cumulative `una`): an ACK of an earlier
    /// copy, or a cumulative one after a retransmission, is not a sample of the latest copy's
    /// delivery (it would look like a round trip of a few ms).
    pub(super) fn on_acked(
        &mut self,
        now: u32,
        bytes: usize,
        stamp: &TxStamp,
        echo: Option<u32>,
        xmit: u32,
    ) {
        self.inflight = self.inflight.saturating_sub(bytes);
        self.delivered += bytes as u64;
        self.delivered_time = now;
        self.acked += bytes;
        let exact = match echo {
            Some(ts) => ts == stamp.sent,
            None => xmit <= 1,
        };
        if exact && self.sample.is_none_or(|s| stamp.delivered >= s.delivered) {
            self.sample = Some(*stamp);
            self.first_sent_time = stamp.sent;
        }
    }

    /// An RTT sample; `srtt` and `rttvar` are the engine's smoothed RTT and its mean
    /// deviation (0 before the first sample).
    pub(super) fn on_rtt(&mut self, now: u32, rtt: u32, srtt: u32, rttvar: u32) {
        self.rttvar = rttvar;
        if srtt == 0 {
            return; // the very first sample has nothing to be judged against
        }
        if self.min_rtt != u32::MAX && u64::from(srtt) * 2 < u64::from(self.min_rtt) {
            // The smoothed RTT is under half the "minimum": that minimum is stale (an outage
            // made every sample of its window huge), and with it the pacing floor and the
            // BDP. Start again from the smoothed RTT; samples refine it from there. Only
            // once it has held for `LOW_SRTT_SAMPLES` samples in a row: a new conversation's
            // smoothed RTT is its first sample or two, and one packet that skipped the
            // path's delay made it 21-29 ms on a 45-60 ms path; as the shared path's minimum
            // that made every round look queued and cut the rate of all conversations on it
            // (netlab `reorder`: 8 downloads at 2.3-3.2 of 100 Mbit/s for 12 s).
            self.low_srtt_samples += 1;
            if self.low_srtt_samples >= LOW_SRTT_SAMPLES {
                self.min_rtt = srtt;
                self.min_rtt_next = srtt;
                self.low_srtt_samples = 0;
            }
        } else {
            self.low_srtt_samples = 0;
        }
        // A sample under 70% of the smoothed RTT is a packet that skipped the path's delay
        // (a link that reorders by letting some packets through early, as netem and the
        // netlab emulator do): as the minimum it would shrink the BDP estimate and make
        // every later round look queued (netlab `reorder`: min_rtt 20-23 ms on a 40-60 ms
        // path, 4 Mbit/s of 100). Jitter within +-30% of the mean still counts. A real drop
        // in the path's RTT pulls the smoothed RTT down within a few round trips, after which
        // its samples count again. Two ms of slack for the clock's resolution: on a sub-ms
        // path samples of 0 against a smoothed 1 were all refused, and a stale minimum of
        // 58 s from an outage stayed for good, pacing one packet per 5 s (fuzz: kcp_shared).
        if u64::from(rtt) * 10 + 20 < u64::from(srtt) * 7 {
            return;
        }
        // The minimum moves by pairs of samples from consecutive packets (the larger of the
        // two): one early packet that slipped under the 70% test must not set the path's
        // minimum. With 25 ms on a 40-60 ms path every later round looked queued and the
        // rate spiralled down to 5% (sim `express`: 1% of packets skip the delay). Not two
        // samples of one packet: an ACK packet that skipped the delay carries several, and
        // made a new conversation's minimum 24-27 ms on netlab `reorder` (45-60 ms).
        let prev = self.prev_packet_min_rtt;
        self.packet_min_rtt = self.packet_min_rtt.min(rtt);
        if rtt < self.round_min_rtt {
            self.round_min2_rtt = self.round_min_rtt;
            self.round_min_rtt = rtt;
        } else if rtt < self.round_min2_rtt {
            self.round_min2_rtt = rtt;
        }
        self.round_rtt_samples += 1;
        let cand = match prev {
            Some(prev) if self.min_rtt_tentative => {
                self.min_rtt_tentative = false;
                self.min_rtt = u32::MAX;
                self.min_rtt_next = u32::MAX;
                rtt.max(prev)
            }
            // A hint's minimum waits for two samples of this path's own.
            None if self.min_rtt_tentative => return,
            Some(prev) if self.min_rtt != u32::MAX => rtt.max(prev),
            _ => rtt,
        };
        self.min_rtt_next = self.min_rtt_next.min(cand);
        if cand <= self.min_rtt {
            self.min_rtt = cand;
        }
        // A sliding minimum without a probe phase: after each window the estimate becomes the
        // smallest sample of the window just ended (our own queue drains in the 0.75 phases).
        if self.min_rtt_stamp == 0 && self.min_rtt != u32::MAX {
            self.min_rtt_stamp = now | 1;
        } else if now.wrapping_sub(self.min_rtt_stamp) as i32 > MIN_RTT_WINDOW as i32 {
            self.min_rtt = self.min_rtt_next;
            self.min_rtt_next = rtt;
            self.min_rtt_stamp = now | 1;
        }
    }

    /// End of one input packet: turn its ACKs into a rate sample and update the model.
    pub(super) fn on_input_done(&mut self, now: u32, peer_wnd: u32) {
        self.peer_wnd = self.peer_wnd.max(peer_wnd);
        if self.packet_min_rtt != u32::MAX {
            self.prev_packet_min_rtt = Some(std::mem::replace(&mut self.packet_min_rtt, u32::MAX));
        }
        let Some(s) = self.sample.take() else {
            return;
        };
        let acked = std::mem::take(&mut self.acked);
        if self.app_limited_until != 0 && self.delivered > self.app_limited_until {
            self.app_limited_until = 0;
        }
        let mut round_start = false;
        let mut queued = false;
        self.round_uncruising |= self.mode != Mode::ProbeBw;
        // A queue seen by app-limited traffic (a few small messages behind the other
        // direction's bulk, or behind the peer's paced answers) is not ours, and the round's
        // delivery rate says nothing about the bottleneck: a round of eight requests that
        // looked queued cut the estimate to their few hundred bytes per round trip, and the
        // next bulk transfer on the path started at the pacing floor and took seconds to
        // find the rate again (netlab `reorder`: an upload at 10 of 100 Mbit/s, ramping
        // for 3 s).
        // Nor is a round that did not run busy from its start (see `round_busy`): it began
        // at the last round boundary, maybe a minute before an idle path's next burst, and
        // its average over that span would cut the estimate to a trickle (a guard, shown
        // by a unit test; the `reorder` stalls were the minimum-RTT rules in `on_rtt`).
        let judged = !s.app_limited && self.round_busy;
        if self.mode == Mode::Startup && judged {
            // Startup doubles the flight each round: half a round of a standing queue is
            // enough evidence, a whole one may already overflow a one-BDP buffer.
            let base = self.min_rtt().unwrap_or(u32::MAX);
            let half = now.wrapping_sub(self.round_start_time) as i32 > (base / 2) as i32;
            queued = half && self.round_queued();
        }
        if s.delivered >= self.next_round_delivered {
            self.next_round_delivered = self.delivered;
            self.round += 1;
            round_start = true;
            // A standing queue the whole round: some of it is ours, and the rate at which
            // the round delivered is the bottleneck's (it never ran dry).
            if judged && (queued || self.round_queued()) {
                queued = true;
                let dt = now.wrapping_sub(self.round_start_time).max(1);
                let avg = (self.delivered - self.round_start_delivered) as f64 / f64::from(dt);
                if avg > 0.0 && avg < self.bw {
                    for b in self.bw_max.iter_mut() {
                        b.1 = b.1.min(avg);
                    }
                    self.bw = avg;
                }
            }
            let congested = self.round_congested();
            self.update_inflight_hi(congested);
            self.update_loss(queued || congested);
            self.round_min_rtt = u32::MAX;
            self.round_min2_rtt = u32::MAX;
            self.round_rtt_samples = 0;
            self.round_start_delivered = self.delivered;
            self.round_start_time = now;
            self.round_busy = self.inflight > 0;
            if self.round >= self.reo_epoch_round + REO_EPOCH_ROUNDS {
                self.reo_lag = [0, self.reo_lag[0]];
                self.reo_epoch_round = self.round;
            }
        }
        let send_elapsed = s.sent.wrapping_sub(s.first_sent) as i32;
        let ack_elapsed = now.wrapping_sub(s.delivered_time) as i32;
        let interval = send_elapsed.max(ack_elapsed).max(1) as u32;
        let floor = self.min_rtt().unwrap_or(0);
        if interval >= floor {
            let rate = (self.delivered - s.delivered) as f64 / f64::from(interval);
            if !s.app_limited || rate >= self.bw {
                self.update_bw(rate);
            }
        }
        self.update_mode(now, round_start, queued, s.app_limited);
        self.update_cwnd(acked);
    }

    /// Folds the round that just ended into the loss estimate: only cruising rounds count
    /// (startup's overshoot drops at the bottleneck, and the tail of a transfer is mostly
    /// repairs). Our own queue takes compensation away: drops at a full queue are not
    /// random loss, and a queue of an eighth of the minimum RTT that stood all round means
    /// the compensation overshoots (the bandwidth estimate is a maximum, and the
    /// retransmissions include needless ones after lost ACKs); unchecked, the queue grew
    /// until the standing-queue check cut the rate (netlab `bad`: +100 ms in 1.5 s, and
    /// every repair slower by as much). Rounds without a queue bring it back.
    fn update_loss(&mut self, queued: bool) {
        let light = self.round_floor_over(|base| (base / 8).max(QUEUE_MIN_MS));
        if queued {
            self.loss /= 2.0;
        } else if light {
            self.loss *= 0.75;
        } else if self.mode == Mode::ProbeBw && self.app_limited_until == 0 {
            if self.round_sent < LOSS_MIN_PKTS * self.mtu as u64 {
                return; // a slow round: its count adds to the next
            }
            let sample = self.round_resent as f64 / self.round_sent as f64;
            self.loss += (sample - self.loss) / 8.0;
        }
        self.round_sent = 0;
        self.round_resent = 0;
    }

    /// The round that just ended overflowed the bottleneck's queue: it resent much more than
    /// the path's random loss explains and a queue stood all round. Rate and RTT alone miss
    /// that when the other direction is busy too: every RTT sample then carries the other
    /// end's queue, the minimum RTT with it, and a flight of two such BDPs is more than the
    /// bottleneck holds (netlab `reorder`, 50 echoing connections: flights of 1.5-1.9 MB on a
    /// path that holds about 1.2, with a tenth to a third of each round resent).
    fn round_congested(&self) -> bool {
        if self.round_sent < LOSS_MIN_PKTS * self.mtu as u64 {
            return false;
        }
        let ratio = self.round_resent as f64 / self.round_sent as f64;
        ratio > 2.0 * self.loss + CONG_LOSS_MARGIN
            && self.round_floor_over(|base| (base / 8).max(QUEUE_MIN_MS))
    }

    /// Caps the flight after a round that overflowed the queue (and leaves startup: the pipe
    /// is full), and lets the cap grow back while it holds the flight.
    ///
    /// What a round resends was lost a round trip or two before. Cruising, the flight of
    /// one round is much like the next; not so after startup, which overshoots by design
    /// and whose drops are repaired over the next rounds at much smaller flights. So until
    /// a cruising round ends without overflow, the cap is a share of the largest flight
    /// since startup began, if that is larger than the round's own. Startup's last round on
    /// sim `reorder` flew 1.39 MB (two BDPs) and dropped some of it; drain resent 6% and the
    /// first cruising round 10%, at a flight of 0.77 MB of its own. A cap of 0.7 of that
    /// held the flight at 0.8 BDP, growing back by 1/32 a round: the fresh transfer reached
    /// 78.5% of the limit, against 82.9% with the cap at 0.7 of the 1.39 MB (and 83.0% with
    /// no cap). After a cruising round without overflow the cap is a share of the
    /// overflowing round's own flight: with the larger of two rounds' flights there, 50
    /// echoing connections on netlab `reorder` echoed 5-10% less in two runs each.
    fn update_inflight_hi(&mut self, congested: bool) {
        if self.round_uncruising {
            self.overshoot_flight = self.overshoot_flight.max(self.round_max_inflight);
        } else if !congested {
            self.overshoot_flight = 0;
        }
        if congested {
            let floor = BURST_MIN_PKTS * self.mtu;
            let flight = self.round_max_inflight.max(self.overshoot_flight);
            self.inflight_hi = ((flight as f64 * CONG_BETA) as usize).max(floor);
            if self.mode == Mode::Startup {
                self.enter_drain();
            }
        } else if self.inflight_hi != usize::MAX
            && self.round_max_inflight + 2 * self.mtu >= self.inflight_hi
        {
            // Only while the flight (which the windows bound) reaches it: no runaway.
            let step = (self.inflight_hi / CONG_REGROW).max(self.mtu);
            self.inflight_hi = self.inflight_hi.saturating_add(step);
        }
        self.round_uncruising = false;
        self.round_max_inflight = self.inflight;
    }

    fn round_queued(&self) -> bool {
        self.round_floor_over(|base| (base / 4).max(QUEUE_MIN_MS).max(4 * self.rttvar))
    }

    /// The round's RTT floor (its second-smallest of at least `QUEUE_MIN_SAMPLES` samples)
    /// stood more than `margin(minimum RTT)` over the minimum.
    fn round_floor_over(&self, margin: impl Fn(u32) -> u32) -> bool {
        let Some(base) = self.min_rtt() else {
            return false;
        };
        self.round_min2_rtt != u32::MAX
            && self.round_rtt_samples >= QUEUE_MIN_SAMPLES
            && self.round_min2_rtt > base.saturating_add(margin(base))
    }

    fn update_bw(&mut self, rate: f64) {
        let slot = (self.round % BW_ROUNDS as u64) as usize;
        let b = &mut self.bw_max[slot];
        if b.0 != self.round {
            *b = (self.round, rate);
        } else if rate > b.1 {
            b.1 = rate;
        }
        let oldest = self.round.saturating_sub(BW_ROUNDS as u64 - 1);
        self.bw = self
            .bw_max
            .iter()
            .filter(|(r, _)| *r >= oldest && *r <= self.round)
            .map(|&(_, v)| v)
            .fold(0.0, f64::max);
    }

    fn update_mode(&mut self, now: u32, round_start: bool, queued: bool, app_limited: bool) {
        match self.mode {
            Mode::Startup => {
                if round_start && !app_limited {
                    if self.bw >= self.full_bw * 1.25 {
                        self.full_bw = self.bw;
                        self.full_bw_rounds = 0;
                    } else {
                        self.full_bw_rounds += 1;
                    }
                }
                // The pipe is also full once a queue stands: leave before it overflows.
                if queued || self.full_bw_rounds >= FULL_BW_ROUNDS {
                    self.enter_drain();
                }
            }
            Mode::Drain => {
                if self.bdp().is_none_or(|bdp| self.inflight <= bdp) {
                    self.enter_probe_bw(now);
                }
            }
            Mode::ProbeBw if queued => {
                // Drain what we queued before cruising again.
                self.cycle_idx = 1;
                self.cycle_stamp = now;
                self.pacing_gain = CYCLE[1];
            }
            Mode::ProbeBw => {
                let phase = now.wrapping_sub(self.cycle_stamp) as i32;
                let rtt = self.min_rtt().unwrap_or(1).max(1) as i32;
                let gain = CYCLE[self.cycle_idx];
                let bdp = self.bdp().unwrap_or(0);
                let next = if gain < 1.0 {
                    phase > rtt || self.inflight <= bdp
                } else {
                    phase > rtt
                };
                if next && gain > 1.0 && self.bw >= self.cycle_bw * 1.25 {
                    // Probing found much more room (the estimate had collapsed, or the path
                    // got faster): search exponentially again instead of 25 % per cycle.
                    self.mode = Mode::Startup;
                    self.full_bw = self.bw;
                    self.full_bw_rounds = 0;
                    self.pacing_gain = STARTUP_GAIN;
                    return;
                }
                if next {
                    self.cycle_bw = self.bw;
                    self.cycle_idx = (self.cycle_idx + 1) % CYCLE.len();
                    self.cycle_stamp = now;
                    self.pacing_gain = CYCLE[self.cycle_idx];
                }
            }
        }
    }

    /// Startup is over: drain the queue it built.
    fn enter_drain(&mut self) {
        self.mode = Mode::Drain;
        self.pacing_gain = 1.0 / STARTUP_GAIN;
    }

    fn enter_probe_bw(&mut self, now: u32) {
        self.mode = Mode::ProbeBw;
        self.cwnd_gain = CWND_GAIN;
        // Start in a cruising phase, varied per flow so parallel flows do not probe in step.
        self.cycle_idx = 2 + (self.delivered as usize / self.mtu.max(1)) % (CYCLE.len() - 2);
        self.cycle_stamp = now;
        self.pacing_gain = CYCLE[self.cycle_idx];
    }

    fn update_cwnd(&mut self, acked: usize) {
        let floor = BURST_MIN_PKTS * self.mtu;
        let Some(bdp) = self.bdp() else {
            self.cwnd = self.cwnd.max(INIT_CWND_SEGS * self.mtu) + acked;
            return;
        };
        let target = (self.cwnd_gain * bdp as f64) as usize + 3 * self.mtu;
        if self.mode != Mode::Startup {
            self.cwnd = (self.cwnd + acked).min(target);
        } else if self.cwnd < target || self.delivered < (INIT_CWND_SEGS * self.mtu) as u64 {
            self.cwnd += acked;
        }
        self.cwnd = self.cwnd.min(self.inflight_hi).max(floor);
    }
}
