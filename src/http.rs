//! A tiny HTTP/1.1 responder for `http_listen`: `/healthy`, `/stats`, `/metrics`.
//!
//! It lives in the event loop (no thread) and is built so that clients cannot hurt the
//! forwarding path: at most [`MAX_CLIENTS`] connections at once (the oldest is dropped for a
//! new one), a fixed [`MAX_REQUEST`]-byte request buffer per client, a [`CLIENT_TIMEOUT`] for
//! the whole exchange, one response per connection. This module parses requests and writes
//! responses; what a path answers is the loop's business ([`Request`] in, bytes out).

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

/// Concurrent HTTP clients; the oldest is closed to make room for a new one.
pub const MAX_CLIENTS: usize = 16;
/// Bytes of request (line and headers) accepted; a longer one gets 431 and is closed.
pub const MAX_REQUEST: usize = 4096;
/// Milliseconds a client has to send its request and take the response.
pub const CLIENT_TIMEOUT: u64 = 5_000;

/// A parsed request line; headers are read and ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
}

/// What parsing the bytes received so far says.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// The header is not complete yet.
    Incomplete,
    Ok(Request),
    /// Malformed: answer 400.
    Bad,
    /// The header did not fit: answer 431.
    TooLarge,
}

/// Parses an HTTP/1.x request head from `buf` (the bytes received so far).
pub fn parse_request(buf: &[u8]) -> Parse {
    let Some(end) = find(buf, b"\r\n\r\n").or_else(|| find(buf, b"\n\n")) else {
        return if buf.len() >= MAX_REQUEST {
            Parse::TooLarge
        } else {
            Parse::Incomplete
        };
    };
    let head = &buf[..end];
    let line_end = find(head, b"\n").unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Parse::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parse::Bad;
    };
    if !version.starts_with("HTTP/1.")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Parse::Bad;
    }
    // The query string is ignored.
    let path = target.split('?').next().unwrap_or(target);
    Parse::Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A whole response: status line, minimal headers, body; the connection closes after it.
pub fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

struct Client {
    stream: TcpStream,
    buf: [u8; MAX_REQUEST],
    len: usize,
    /// The response being written, and how much of it has left.
    out: Vec<u8>,
    sent: usize,
    deadline: u64,
    /// Accept order, to find the oldest.
    serial: u64,
}

/// The listener and its clients. Client `i` uses token `base + i`.
pub struct HttpServer {
    listener: TcpListener,
    clients: Vec<Option<Box<Client>>>,
    base: usize,
    serial: u64,
    /// Requests answered, by status class, for the metrics.
    pub served: u64,
    pub rejected: u64,
}

/// What the loop should do after an event on client `i`.
pub enum Step {
    /// Nothing yet (waiting for more bytes or for the socket to take the response).
    Wait,
    /// A complete request: call [`HttpServer::respond`] with the answer.
    Request(Request),
    /// The client is finished or gone; its slot is free.
    Closed,
}

