//! kcptun-rs: a TCP port forwarder over KCP and UDP, wire-compatible with kcptun-libev v2.
//!
//! The path of a byte, client side: a TCP connection accepted by the event loop
//! ([`event_loop`]) belongs to one session ([`session`]), which wraps what it reads in
//! DIAL/PUSH/EOF messages ([`proto`]) and writes them into its KCP conversation ([`kcp`]).
//! KCP cuts the stream into segments and hands whole packets to the loop, which seals each one
//! into a datagram ([`framing`]: AEAD, padding, replay filter) and sends it on the one shared UDP
//! socket. The server side runs the same path backwards: open and replay-check the datagram, feed
//! it to the conversation's KCP engine, parse the messages out of the byte stream, write the
//! payload to a TCP connection it dialled to `connect`.
//!
//! Layers, bottom up: [`kcp`] is a pure state machine (time is an argument, no I/O);
//! [`framing`] turns packets into datagrams and back; [`proto`] holds the message codecs;
//! [`session`] maps one TCP connection onto one conversation; [`event_loop`] alone owns mio, the
//! sockets and the clock. [`config`] and [`cli`] turn a file and a command line into settings.
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod event_loop;
pub mod framing;
pub mod http;
pub mod kcp;
pub mod logging;
pub mod peers;
pub mod proto;
pub mod report;
pub mod session;
pub mod stats;
pub mod sys;
pub mod timer;
