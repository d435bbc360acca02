//! The one event loop: it alone owns mio, the sockets and the clock.
//!
//! Each iteration: read the clock once, wait for readiness (or the earliest deadline in the
//! [`TimerHeap`]), then drain every ready source until `WouldBlock` (with a cap of work per
//! source), run the timers that are due, and finally flush every conversation that changed,
//! so a pushed segment or a due ACK leaves in the same iteration in which it became due.
//! Outgoing datagrams are sealed in place into one batch and leave with `sendmmsg`; incoming
//! ones arrive with `recvmmsg`.
//!
//! Conversations live in a slab indexed by slot; a map from (peer address, conv) finds them
//! in O(1). Slots freed during an iteration are reused only after it, so a readiness event
//! still queued for a closed connection can never reach a new one.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use log::{debug, error, info, trace, warn};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::config::Config;
use crate::framing::{Framer, OpenError};
use crate::http::{self, HttpServer, Step};
use crate::kcp::{Kcp, KcpConfig, PathControl};
use crate::peers::Peers;
use crate::proto::Session0;
use crate::report::{self, Row, Snapshot};
use crate::session::{Close, Role, Session, State, Timeouts};
use crate::stats::Stats;
use crate::sys::{self, Batch, SignalFd, SockOpts};
use crate::timer::{Millis, TimerHeap};

const UDP: Token = Token(0);
const SIGNALS: Token = Token(1);
const LISTENER: Token = Token(2);
const HTTP_LISTENER: Token = Token(3);
/// HTTP client `i` uses token `HTTP_BASE + i`.
const HTTP_BASE: usize = 64;
/// Tokens of dedicated peer sockets: `PEER_BASE + i` (at most 512, config.rs).
const PEER_BASE: usize = 128;
/// Session slot `s` uses token `SESSION_BASE + s`.
const SESSION_BASE: usize = 1024;

/// Timer keys below `TIMER_BASE` belong to the loop; session slot `s` uses `TIMER_BASE + s`.
const TIMER_PING: usize = 0;
const TIMER_ACCEPT: usize = 1;
const TIMER_SILENCE: usize = 2;
/// Server: closes the sockets of peers gone silent.
const TIMER_PEERS: usize = 3;
/// Server: the main UDP socket's next turn while it is throttled.
const TIMER_UDP: usize = 4;
const PEER_SWEEP: Millis = 30_000;
/// After the peer-silence time, a PING gets this long to be answered before the client
/// resolves the server again and re-opens its socket.
const SILENCE_PROBE: Millis = 3000;
/// At most one move of a conversation to a new peer address per this many ms.
const MOVE_GUARD: Millis = 1000;
const TIMER_HTTP_BASE: usize = 8;
/// Sends of one segment after which the conversation logs its state once (info).
const STUCK_XMIT: u32 = 16;
const TIMER_BASE: usize = TIMER_HTTP_BASE + http::MAX_CLIENTS;
/// Peers whose path (rate control shared by their conversations) the loop keeps beyond the
/// ones in use.
const MAX_PATHS: usize = 4096;
/// Conversations listed one per line in `/stats`.
const STATS_ROWS: usize = 1000;
/// How long a conversation's ACKs may wait for the local reply to a message to carry them
/// (`Kcp::set_ack_hold`), a client's DIAL for the connection's first bytes, and an EOF with
/// nothing of ours ahead of it for the datagrams of other conversations
/// (`Session::held_until`). The loop's clock counts whole ms, so 2 waits 1-2 ms: enough for
/// a local application's bytes, which take tens to hundreds of microseconds.
const ACK_HOLD: u32 = 2;

/// Datagrams per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 64;
/// Batches of datagrams read per UDP wakeup before other sources get their turn.
const UDP_ROUNDS: usize = 16;
/// ... of the main UDP socket while peers have sockets of their own: what arrives there is
/// then new peers, moved peers or a flood, and it must not starve the known peers' sockets.
/// When its last batch was mostly unauthentic (a flood), it gets one batch per millisecond:
/// 64,000 datagrams a second, a tenth of a core of AEAD checks at most.
const CONTENDED_ROUNDS: usize = 1;
/// Connections accepted per wakeup.
const ACCEPT_CAP: usize = 64;
/// How long accepting pauses after running out of file descriptors.
const ACCEPT_BACKOFF: Millis = 100;
/// Scratch space for one pass of TCP reads or KCP receives.
const SCRATCH: usize = 64 * 1024;
/// Entries in the table that limits RESETs to unknown conversations to one a second each.
const RESET_LIMIT_SLOTS: usize = 1024;

/// UDP socket buffer asked for when the config says 0 ("automatic"). One KCP window of 256
/// full segments is 350 KB; Linux's default 208 KiB receive buffer drops the tail of every
/// such burst (27% of a 4 MiB transfer on loopback). The kernel clamps the request to
/// `net.core.rmem_max`/`wmem_max`, and the log shows what was granted.
const AUTO_UDP_BUF: usize = 4 << 20;

/// What the loop needs from the configuration, resolved once.
pub struct Settings {
    /// Where to bind the UDP socket, in order of preference (`":port"` gives `[::]` then
    /// `0.0.0.0`, so a host without IPv6 still binds).
    pub kcp_bind: Vec<SocketAddr>,
    pub kcp_connect: Option<SocketAddr>,
    /// The server's address as configured, for re-resolution after a silence.
    pub kcp_connect_spec: Option<crate::config::Addr>,
    pub listen: Vec<SocketAddr>,
    pub connect: Option<SocketAddr>,
    pub udp_opts: SockOpts,
    pub tcp_listen_opts: SockOpts,
    pub tcp_nodelay: bool,
    pub tcp_keepalive: bool,
    pub tcp_sndbuf: usize,
    pub tcp_rcvbuf: usize,
    pub kcp_v4: KcpConfig,
    pub kcp_v6: KcpConfig,
    /// kcptun-libev's `kcp.flush`: 0 periodic only, 1 flush after sending, 2 also after input.
    pub flush: u8,
    pub timeouts: Timeouts,
    /// UDP keepalive PING period (client), 0 = off.
    pub ping: Millis,
    pub max_sessions: usize,
    pub max_dials: usize,
    /// Server: dedicated UDP sockets for at most this many peers (0 = off).
    pub peer_sockets: usize,
    pub udp_gso: bool,
    pub http_listen: Option<SocketAddr>,
    /// Client: nothing heard from the server for this long = unhealthy, and time to re-open
    /// the UDP socket (kcptun-libev: clamp(keepalive * 3 + 4, 10, 1800) s).
    pub peer_silence: Millis,
    pub mode: &'static str,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        let overhead = cfg.method.overhead();
        let secs = |s: u32| u64::from(s) * 1000;
        let addr = |a: &Option<crate::config::Addr>| a.as_ref().map(|a| a.addr());
        let all =
            |a: &Option<crate::config::Addr>| a.as_ref().map_or(Vec::new(), |a| a.addrs.clone());
        Settings {
            kcp_bind: all(&cfg.kcp_bind),
            kcp_connect: addr(&cfg.kcp_connect),
            kcp_connect_spec: cfg.kcp_connect.clone(),
            listen: all(&cfg.listen),
            connect: addr(&cfg.connect),
            udp_opts: SockOpts {
                reuseport: cfg.udp.reuseport,
                sndbuf: match cfg.udp.sndbuf {
                    0 => AUTO_UDP_BUF,
                    n => n as usize,
                },
                rcvbuf: match cfg.udp.rcvbuf {
                    0 => AUTO_UDP_BUF,
                    n => n as usize,
                },
                netdev: cfg.netdev.clone(),
            },
            tcp_listen_opts: SockOpts {
                reuseport: cfg.tcp.reuseport,
                ..SockOpts::default()
            },
            tcp_nodelay: cfg.tcp.nodelay,
            tcp_keepalive: cfg.tcp.keepalive,
            tcp_sndbuf: cfg.tcp.sndbuf as usize,
            tcp_rcvbuf: cfg.tcp.rcvbuf as usize,
            kcp_v4: cfg.kcp_config(false, overhead),
            kcp_v6: cfg.kcp_config(true, overhead),
            flush: cfg.kcp.flush.min(2) as u8,
            timeouts: Timeouts {
                dial: secs(30),
                idle: secs(cfg.timeout),
                keepalive: secs(cfg.timeout.saturating_sub(4)),
                linger: secs(cfg.linger),
                time_wait: secs(cfg.time_wait),
            },
            ping: secs(cfg.keepalive),
            max_sessions: cfg.max_sessions as usize,
            max_dials: cfg.max_dials as usize,
            peer_sockets: cfg.udp.peer_sockets as usize,
            udp_gso: cfg.udp.gso,
            http_listen: addr(&cfg.http_listen),
            peer_silence: secs((cfg.keepalive * 3 + 4).clamp(10, 1800)),
            mode: cfg.mode.name(),
        }
    }
}

