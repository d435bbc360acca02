//! Message codecs above KCP (WIRE.md sections 4 and 5): the TLV messages inside one
//! conversation's byte stream (DIAL, PUSH, EOF, KEEPALIVE) and the session-0 control datagrams
//! (PING, PONG, RESET; the rendezvous messages are recognised and ignored).
//!
//! Both are pure codecs: no I/O, no clock, no allocation. Everything here parses remote input,
//! so every path returns an error instead of panicking (the fuzz-style tests feed random bytes).

use std::fmt;

// ---------------------------------------------------------------------------------------------
// Session messages (WIRE.md section 4)
// ---------------------------------------------------------------------------------------------

/// First message from the client side: the server opens its TCP connection to `connect`.
pub const MSG_DIAL: u16 = 0;
/// `len - 4` bytes of the TCP stream.
pub const MSG_PUSH: u16 = 1;
/// The sender's TCP side reached end of stream; no PUSH follows in this direction.
pub const MSG_EOF: u16 = 2;
/// Sent by the client on an idle conversation; a current server echoes it.
pub const MSG_KEEPALIVE: u16 = 3;

/// `u16 msg | u16 len`; `len` counts these 4 bytes too.
pub const TLV_HEADER: usize = 4;
/// The largest message kcptun-libev accepts (its session buffer less bookkeeping).
pub const MAX_MSG: usize = 14884;
/// The largest PUSH payload.
pub const MAX_PUSH: usize = MAX_MSG - TLV_HEADER;

/// The 4-byte header of a message with `payload_len` payload bytes.
///
/// # Panics
/// When `msg` is not one of the four message types, when `payload_len > MAX_PUSH`, or when a
/// DIAL/EOF/KEEPALIVE is given a payload: all of these are bugs of the caller, never remote input.
pub fn encode_header(msg: u16, payload_len: usize) -> [u8; 4] {
    assert!(msg <= MSG_KEEPALIVE, "unknown message type {msg}");
    assert!(
        payload_len <= MAX_PUSH,
        "payload of {payload_len} bytes exceeds {MAX_PUSH}"
    );
    assert!(
        msg == MSG_PUSH || payload_len == 0,
        "message {msg} carries no payload"
    );
    let len = (payload_len + TLV_HEADER) as u16;
    let [m0, m1] = msg.to_be_bytes();
    let [l0, l1] = len.to_be_bytes();
    [m0, m1, l0, l1]
}

/// One event out of the stream decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Dial,
    /// A piece of a PUSH payload, borrowed from the decoder's input. One PUSH may arrive as
    /// several pieces; an empty PUSH (len 4) yields one empty piece.
    Data(&'a [u8]),
    Eof,
    Keepalive,
}

/// A protocol error in a conversation's byte stream: the conversation must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlvError {
    /// `msg` is not DIAL, PUSH, EOF or KEEPALIVE.
    UnknownMsg { msg: u16, len: u16 },
    /// `len` is below 4, above [`MAX_MSG`], or not 4 for a message without payload.
    BadLength { msg: u16, len: u16 },
}

impl fmt::Display for TlvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TlvError::UnknownMsg { msg, len } => write!(f, "unknown message {msg} (len {len})"),
            TlvError::BadLength { msg, len } => {
                write!(f, "invalid length {len} for message {msg}")
            }
        }
    }
}

impl std::error::Error for TlvError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecodeState {
    /// Collecting a header; `have` bytes of it are in `hdr`.
    Header { hdr: [u8; 4], have: u8 },
    /// Inside a PUSH payload with this many bytes still to come.
    Push { remaining: u16 },
}

/// Incremental decoder for one direction of a conversation's byte stream.
///
/// The input may arrive in pieces of any size. Only a split header is buffered (at most 3
/// bytes); payload is handed out as slices of the input, so nothing is copied.
/// After an error the decoder stays in an unspecified state: close the conversation.
#[derive(Clone, Debug)]
pub struct TlvDecoder {
    state: DecodeState,
}

impl Default for TlvDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl TlvDecoder {
    pub fn new() -> TlvDecoder {
        TlvDecoder {
            state: DecodeState::Header {
                hdr: [0; 4],
                have: 0,
            },
        }
    }

