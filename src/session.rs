//! One TCP connection mapped onto one KCP conversation (WIRE.md section 4).
//!
//! A [`Session`] owns the conversation's KCP engine, its TCP socket and the message codec
//! state, and moves bytes both ways: TCP → PUSH messages → KCP, and KCP → messages → TCP. It
//! implements the half-close the way TCP means it (an EOF in one direction never stops the
//! other), backpressure in both directions (it stops reading TCP while KCP's send queue is
//! full, and stops taking bytes out of KCP while TCP cannot take more), and the conversation's
//! timers. It performs TCP reads and writes, but never touches the UDP socket or the clock:
//! the event loop passes `now` in and flushes KCP's packets out, unless the session says its
//! next datagram waits (`held_until`: a DIAL for the connection's first bytes, the EOF of a
//! finished exchange for other conversations' datagrams).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;

use mio::net::TcpStream;

use crate::kcp::Kcp;
use crate::proto::{self, Frame, TlvDecoder};
use crate::timer::Millis;

/// Most TCP payload bytes moved per session per wakeup, so one busy connection cannot starve
/// the others; a session that hits it is serviced again in the next loop iteration.
pub const WORK_CAP: usize = 256 * 1024;

/// Bytes of a KCP→TCP backlog above which the buffer's memory is given back once drained.
const PENDING_KEEP: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We accepted the TCP connection and sent DIAL.
    Client,
    /// The peer opened the conversation; we dial `connect` on its DIAL.
    Server,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Moving data (possibly half-closed in either direction).
    Open,
    /// Both directions finished (or the conversation was reset); the id is remembered for
    /// `time_wait` so late packets are answered and not mistaken for a new conversation.
    TimeWait { reset: bool },
}

/// Why a session must end now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Both directions ended and were acknowledged.
    Done,
    /// The local TCP side failed (reset, error): tell the peer.
    TcpError,
    /// The target refused the connection or could not be reached.
    DialFailed,
    /// The peer broke the message protocol.
    Protocol,
    /// The peer sent RESET.
    ResetByPeer,
    /// A timer expired (dial, idle, linger) or KCP declared the link dead.
    Timeout(&'static str),
    /// The process is shutting down.
    Shutdown,
}

impl Close {
    /// Whether the peer must be told with a session-0 RESET.
    pub fn tells_peer(self) -> bool {
        !matches!(self, Close::Done | Close::ResetByPeer)
    }
}

/// Timer settings for sessions, in milliseconds (from the config).
#[derive(Clone, Debug)]
pub struct Timeouts {
    pub dial: Millis,
    pub idle: Millis,
    /// In-stream KEEPALIVE period (client), 0 = never.
    pub keepalive: Millis,
    pub linger: Millis,
    pub time_wait: Millis,
}

pub struct Session {
    pub conv: u32,
    pub peer: SocketAddr,
    pub role: Role,
    pub state: State,
    pub kcp: Kcp,
    pub tcp: Option<TcpStream>,
    /// Server: a non-blocking connect to the target is in flight.
    pub dialing: bool,
    /// Server: DIAL arrived and the loop should start the connect.
    pub want_dial: bool,
    /// The conversation has proven itself: the server's dial succeeded / the client heard
    /// from the server.
    pub established: bool,
    decoder: TlvDecoder,
    got_first_msg: bool,
    /// KCP→TCP bytes already taken out of KCP that TCP has not accepted yet.
    pending: Vec<u8>,
    tcp_readable: bool,
    tcp_writable: bool,
    /// The TCP read side reached end of stream.
    rd_eof: bool,
    /// Our EOF message is queued in KCP.
    eof_sent: bool,
    /// The peer's EOF message arrived.
    peer_eof: bool,
    /// We shut down the TCP write side after the peer's EOF.
    wr_shut: bool,
    pub created: Millis,
    /// Last TLV message from the peer (the idle timer).
    pub last_msg_rx: Millis,
    last_keepalive_tx: Millis,
    /// Last time bytes moved in either direction (the linger timer).
    last_progress: Millis,
    pub closed_at: Millis,
    /// When the peer last moved to a new address (0 = never).
    pub moved_at: Millis,
    pub tcp_rx_bytes: u64,
    pub tcp_tx_bytes: u64,
    /// A segment reached `STUCK_XMIT` sends and that was logged (once per conversation).
    pub stuck_logged: bool,
    /// How long DIAL may wait for the first bytes and EOF for a new conversation to go
    /// first (`set_send_hold`; 0 = never).
    send_hold: Millis,
    /// Until when this conversation's next datagram waits (`held_until`); a client's DIAL
    /// stops waiting at the first bytes read or the EOF.
    hold_until: Millis,
}

