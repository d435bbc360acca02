//! Thin, checked wrappers over the Linux system calls that std and mio do not offer.
//!
//! This module owns: batched UDP I/O (`recvmmsg`/`sendmmsg` over buffers allocated once),
//! socket creation with options that must be set before `bind` (`SO_REUSEPORT`,
//! `SO_BINDTODEVICE`), integer socket options, and a `signalfd` so that signals arrive as
//! readiness events in the one event loop. It is one of the two modules allowed to use
//! `unsafe`; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Turns a C return code into `io::Result`, as mio does.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: callers pass pointers to live, correctly sized objects (see each call site).
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Largest UDP payload a slot holds. Datagrams are at most the configured mtu (<= 1500 in
/// practice); anything longer is truncated by the kernel and then fails authentication.
pub const SLOT: usize = 2048;

/// `UDP_SEGMENT` (linux/udp.h), spelled here since not every libc target exports it.
const UDP_SEGMENT: libc::c_int = 103;
/// Datagrams one GSO send carries at most: 32 x 1400 B stays under the 64 KiB IP limit, and
/// under every kernel's segment cap (64 before 6.x).
const GSO_MAX_SEGS: usize = 32;
const GSO_MAX_BYTES: usize = 60_000;

/// Room for one control message carrying a u16 (CMSG_SPACE(2) is 24 on 64-bit, 16 on 32-bit).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct GsoCtl([u8; 32]);

/// A fixed set of datagram buffers with their addresses, for `recvmmsg` and `sendmmsg`.
///
/// Everything is allocated once. The `mmsghdr`/`iovec` arrays point into `data` and `addrs`,
/// which are never resized, so the pointers stay valid for the life of the batch.
pub struct Batch {
    data: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    lens: Box<[usize]>,
    /// Send side: slots filled so far. Receive side: datagrams received by the last call.
    count: usize,
    /// GSO sends: one header (and control message) per run of datagrams to one address, and
    /// how many datagrams each run carries.
    gso_hdrs: Box<[libc::mmsghdr]>,
    gso_ctl: Box<[GsoCtl]>,
    gso_segs: Box<[usize]>,
    /// Set by a send whose GSO run the kernel refused (no UDP_SEGMENT, a device without
    /// checksum offload): the caller should stop asking for GSO.
    pub gso_refused: bool,
}

impl Batch {
    pub fn new(slots: usize) -> Batch {
        let mut data = vec![0u8; slots * SLOT].into_boxed_slice();
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
        let mut addrs: Box<[libc::sockaddr_storage]> =
            (0..slots).map(|_| unsafe { mem::zeroed() }).collect();
        let mut iovs: Box<[libc::iovec]> = (0..slots)
            .map(|i| libc::iovec {
                iov_base: data[i * SLOT..].as_mut_ptr().cast(),
                iov_len: SLOT,
            })
            .collect();
        let hdrs: Box<[libc::mmsghdr]> = (0..slots)
            .map(|i| {
                // SAFETY: msghdr is plain old data (padding fields differ between libcs, so
                // it is built from zero rather than with a struct literal).
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
                h.msg_hdr.msg_iov = &mut iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        Batch {
            data,
            addrs,
            iovs,
            hdrs,
            lens: vec![0; slots].into_boxed_slice(),
            count: 0,
            // SAFETY: mmsghdr is plain old data; all-zero is valid (filled before each use).
            gso_hdrs: (0..slots).map(|_| unsafe { mem::zeroed() }).collect(),
            gso_ctl: vec![GsoCtl([0; 32]); slots].into_boxed_slice(),
            gso_segs: vec![0; slots].into_boxed_slice(),
            gso_refused: false,
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count == self.hdrs.len()
    }

    /// Received datagram `i`: its bytes (mutable, for opening in place) and its source.
    pub fn received(&mut self, i: usize) -> (&mut [u8], Option<SocketAddr>) {
        let addr = sockaddr_to_std(&self.addrs[i]);
        let len = self.lens[i].min(SLOT);
        (&mut self.data[i * SLOT..i * SLOT + len], addr)
    }

    /// The next free send slot, whole (`SLOT` bytes); commit it with [`Batch::push`].
    pub fn next_slot(&mut self) -> &mut [u8] {
        let i = self.count;
        &mut self.data[i * SLOT..(i + 1) * SLOT]
    }

    /// Marks the slot returned by `next_slot` as a datagram of `len` bytes to `to`.
    pub fn push(&mut self, len: usize, to: &SocketAddr) {
        let i = self.count;
        debug_assert!(i < self.hdrs.len() && len <= SLOT);
        self.lens[i] = len;
        self.hdrs[i].msg_hdr.msg_namelen = std_to_sockaddr(to, &mut self.addrs[i]);
        self.count += 1;
    }

    /// Points every header at its slot, address and iovec. Done right before each system
    /// call, from the owning boxes, so the pointers the kernel uses are derived after every
    /// safe access to those boxes (none of them is resized, so the addresses never change).
    fn wire_pointers(&mut self, n: usize) {
        let data = self.data.as_mut_ptr();
        let addrs = self.addrs.as_mut_ptr();
        let iovs = self.iovs.as_mut_ptr();
        for i in 0..n {
            // SAFETY: i < slots, so every offset stays inside its box.
            unsafe {
                (*iovs.add(i)).iov_base = data.add(i * SLOT).cast();
                self.hdrs[i].msg_hdr.msg_name = addrs.add(i).cast();
                self.hdrs[i].msg_hdr.msg_iov = iovs.add(i);
            }
        }
    }

    /// `recvmmsg` into every slot. Returns how many datagrams arrived (0 on `WouldBlock`).
    pub fn recv_from(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
            h.msg_hdr.msg_flags = 0;
            self.iovs[i].iov_len = SLOT;
        }
        self.wire_pointers(self.hdrs.len());
        let n = loop {
            // SAFETY (recvmmsg): every header points at a live SLOT-byte buffer, a
            // sockaddr_storage and one iovec of this batch (wire_pointers), and the count is
            // the number of headers.
            match syscall!(recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as _,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )) {
                Ok(n) => break n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
        };
        for i in 0..n {
            // A datagram longer than the slot arrives cut short; mark it so it fails to open.
            self.lens[i] = if self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                0
            } else {
                self.hdrs[i].msg_len as usize
            };
        }
        self.count = n;
        Ok(n)
    }

    /// `sendmmsg` of every pushed slot. Returns how many left, and the last error if any;
    /// the batch is empty afterwards either way. Datagrams the kernel refused (`WouldBlock`,
    /// a full socket buffer) are dropped: KCP retransmits them, and the caller counts them.
    pub fn send_to(&mut self, fd: RawFd) -> (usize, Option<io::Error>) {
        let total = self.count;
        let mut sent = 0;
        for i in 0..total {
            self.iovs[i].iov_len = self.lens[i];
        }
        self.wire_pointers(total);
        let mut error = None;
        let mut failed = 0;
        while sent < total {
            // SAFETY (sendmmsg): headers sent..total point at pushed slots of this batch,
            // their lengths and addresses set by push (wire_pointers).
            match syscall!(sendmmsg(
                fd,
                self.hdrs[sent..].as_mut_ptr(),
                (total - sent) as _,
                libc::MSG_DONTWAIT as _,
            )) {
                Ok(n) => sent += n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // One bad destination (e.g. EHOSTUNREACH, EPERM from a firewall) must not
                    // stop the datagrams behind it; it does not count as sent.
                    error = Some(e);
                    failed += 1;
                    sent += 1;
                }
            }
        }
        self.count = 0;
        (sent - failed, error)
    }

    /// As [`Batch::send_to`], but consecutive datagrams to one address of one length (the
    /// last of a run may be shorter) leave as one `UDP_SEGMENT` send: the kernel walks its
    /// UDP/IP path once per run and splits the run late. Full-size KCP packets carry no
    /// padding (there is no room under the mtu), so a bulk flush is one run per 32 packets.
    pub fn send_gso(&mut self, fd: RawFd) -> (usize, Option<io::Error>) {
        let total = self.count;
        for i in 0..total {
            self.iovs[i].iov_len = self.lens[i];
        }
        self.wire_pointers(total);
        let mut runs = 0;
        let mut i = 0;
        while i < total {
            let seg = self.lens[i];
            let mut j = i + 1;
            let mut bytes = seg;
            while j < total
                && j - i < GSO_MAX_SEGS
                && self.lens[j - 1] == seg
                && self.lens[j] <= seg
                && bytes + self.lens[j] <= GSO_MAX_BYTES
                && self.same_addr(i, j)
            {
                bytes += self.lens[j];
                j += 1;
            }
            let n = j - i;
            let h = &mut self.gso_hdrs[runs].msg_hdr;
            h.msg_name = self.hdrs[i].msg_hdr.msg_name;
            h.msg_namelen = self.hdrs[i].msg_hdr.msg_namelen;
            h.msg_iov = self.hdrs[i].msg_hdr.msg_iov;
            h.msg_iovlen = n as _;
            h.msg_flags = 0;
            if n > 1 {
                let ctl = &mut self.gso_ctl[runs];
                h.msg_control = ctl.0.as_mut_ptr().cast();
                // SAFETY: CMSG_* only compute sizes and offsets; `ctl` is 8-aligned and 32
                // bytes, more than CMSG_SPACE(2) on every Linux ABI, and msg_control and
                // msg_controllen describe exactly it when CMSG_FIRSTHDR reads them.
                unsafe {
                    h.msg_controllen = libc::CMSG_SPACE(2) as _;
                    let c = libc::CMSG_FIRSTHDR(h);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg as u16);
                }
            } else {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            }
            self.gso_segs[runs] = n;
            runs += 1;
            i = j;
        }
        let (mut done, mut sent, mut error) = (0, 0, None);
        while done < runs {
            // SAFETY (sendmmsg): headers done..runs point at pushed slots of this batch (their
            // iovecs are consecutive), their addresses, and control messages built above.
            match syscall!(sendmmsg(
                fd,
                self.gso_hdrs[done..].as_mut_ptr(),
                (runs - done) as _,
                libc::MSG_DONTWAIT as _,
            )) {
                Ok(n) => {
                    sent += self.gso_segs[done..done + n as usize].iter().sum::<usize>();
                    done += n as usize;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    if self.gso_segs[done] > 1
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                        )
                    {
                        self.gso_refused = true;
                    }
                    error = Some(e);
                    done += 1;
                }
            }
        }
        self.count = 0;
        (sent, error)
    }

    fn same_addr(&self, a: usize, b: usize) -> bool {
        let len = self.hdrs[a].msg_hdr.msg_namelen;
        if len != self.hdrs[b].msg_hdr.msg_namelen {
            return false;
        }
        let len = (len as usize).min(mem::size_of::<libc::sockaddr_storage>());
        // SAFETY: both are live sockaddr_storage values; `len` is within their size.
        let (x, y) = unsafe {
            (
                std::slice::from_raw_parts(
                    (&self.addrs[a] as *const libc::sockaddr_storage).cast::<u8>(),
                    len,
                ),
                std::slice::from_raw_parts(
                    (&self.addrs[b] as *const libc::sockaddr_storage).cast::<u8>(),
                    len,
                ),
            )
        };
        x == y
    }
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in, which it can contain.
            let a: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            // An IPv4 peer on a dual-stack `[::]` socket arrives as ::ffff:a.b.c.d: report it
            // as the IPv4 address it is, so it matches `kcp_connect` and gets the IPv4 MSS.
            if let Some(v4) = ip.to_ipv4_mapped() {
                return Some(SocketAddr::V4(SocketAddrV4::new(v4, port)));
            }
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn std_to_sockaddr(addr: &SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr_in.
            let sin: &mut libc::sockaddr_in =
                unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as _;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            mem::size_of::<libc::sockaddr_in>() as _
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6: &mut libc::sockaddr_in6 =
                unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as _;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as _
        }
    }
}