    /// Consumes from `input`; returns (bytes consumed, next frame if any).
    ///
    /// It returns `None` only after consuming all of `input` (nothing more to decode until more
    /// input arrives), so the caller loops until the input is used up:
    ///
    /// ```
    /// # use kcptun::proto::{Frame, TlvDecoder};
    /// let mut dec = TlvDecoder::new();
    /// let mut input: &[u8] = &[0, 0, 0, 4, 0, 1, 0, 6, b'h', b'i'];
    /// while !input.is_empty() {
    ///     let (n, frame) = dec.decode(input).unwrap();
    ///     input = &input[n..];
    ///     match frame {
    ///         Some(Frame::Data(piece)) => assert_eq!(piece, b"hi"),
    ///         other => assert!(matches!(other, Some(Frame::Dial) | None)),
    ///     }
    /// }
    /// ```
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<Frame<'a>>), TlvError> {
        let mut used = 0;
        loop {
            match &mut self.state {
                DecodeState::Push { remaining } => {
                    let rest = &input[used..];
                    if rest.is_empty() {
                        return Ok((used, None));
                    }
                    let n = rest.len().min(*remaining as usize);
                    *remaining -= n as u16;
                    if *remaining == 0 {
                        self.state = DecodeState::Header {
                            hdr: [0; 4],
                            have: 0,
                        };
                    }
                    return Ok((used + n, Some(Frame::Data(&rest[..n]))));
                }
                DecodeState::Header { hdr, have } => {
                    let rest = &input[used..];
                    let want = TLV_HEADER - *have as usize;
                    let n = rest.len().min(want);
                    hdr[*have as usize..*have as usize + n].copy_from_slice(&rest[..n]);
                    *have += n as u8;
                    used += n;
                    if (*have as usize) < TLV_HEADER {
                        return Ok((used, None));
                    }
                    let msg = u16::from_be_bytes([hdr[0], hdr[1]]);
                    let len = u16::from_be_bytes([hdr[2], hdr[3]]);
                    self.state = DecodeState::Header {
                        hdr: [0; 4],
                        have: 0,
                    };
                    let frame = match msg {
                        MSG_DIAL | MSG_EOF | MSG_KEEPALIVE if len as usize != TLV_HEADER => {
                            return Err(TlvError::BadLength { msg, len });
                        }
                        MSG_DIAL => Frame::Dial,
                        MSG_EOF => Frame::Eof,
                        MSG_KEEPALIVE => Frame::Keepalive,
                        MSG_PUSH => {
                            if (len as usize) < TLV_HEADER || len as usize > MAX_MSG {
                                return Err(TlvError::BadLength { msg, len });
                            }
                            let payload = len - TLV_HEADER as u16;
                            if payload == 0 {
                                Frame::Data(&input[used..used])
                            } else {
                                self.state = DecodeState::Push { remaining: payload };
                                // Hand out the first piece in the same call when there is one.
                                continue;
                            }
                        }
                        _ => return Err(TlvError::UnknownMsg { msg, len }),
                    };
                    return Ok((used, Some(frame)));
                }
            }
        }
    }

    /// True between messages: no partial header buffered, no PUSH payload outstanding. A stream
    /// that ends here ended cleanly.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, DecodeState::Header { have: 0, .. })
    }

    /// Payload bytes of the current PUSH still to come (0 outside a PUSH).
    pub fn push_remaining(&self) -> usize {
        match self.state {
            DecodeState::Push { remaining } => remaining as usize,
            DecodeState::Header { .. } => 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session-0 control datagrams (WIRE.md section 5)
// ---------------------------------------------------------------------------------------------

pub const S0_PING: u16 = 0;
pub const S0_PONG: u16 = 1;
pub const S0_RESET: u16 = 2;
pub const S0_LISTEN: u16 = 3;
pub const S0_CONNECT: u16 = 4;
pub const S0_PUNCH: u16 = 5;

/// `u32 conv (0) | u16 what`.
pub const S0_HEADER: usize = 6;
/// The longest message this side emits (PING/PONG/RESET: header + u32).
pub const S0_MAX_EMIT: usize = S0_HEADER + 4;

/// A session-0 message. LISTEN/CONNECT/PUNCH belong to rendezvous mode, which kcptun-rs does not
/// implement: they are checked for shape and then ignored by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session0 {
    /// Timestamp in ms, mod 2^32.
    Ping(u32),
    /// The echoed PING timestamp.
    Pong(u32),
    /// The conversation the receiver must end.
    Reset(u32),
    Listen,
    Connect,
    Punch,
    /// An unknown `what`; tolerated and ignored.
    Unknown(u16),
}

/// A datagram that is not a well-formed session-0 message. The loop drops and counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session0Error {
    /// The first 4 bytes are not zero: this is a KCP packet, not session-0.
    NotSession0,
    /// Shorter than the message type needs.
    Truncated { what: u16 },
    /// An inetaddr family byte other than 0 (IPv4) or 1 (IPv6).
    BadFamily { what: u16, family: u8 },
}