impl Session {
    pub fn new(conv: u32, peer: SocketAddr, role: Role, kcp: Kcp, now: Millis) -> Session {
        Session {
            conv,
            peer,
            role,
            state: State::Open,
            kcp,
            tcp: None,
            dialing: false,
            want_dial: false,
            established: false,
            decoder: TlvDecoder::new(),
            got_first_msg: false,
            pending: Vec::new(),
            tcp_readable: false,
            tcp_writable: false,
            rd_eof: false,
            eof_sent: false,
            peer_eof: false,
            wr_shut: false,
            created: now,
            last_msg_rx: now,
            last_keepalive_tx: now,
            last_progress: now,
            closed_at: now,
            moved_at: 0,
            tcp_rx_bytes: 0,
            tcp_tx_bytes: 0,
            stuck_logged: false,
            send_hold: 0,
            hold_until: 0,
        }
    }

    /// How long (ms) a conversation's DIAL may wait for the first bytes, and an EOF with
    /// nothing of ours ahead of it for other conversations' datagrams (`held_until`).
    pub fn set_send_hold(&mut self, ms: Millis) {
        self.send_hold = ms;
    }

    /// Client side: attach the accepted TCP connection and queue DIAL, so that the first
    /// datagram carries it together with whatever the application already sent (0-RTT).
    /// The application's first bytes often arrive just after the accept: DIAL waits for
    /// them (see `held_until`).
    pub fn start_client(&mut self, tcp: TcpStream, now: Millis) {
        self.tcp = Some(tcp);
        self.hold_until = now + self.send_hold;
        self.tcp_readable = true;
        self.tcp_writable = true;
        let sent = self.kcp.send(&proto::encode_header(proto::MSG_DIAL, 0));
        debug_assert_eq!(sent, proto::TLV_HEADER);
    }

    /// Until when nothing of this conversation is sent (the loop neither flushes it nor
    /// lets its timers send), or `None`. On a path whose jitter keeps packet order, a
    /// datagram arrives at the later of its own delay and the one of the datagram sent just
    /// before it (netlab `bad`, +/-10 ms: +4 ms at the median for two, +7 for four), so
    /// datagrams that nobody waits for should not go just ahead of ones somebody does.
    /// Two cases wait, each at most `send_hold` ms:
    /// - Client: DIAL, for the connection's first bytes to go in the same datagram. A
    ///   protocol where the server speaks first pays the hold once.
    /// - EOF queued when everything we sent was acknowledged (the closing of a finished
    ///   exchange): an application that opens a connection per request closes the last one
    ///   just before it opens the next, and its new DIAL and request then go first; on the
    ///   server the new conversation's first reply goes ahead of the old one's EOF. What
    ///   pays: the peer learns of such a close up to `send_hold` ms later.
    pub fn held_until(&self, now: Millis) -> Option<Millis> {
        (self.is_open() && now < self.hold_until).then_some(self.hold_until)
    }

    /// Server side: the connect to the target was started.
    pub fn start_dial(&mut self, tcp: TcpStream) {
        self.tcp = Some(tcp);
        self.dialing = true;
        self.want_dial = false;
    }

    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// A readiness event on the TCP socket.
    pub fn on_tcp_event(&mut self, readable: bool, writable: bool) -> Result<(), Close> {
        if readable {
            self.tcp_readable = true;
        }
        if writable {
            self.tcp_writable = true;
        }
        if self.dialing && (writable || readable) {
            self.finish_dial()?;
        }
        Ok(())
    }