/// Options applied to a socket before it is bound.
#[derive(Clone, Debug, Default)]
pub struct SockOpts {
    pub reuseport: bool,
    pub sndbuf: usize,
    pub rcvbuf: usize,
    /// `SO_BINDTODEVICE`: the interface name, for the UDP socket.
    pub netdev: Option<String>,
}

fn new_socket(addr: &SocketAddr, ty: libc::c_int) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY (socket): integer arguments only; the descriptor is owned just below.
    let fd = syscall!(socket(
        family,
        ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        0
    ))?;
    // SAFETY: socket() just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn apply_opts(fd: RawFd, opts: &SockOpts) -> io::Result<()> {
    if opts.reuseport {
        set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    if opts.sndbuf > 0 {
        set_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            clamp_int(opts.sndbuf),
        )?;
    }
    if opts.rcvbuf > 0 {
        set_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            clamp_int(opts.rcvbuf),
        )?;
    }
    if let Some(dev) = &opts.netdev {
        let name = dev.as_bytes();
        // SAFETY (setsockopt): `name` is a live byte slice and its exact length is passed.
        syscall!(setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        ))?;
    }
    Ok(())
}

fn clamp_int(v: usize) -> libc::c_int {
    v.min(libc::c_int::MAX as usize) as libc::c_int
}