/// Sends packets as sealed datagrams through one batch; everything the KCP output callback
/// needs, kept apart from the session slab so both can be borrowed at once.
struct Output {
    udp: UdpSocket,
    /// Send with UDP GSO; cleared for good when the kernel refuses it.
    gso: bool,
    framer: Framer,
    tx: Batch,
    stats: Stats,
    /// When the client last sent anything to its server (for the UDP keepalive).
    last_tx: Millis,
    now: Millis,
}

impl Output {
    /// Seals `packet` (at most `max_plain` bytes) into the batch for `to`; sends the batch
    /// when it is full.
    fn send(&mut self, packet: &[u8], max_plain: usize, to: &SocketAddr) {
        if self.tx.is_full() {
            self.send_batch();
        }
        let slot = self.tx.next_slot();
        let len = packet.len();
        if len + self.framer.overhead() + 15 > slot.len() {
            self.stats.tx_oversize += 1; // cannot happen with a valid mtu; counted, not fatal
            return;
        }
        slot[..len].copy_from_slice(packet);
        let n = self.framer.seal(slot, len, max_plain.max(len));
        self.tx.push(n, to);
        self.stats.udp_tx_datagrams += 1;
        self.stats.udp_tx_bytes += n as u64;
        self.last_tx = self.now;
    }

    fn send_batch(&mut self) {
        let queued = self.tx.len();
        if queued == 0 {
            return;
        }
        let fd = self.udp.as_raw_fd();
        let (sent, err) = if self.gso {
            self.tx.send_gso(fd)
        } else {
            self.tx.send_to(fd)
        };
        if std::mem::take(&mut self.tx.gso_refused) {
            self.gso = false;
            info!(
                "udp: the kernel refused GSO ({}); sending datagrams one by one",
                err.as_ref().map_or_else(String::new, |e| e.to_string())
            );
        }
        self.stats.udp_tx_dropped += (queued - sent) as u64;
        if let Some(e) = err {
            self.stats.udp_tx_errors += 1;
            debug!("udp send: {e}");
        }
    }
}

pub struct EventLoop {
    poll: Poll,
    st: Settings,
    out: Output,
    listener: Option<TcpListener>,
    signals: SignalFd,
    sessions: Vec<Option<Session>>,
    free_slots: Vec<usize>,
    /// Slots freed in this iteration; reusable from the next one.
    freed_now: Vec<usize>,
    by_key: HashMap<(SocketAddr, u32), usize>,
    timers: TimerHeap,
    /// Sessions touched in this iteration, to flush and reschedule at its end.
    dirty: Vec<usize>,
    dirty_flag: Vec<bool>,
    /// Sessions that stopped at the work cap and want another turn.
    again: Vec<usize>,
    rx: Batch,
    scratch: Vec<u8>,
    start: Instant,
    now: Millis,
    next_conv: u32,
    open_sessions: usize,
    pending_dials: usize,
    accept_paused: bool,
    reset_limit: Vec<(u64, Millis)>,
    /// Client: the last time anything authenticated arrived from the server.
    pub last_server_rx: Millis,
    stopping: bool,
    /// The UDP reader stopped at its cap with datagrams possibly still queued.
    udp_again: bool,
    /// Server under a flood: the ms of the main socket's last (throttled) batch.
    udp_throttled_at: Option<Millis>,
    http: Option<HttpServer>,
    /// Time and counters of the previous `/stats` (for rates): (ms, udp stats, tcp rx, tcp tx).
    last_report: Option<(Millis, Stats, u64, u64)>,
    ping_rtt: Option<u32>,
    /// Server side: open conversations by conv alone, to recognise a client that moved to a
    /// new address (NAT rebinding). `AMBIGUOUS` when two peers use the same conv.
    by_conv: HashMap<u32, (usize, u32)>,
    udp_binds: Vec<SocketAddr>,
    reload: Option<ReloadSource>,
    /// Client: when the PING that checks a silent server left (0 = none outstanding).
    silence_probe_at: Millis,
    /// Accepting stopped at its cap with connections possibly still waiting.
    accept_again: bool,
    throttle: Throttles,
    /// Rate control per peer, shared by the conversations with it (one model of the path,
    /// its pacing rate split between them). Kept after the last one ends, so that a fresh
    /// connection starts near the path's rate instead of probing from zero.
    paths: HashMap<SocketAddr, PathControl>,
    /// Server: sockets of their own for known peers (flood isolation).
    peers: Peers,
}

/// At most one log line per `EVERY` for a condition that can recur many times a second (a
/// limit reached, descriptors exhausted), carrying the count since the previous line.
#[derive(Default)]
struct Throttle {
    last: Option<Millis>,
    count: u64,
}

impl Throttle {
    const EVERY: Millis = 10_000;

    fn hit(&mut self, now: Millis) -> Option<u64> {
        self.count += 1;
        match self.last {
            Some(t) if now < t + Self::EVERY => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.count))
            }
        }
    }
}

#[derive(Default)]
struct Throttles {
    sessions: Throttle,
    dials: Throttle,
    accept: Throttle,
}

const AMBIGUOUS: usize = usize::MAX;

/// What SIGHUP needs: where the configuration came from, and what of it cannot change
/// without a restart.
pub struct ReloadSource {
    pub path: std::path::PathBuf,
    pub verbosity: i32,
    pub current: Config,
}

/// Why a conversation moved, for the log.
fn family_note(a: &SocketAddr, b: &SocketAddr) -> &'static str {
    if a.is_ipv4() == b.is_ipv4() {
        ""
    } else {
        " (address family changed)"
    }
}

impl EventLoop {
    pub fn new(st: Settings, framer: Framer) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let binds = match (st.kcp_bind.is_empty(), st.kcp_connect) {
            (false, _) => st.kcp_bind.clone(),
            (true, Some(SocketAddr::V6(_))) => vec!["[::]:0".parse().unwrap()],
            (true, _) => vec!["0.0.0.0:0".parse().unwrap()],
        };
        // A server gives known peers sockets of their own (peers.rs): its main socket then
        // joins a SO_REUSEPORT group.
        let peer_cap = if st.kcp_connect.is_none() {
            st.peer_sockets
        } else {
            0
        };
        let mut udp = first_ok(
            &binds,
            |a| bind_main_udp(a, &st.udp_opts, peer_cap > 0),
            "udp bind",
        )?;
        let peers = Peers::new(peer_cap, PEER_BASE, udp.local_addr()?, st.udp_opts.clone());
        let udp_binds = binds;
        let (snd, rcv) = sys::buffer_sizes(udp.as_raw_fd());
        info!(
            "udp socket on {} (kernel buffers: send {snd} B, receive {rcv} B)",
            udp.local_addr()?
        );
        poll.registry()
            .register(&mut udp, UDP, Interest::READABLE)?;
        let mut listener = if st.listen.is_empty() {
            None
        } else {
            let l = first_ok(
                &st.listen,
                |a| sys::tcp_listen(a, &st.tcp_listen_opts),
                "listen",
            )?;
            info!("listening on tcp {}", l.local_addr()?);
            Some(l)
        };
        if let Some(l) = listener.as_mut() {
            poll.registry().register(l, LISTENER, Interest::READABLE)?;
        }
        let http = match st.http_listen {
            Some(addr) => {
                let h = HttpServer::bind(&addr, poll.registry(), HTTP_LISTENER, HTTP_BASE)
                    .map_err(|e| io::Error::new(e.kind(), format!("http_listen {addr}: {e}")))?;
                info!("http status on {}", h.local_addr()?);
                Some(h)
            }
            None => None,
        };
        let signals = SignalFd::new(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;
        poll.registry().register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let mut seed = [0u8; 4];
        crate::framing::random_bytes(&mut seed);
        Ok(EventLoop {
            poll,
            out: Output {
                udp,
                gso: st.udp_gso,
                framer,
                tx: Batch::new(BATCH),
                stats: Stats::default(),
                last_tx: 0,
                now: 0,
            },
            st,
            listener,
            signals,
            sessions: Vec::new(),
            free_slots: Vec::new(),
            freed_now: Vec::new(),
            by_key: HashMap::new(),
            timers: TimerHeap::new(),
            dirty: Vec::new(),
            dirty_flag: Vec::new(),
            again: Vec::new(),
            rx: Batch::new(BATCH),
            scratch: vec![0; SCRATCH],
            start: Instant::now(),
            now: 0,
            next_conv: u32::from_ne_bytes(seed),
            open_sessions: 0,
            pending_dials: 0,
            accept_paused: false,
            reset_limit: vec![(0, 0); RESET_LIMIT_SLOTS],
            last_server_rx: 0,
            stopping: false,
            udp_again: false,
            udp_throttled_at: None,
            http,
            last_report: None,
            ping_rtt: None,
            by_conv: HashMap::new(),
            udp_binds,
            reload: None,
            silence_probe_at: 0,
            accept_again: false,
            throttle: Throttles::default(),
            paths: HashMap::new(),
            peers,
        })
    }