    fn finish_dial(&mut self) -> Result<(), Close> {
        let Some(tcp) = &self.tcp else {
            return Ok(());
        };
        if let Some(_e) = crate::sys::take_error(tcp.as_raw_fd()) {
            return Err(Close::DialFailed);
        }
        match tcp.peer_addr() {
            Ok(_) => {
                self.dialing = false;
                self.established = true;
                self.tcp_writable = true;
                self.tcp_readable = true;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()), // still in progress
            Err(_) => Err(Close::DialFailed),
        }
    }

    /// Moves bytes from the TCP socket into KCP as PUSH messages, while KCP has room, up to
    /// `WORK_CAP`. Returns true if it stopped at the cap with more to read.
    pub fn pump_tcp_to_kcp(&mut self, scratch: &mut [u8], now: Millis) -> Result<bool, Close> {
        let Some(tcp) = self.tcp.as_mut() else {
            return Ok(false);
        };
        if self.dialing || self.state != State::Open {
            return Ok(false);
        }
        let mut moved = 0;
        while self.tcp_readable && !self.rd_eof {
            if moved >= WORK_CAP {
                return Ok(true);
            }
            let room = self.kcp.send_capacity();
            if room <= proto::TLV_HEADER {
                break; // backpressure: resumed when KCP's queue drains
            }
            let max = (room - proto::TLV_HEADER)
                .min(proto::MAX_PUSH)
                .min(scratch.len() - proto::TLV_HEADER);
            match tcp.read(&mut scratch[proto::TLV_HEADER..proto::TLV_HEADER + max]) {
                Ok(0) => {
                    self.rd_eof = true;
                    self.hold_until = 0;
                }
                Ok(n) => {
                    self.hold_until = 0;
                    scratch[..proto::TLV_HEADER]
                        .copy_from_slice(&proto::encode_header(proto::MSG_PUSH, n));
                    let took = self.kcp.send(&scratch[..proto::TLV_HEADER + n]);
                    debug_assert_eq!(took, proto::TLV_HEADER + n);
                    self.tcp_rx_bytes += n as u64;
                    self.last_progress = now;
                    moved += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp_readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Close::TcpError),
            }
        }
        if self.rd_eof && !self.eof_sent && self.kcp.send_capacity() >= proto::TLV_HEADER {
            if self.kcp.waitsnd() == 0 {
                self.hold_until = now + self.send_hold;
            }
            self.kcp.send(&proto::encode_header(proto::MSG_EOF, 0));
            self.eof_sent = true;
            self.last_progress = now;
        }
        Ok(false)
    }

    /// Moves bytes out of KCP, through the message decoder, into the TCP socket, until TCP
    /// stops taking them or `WORK_CAP` is reached. Bytes TCP refuses wait in `pending` (at
    /// most one `scratch` worth), and nothing more is taken out of KCP until they are written:
    /// KCP's receive window then closes and the peer stops sending.
    pub fn pump_kcp_to_tcp(&mut self, scratch: &mut [u8], now: Millis) -> Result<bool, Close> {
        if self.state != State::Open {
            // TIME_WAIT: keep KCP's receive queue empty so it keeps acknowledging.
            while self.kcp.recv(scratch) > 0 {}
            return Ok(false);
        }
        let mut moved = 0;
        loop {
            if !self.write_pending(now)? {
                return Ok(false);
            }
            if moved >= WORK_CAP {
                return Ok(true);
            }
            let n = self.kcp.recv(scratch);
            if n == 0 {
                break;
            }
            moved += n;
            let mut off = 0;
            while off < n {
                let (used, frame) = self
                    .decoder
                    .decode(&scratch[off..n])
                    .map_err(|_| Close::Protocol)?;
                off += used;
                let Some(frame) = frame else {
                    debug_assert!(off == n || used > 0);
                    if used == 0 {
                        break;
                    }
                    continue;
                };
                self.on_frame(frame, now)?;
            }
        }
        self.maybe_shutdown_write();
        Ok(false)
    }