fn bind(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_storage; std_to_sockaddr fills it below.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = std_to_sockaddr(addr, &mut ss);
    // SAFETY (bind): `ss` is initialised by std_to_sockaddr and `len` is its used size.
    syscall!(bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len))?;
    Ok(())
}

/// A non-blocking UDP socket bound to `addr` with `opts` applied before the bind.
pub fn udp_bind(addr: &SocketAddr, opts: &SockOpts) -> io::Result<mio::net::UdpSocket> {
    Ok(mio::net::UdpSocket::from_std(udp_socket(addr, opts)?))
}

fn udp_socket(addr: &SocketAddr, opts: &SockOpts) -> io::Result<std::net::UdpSocket> {
    let fd = new_socket(addr, libc::SOCK_DGRAM)?;
    if let SocketAddr::V6(_) = addr {
        // Accept IPv4-mapped peers on `[::]`, as kcptun-libev does on a dual-stack host.
        let _ = set_int(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0);
    }
    apply_opts(fd.as_raw_fd(), opts)?;
    bind(fd.as_raw_fd(), addr)?;
    Ok(std::net::UdpSocket::from(fd))
}

/// A non-blocking UDP socket for one peer: bound to `local` (the main socket's address) in
/// its `SO_REUSEPORT` group and connected to `peer`. Linux then delivers `peer`'s datagrams to
/// it rather than to the main socket (a connected socket's lookup score is higher), so they
/// queue apart from whatever else floods the port.
pub fn udp_peer_socket(
    local: &SocketAddr,
    peer: &SocketAddr,
    opts: &SockOpts,
) -> io::Result<mio::net::UdpSocket> {
    let opts = SockOpts {
        reuseport: true,
        ..opts.clone()
    };
    let sock = udp_socket(local, &opts)?;
    sock.connect(peer)?;
    Ok(mio::net::UdpSocket::from_std(sock))
}

