//! Process-wide counters kept on the data path.
//!
//! Plain integers, bumped without allocation or atomics (one thread). The operations layer
//! reads them for `/stats` and `/metrics`; the tests read them to prove that hostile
//! datagrams were dropped for the right reason.

/// Every counter only grows; rates are derived by whoever reads them.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub udp_rx_datagrams: u64,
    pub udp_rx_bytes: u64,
    pub udp_tx_datagrams: u64,
    pub udp_tx_bytes: u64,
    /// Datagrams the kernel refused (full socket buffer); KCP retransmits them.
    pub udp_tx_dropped: u64,
    pub udp_tx_errors: u64,
    pub udp_rx_errors: u64,
    pub tx_oversize: u64,
    /// Dropped: shorter than the AEAD overhead (or cut short by the kernel).
    pub drop_short: u64,
    /// Dropped: failed authentication.
    pub drop_auth: u64,
    /// Dropped: authentic, but its nonce was seen before.
    pub drop_replay: u64,
    /// Dropped: authentic but not a valid KCP packet or session-0 message.
    pub drop_malformed: u64,
    /// Dropped: for a conversation we do not have (answered with a rate-limited RESET).
    pub drop_unknown_conv: u64,
    /// Session-0 messages we parse but do not act on (rendezvous).
    pub drop_session0_other: u64,
    pub kcp_rx_packets: u64,
    pub resets_sent: u64,
    pub sessions_opened: u64,
    /// Conversations refused at `max_sessions`. On a server this counts datagrams: every
    /// retransmission of a refused conversation's first packet is refused again.
    pub refused_sessions: u64,
    pub refused_dials: u64,
    pub dial_failures: u64,
    pub accept_errors: u64,
    /// Conversations moved to a client's new address (NAT rebinding), and moves refused
    /// because the conversation had moved less than a second before.
    pub peer_moves: u64,
    pub moves_refused: u64,
    /// Server: UDP sockets opened for known peers (flood isolation, peers.rs).
    pub peer_sockets_opened: u64,
    /// Client: UDP socket re-opened after the server went silent.
    pub udp_reopens: u64,
    /// TCP payload bytes of closed sessions (live ones keep their own until they close).
    pub tcp_rx_bytes: u64,
    pub tcp_tx_bytes: u64,
    /// KCP counters of conversations already forgotten (live ones keep their own).
    pub kcp_gone: KcpTotals,
}

/// KCP counters summed over conversations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KcpTotals {
    pub segs_sent: u64,
    pub retrans_timeout: u64,
    pub retrans_fast: u64,
    pub segs_recv: u64,
    /// Extra copies of ACK datagrams (`kcp.ack_copies`).
    pub ack_copies: u64,
}

impl KcpTotals {
    pub fn add(&mut self, s: &crate::kcp::KcpStats) {
        self.segs_sent += s.segs_sent;
        self.retrans_timeout += s.retrans_timeout;
        self.retrans_fast += s.retrans_fast;
        self.segs_recv += s.segs_recv;
        self.ack_copies += s.ack_copies_sent;
    }
}