    /// Enables SIGHUP reloads from this file.
    pub fn set_reload_source(&mut self, src: ReloadSource) {
        self.reload = Some(src);
    }

    pub fn udp_local_addr(&self) -> io::Result<SocketAddr> {
        self.out.udp.local_addr()
    }

    pub fn stats(&self) -> &Stats {
        &self.out.stats
    }

    fn kcp_now(&self) -> u32 {
        self.now as u32
    }

    fn tick_clock(&mut self) {
        self.now = self.start.elapsed().as_millis() as Millis;
        self.out.now = self.now;
    }

    /// Runs until SIGINT or SIGTERM.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        self.tick_clock();
        if self.st.kcp_connect.is_some() {
            // A PING first: it tells the operator at once whether the server answers.
            self.send_ping();
            self.out.send_batch(); // now, not with the first event
            self.timers
                .set(TIMER_SILENCE, self.now + self.st.peer_silence);
        }
        while !self.stopping {
            let timeout = if !self.again.is_empty()
                || self.udp_again
                || self.accept_again
                || self.peers.any_again()
            {
                Some(Duration::ZERO)
            } else {
                self.timers.peek().map(|(at, _)| {
                    let now = self.start.elapsed().as_millis() as Millis;
                    Duration::from_millis(at.saturating_sub(now))
                })
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.tick_clock();
            // Known peers first: their sockets hold only their own datagrams.
            for i in 0..self.peers.slots() {
                if self.peers.take_again(i) {
                    self.on_peer_udp(i);
                }
            }
            if std::mem::take(&mut self.udp_again) {
                self.on_udp();
            }
            if std::mem::take(&mut self.accept_again) {
                self.on_accept();
            }
            for ev in events.iter() {
                match ev.token() {
                    UDP => self.on_udp(),
                    LISTENER => self.on_accept(),
                    SIGNALS => self.on_signal(),
                    HTTP_LISTENER => self.on_http_accept(),
                    Token(t) if (HTTP_BASE..HTTP_BASE + http::MAX_CLIENTS).contains(&t) => {
                        self.on_http(t - HTTP_BASE)
                    }
                    Token(t) if (PEER_BASE..SESSION_BASE).contains(&t) => {
                        if let Some(i) = self.peers.slot_of(Token(t)) {
                            self.on_peer_udp(i);
                        }
                    }
                    Token(t) if t >= SESSION_BASE => {
                        // An error or hang-up shows itself on the next read or write.
                        let fault = ev.is_error() || ev.is_read_closed() || ev.is_write_closed();
                        self.on_tcp(
                            t - SESSION_BASE,
                            ev.is_readable() || fault,
                            ev.is_writable() || fault,
                        )
                    }
                    _ => {}
                }
            }
            let again = std::mem::take(&mut self.again);
            for &slot in &again {
                self.mark_dirty(slot);
            }
            self.again = again;
            self.again.clear();
            self.run_timers();
            self.finish_iteration();
        }
        self.shutdown();
        Ok(())
    }

    // ----- UDP input -----

    /// The main socket: everything from peers without a socket of their own.
    fn on_udp(&mut self) {
        if self.peers.is_empty() {
            self.udp_throttled_at = None;
        }
        if let Some(at) = self.udp_throttled_at {
            if at == self.now {
                // This millisecond's batch is spent: come back at the next one.
                if self.timers.get(TIMER_UDP).is_none() {
                    self.timers.set(TIMER_UDP, self.now + 1);
                }
                return;
            }
        }
        let rounds = if self.peers.is_empty() {
            UDP_ROUNDS
        } else {
            CONTENDED_ROUNDS
        };
        let fd = self.out.udp.as_raw_fd();
        let (got, authentic, more) = self.read_udp(fd, None, rounds);
        if !self.peers.is_empty() && more && authentic * 4 < got {
            // A full batch of mostly garbage while known peers are served: a flood.
            self.udp_throttled_at = Some(self.now);
            self.timers.set(TIMER_UDP, self.now + 1);
        } else {
            self.udp_throttled_at = None;
            self.udp_again = more;
        }
    }

    /// A known peer's own socket.
    fn on_peer_udp(&mut self, i: usize) {
        let Some(fd) = self.peers.fd(i) else { return };
        let (got, _, more) = self.read_udp(fd, Some(i), UDP_ROUNDS);
        self.peers.after_read(i, got, more, self.now);
    }

    /// Reads and dispatches up to `rounds` batches from `fd`; returns how many datagrams
    /// arrived, how many of them authenticated, and whether the last batch was full
    /// (edge-triggered: more may be queued, so the caller comes back next iteration rather
    /// than wait for an edge that may never come).
    fn read_udp(
        &mut self,
        fd: std::os::fd::RawFd,
        peer: Option<usize>,
        rounds: usize,
    ) -> (usize, usize, bool) {
        // The receive batch is moved out while its datagrams are dispatched, so that the
        // packet handlers can borrow the loop; a zero-slot batch allocates nothing.
        let mut rx = std::mem::replace(&mut self.rx, Batch::new(0));
        let mut got = 0;
        let mut authentic = 0;
        let mut more = true;
        for _ in 0..rounds {
            let n = match rx.recv_from(fd) {
                Ok(0) => {
                    more = false;
                    break;
                }
                Ok(n) => n,
                Err(e) => {
                    more = false;
                    self.out.stats.udp_rx_errors += 1;
                    debug!("udp receive: {e}");
                    break;
                }
            };
            got += n;
            for i in 0..n {
                let (buf, from) = rx.received(i);
                let Some(from) = from else { continue };
                self.out.stats.udp_rx_datagrams += 1;
                self.out.stats.udp_rx_bytes += buf.len() as u64;
                match self.out.framer.open(buf) {
                    Ok(plain) => {
                        authentic += 1;
                        if peer.is_none() {
                            // Authentic: the sender holds the key.
                            if self.peers.ensure(from, self.now, self.poll.registry()) {
                                self.out.stats.peer_sockets_opened += 1;
                                if self.timers.get(TIMER_PEERS).is_none() {
                                    self.timers.set(TIMER_PEERS, self.now + PEER_SWEEP);
                                }
                            }
                        }
                        self.on_packet(&buf[..plain], from)
                    }
                    Err(e) => {
                        match e {
                            OpenError::Length => self.out.stats.drop_short += 1,
                            OpenError::Auth => self.out.stats.drop_auth += 1,
                            OpenError::Replay => self.out.stats.drop_replay += 1,
                        }
                        trace!("drop datagram from {from}: {e}");
                    }
                }
            }
            if n < rx.capacity() {
                more = false;
                break;
            }
        }
        self.rx = rx;
        (got, authentic, more)
    }

