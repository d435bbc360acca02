//! The KCP segment header as a typed view: parse and emit in either byte order, and an iterator
//! over the segments of one packet. No state; the engine and the tests share it.

use std::fmt;

/// Size of a segment header on the wire.
pub const OVERHEAD: usize = 24;
/// Data segment.
pub const CMD_PUSH: u8 = 81;
/// Acknowledgement of one segment (`sn`, echoing its `ts`).
pub const CMD_ACK: u8 = 82;
/// Window probe: "tell me your window".
pub const CMD_WASK: u8 = 83;
/// Window size announcement (the answer to a probe, or a window that reopened).
pub const CMD_WINS: u8 = 84;

/// Byte order of the header fields. kcptun-libev is big-endian; reference ikcp.c is
/// little-endian (on the usual hosts), which we only need to test against the C code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ByteOrder {
    #[default]
    Big,
    Little,
}

impl ByteOrder {
    #[inline]
    fn u16(self, b: [u8; 2]) -> u16 {
        match self {
            ByteOrder::Big => u16::from_be_bytes(b),
            ByteOrder::Little => u16::from_le_bytes(b),
        }
    }

    #[inline]
    fn u32(self, b: [u8; 4]) -> u32 {
        match self {
            ByteOrder::Big => u32::from_be_bytes(b),
            ByteOrder::Little => u32::from_le_bytes(b),
        }
    }

    #[inline]
    fn put16(self, v: u16) -> [u8; 2] {
        match self {
            ByteOrder::Big => v.to_be_bytes(),
            ByteOrder::Little => v.to_le_bytes(),
        }
    }

    #[inline]
    fn put32(self, v: u32) -> [u8; 4] {
        match self {
            ByteOrder::Big => v.to_be_bytes(),
            ByteOrder::Little => v.to_le_bytes(),
        }
    }
}

/// Why `Kcp::input` (or [`Segments`]) refused a packet. Remote input: count it, never log
/// above debug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputError {
    /// Shorter than one segment header.
    Short,
    /// A segment belongs to another conversation.
    Conv,
    /// A segment's `len` runs past the end of the packet, or exceeds what we accept.
    Length,
    /// Unknown command byte.
    Cmd,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputError::Short => "packet shorter than a kcp header",
            InputError::Conv => "segment for another conversation",
            InputError::Length => "segment length out of range",
            InputError::Cmd => "unknown kcp command",
        })
    }
}

impl std::error::Error for InputError {}

/// One segment header, field for field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentHeader {
    pub conv: u32,
    pub cmd: u8,
    pub frg: u8,
    pub wnd: u16,
    pub ts: u32,
    pub sn: u32,
    pub una: u32,
    pub len: u32,
}

impl SegmentHeader {
    /// Reads the first [`OVERHEAD`] bytes of `data`; `None` if there are fewer. Checks
    /// nothing else: `cmd` and `len` are the caller's to judge.
    pub fn parse(data: &[u8], order: ByteOrder) -> Option<SegmentHeader> {
        let h: &[u8; OVERHEAD] = data.get(..OVERHEAD)?.try_into().ok()?;
        let u32_at = |i: usize| order.u32([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Some(SegmentHeader {
            conv: u32_at(0),
            cmd: h[4],
            frg: h[5],
            wnd: order.u16([h[6], h[7]]),
            ts: u32_at(8),
            sn: u32_at(12),
            una: u32_at(16),
            len: u32_at(20),
        })
    }

    /// Writes the header into `buf[..OVERHEAD]`. Panics if `buf` is shorter (a local bug).
    pub fn emit(&self, buf: &mut [u8], order: ByteOrder) {
        let h = &mut buf[..OVERHEAD];
        h[0..4].copy_from_slice(&order.put32(self.conv));
        h[4] = self.cmd;
        h[5] = self.frg;
        h[6..8].copy_from_slice(&order.put16(self.wnd));
        h[8..12].copy_from_slice(&order.put32(self.ts));
        h[12..16].copy_from_slice(&order.put32(self.sn));
        h[16..20].copy_from_slice(&order.put32(self.una));
        h[20..24].copy_from_slice(&order.put32(self.len));
    }
}

/// The conversation id of a packet, without building an engine (the event loop's lookup).
pub fn packet_conv(data: &[u8], order: ByteOrder) -> Option<u32> {
    let b: [u8; 4] = data.get(..4)?.try_into().ok()?;
    Some(order.u32(b))
}

/// Iterates over the segments of one packet: `(header, payload)`. Trailing bytes shorter than
/// a header are ignored (ikcp does the same). After an error the iterator ends. Does not check
/// `conv`.
pub struct Segments<'a> {
    data: &'a [u8],
    order: ByteOrder,
    failed: bool,
}

impl<'a> Segments<'a> {
    pub fn new(data: &'a [u8], order: ByteOrder) -> Segments<'a> {
        Segments {
            data,
            order,
            failed: false,
        }
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = Result<(SegmentHeader, &'a [u8]), InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let hdr = SegmentHeader::parse(self.data, self.order)?;
        let rest = &self.data[OVERHEAD..];
        if !matches!(hdr.cmd, CMD_PUSH | CMD_ACK | CMD_WASK | CMD_WINS) {
            self.failed = true;
            return Some(Err(InputError::Cmd));
        }
        let len = hdr.len as usize;
        if len > rest.len() {
            self.failed = true;
            return Some(Err(InputError::Length));
        }
        let (payload, tail) = rest.split_at(len);
        self.data = tail;
        Some(Ok((hdr, payload)))
    }
}