impl fmt::Display for Session0Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Session0Error::NotSession0 => write!(f, "not a session-0 message (conv != 0)"),
            Session0Error::Truncated { what } => {
                write!(f, "truncated session-0 message (what {what})")
            }
            Session0Error::BadFamily { what, family } => {
                write!(
                    f,
                    "bad address family {family} in session-0 message (what {what})"
                )
            }
        }
    }
}

impl std::error::Error for Session0Error {}

/// True when `p` (an opened datagram's plaintext) starts with conv 0, i.e. is session-0.
pub fn is_session0(p: &[u8]) -> bool {
    p.len() >= 4 && p[..4] == [0, 0, 0, 0]
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Length of an `inetaddr` (u8 family + 4 or 16 address bytes + u16 port) at `b[at..]`.
fn inetaddr_len(b: &[u8], at: usize, what: u16) -> Result<usize, Session0Error> {
    let family = *b.get(at).ok_or(Session0Error::Truncated { what })?;
    let len = match family {
        0 => 1 + 4 + 2,
        1 => 1 + 16 + 2,
        _ => return Err(Session0Error::BadFamily { what, family }),
    };
    if b.len() < at + len {
        return Err(Session0Error::Truncated { what });
    }
    Ok(len)
}

impl Session0 {
    /// Parses the plaintext of one datagram, conv included. Bytes after the message (padding)
    /// are ignored, as kcptun-libev ignores them.
    pub fn parse(p: &[u8]) -> Result<Session0, Session0Error> {
        if p.len() < 4 {
            return Err(Session0Error::Truncated { what: 0 });
        }
        if !is_session0(p) {
            return Err(Session0Error::NotSession0);
        }
        let what = match p.get(4..6) {
            Some(w) => u16::from_be_bytes([w[0], w[1]]),
            None => return Err(Session0Error::Truncated { what: 0 }),
        };
        let u32_payload = || be_u32(p, S0_HEADER).ok_or(Session0Error::Truncated { what });
        match what {
            S0_PING => Ok(Session0::Ping(u32_payload()?)),
            S0_PONG => Ok(Session0::Pong(u32_payload()?)),
            S0_RESET => Ok(Session0::Reset(u32_payload()?)),
            S0_LISTEN | S0_CONNECT => {
                let at = S0_HEADER + inetaddr_len(p, S0_HEADER, what)?;
                let idlen = p.get(at..at + 2).ok_or(Session0Error::Truncated { what })?;
                let idlen = u16::from_be_bytes([idlen[0], idlen[1]]) as usize;
                if p.len() < at + 2 + idlen {
                    return Err(Session0Error::Truncated { what });
                }
                Ok(if what == S0_LISTEN {
                    Session0::Listen
                } else {
                    Session0::Connect
                })
            }
            S0_PUNCH => {
                let a = inetaddr_len(p, S0_HEADER, what)?;
                inetaddr_len(p, S0_HEADER + a, what)?;
                Ok(Session0::Punch)
            }
            _ => Ok(Session0::Unknown(what)),
        }
    }

    /// The `what` code of this message.
    pub fn what(&self) -> u16 {
        match *self {
            Session0::Ping(_) => S0_PING,
            Session0::Pong(_) => S0_PONG,
            Session0::Reset(_) => S0_RESET,
            Session0::Listen => S0_LISTEN,
            Session0::Connect => S0_CONNECT,
            Session0::Punch => S0_PUNCH,
            Session0::Unknown(w) => w,
        }
    }

    /// Writes the message (conv 0, what, payload) to the start of `buf` and returns its length:
    /// 10 bytes for PING/PONG/RESET. The rendezvous messages carry no data here, so only their
    /// 6-byte header is written (useful for tests; kcptun-rs never sends them).
    ///
    /// # Panics
    /// When `buf` is shorter than the message ([`S0_MAX_EMIT`] always suffices).
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        buf[..4].copy_from_slice(&[0; 4]);
        buf[4..6].copy_from_slice(&self.what().to_be_bytes());
        match *self {
            Session0::Ping(v) | Session0::Pong(v) | Session0::Reset(v) => {
                buf[6..10].copy_from_slice(&v.to_be_bytes());
                S0_MAX_EMIT
            }
            _ => S0_HEADER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(dec: &mut TlvDecoder, mut input: &[u8]) -> Result<Vec<String>, TlvError> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let (n, f) = dec.decode(input)?;
            assert!(n <= input.len());
            assert!(
                f.is_some() || n == input.len(),
                "None before the input was used up"
            );
            input = &input[n..];
            if let Some(f) = f {
                out.push(format!("{f:?}"));
            }
        }
        Ok(out)
    }

    // --- TLV ---------------------------------------------------------------------------------

    #[test]
    fn header_round_trip() {
        assert_eq!(encode_header(MSG_DIAL, 0), [0, 0, 0, 4]);
        assert_eq!(encode_header(MSG_PUSH, 6), [0, 1, 0, 10]);
        assert_eq!(encode_header(MSG_PUSH, MAX_PUSH), [0, 1, 0x3a, 0x24]);
        assert_eq!(encode_header(MSG_EOF, 0), [0, 2, 0, 4]);
        assert_eq!(encode_header(MSG_KEEPALIVE, 0), [0, 3, 0, 4]);
    }

    #[test]
    #[should_panic]
    fn header_rejects_oversized_push() {
        encode_header(MSG_PUSH, MAX_PUSH + 1);
    }

    #[test]
    #[should_panic]
    fn header_rejects_payload_on_eof() {
        encode_header(MSG_EOF, 1);
    }

    #[test]
    fn push_is_split_without_copy() {
        let mut dec = TlvDecoder::new();
        let stream = [0, 1, 0, 7, b'a', b'b', b'c'];
        let (n, f) = dec.decode(&stream[..5]).unwrap();
        assert_eq!((n, f), (5, Some(Frame::Data(b"a"))));
        assert_eq!(dec.push_remaining(), 2);
        assert!(!dec.at_boundary());
        let (n, f) = dec.decode(&stream[5..]).unwrap();
        assert_eq!((n, f), (2, Some(Frame::Data(b"bc"))));
        assert!(dec.at_boundary());
    }

    #[test]
    fn empty_push_yields_empty_piece() {
        let mut dec = TlvDecoder::new();
        let got = collect(&mut dec, &[0, 1, 0, 4, 0, 2, 0, 4]).unwrap();
        assert_eq!(got, ["Data([])", "Eof"]);
    }

    #[test]
    fn largest_push_is_accepted() {
        let mut dec = TlvDecoder::new();
        let mut stream = encode_header(MSG_PUSH, MAX_PUSH).to_vec();
        stream.resize(MAX_MSG, 7);
        let (n, f) = dec.decode(&stream).unwrap();
        assert_eq!(n, MAX_MSG);
        assert_eq!(f, Some(Frame::Data(&stream[4..])));
        assert!(dec.at_boundary());
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], TlvError)] = &[
            (&[0, 4, 0, 4], TlvError::UnknownMsg { msg: 4, len: 4 }),
            (
                &[0xff, 0xff, 0, 4],
                TlvError::UnknownMsg {
                    msg: 0xffff,
                    len: 4,
                },
            ),
            (&[0, 1, 0, 3], TlvError::BadLength { msg: 1, len: 3 }),
            (&[0, 1, 0, 0], TlvError::BadLength { msg: 1, len: 0 }),
            (
                &[0, 1, 0x3a, 0x25],
                TlvError::BadLength { msg: 1, len: 14885 },
            ),
            (
                &[0, 1, 0xff, 0xff],
                TlvError::BadLength {
                    msg: 1,
                    len: 0xffff,
                },
            ),
            (&[0, 0, 0, 5], TlvError::BadLength { msg: 0, len: 5 }),
            (&[0, 0, 0, 3], TlvError::BadLength { msg: 0, len: 3 }),
            (&[0, 2, 0, 8], TlvError::BadLength { msg: 2, len: 8 }),
            (&[0, 3, 0, 0], TlvError::BadLength { msg: 3, len: 0 }),
        ];
        for (bytes, want) in cases {
            // Whole and byte by byte: the error must not depend on how the header arrives.
            assert_eq!(TlvDecoder::new().decode(bytes), Err(*want), "{bytes:?}");
            let mut dec = TlvDecoder::new();
            let r = bytes
                .iter()
                .try_for_each(|b| dec.decode(std::slice::from_ref(b)).map(|_| ()));
            assert_eq!(r, Err(*want));
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn error_after_valid_messages() {
        let mut dec = TlvDecoder::new();
        let r = collect(&mut dec, &[0, 0, 0, 4, 0, 1, 0, 5, b'x', 0, 9, 0, 4]);
        assert_eq!(r, Err(TlvError::UnknownMsg { msg: 9, len: 4 }));
    }

    // --- session-0 ---------------------------------------------------------------------------

    #[test]
    fn session0_round_trip() {
        for m in [
            Session0::Ping(0x0073_0229),
            Session0::Pong(u32::MAX),
            Session0::Reset(7),
        ] {
            let mut buf = [0xeeu8; 16];
            let n = m.emit(&mut buf);
            assert_eq!(n, 10);
            assert_eq!(Session0::parse(&buf[..n]), Ok(m));
            // Trailing padding is ignored.
            assert_eq!(Session0::parse(&buf), Ok(m));
        }
        let mut buf = [0u8; 10];
        assert_eq!(Session0::Listen.emit(&mut buf), 6);
        assert_eq!(&buf[4..6], &[0, 3]);
    }

    #[test]
    fn session0_shapes() {
        let ping = [0, 0, 0, 0, 0, 0, 0, 0x73, 2, 0x29, 15, 15, 15];
        assert_eq!(Session0::parse(&ping), Ok(Session0::Ping(0x0073_0229)));
        assert_eq!(
            Session0::parse(&[0, 0, 0, 0, 0, 2, 0, 0, 0]),
            Err(Session0Error::Truncated { what: 2 })
        );
        assert_eq!(
            Session0::parse(&[0, 0, 0, 0, 0]),
            Err(Session0Error::Truncated { what: 0 })
        );
        assert_eq!(
            Session0::parse(&[0, 0]),
            Err(Session0Error::Truncated { what: 0 })
        );
        assert_eq!(
            Session0::parse(&[0, 0, 0, 1, 0, 0]),
            Err(Session0Error::NotSession0)
        );
        assert_eq!(
            Session0::parse(&[0, 0, 0, 0, 0, 9]),
            Ok(Session0::Unknown(9))
        );
        // LISTEN: IPv4 inetaddr + idlen 2 + "id".
        let listen = [0, 0, 0, 0, 0, 3, 0, 127, 0, 0, 1, 0, 80, 0, 2, b'i', b'd'];
        assert_eq!(Session0::parse(&listen), Ok(Session0::Listen));
        assert_eq!(
            Session0::parse(&listen[..16]),
            Err(Session0Error::Truncated { what: 3 })
        );
        let mut connect = listen;
        connect[5] = 4;
        assert_eq!(Session0::parse(&connect), Ok(Session0::Connect));
        connect[6] = 2;
        assert_eq!(
            Session0::parse(&connect),
            Err(Session0Error::BadFamily { what: 4, family: 2 })
        );
        // PUNCH: IPv4 + IPv6 inetaddr.
        let mut punch = vec![0, 0, 0, 0, 0, 5, 0, 1, 2, 3, 4, 0, 1, 1];
        punch.extend_from_slice(&[0; 18]);
        assert_eq!(Session0::parse(&punch), Ok(Session0::Punch));
        assert_eq!(
            Session0::parse(&punch[..punch.len() - 1]),
            Err(Session0Error::Truncated { what: 5 })
        );
    }
}