    fn on_packet(&mut self, p: &[u8], from: SocketAddr) {
        if p.len() < 4 {
            self.out.stats.drop_malformed += 1;
            return;
        }
        // Client: the server counts as heard when it shows that it hears us (a session-0
        // answer, an ACK) or sends new data. Retransmissions of old data do not count: a
        // server that keeps resending while our datagrams are lost (a NAT mapping gone one
        // way) is exactly the silence after which the client re-opens its socket.
        let from_server = Some(from) == self.st.kcp_connect;
        let conv = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        if conv == 0 {
            if from_server {
                self.last_server_rx = self.now;
            }
            return self.on_session0(p, from);
        }
        let slot = match self.by_key.get(&(from, conv)) {
            Some(&s) => s,
            None => match self.moved_conversation(p, from, conv) {
                Some(s) => s,
                None => match self.accept_conversation(p, from, conv) {
                    Some(s) => s,
                    None => return,
                },
            },
        };
        let now32 = self.kcp_now();
        let sess = self.sessions[slot].as_mut().expect("mapped slot is live");
        if let State::TimeWait { reset: true } = sess.state {
            // A conversation we reset: the peer has not heard yet. Tell it again (limited).
            self.reply_reset(from, conv);
            return;
        }
        let before = kcp_movement(&sess.kcp);
        let heard_before = (sess.kcp.stats().acks_recv, sess.kcp.rcv_nxt());
        let window_was_shut = sess.kcp.remote_wnd() == 0;
        if sess.kcp.input(now32, p).is_err() {
            self.out.stats.drop_malformed += 1;
            return;
        }
        // A window that reopens is progress too: the linger timer must not take the seconds
        // a slow reader kept it shut as the peer's silence (that reset a half-closed upload
        // just as its target read on, with the tail still queued).
        if kcp_movement(&sess.kcp) != before || (window_was_shut && sess.kcp.remote_wnd() > 0) {
            sess.kcp_progress(self.now);
        }
        if from_server && (sess.kcp.stats().acks_recv, sess.kcp.rcv_nxt()) != heard_before {
            self.last_server_rx = self.now;
        }
        self.out.stats.kcp_rx_packets += 1;
        if sess.role == Role::Client && !sess.established {
            sess.established = true;
        }
        // The data moves once per session per iteration (finish_iteration), however many
        // datagrams arrived for it: one TCP write per batch, not one per datagram.
        self.mark_dirty(slot);
    }

    /// An authenticated packet from a new address for a conversation we serve: the client's
    /// NAT (or its WAN address) changed. Move the conversation instead of failing it. Only
    /// authenticated packets get here, a packet that starts a conversation never moves one,
    /// and a conversation moves at most once per `MOVE_GUARD`.
    fn moved_conversation(&mut self, p: &[u8], from: SocketAddr, conv: u32) -> Option<usize> {
        let &(slot, _) = self.by_conv.get(&conv)?;
        // A packet with segment 0 starts a conversation: never a reason to move one.
        if slot == AMBIGUOUS || carries_first_segment(p) {
            return None;
        }
        let sess = self.sessions.get_mut(slot)?.as_mut()?;
        if !sess.is_open() || sess.role != Role::Server {
            return None;
        }
        if self.now < sess.moved_at + MOVE_GUARD && sess.moved_at != 0 {
            self.out.stats.moves_refused += 1;
            return None;
        }
        let old = sess.peer;
        debug!(
            "conv {conv:#010x}: peer moved from {old} to {from}{}",
            family_note(&old, &from)
        );
        sess.peer = from;
        sess.moved_at = self.now.max(1);
        self.by_key.remove(&(old, conv));
        self.by_key.insert((from, conv), slot);
        self.out.stats.peer_moves += 1;
        Some(slot)
    }