/// A non-blocking TCP listener on `addr`, with `SO_REUSEADDR` (and `SO_REUSEPORT` if asked).
pub fn tcp_listen(addr: &SocketAddr, opts: &SockOpts) -> io::Result<mio::net::TcpListener> {
    let fd = new_socket(addr, libc::SOCK_STREAM)?;
    set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    apply_opts(fd.as_raw_fd(), opts)?;
    bind(fd.as_raw_fd(), addr)?;
    // SAFETY (listen): integer arguments only.
    syscall!(listen(fd.as_raw_fd(), 1024))?;
    Ok(mio::net::TcpListener::from_std(
        std::net::TcpListener::from(fd),
    ))
}

pub fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY (setsockopt): `v` is a live c_int and its size is passed.
    syscall!(setsockopt(
        fd,
        level,
        name,
        (&v as *const libc::c_int).cast(),
        mem::size_of::<libc::c_int>() as libc::socklen_t,
    ))?;
    Ok(())
}

pub fn get_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY (getsockopt): `v` and `len` are live and `len` holds the size of `v`.
    syscall!(getsockopt(
        fd,
        level,
        name,
        (&mut v as *mut libc::c_int).cast(),
        &mut len
    ))?;
    Ok(v)
}

/// The send and receive buffer sizes the kernel actually granted (Linux doubles the request
/// and clamps it to `net.core.{w,r}mem_max`), for the log.
pub fn buffer_sizes(fd: RawFd) -> (usize, usize) {
    let snd = get_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(0);
    let rcv = get_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(0);
    (snd.max(0) as usize, rcv.max(0) as usize)
}