    fn on_frame(&mut self, frame: Frame<'_>, now: Millis) -> Result<(), Close> {
        self.last_msg_rx = now;
        let first = !self.got_first_msg;
        self.got_first_msg = true;
        if self.peer_eof {
            return Err(Close::Protocol); // nothing may follow EOF
        }
        match frame {
            Frame::Dial => {
                if self.role != Role::Server || !first {
                    return Err(Close::Protocol);
                }
                self.want_dial = true;
            }
            _ if first && self.role == Role::Server => return Err(Close::Protocol),
            Frame::Data(d) => {
                self.last_progress = now;
                self.write_or_buffer(d)?;
            }
            Frame::Eof => {
                self.peer_eof = true;
                self.last_progress = now;
            }
            Frame::Keepalive => {
                if self.role == Role::Server {
                    // A current kcptun-libev server echoes it; the client counts it as life.
                    if self.kcp.send_capacity() >= proto::TLV_HEADER && !self.eof_sent {
                        self.kcp
                            .send(&proto::encode_header(proto::MSG_KEEPALIVE, 0));
                    }
                }
            }
        }
        Ok(())
    }

    fn write_or_buffer(&mut self, mut d: &[u8]) -> Result<(), Close> {
        if self.pending.is_empty() && self.tcp_writable && !self.dialing {
            if let Some(tcp) = self.tcp.as_mut() {
                while !d.is_empty() {
                    match tcp.write(d) {
                        Ok(0) => return Err(Close::TcpError),
                        Ok(n) => {
                            self.tcp_tx_bytes += n as u64;
                            d = &d[n..];
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.tcp_writable = false;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Err(Close::TcpError),
                    }
                }
            }
        }
        self.pending.extend_from_slice(d);
        Ok(())
    }

    /// Writes the backlog; true when it is empty.
    fn write_pending(&mut self, now: Millis) -> Result<bool, Close> {
        if self.pending.is_empty() {
            return Ok(true);
        }
        let Some(tcp) = self.tcp.as_mut() else {
            return Ok(false);
        };
        if self.dialing || !self.tcp_writable {
            return Ok(false);
        }
        let mut off = 0;
        while off < self.pending.len() {
            match tcp.write(&self.pending[off..]) {
                Ok(0) => return Err(Close::TcpError),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.tcp_writable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Close::TcpError),
            }
        }
        if off > 0 {
            self.tcp_tx_bytes += off as u64;
            self.last_progress = now;
            self.pending.drain(..off);
        }
        if self.pending.is_empty() {
            if self.pending.capacity() > PENDING_KEEP {
                self.pending = Vec::new();
            }
            self.maybe_shutdown_write();
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// After the peer's EOF and all its data written: FIN towards the local application,
    /// while the other direction keeps flowing.
    fn maybe_shutdown_write(&mut self) {
        if self.peer_eof && !self.wr_shut && self.pending.is_empty() && !self.dialing {
            if let Some(tcp) = &self.tcp {
                let _ = tcp.shutdown(Shutdown::Write);
                self.wr_shut = true;
            }
        }
    }

    /// Both directions ended and everything we sent was acknowledged.
    pub fn is_done(&self) -> bool {
        self.state == State::Open
            && self.eof_sent
            && self.wr_shut
            && self.kcp.waitsnd() == 0
            && self.pending.is_empty()
    }

    /// KCP moved (an ACK for our data or a new segment arrived): the conversation is
    /// progressing even if TCP did not move, so the linger timer restarts.
    pub fn kcp_progress(&mut self, now: Millis) {
        self.last_progress = now;
    }

    /// Client: queue an in-stream KEEPALIVE if the conversation has been quiet for the
    /// keepalive period.
    pub fn keepalive_due(&mut self, now: Millis, t: &Timeouts) -> bool {
        if self.role != Role::Client || t.keepalive == 0 || self.state != State::Open {
            return false;
        }
        let quiet_since = self.last_msg_rx.max(self.last_keepalive_tx);
        if now < quiet_since + t.keepalive || self.eof_sent {
            return false;
        }
        // The deadline moves on either way: a send queue too full for 4 more bytes is not an
        // idle conversation, and a deadline left in the past would spin the loop.
        self.last_keepalive_tx = now;
        if self.kcp.send_capacity() >= proto::TLV_HEADER {
            self.kcp
                .send(&proto::encode_header(proto::MSG_KEEPALIVE, 0));
            return true;
        }
        false
    }

    /// Client, after re-opening its UDP socket: a KEEPALIVE on every open conversation, so
    /// that each sends a packet from the new address at once and the server moves it there
    /// (an idle conversation would otherwise stay on the dead address until it next sends).
    pub fn announce_new_address(&mut self, now: Millis) {
        if self.role == Role::Client
            && self.state == State::Open
            && !self.eof_sent
            && self.kcp.send_capacity() >= proto::TLV_HEADER
        {
            self.kcp
                .send(&proto::encode_header(proto::MSG_KEEPALIVE, 0));
            self.last_keepalive_tx = now;
        }
    }

    /// The conversation's protocol deadline (not KCP's), and the close it implies when it
    /// passes.
    pub fn protocol_deadline(&self, t: &Timeouts) -> (Millis, Option<Close>) {
        match self.state {
            State::TimeWait { .. } => (self.closed_at + t.time_wait, Some(Close::Done)),
            State::Open => {
                let mut at = self.last_msg_rx + t.idle;
                let mut why = Close::Timeout("idle timeout");
                if !self.established && self.created + t.dial < at {
                    at = self.created + t.dial;
                    why = Close::Timeout("dial timeout");
                }
                // linger bounds a half-closed conversation that is stuck. One whose other
                // direction is merely quiet (a server thinking after the request's EOF) is
                // bounded by the idle timeout instead.
                // Only a silent peer makes a conversation stuck: data it could take (its window
                // is open) but does not acknowledge, or both EOFs seen and the last ACKs
                // missing. A peer that advertises a zero window, or a local application that
                // reads slowly, is backpressure, not a fault: the idle timeout bounds those.
                let stuck = (self.kcp.waitsnd() > 0 && self.kcp.remote_wnd() > 0)
                    || (self.rd_eof && self.peer_eof);
                if (self.rd_eof || self.peer_eof) && stuck && self.last_progress + t.linger < at {
                    at = self.last_progress + t.linger;
                    why = Close::Timeout("linger timeout");
                }
                let mut deadline = (at, Some(why));
                if self.role == Role::Client && t.keepalive > 0 && !self.eof_sent {
                    let ka = self.last_msg_rx.max(self.last_keepalive_tx) + t.keepalive;
                    if ka < deadline.0 {
                        deadline = (ka, None);
                    }
                }
                deadline
            }
        }
    }

    /// Leaves the open state: drops the TCP connection (abortively when the conversation was
    /// reset) and starts TIME_WAIT.
    pub fn close(&mut self, why: Close, now: Millis) {
        let reset = why != Close::Done;
        if let Some(tcp) = self.tcp.take() {
            if reset {
                crate::sys::set_abortive_close(tcp.as_raw_fd());
            }
            drop(tcp);
        }
        self.pending = Vec::new();
        // TIME_WAIT only answers late packets; with 2048-segment windows the buffers of a
        // busy past can be megabytes, and nothing would flush (and trim) them before expiry.
        self.kcp.release_memory();
        // Its flight and queue no longer count against the conversations still sharing the
        // path (a reset one never sends again; a finished one has nothing left).
        self.kcp.leave_path();
        self.state = State::TimeWait { reset };
        self.closed_at = now;
        self.dialing = false;
        self.want_dial = false;
    }

    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::TimeWait { reset: true } => "reset",
            State::TimeWait { reset: false } => "time_wait",
            State::Open if self.dialing => "dialing",
            State::Open if self.rd_eof && self.peer_eof => "closing",
            State::Open if self.rd_eof || self.peer_eof => "half-closed",
            State::Open if !self.established => "connecting",
            State::Open => "established",
        }
    }
}