    /// Client: nothing heard from the server for the peer-silence time. First a PING: an
    /// idle tunnel with `keepalive` 0 is silent but fine. If that goes unanswered for
    /// `SILENCE_PROBE`, the server's name may point elsewhere now and our NAT mapping may be
    /// gone: resolve it again and re-open the UDP socket (a new source port), then PING, and
    /// send a KEEPALIVE on every open conversation so the server moves each to the new
    /// address at once.
    fn on_silence_timer(&mut self) {
        let silent = self.now.saturating_sub(self.last_server_rx);
        if silent < self.st.peer_silence {
            self.silence_probe_at = 0;
            self.timers
                .set(TIMER_SILENCE, self.last_server_rx + self.st.peer_silence);
            return;
        }
        if self.silence_probe_at == 0 || self.silence_probe_at < self.last_server_rx {
            self.silence_probe_at = self.now.max(1);
            self.send_ping();
            self.timers.set(TIMER_SILENCE, self.now + SILENCE_PROBE);
            return;
        }
        if self.out.stats.udp_reopens == 0 {
            info!(
                "no reply from the server for {} s: resolving it again and re-opening the udp \
                 socket",
                silent / 1000
            );
        } else {
            debug!(
                "server silent for {} s: re-opening the udp socket",
                silent / 1000
            );
        }
        self.out.stats.udp_reopens += 1;
        self.out.send_batch();
        if let Some(spec) = self.st.kcp_connect_spec.clone() {
            // Blocking, but only for names (literals never touch the resolver) and at most
            // once per silence period.
            if spec
                .host
                .as_deref()
                .is_some_and(|h| h.parse::<std::net::IpAddr>().is_err())
            {
                let t = Instant::now();
                match spec.resolve() {
                    Ok(addrs) if !addrs.is_empty() => {
                        let new = addrs[0];
                        if Some(new) != self.st.kcp_connect {
                            info!("server {} now resolves to {new}", spec.spec);
                            self.rekey_client_sessions(new);
                            self.st.kcp_connect = Some(new);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => debug!("resolve {}: {e}", spec.spec),
                }
                debug!(
                    "resolving {} took {} ms",
                    spec.spec,
                    t.elapsed().as_millis()
                );
            }
        }
        // A peer (kcp_bind set) keeps its port: the other side expects it there.
        if self.st.kcp_bind.is_empty() {
            self.reopen_udp();
        }
        self.send_ping();
        self.silence_probe_at = self.now.max(1);
        let now = self.now;
        for slot in 0..self.sessions.len() {
            if let Some(sess) = self.sessions[slot].as_mut() {
                sess.announce_new_address(now);
                self.mark_dirty(slot);
            }
        }
        self.timers
            .set(TIMER_SILENCE, self.now + self.st.peer_silence);
    }

    /// A new client UDP socket, bound for the family of the server's current address (a
    /// name may have moved from IPv4 to IPv6).
    fn reopen_udp(&mut self) {
        let bind: SocketAddr = match self.st.kcp_connect {
            Some(SocketAddr::V6(_)) => "[::]:0".parse().unwrap(),
            _ => "0.0.0.0:0".parse().unwrap(),
        };
        let mut udp = match sys::udp_bind(&bind, &self.st.udp_opts) {
            Ok(u) => u,
            Err(e) => {
                warn!("re-open udp socket on {bind}: {e}");
                return;
            }
        };
        let _ = self.poll.registry().deregister(&mut self.out.udp);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut udp, UDP, Interest::READABLE)
        {
            warn!("register new udp socket: {e}");
            return;
        }
        let local = udp.local_addr().map(|a| a.to_string()).unwrap_or_default();
        self.out.udp = udp;
        self.udp_binds = vec![bind];
        info!("udp socket re-opened on {local}");
    }

    fn rekey_client_sessions(&mut self, new: SocketAddr) {
        for (slot, s) in self.sessions.iter_mut().enumerate() {
            let Some(sess) = s.as_mut() else { continue };
            if sess.role == Role::Client && Some(sess.peer) == self.st.kcp_connect {
                self.by_key.remove(&(sess.peer, sess.conv));
                sess.peer = new;
                self.by_key.insert((new, sess.conv), slot);
            }
        }
    }

    /// An authenticated packet for an unknown (address, conv): open a server-side
    /// conversation when it is the start of one, else answer RESET (at most once a second).
    fn accept_conversation(&mut self, p: &[u8], from: SocketAddr, conv: u32) -> Option<usize> {
        if self.st.connect.is_none() || self.stopping || !is_conversation_start(p) {
            self.out.stats.drop_unknown_conv += 1;
            self.reply_reset(from, conv);
            return None;
        }
        if self.open_sessions >= self.st.max_sessions {
            self.refuse_session();
            return None;
        }
        let kcp = self.new_kcp(conv, from);
        let mut sess = Session::new(conv, from, Role::Server, kcp, self.now);
        sess.set_send_hold(Millis::from(ACK_HOLD));
        let slot = self.insert(sess);
        debug!("conv {conv:#010x}: new conversation from {from}");
        Some(slot)
    }

    fn on_session0(&mut self, p: &[u8], from: SocketAddr) {
        let msg = match Session0::parse(p) {
            Ok(m) => m,
            Err(_) => {
                self.out.stats.drop_malformed += 1;
                return;
            }
        };
        match msg {
            Session0::Ping(ts) => {
                self.send_session0(Session0::Pong(ts), from);
            }
            Session0::Pong(ts) => {
                let rtt = self.kcp_now().wrapping_sub(ts);
                trace!("pong from {from}: rtt {rtt} ms");
                if Some(from) == self.st.kcp_connect && rtt < 600_000 {
                    self.ping_rtt = Some(rtt);
                }
            }
            Session0::Reset(conv) => {
                if let Some(&slot) = self.by_key.get(&(from, conv)) {
                    let sess = self.sessions[slot].as_mut().expect("live");
                    if sess.is_open() {
                        debug!("conv {conv:#010x}: reset by peer");
                        self.close(slot, Close::ResetByPeer);
                    }
                }
            }
            _ => self.out.stats.drop_session0_other += 1,
        }
    }

    fn reply_reset(&mut self, to: SocketAddr, conv: u32) {
        // One entry per (address, conv) hash: a flood of unknown conversations costs a
        // bounded table, and each gets at most one RESET a second.
        let h = hash_key(&to, conv);
        let e = &mut self.reset_limit[(h as usize) % RESET_LIMIT_SLOTS];
        if e.0 == h && self.now < e.1 + 1000 {
            return;
        }
        *e = (h, self.now);
        self.send_session0(Session0::Reset(conv), to);
        self.out.stats.resets_sent += 1;
    }

    fn send_ping(&mut self) {
        if let Some(server) = self.st.kcp_connect {
            self.send_session0(Session0::Ping(self.kcp_now()), server);
        }
        if self.st.ping > 0 {
            self.timers.set(TIMER_PING, self.out.last_tx + self.st.ping);
        }
    }

    /// Seals a session-0 message; padded like kcptun-libev's, up to KCP's mtu.
    fn send_session0(&mut self, msg: Session0, to: SocketAddr) {
        let mut buf = [0u8; 16];
        let n = msg.emit(&mut buf);
        let mtu = match to {
            SocketAddr::V4(_) => self.st.kcp_v4.mtu,
            SocketAddr::V6(_) => self.st.kcp_v6.mtu,
        };
        self.out.send(&buf[..n], mtu, &to);
    }

    // ----- TCP -----

    fn on_accept(&mut self) {
        if self.accept_paused {
            return;
        }
        for _ in 0..ACCEPT_CAP {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            let (stream, addr) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if !matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    // ECONNABORTED and the like: that connection is gone, the next may not be.
                    debug!("accept: {e}");
                    continue;
                }
                Err(e) => {
                    // Out of descriptors or memory: the connection stays in the backlog; try
                    // again shortly instead of spinning on a listener that stays readable.
                    self.out.stats.accept_errors += 1;
                    if let Some(n) = self.throttle.accept.hit(self.now) {
                        warn!(
                            "accept: {e}; accepting pauses for {ACCEPT_BACKOFF} ms at a time \
                             ({n} pauses since the last report)"
                        );
                    }
                    self.accept_paused = true;
                    self.timers.set(TIMER_ACCEPT, self.now + ACCEPT_BACKOFF);
                    return;
                }
            };
            self.new_client_session(stream, addr);
        }
        // More may be waiting: edge-triggered, so come back next iteration (not in this one:
        // a flood of connections must not hold up UDP and the timers).
        self.accept_again = true;
    }

    fn new_client_session(&mut self, mut stream: TcpStream, addr: SocketAddr) {
        let Some(server) = self.st.kcp_connect else {
            return;
        };
        if self.open_sessions >= self.st.max_sessions || self.stopping {
            self.refuse_session();
            return; // dropping the stream closes it
        }
        let conv = self.alloc_conv(server);
        self.tune_tcp(&stream);
        let kcp = self.new_kcp(conv, server);
        let mut sess = Session::new(conv, server, Role::Client, kcp, self.now);
        let slot = self.next_slot();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(SESSION_BASE + slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("register accepted connection: {e}");
            self.free_slots.push(slot);
            return;
        }
        sess.set_send_hold(Millis::from(ACK_HOLD));
        sess.start_client(stream, self.now);
        debug!("conv {conv:#010x}: accepted {addr}");
        self.put(slot, sess);
        self.mark_dirty(slot);
    }

    /// At the session limit: count it, and say so at most once per `Throttle::EVERY`.
    /// (On a server this counts datagrams: each retransmitted first packet of a refused
    /// conversation is refused again.)
    fn refuse_session(&mut self) {
        self.out.stats.refused_sessions += 1;
        if let Some(n) = self.throttle.sessions.hit(self.now) {
            warn!(
                "session limit {} reached: refused {n} since the last report",
                self.st.max_sessions
            );
        }
    }

    /// A KCP engine for a new conversation with `peer`: the settings for its address family
    /// (the MSS differs), sharing rate control with the peer's other conversations.
    fn new_kcp(&mut self, conv: u32, peer: SocketAddr) -> Kcp {
        let cfg = match peer {
            SocketAddr::V4(_) => &self.st.kcp_v4,
            SocketAddr::V6(_) => &self.st.kcp_v6,
        };
        let mut kcp = Kcp::new(conv, cfg);
        kcp.set_ack_hold(ACK_HOLD);
        if !cfg.rate_control {
            return kcp;
        }
        let mtu = cfg.mtu;
        if let Some(idle) = self.paths.get_mut(&peer).filter(|p| p.handles() == 1) {
            // Nobody uses the path: start again from what it knew (rate, RTT, loss, the
            // peer's window), cruising; the old model's rounds are stale.
            *idle = match idle.hint() {
                Some(h) => PathControl::seeded(mtu, h),
                None => PathControl::new(mtu),
            };
        } else if self.paths.len() >= MAX_PATHS && !self.paths.contains_key(&peer) {
            // Bounded: forget the idle paths (the next conversations learn again).
            self.paths.retain(|_, p| p.handles() > 1);
        }
        let path = self
            .paths
            .entry(peer)
            .or_insert_with(|| PathControl::new(mtu));
        kcp.join_path(path);
        if let Some(rtt) = self.ping_rtt.filter(|_| Some(peer) == self.st.kcp_connect) {
            // A path no conversation measured yet: the keepalive pings did (joining a
            // measured path already set it from the path's minimum; this only raises it).
            kcp.expect_rtt(rtt);
        }
        kcp
    }

    /// The `tcp.*` options for an accepted or dialled connection.
    fn tune_tcp(&self, stream: &TcpStream) {
        sys::tune_tcp(
            stream.as_raw_fd(),
            self.st.tcp_nodelay,
            self.st.tcp_keepalive,
            self.st.tcp_sndbuf,
            self.st.tcp_rcvbuf,
        );
    }

    fn alloc_conv(&mut self, peer: SocketAddr) -> u32 {
        loop {
            self.next_conv = self.next_conv.wrapping_add(1);
            let c = self.next_conv;
            if c != 0 && !self.by_key.contains_key(&(peer, c)) {
                return c;
            }
        }
    }

    fn start_dial(&mut self, slot: usize) {
        let Some(target) = self.st.connect else {
            return;
        };
        let conv = self.sessions[slot].as_ref().map_or(0, |s| s.conv);
        if self.pending_dials >= self.st.max_dials {
            self.out.stats.refused_dials += 1;
            if let Some(n) = self.throttle.dials.hit(self.now) {
                warn!(
                    "pending dial limit {} reached: refused {n} dials since the last report",
                    self.st.max_dials
                );
            }
            self.close(slot, Close::DialFailed);
            return;
        }
        let mut stream = match TcpStream::connect(target) {
            Ok(s) => s,
            Err(e) => {
                debug!("conv {conv:#010x}: connect {target}: {e}");
                self.out.stats.dial_failures += 1;
                self.close(slot, Close::DialFailed);
                return;
            }
        };
        self.tune_tcp(&stream);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(SESSION_BASE + slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("conv {conv:#010x}: register dialled connection: {e}");
            self.close(slot, Close::DialFailed);
            return;
        }
        debug!("conv {conv:#010x}: dialling {target}");
        self.pending_dials += 1;
        if let Some(s) = self.sessions[slot].as_mut() {
            s.start_dial(stream);
        }
        // A target on this host is connected when connect() returns: the first bytes go to
        // it in this iteration, not after the next poll reports the socket writable.
        self.on_tcp(slot, false, true);
    }

    fn on_tcp(&mut self, slot: usize, readable: bool, writable: bool) {
        let Some(sess) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
            return;
        };
        if !sess.is_open() {
            return;
        }
        let was_dialing = sess.dialing;
        if let Err(why) = sess.on_tcp_event(readable, writable) {
            if was_dialing {
                self.out.stats.dial_failures += 1;
            }
            return self.close(slot, why); // close() settles pending_dials
        }
        if was_dialing && !sess.dialing {
            self.pending_dials -= 1;
            debug!("conv {:#010x}: connected", sess.conv);
        }
        self.mark_dirty(slot);
    }

    /// Moves data both ways for one session and handles what that reveals (a dial to start,
    /// an error that closes it, more work than one turn allows). Called once per dirty
    /// session at the end of an iteration.
    fn pump(&mut self, slot: usize) {
        let now = self.now;
        let Some(sess) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
            return;
        };
        let r = sess
            .pump_kcp_to_tcp(&mut self.scratch, now)
            .and_then(|more_out| Ok(sess.pump_tcp_to_kcp(&mut self.scratch, now)? || more_out));
        match r {
            Err(why) => self.close(slot, why),
            Ok(more) => {
                if more {
                    self.again.push(slot);
                }
                if sess.want_dial {
                    self.start_dial(slot);
                }
            }
        }
    }

    // ----- status over HTTP -----

    fn on_http_accept(&mut self) {
        let Some(h) = self.http.as_mut() else { return };
        let mut armed = Vec::new();
        h.accept(self.poll.registry(), self.now, &mut armed);
        for (i, at) in armed {
            self.timers.set(TIMER_HTTP_BASE + i, at);
        }
    }

    fn on_http(&mut self, i: usize) {
        let Some(h) = self.http.as_mut() else { return };
        let Step::Request(req) = h.on_event(self.poll.registry(), i) else {
            return;
        };
        let mut resp = self.http_answer(&req);
        if req.method == "HEAD" {
            if let Some(end) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
                resp.truncate(end + 4);
            }
        }
        if let Some(h) = self.http.as_mut() {
            h.respond(self.poll.registry(), i, resp);
        }
    }

    fn http_answer(&mut self, req: &http::Request) -> Vec<u8> {
        let get = req.method == "GET" || req.method == "HEAD";
        match req.path.as_str() {
            "/healthy" if get => match self.unhealthy() {
                None => http::response(200, "text/plain", "ok\n"),
                Some(why) => http::response(503, "text/plain", &format!("{why}\n")),
            },
            "/stats" if get || req.method == "POST" => {
                let snap = self.snapshot(true);
                let prev = self
                    .last_report
                    .as_ref()
                    .map(|(ms, st, rx, tx)| (*ms, st, *rx, *tx));
                let body = report::text(&snap, prev);
                let (tcp_rx, tcp_tx) = (snap.tcp_rx, snap.tcp_tx);
                self.last_report = Some((self.now, self.out.stats.clone(), tcp_rx, tcp_tx));
                http::response(200, "text/plain; charset=utf-8", &body)
            }
            "/metrics" if get => {
                let snap = self.snapshot(false);
                http::response(200, "text/plain; version=0.0.4", &report::prometheus(&snap))
            }
            "/healthy" | "/stats" | "/metrics" => {
                http::response(405, "text/plain", "method not allowed\n")
            }
            _ => http::response(404, "text/plain", "not found\n"),
        }
    }

    /// Why the process is not healthy, or `None`. A server is healthy while it serves; a
    /// client while it has heard from its server within the peer-silence time.
    fn unhealthy(&self) -> Option<String> {
        self.st.kcp_connect?;
        let silence = self.now.saturating_sub(self.last_server_rx);
        if self.last_server_rx == 0 && self.now < self.st.peer_silence {
            return None; // just started: give the first PING its chance
        }
        // Silence alone is not a fault (an idle tunnel with `keepalive` 0 sends nothing);
        // an unanswered PING is.
        let probe_failed = self.silence_probe_at != 0
            && self.silence_probe_at > self.last_server_rx
            && self.now >= self.silence_probe_at + SILENCE_PROBE;
        (silence >= self.st.peer_silence && (self.st.ping > 0 || probe_failed))
            .then(|| format!("no reply from the server for {} s", silence / 1000))
    }

    fn snapshot(&self, rows: bool) -> Snapshot<'_> {
        let mut kcp = self.out.stats.kcp_gone;
        let (mut tcp_rx, mut tcp_tx) = (self.out.stats.tcp_rx_bytes, self.out.stats.tcp_tx_bytes);
        let mut list = Vec::new();
        let (mut open, mut time_wait, mut omitted) = (0, 0, 0);
        for sess in self.sessions.iter().flatten() {
            kcp.add(sess.kcp.stats());
            tcp_rx += sess.tcp_rx_bytes;
            tcp_tx += sess.tcp_tx_bytes;
            if sess.is_open() {
                open += 1;
            } else {
                time_wait += 1;
            }
            if !rows || list.len() >= STATS_ROWS {
                omitted += 1;
                continue;
            }
            list.push(Row {
                conv: sess.conv,
                state: sess.state_name(),
                peer: sess.peer,
                age_ms: self.now.saturating_sub(sess.created),
                rtt: sess.kcp.rtt(),
                rto: sess.kcp.rto(),
                waitsnd: sess.kcp.waitsnd(),
                tcp_rx: sess.tcp_rx_bytes,
                tcp_tx: sess.tcp_tx_bytes,
            });
        }
        Snapshot {
            mode: self.st.mode,
            uptime_ms: self.now,
            stats: &self.out.stats,
            kcp,
            tcp_rx,
            tcp_tx,
            open,
            time_wait,
            pending_dials: self.pending_dials,
            peer_sockets: self.peers.len(),
            server_silence_ms: self
                .st
                .kcp_connect
                .map(|_| self.now.saturating_sub(self.last_server_rx)),
            ping_rtt_ms: self.ping_rtt,
            rows: list,
            rows_omitted: omitted,
        }
    }

    // ----- timers -----

    fn run_timers(&mut self) {
        while let Some(key) = self.timers.pop_due(self.now) {
            match key {
                TIMER_PING => {
                    if self.now >= self.out.last_tx + self.st.ping {
                        self.send_ping();
                    } else {
                        self.timers.set(TIMER_PING, self.out.last_tx + self.st.ping);
                    }
                }
                TIMER_ACCEPT => {
                    self.accept_paused = false;
                    self.on_accept();
                }
                TIMER_SILENCE => self.on_silence_timer(),
                TIMER_UDP => self.on_udp(),
                TIMER_PEERS => {
                    self.peers.sweep(self.now, self.poll.registry());
                    if !self.peers.is_empty() {
                        self.timers.set(TIMER_PEERS, self.now + PEER_SWEEP);
                    }
                }
                k if k < TIMER_BASE => {
                    if let Some(h) = self.http.as_mut() {
                        h.expire(self.poll.registry(), k - TIMER_HTTP_BASE, self.now);
                    }
                }
                k => self.on_session_timer(k - TIMER_BASE),
            }
        }
    }

    fn on_session_timer(&mut self, slot: usize) {
        let now = self.now;
        let Some(sess) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
            return;
        };
        let (at, why) = sess.protocol_deadline(&self.st.timeouts);
        if now >= at {
            if let Some(why) = why {
                if sess.is_open() {
                    debug!("conv {:#010x}: {why:?}", sess.conv);
                    return self.close(slot, why);
                }
                return self.remove(slot);
            }
        }
        sess.keepalive_due(now, &self.st.timeouts);
        trace!(
            "conv {:#010x}: timer; kcp: {}",
            sess.conv,
            sess.kcp.describe()
        );
        if sess.is_open() && sess.kcp.is_dead() {
            debug!("conv {:#010x}: link dead", sess.conv);
            return self.close(slot, Close::Timeout("link dead"));
        }
        self.mark_dirty(slot);
    }

    fn on_signal(&mut self) {
        while let Some(sig) = self.signals.next() {
            match sig {
                libc::SIGHUP => self.reload(),
                _ => {
                    info!("signal {sig}: shutting down");
                    self.stopping = true;
                }
            }
        }
    }

    /// SIGHUP: read the configuration file again. The log level, KCP settings and timers
    /// (for new conversations), limits, TCP options and the addresses of `connect` and
    /// `kcp_connect` (resolved again) take effect; a different mode, method, key, listening
    /// address or log sink needs a restart and is refused. An invalid file changes nothing.
    fn reload(&mut self) {
        let Some(src) = self.reload.take() else {
            info!("SIGHUP: no configuration file to reload");
            return;
        };
        if let Some(new) = self.reload_from(&src) {
            self.reload = Some(ReloadSource {
                current: new,
                ..src
            });
        } else {
            self.reload = Some(src);
        }
    }

    /// Applies the file named by `src` if it can be; returns the new configuration.
    fn reload_from(&mut self, src: &ReloadSource) -> Option<Config> {
        let new = match Config::from_file(&src.path) {
            Ok(c) => c,
            Err(e) => {
                error!(
                    "reload {}: {e}; keeping the running configuration",
                    src.path.display()
                );
                return None;
            }
        };
        let old = &src.current;
        let key_changed = match (old.key(), new.key()) {
            (Ok(a), Ok(b)) => a != b,
            (_, Err(e)) => {
                error!(
                    "reload {}: {e}; keeping the running configuration",
                    src.path.display()
                );
                return None;
            }
            _ => true,
        };
        let mut refused = Vec::new();
        if new.mode != old.mode {
            refused.push("mode");
        }
        if new.method != old.method || key_changed {
            refused.push("method/key");
        }
        if new.listen != old.listen || new.kcp_bind != old.kcp_bind {
            refused.push("listen/kcp_bind");
        }
        if new.http_listen != old.http_listen || new.log != old.log || new.netdev != old.netdev {
            refused.push("http_listen/log/netdev");
        }
        if !refused.is_empty() {
            error!(
                "reload {}: changing {} needs a restart; keeping the running configuration",
                src.path.display(),
                refused.join(", ")
            );
            return None;
        }
        let verbosity = src.verbosity;
        crate::logging::set_level(new.loglevel, verbosity);
        let fresh = Settings::from_config(&new);
        if fresh.kcp_connect != self.st.kcp_connect {
            if let Some(addr) = fresh.kcp_connect {
                info!("reload: server address is now {addr}");
                self.rekey_client_sessions(addr);
            }
        }
        let st = &mut self.st;
        st.kcp_connect = fresh.kcp_connect;
        st.kcp_connect_spec = fresh.kcp_connect_spec;
        st.connect = fresh.connect;
        st.kcp_v4 = fresh.kcp_v4;
        st.kcp_v6 = fresh.kcp_v6;
        st.flush = fresh.flush;
        st.timeouts = fresh.timeouts;
        st.ping = fresh.ping;
        st.peer_silence = fresh.peer_silence;
        st.max_sessions = fresh.max_sessions;
        st.max_dials = fresh.max_dials;
        st.tcp_nodelay = fresh.tcp_nodelay;
        st.tcp_keepalive = fresh.tcp_keepalive;
        st.tcp_sndbuf = fresh.tcp_sndbuf;
        st.tcp_rcvbuf = fresh.tcp_rcvbuf;
        if self.st.ping > 0 && self.st.kcp_connect.is_some() {
            self.timers.set(TIMER_PING, self.out.last_tx + self.st.ping);
        } else {
            self.timers.remove(TIMER_PING);
        }
        info!(
            "reloaded {} (loglevel {}, connect {}, kcp_connect {})",
            src.path.display(),
            new.loglevel,
            new.connect
                .as_ref()
                .map_or("-".to_string(), |a| a.to_string()),
            new.kcp_connect
                .as_ref()
                .map_or("-".to_string(), |a| a.to_string())
        );
        Some(new)
    }

    // ----- end of iteration -----

    fn finish_iteration(&mut self) {
        let now32 = self.kcp_now();
        // By index: handling a slot can mark it (or another) dirty again, e.g. when it
        // closes; those entries are appended and handled in this same pass, so no flag is
        // left set behind the list's back.
        let mut i = 0;
        while i < self.dirty.len() {
            let slot = self.dirty[i];
            i += 1;
            self.dirty_flag[slot] = false;
            self.pump(slot);
            let Some(sess) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
                continue;
            };
            let out = &mut self.out;
            let peer = sess.peer;
            let mtu = sess.kcp.mss() + crate::kcp::OVERHEAD;
            if let State::TimeWait { reset: true } = sess.state {
                // Reset: the peer was told; nothing of this conversation goes out again.
            } else if sess.held_until(self.now).is_some() {
                // DIAL waits for the first bytes, or an EOF for others (reschedule wakes it
                // when the wait is over).
            } else if self.st.flush > 0 || !sess.is_open() {
                sess.kcp.flush(now32, |pkt| out.send(pkt, mtu, &peer));
            } else {
                // kcp.flush 0: only KCP's own interval timer sends.
                sess.kcp.update(now32, |pkt| out.send(pkt, mtu, &peer));
            }
            if sess.is_done() {
                debug!(
                    "conv {:#010x}: closed (kcp: {})",
                    sess.conv,
                    sess.kcp.describe()
                );
                self.close(slot, Close::Done);
            }
            self.reschedule(slot);
        }
        self.dirty.clear();
        self.out.send_batch();
        // Slots freed in this iteration become reusable now that its events are spent.
        self.free_slots.append(&mut self.freed_now);
    }

    fn reschedule(&mut self, slot: usize) {
        let Some(sess) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
            return;
        };
        if !sess.stuck_logged && sess.is_open() {
            if let Some((sn, xmit)) = sess.kcp.oldest_unacked().filter(|s| s.1 >= STUCK_XMIT) {
                // Loss this persistent is no longer random: a congested or one-way path.
                // Once per conversation, with the sender's state, for the operator.
                sess.stuck_logged = true;
                info!(
                    "conv {:#010x}: segment {sn} sent {xmit} times without an acknowledgement \
                     (kcp: {})",
                    sess.conv,
                    sess.kcp.describe()
                );
            }
        }
        let now32 = self.now as u32;
        let (proto_at, _) = sess.protocol_deadline(&self.st.timeouts);
        let at = if let State::TimeWait { reset: true } = sess.state {
            proto_at // KCP is silent after a reset
        } else if let Some(until) = sess.held_until(self.now) {
            proto_at.min(until)
        } else {
            let kcp_delay = (sess.kcp.check(now32).wrapping_sub(now32) as i32).max(0);
            proto_at.min(self.now + kcp_delay as u64)
        };
        self.timers.set(TIMER_BASE + slot, at);
    }

    fn mark_dirty(&mut self, slot: usize) {
        if slot >= self.dirty_flag.len() {
            self.dirty_flag.resize(slot + 1, false);
        }
        if !self.dirty_flag[slot] {
            self.dirty_flag[slot] = true;
            self.dirty.push(slot);
        }
    }

    // ----- slab -----

    fn next_slot(&mut self) -> usize {
        self.free_slots.pop().unwrap_or_else(|| {
            self.sessions.push(None);
            self.sessions.len() - 1
        })
    }

    fn put(&mut self, slot: usize, sess: Session) {
        self.by_key.insert((sess.peer, sess.conv), slot);
        if sess.role == Role::Server {
            // Two clients may pick the same conv: then nobody moves on it (count > 1).
            self.by_conv
                .entry(sess.conv)
                .and_modify(|e| *e = (AMBIGUOUS, e.1 + 1))
                .or_insert((slot, 1));
        }
        self.sessions[slot] = Some(sess);
        self.open_sessions += 1;
        self.out.stats.sessions_opened += 1;
    }

    fn insert(&mut self, sess: Session) -> usize {
        let slot = self.next_slot();
        self.put(slot, sess);
        slot
    }

    /// Ends the open phase of a session: tells the peer if needed, closes TCP, TIME_WAIT.
    fn close(&mut self, slot: usize, why: Close) {
        let now = self.now;
        let Some(sess) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
            return;
        };
        if !sess.is_open() {
            return;
        }
        if sess.dialing {
            self.pending_dials -= 1;
        }
        if let Some(tcp) = sess.tcp.as_mut() {
            let _ = self.poll.registry().deregister(tcp);
        }
        match why {
            Close::Done => {}
            Close::Timeout(what) => debug!(
                "conv {:#010x}: {what} (kcp: {})",
                sess.conv,
                sess.kcp.describe()
            ),
            _ => debug!(
                "conv {:#010x}: closing: {why:?} (kcp: {})",
                sess.conv,
                sess.kcp.describe()
            ),
        }
        let (conv, peer) = (sess.conv, sess.peer);
        self.out.stats.tcp_rx_bytes += sess.tcp_rx_bytes;
        self.out.stats.tcp_tx_bytes += sess.tcp_tx_bytes;
        sess.tcp_rx_bytes = 0;
        sess.tcp_tx_bytes = 0;
        sess.close(why, now);
        if why != Close::Done {
            // A reset conversation never sends again: give its queues back now instead of
            // holding up to two windows of segments for the whole of TIME_WAIT.
            self.out.stats.kcp_gone.add(sess.kcp.stats());
            sess.kcp = Kcp::new(conv, &KcpConfig::default());
        }
        self.open_sessions -= 1;
        if why.tells_peer() {
            self.send_session0(Session0::Reset(conv), peer);
            self.out.stats.resets_sent += 1;
        }
        self.mark_dirty(slot);
    }

    /// Forgets a session whose TIME_WAIT ended.
    fn remove(&mut self, slot: usize) {
        if let Some(sess) = self.sessions.get_mut(slot).and_then(|s| s.take()) {
            self.out.stats.kcp_gone.add(sess.kcp.stats());
            self.by_key.remove(&(sess.peer, sess.conv));
            if sess.role == Role::Server {
                self.release_conv(sess.conv);
            }
            self.timers.remove(TIMER_BASE + slot);
            if let Some(f) = self.dirty_flag.get_mut(slot) {
                *f = false;
            }
            self.freed_now.push(slot);
            trace!("conv {:#010x}: forgotten", sess.conv);
        }
    }

    fn release_conv(&mut self, conv: u32) {
        let Some(e) = self.by_conv.get_mut(&conv) else {
            return;
        };
        e.1 -= 1;
        match e.1 {
            0 => {
                self.by_conv.remove(&conv);
            }
            1 => {
                // Rare (two clients chose the same conv): find the one left.
                let left = self.sessions.iter().position(|s| {
                    s.as_ref()
                        .is_some_and(|s| s.conv == conv && s.role == Role::Server)
                });
                e.0 = left.unwrap_or(AMBIGUOUS);
            }
            _ => {}
        }
    }

    fn shutdown(&mut self) {
        self.tick_clock();
        let live: Vec<usize> = (0..self.sessions.len())
            .filter(|&s| self.sessions[s].as_ref().is_some_and(|x| x.is_open()))
            .collect();
        for slot in live {
            self.close(slot, Close::Shutdown);
        }
        self.out.send_batch();
        info!(
            "stopped: {} conversations served; counters: {:?}",
            self.out.stats.sessions_opened, self.out.stats
        );
    }
}