impl HttpServer {
    pub fn bind(
        addr: &SocketAddr,
        registry: &Registry,
        token: Token,
        base: usize,
    ) -> io::Result<Self> {
        let mut listener = TcpListener::bind(*addr)?;
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(HttpServer {
            listener,
            clients: (0..MAX_CLIENTS).map(|_| None).collect(),
            base,
            serial: 0,
            served: 0,
            rejected: 0,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts waiting connections. Returns the slots whose deadline must be (re)armed.
    pub fn accept(&mut self, registry: &Registry, now: u64, armed: &mut Vec<(usize, u64)>) {
        loop {
            let mut stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return, // WouldBlock, or out of descriptors: try on the next event
            };
            let slot = match self.clients.iter().position(|c| c.is_none()) {
                Some(i) => i,
                None => {
                    // Full: the oldest client makes room (slow clients cannot lock us out).
                    let oldest = (0..MAX_CLIENTS)
                        .min_by_key(|&i| self.clients[i].as_ref().map_or(0, |c| c.serial))
                        .unwrap_or(0);
                    self.close(registry, oldest);
                    self.rejected += 1;
                    oldest
                }
            };
            if registry
                .register(
                    &mut stream,
                    Token(self.base + slot),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            self.serial += 1;
            let deadline = now + CLIENT_TIMEOUT;
            self.clients[slot] = Some(Box::new(Client {
                stream,
                buf: [0; MAX_REQUEST],
                len: 0,
                out: Vec::new(),
                sent: 0,
                deadline,
                serial: self.serial,
            }));
            armed.push((slot, deadline));
        }
    }

    /// Reads and writes what the socket allows for client `i`.
    pub fn on_event(&mut self, registry: &Registry, i: usize) -> Step {
        let Some(c) = self.clients.get_mut(i).and_then(|c| c.as_mut()) else {
            return Step::Closed;
        };
        if !c.out.is_empty() {
            return self.flush(registry, i);
        }
        let mut gone = false;
        while c.len < MAX_REQUEST {
            match c.stream.read(&mut c.buf[c.len..]) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(n) => c.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        let parsed = parse_request(&c.buf[..c.len]);
        match parsed {
            Parse::Ok(r) => Step::Request(r),
            Parse::Incomplete if !gone => Step::Wait,
            Parse::Incomplete => {
                self.close(registry, i);
                Step::Closed
            }
            Parse::Bad => self.respond(registry, i, response(400, "text/plain", "bad request\n")),
            Parse::TooLarge => self.respond(
                registry,
                i,
                response(431, "text/plain", "request too large\n"),
            ),
        }
    }

    /// Starts sending `resp` to client `i`; the connection closes once it is out.
    pub fn respond(&mut self, registry: &Registry, i: usize, resp: Vec<u8>) -> Step {
        if let Some(c) = self.clients.get_mut(i).and_then(|c| c.as_mut()) {
            c.out = resp;
            c.sent = 0;
            self.served += 1;
        }
        self.flush(registry, i)
    }

    fn flush(&mut self, registry: &Registry, i: usize) -> Step {
        let Some(c) = self.clients.get_mut(i).and_then(|c| c.as_mut()) else {
            return Step::Closed;
        };
        while c.sent < c.out.len() {
            match c.stream.write(&c.out[c.sent..]) {
                Ok(0) => break,
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(_) => break,
            }
        }
        self.close(registry, i);
        Step::Closed
    }

    /// Client `i`'s deadline passed.
    pub fn expire(&mut self, registry: &Registry, i: usize, now: u64) {
        if let Some(c) = self.clients.get(i).and_then(|c| c.as_ref()) {
            if now >= c.deadline {
                self.close(registry, i);
            }
        }
    }

    fn close(&mut self, registry: &Registry, i: usize) {
        if let Some(mut c) = self.clients.get_mut(i).and_then(|c| c.take()) {
            let _ = registry.deregister(&mut c.stream);
        }
    }

    pub fn open_clients(&self) -> usize {
        self.clients.iter().filter(|c| c.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_lines() {
        assert_eq!(
            parse_request(b"GET /stats HTTP/1.1\r\nHost: x\r\n"),
            Parse::Incomplete
        );
        assert_eq!(
            parse_request(b"GET /stats?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Parse::Ok(Request {
                method: "GET".into(),
                path: "/stats".into()
            })
        );
        assert_eq!(
            parse_request(b"POST /stats HTTP/1.0\n\n"),
            Parse::Ok(Request {
                method: "POST".into(),
                path: "/stats".into()
            })
        );
        for bad in [
            &b"GET /stats\r\n\r\n"[..],
            b"GET stats HTTP/1.1\r\n\r\n",
            b"get /stats HTTP/1.1\r\n\r\n",
            b"GET /stats HTTP/2\r\n\r\n",
            b"GET  /stats HTTP/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert_eq!(
                parse_request(bad),
                Parse::Bad,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_request(&[b'a'; MAX_REQUEST]), Parse::TooLarge);
    }

    #[test]
    fn response_has_length_and_closes() {
        let r = String::from_utf8(response(404, "text/plain", "not found\n")).unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(r.contains("Content-Length: 10\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\nnot found\n"));
    }
}
