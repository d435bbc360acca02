//! Dedicated UDP sockets for known peers (server side): flood isolation.
//!
//! Everything sent to the server's port lands in one socket queue. A flood of garbage fills
//! that queue faster than anyone can authenticate it, and the kernel then drops honest
//! datagrams with the garbage. So once a peer has proved it holds the key (a datagram from
//! it authenticated), the server opens a socket for it alone: bound to the same address in
//! the main socket's `SO_REUSEPORT` group and connected to the peer. Linux delivers the
//! peer's datagrams to the connected socket (its lookup score is higher), so they queue apart
//! from the flood, and the event loop reads those sockets first and the main socket with a
//! small budget while peers are being served.
//!
//! This module owns the sockets, their tokens and their lifetime (at most `cap` of them; the
//! least recently heard one makes room for a new peer, and one silent for [`IDLE`] is closed).
//! Replies still leave through the main socket: same source address and port, so the peer
//! cannot tell the difference. Nothing here is on the wire.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use log::{debug, info};
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use crate::sys::{self, SockOpts};
use crate::timer::Millis;

/// A peer socket nothing arrived on for this long is closed (its peer moved or left).
pub const IDLE: Millis = 120_000;

struct PeerSock {
    sock: UdpSocket,
    peer: SocketAddr,
    last_rx: Millis,
    /// The last read stopped at its cap: read again without waiting for an edge.
    again: bool,
}

pub struct Peers {
    cap: usize,
    /// Token of slot `i` is `base + i`.
    base: usize,
    local: SocketAddr,
    opts: SockOpts,
    slots: Vec<Option<PeerSock>>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Set after a failure that will not go away (no `SO_REUSEPORT`, say): stop trying.
    disabled: bool,
}

impl Peers {
    /// `cap` 0 disables dedicated sockets.
    pub fn new(cap: usize, base: usize, local: SocketAddr, opts: SockOpts) -> Peers {
        Peers {
            cap,
            base,
            local,
            opts,
            slots: Vec::new(),
            by_addr: HashMap::new(),
            disabled: cap == 0,
        }
    }

    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    /// The slot of a token, if it is one of ours.
    pub fn slot_of(&self, token: Token) -> Option<usize> {
        let i = token.0.checked_sub(self.base)?;
        (i < self.cap).then_some(i)
    }

    pub fn fd(&self, i: usize) -> Option<RawFd> {
        self.slots.get(i)?.as_ref().map(|p| p.sock.as_raw_fd())
    }

    /// Number of slots (open or not), for walking them by index.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Whether any socket's last read stopped at the work cap.
    pub fn any_again(&self) -> bool {
        self.slots.iter().flatten().any(|p| p.again)
    }

    /// Whether slot `i`'s last read stopped at the work cap; clears the mark.
    pub fn take_again(&mut self, i: usize) -> bool {
        match self.slots.get_mut(i) {
            Some(Some(p)) => std::mem::take(&mut p.again),
            _ => false,
        }
    }

    /// Records what a read of slot `i` found.
    pub fn after_read(&mut self, i: usize, got: usize, again: bool, now: Millis) {
        if let Some(Some(p)) = self.slots.get_mut(i) {
            if got > 0 {
                p.last_rx = now;
            }
            p.again = again;
        }
    }

    /// Makes sure `peer`, which just sent an authentic datagram to the main socket, has a
    /// socket of its own. True when it opened one.
    pub fn ensure(&mut self, peer: SocketAddr, now: Millis, registry: &Registry) -> bool {
        if self.disabled || self.by_addr.contains_key(&peer) {
            return false;
        }
        let i = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.slots.len() < self.cap => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => {
                // Full: the least recently heard peer makes room.
                let (i, _) = self
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.as_ref().map(|p| (i, p.last_rx)))
                    .min_by_key(|&(_, t)| t)
                    .expect("a full table has sockets");
                self.close(i, registry);
                i
            }
        };
        match self.open(peer, i, registry) {
            Ok(sock) => {
                self.slots[i] = Some(PeerSock {
                    sock,
                    peer,
                    last_rx: now,
                    again: false,
                });
                self.by_addr.insert(peer, i);
                debug!("udp: own socket for peer {peer} ({} open)", self.len());
                true
            }
            Err(e) => {
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EADDRINUSE | libc::ENOPROTOOPT | libc::EINVAL)
                ) {
                    self.disabled = true;
                    info!("udp: no dedicated peer sockets ({e}); all peers share one socket queue");
                } else {
                    debug!("udp: own socket for peer {peer}: {e}");
                }
                false
            }
        }
    }

    fn open(&self, peer: SocketAddr, i: usize, registry: &Registry) -> io::Result<UdpSocket> {
        let mut sock = sys::udp_peer_socket(&self.local, &peer, &self.opts)?;
        registry.register(&mut sock, Token(self.base + i), Interest::READABLE)?;
        Ok(sock)
    }

    fn close(&mut self, i: usize, registry: &Registry) {
        if let Some(mut p) = self.slots[i].take() {
            let _ = registry.deregister(&mut p.sock);
            self.by_addr.remove(&p.peer);
            debug!("udp: closed the socket of peer {}", p.peer);
        }
    }

    /// Closes the sockets of peers silent for [`IDLE`]. Datagrams still queued on one are
    /// lost with it; the peer has been silent, so there are none worth keeping.
    pub fn sweep(&mut self, now: Millis, registry: &Registry) {
        for i in 0..self.slots.len() {
            let idle = matches!(&self.slots[i], Some(p) if now.saturating_sub(p.last_rx) >= IDLE);
            if idle {
                self.close(i, registry);
            }
        }
    }
}