/// A packet can open a conversation only if it carries a PUSH and its sender has seen
/// nothing from us yet (una 0 on every segment): a packet of a conversation the server has
/// forgotten (after a restart) gets a RESET instead of a half-dead conversation.
fn is_conversation_start(p: &[u8]) -> bool {
    let mut off = 0;
    let mut push = false;
    while p.len() - off >= 24 {
        let h = &p[off..off + 24];
        let cmd = h[4];
        let una = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
        let len = u32::from_be_bytes([h[20], h[21], h[22], h[23]]) as usize;
        if una != 0 {
            return false;
        }
        if cmd == 81 {
            push = true;
        }
        off += 24;
        if len > p.len() - off {
            break;
        }
        off += len;
    }
    push
}

/// Binds the first address that works; the error names the last address tried.
/// The main UDP socket. With peer sockets it joins a `SO_REUSEPORT` group, which would also
/// let another process share the port unnoticed; a plain bind first makes sure the port is
/// free (unless the operator asked for `udp.reuseport`).
fn bind_main_udp(addr: &SocketAddr, opts: &SockOpts, group: bool) -> io::Result<UdpSocket> {
    if !group || opts.reuseport {
        return sys::udp_bind(addr, opts);
    }
    let probe = sys::udp_bind(addr, opts)?;
    let addr = probe.local_addr()?;
    drop(probe);
    let opts = SockOpts {
        reuseport: true,
        ..opts.clone()
    };
    sys::udp_bind(&addr, &opts)
}