/// TCP socket options from `tcp.*` for an accepted or dialled connection.
pub fn tune_tcp(fd: RawFd, nodelay: bool, keepalive: bool, sndbuf: usize, rcvbuf: usize) {
    // Failures here are not fatal: the connection works without them.
    if nodelay {
        let _ = set_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
    }
    if keepalive {
        let _ = set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    }
    if sndbuf > 0 {
        let _ = set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, clamp_int(sndbuf));
    }
    if rcvbuf > 0 {
        let _ = set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, clamp_int(rcvbuf));
    }
}

/// Makes the next close of this TCP socket send RST instead of FIN (`SO_LINGER` 0): the
/// way to tell the local application that the conversation was reset by the peer.
pub fn set_abortive_close(fd: RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY (setsockopt): `l` is a live linger struct and its size is passed.
    let _ = syscall!(setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_LINGER,
        (&l as *const libc::linger).cast(),
        mem::size_of::<libc::linger>() as libc::socklen_t,
    ));
}

/// A pending error on a socket (`SO_ERROR`), e.g. the outcome of a non-blocking connect.
pub fn take_error(fd: RawFd) -> Option<io::Error> {
    match get_int(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
        Ok(0) => None,
        Ok(e) => Some(io::Error::from_raw_os_error(e)),
        Err(e) => Some(e),
    }
}