fn first_ok<T>(
    addrs: &[SocketAddr],
    f: impl Fn(&SocketAddr) -> io::Result<T>,
    what: &str,
) -> io::Result<T> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: no address"));
    for a in addrs {
        match f(a) {
            Ok(x) => return Ok(x),
            Err(e) => last = io::Error::new(e.kind(), format!("{what} {a}: {e}")),
        }
    }
    Err(last)
}

/// Whether the packet carries segment 0 of a conversation (a PUSH with sn 0).
fn carries_first_segment(p: &[u8]) -> bool {
    let mut off = 0;
    while p.len() - off >= 24 {
        let h = &p[off..off + 24];
        let sn = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        if h[4] == 81 && sn == 0 {
            return true;
        }
        let len = u32::from_be_bytes([h[20], h[21], h[22], h[23]]) as usize;
        off += 24;
        if len > p.len() - off {
            break;
        }
        off += len;
    }
    false
}

/// A number that changes whenever KCP accepts an ACK or a data segment.
fn kcp_movement(kcp: &Kcp) -> u64 {
    let s = kcp.stats();
    s.acks_recv.wrapping_add(s.segs_recv)
}

fn hash_key(addr: &SocketAddr, conv: u32) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    addr.hash(&mut h);
    conv.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(cmd: u8, sn: u32, una: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&0x1234u32.to_be_bytes());
        v.extend_from_slice(&[cmd, 0, 1, 0]);
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&sn.to_be_bytes());
        v.extend_from_slice(&una.to_be_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn conversation_start_needs_push_and_una_zero() {
        assert!(is_conversation_start(&seg(81, 0, 0, b"\0\0\0\x04")));
        let mut two = seg(82, 0, 0, b"");
        two.extend(seg(81, 1, 0, b"xyz"));
        assert!(is_conversation_start(&two));
        assert!(!is_conversation_start(&seg(82, 0, 0, b"")));
        assert!(!is_conversation_start(&seg(81, 5, 3, b"late")));
        // An absurd length is not a panic.
        let mut bad = seg(81, 0, 0, b"");
        bad[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(is_conversation_start(&bad));
        assert!(!is_conversation_start(&[0u8; 10]));
    }
}