/// Signals delivered as readable events on a file descriptor, so the one event loop handles
/// them like any other input. The signals are blocked for the process (it is single
/// threaded), which is what `signalfd` requires.
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    pub fn new(signals: &[libc::c_int]) -> io::Result<SignalFd> {
        // SAFETY: sigset_t is plain old data; sigemptyset initialises it before any use.
        let mut set: libc::sigset_t = unsafe { mem::zeroed() };
        // SAFETY (sigemptyset): `set` is a live sigset_t.
        syscall!(sigemptyset(&mut set))?;
        for &s in signals {
            // SAFETY (sigaddset): `set` is a live, initialised sigset_t.
            syscall!(sigaddset(&mut set, s))?;
        }
        // SAFETY: `set` is initialised; the old mask is not wanted (null).
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY (signalfd): `set` is initialised; -1 asks for a new descriptor.
        let fd = syscall!(signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC))?;
        // SAFETY: signalfd() just returned this descriptor and nothing else owns it.
        Ok(SignalFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The next pending signal number, or `None` when none is pending.
    pub fn next(&self) -> Option<libc::c_int> {
        // SAFETY: signalfd_siginfo is plain old data.
        let mut info: libc::signalfd_siginfo = unsafe { mem::zeroed() };
        loop {
            // SAFETY (read): `info` is a live signalfd_siginfo and exactly its size is read.
            match syscall!(read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                mem::size_of::<libc::signalfd_siginfo>(),
            )) {
                Ok(n) if n as usize == mem::size_of::<libc::signalfd_siginfo>() => {
                    return Some(info.ssi_signo as libc::c_int)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                _ => return None,
            }
        }
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GSO send delivers exactly the datagrams pushed, boundaries and order kept: runs of
    /// equal ones, a shorter one ending a run, another destination in between, a run longer
    /// than GSO_MAX_SEGS; and with GSO off the same.
    #[test]
    fn gso_send_keeps_every_datagram() {
        let rx1 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for r in [&rx1, &rx2] {
            r.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
        }
        let (a1, a2) = (rx1.local_addr().unwrap(), rx2.local_addr().unwrap());
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut plan: Vec<(SocketAddr, usize)> = Vec::new();
        plan.extend(std::iter::repeat_n((a1, 1372), 40)); // > GSO_MAX_SEGS in one run
        plan.push((a1, 100)); // a shorter one ends the run
        plan.push((a1, 1372));
        plan.extend(std::iter::repeat_n((a2, 500), 5));
        plan.push((a1, 1372));
        plan.push((a1, 1400)); // longer: must start a new run
        plan.push((a1, 1));
        for gso in [true, false] {
            let mut b = Batch::new(plan.len());
            for (k, &(to, len)) in plan.iter().enumerate() {
                let slot = b.next_slot();
                for (i, x) in slot[..len].iter_mut().enumerate() {
                    *x = (k * 31 + i) as u8;
                }
                b.push(len, &to);
            }
            let (sent, err) = if gso {
                b.send_gso(tx.as_raw_fd())
            } else {
                b.send_to(tx.as_raw_fd())
            };
            assert!(err.is_none(), "gso {gso}: {err:?}");
            assert!(!b.gso_refused);
            assert_eq!(sent, plan.len());
            let mut buf = [0u8; 4096];
            for (k, &(to, len)) in plan.iter().enumerate() {
                let r = if to == a1 { &rx1 } else { &rx2 };
                let (n, _) = r.recv_from(&mut buf).unwrap();
                assert_eq!(n, len, "gso {gso}: datagram {k}");
                assert!(buf[..n]
                    .iter()
                    .enumerate()
                    .all(|(i, &x)| x == (k * 31 + i) as u8));
            }
        }
    }

    #[test]
    fn sockaddr_round_trip() {
        for s in ["127.0.0.1:29900", "[::1]:443", "[fe80::1%2]:1", "0.0.0.0:0"] {
            let a: SocketAddr = s.parse().unwrap();
            // SAFETY: see sockaddr_to_std.
            let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
            std_to_sockaddr(&a, &mut ss);
            assert_eq!(sockaddr_to_std(&ss), Some(a), "{s}");
        }
    }

    #[test]
    fn batch_send_and_receive_on_loopback() {
        let opts = SockOpts::default();
        let a = udp_bind(&"127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let b = udp_bind(&"127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let b_addr = b.local_addr().unwrap();
        let mut tx = Batch::new(8);
        for i in 0..5u8 {
            let slot = tx.next_slot();
            slot[..3].copy_from_slice(&[i, i + 1, i + 2]);
            tx.push(3 + i as usize, &b_addr);
        }
        let (sent, err) = tx.send_to(a.as_raw_fd());
        assert_eq!((sent, err.map(|e| e.kind())), (5, None));
        assert!(tx.is_empty());
        let mut rx = Batch::new(8);
        let mut got = 0;
        for _ in 0..100 {
            got += rx.recv_from(b.as_raw_fd()).unwrap();
            if got == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, 5);
        let (bytes, from) = rx.received(4);
        assert_eq!(from, Some(a.local_addr().unwrap()));
        assert_eq!(bytes.len(), 7);
        assert_eq!(&bytes[..3], &[4, 5, 6]);
    }
}

/// Who to become after the sockets are bound: `USER[:GROUP]`, names or numeric ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Resolves `USER[:GROUP]`. Without a group, the user's primary group.
pub fn lookup_identity(spec: &str) -> Result<Identity, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group == Some("") {
        return Err(format!("user {spec:?}: expected USER[:GROUP]"));
    }
    let (uid, primary) = lookup_user(user)?;
    let gid = match group {
        None => primary,
        Some(g) => lookup_group(g)?,
    };
    Ok(Identity { uid, gid })
}

/// Calls a `get*nam_r` function, growing the buffer while it answers ERANGE (an LDAP user or
/// a group with many members needs more than the first 16 KiB). `read` copies what is needed
/// out of the filled struct before the buffer goes away.
fn lookup_r<T, R>(
    name: &str,
    call: impl Fn(*const libc::c_char, *mut T, *mut libc::c_char, usize, *mut *mut T) -> libc::c_int,
    read: impl Fn(&T) -> R,
) -> Option<R> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut size = 16 * 1024;
    loop {
        // SAFETY: passwd and group are plain old data; the call fills them.
        let mut entry: T = unsafe { mem::zeroed() };
        let mut out: *mut T = std::ptr::null_mut();
        let mut buf = vec![0 as libc::c_char; size];
        let rc = call(
            cname.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        );
        if rc == libc::ERANGE && size < 1 << 22 {
            size *= 2;
            continue;
        }
        return (rc == 0 && !out.is_null()).then(|| read(&entry));
    }
}

fn lookup_user(name: &str) -> Result<(libc::uid_t, libc::gid_t), String> {
    let found = lookup_r(
        name,
        // SAFETY (getpwnam_r): every pointer is live and `len` is the buffer's size.
        |n, e, b, len, o| unsafe { libc::getpwnam_r(n, e, b, len, o) },
        |pw: &libc::passwd| (pw.pw_uid, pw.pw_gid),
    );
    match (found, name.parse::<libc::uid_t>()) {
        (Some(ids), _) => Ok(ids),
        // A numeric id that has no passwd entry is still a valid target.
        (None, Ok(uid)) => Ok((uid, uid as libc::gid_t)),
        (None, Err(_)) => Err(format!("user {name:?} not found")),
    }
}

fn lookup_group(name: &str) -> Result<libc::gid_t, String> {
    let found = lookup_r(
        name,
        // SAFETY (getgrnam_r): every pointer is live and `len` is the buffer's size.
        |n, e, b, len, o| unsafe { libc::getgrnam_r(n, e, b, len, o) },
        |gr: &libc::group| gr.gr_gid,
    );
    match (found, name.parse::<libc::gid_t>()) {
        (Some(gid), _) => Ok(gid),
        (None, Ok(gid)) => Ok(gid),
        (None, Err(_)) => Err(format!("group {name:?} not found")),
    }
}

/// Drops every privilege for good: supplementary groups, then the group, then the user, and
/// checks that it worked (all real, effective and saved ids changed, and root cannot be
/// regained). An error means the process must not go on.
pub fn drop_privileges(id: &Identity) -> Result<(), String> {
    let gids = [id.gid];
    // SAFETY (setgroups/setres*id): `gids` is a live array of the count given; ids are
    // plain integers.
    syscall!(setgroups(1, gids.as_ptr())).map_err(|e| format!("setgroups: {e}"))?;
    syscall!(setresgid(id.gid, id.gid, id.gid)).map_err(|e| format!("setgid {}: {e}", id.gid))?;
    syscall!(setresuid(id.uid, id.uid, id.uid)).map_err(|e| format!("setuid {}: {e}", id.uid))?;
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY (getres*id): three live integers to write to.
    syscall!(getresuid(&mut r, &mut e, &mut s)).map_err(|e| format!("getresuid: {e}"))?;
    if (r, e, s) != (id.uid, id.uid, id.uid) {
        return Err(format!("still uid {r}/{e}/{s} after setuid({})", id.uid));
    }
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY (getres*id): three live integers to write to.
    syscall!(getresgid(&mut r, &mut e, &mut s)).map_err(|e| format!("getresgid: {e}"))?;
    if (r, e, s) != (id.gid, id.gid, id.gid) {
        return Err(format!("still gid {r}/{e}/{s} after setgid({})", id.gid));
    }
    // SAFETY: setuid has no memory-safety preconditions.
    if id.uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err("root could be regained after dropping privileges".into());
    }
    Ok(())
}
