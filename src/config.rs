//! The JSON configuration file: kcptun-libev's schema (same keys, defaults and ranges), checked
//! strictly, with addresses resolved once at start.
//!
//! Parsing walks a `serde_json::Value` by hand rather than deriving `Deserialize`, so that every
//! error names the key it is about (`"kcp.mtu" is out of range: ...`) and so that the keys
//! kcptun-rs refuses (`obfs`, rendezvous mode) get their own message.
//!
//! Differences from kcptun-libev, all on the side of refusing what would silently misbehave:
//! unknown keys are errors (kcptun-libev warns and goes on); `method` with neither `psk` nor
//! `password` is an error (kcptun-libev uses a constant key); `psk`/`password` without `method`
//! is an error (kcptun-libev ignores them and sends plaintext); ports must be numeric; a config
//! with all four addresses runs both roles on one UDP socket ("peer" mode) where kcptun-libev
//! refuses it. Additions: `max_sessions`, `max_dials`, `log`.

use crate::framing::{self, Key, Method};
use crate::kcp::KcpConfig;
use crate::logging::{LogTarget, DEFAULT_LOGLEVEL, MAX_LOGLEVEL};
use serde_json::{Map, Value};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// kcptun-libev refuses config files of this size or larger; so do we.
pub const MAX_CONFIG_SIZE: u64 = 65536;

/// IPv4 + UDP header bytes, subtracted from `kcp.mtu`.
pub const IPV4_UDP_OVERHEAD: usize = 28;
/// IPv6 + UDP header bytes, subtracted from `kcp.mtu`.
pub const IPV6_UDP_OVERHEAD: usize = 48;

/// Which roles this process plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `kcp_bind` + `connect`: accepts conversations, dials TCP.
    Server,
    /// `listen` + `kcp_connect`: accepts TCP, opens conversations.
    Client,
    /// All four: both roles in one process, sharing the UDP socket bound to `kcp_bind`.
    Peer,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Server => "server",
            Mode::Client => "client",
            Mode::Peer => "peer",
        }
    }
}

/// One address key: the string as written (kept for re-resolution after a network change) and
/// what it resolved to at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    /// The config string, e.g. `"example.com:29900"`, `"[::1]:80"`, `":12345"`.
    pub spec: String,
    /// Host part without brackets; `None` for `":port"` (all local addresses).
    pub host: Option<String>,
    pub port: u16,
    /// Resolved addresses, in resolver order; never empty. For `":port"`: `[::]:port` then
    /// `0.0.0.0:port` (bind the first that works: hosts without IPv6 fail the first).
    pub addrs: Vec<SocketAddr>,
}

impl Addr {
    /// Parses `host:port`, `[v6]:port`, a bare IPv6 literal with a port after its last colon,
    /// or `:port`, and resolves it (literals without the resolver).
    pub fn parse(spec: &str) -> Result<Addr, AddrError> {
        let colon = spec.rfind(':').ok_or(AddrError::NoPort)?;
        let (host, port) = (&spec[..colon], &spec[colon + 1..]);
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AddrError::BadPort);
        }
        let port: u16 = port.parse().map_err(|_| AddrError::BadPort)?;
        let host = if host.is_empty() {
            None
        } else if let Some(inner) = host.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(AddrError::BadHost)?;
            inner.parse::<Ipv6Addr>().map_err(|_| AddrError::BadHost)?;
            Some(inner.to_owned())
        } else {
            if host.contains(['[', ']', ' ', '\t', '/']) {
                return Err(AddrError::BadHost);
            }
            if host.contains(':') && host.parse::<Ipv6Addr>().is_err() {
                return Err(AddrError::BadHost);
            }
            Some(host.to_owned())
        };
        let mut addr = Addr {
            spec: spec.to_owned(),
            host,
            port,
            addrs: Vec::new(),
        };
        addr.addrs = addr
            .resolve()
            .map_err(|e| AddrError::Resolve(e.to_string()))?;
        Ok(addr)
    }

    /// Resolves the address again (names may have moved). Literals never touch the resolver.
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let Some(host) = &self.host else {
            return Ok(vec![
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), self.port),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.port),
            ]);
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = (host.as_str(), self.port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no address found"));
        }
        Ok(addrs)
    }

    /// The first resolved address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// True for `":port"`.
    pub fn is_wildcard(&self) -> bool {
        self.host.is_none()
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrError {
    NoPort,
    BadPort,
    BadHost,
    Resolve(String),
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::NoPort => f.write_str("expected host:port, [ipv6]:port or :port"),
            AddrError::BadPort => f.write_str("the port must be a number from 0 to 65535"),
            AddrError::BadHost => f.write_str("invalid host"),
            AddrError::Resolve(e) => write!(f, "cannot resolve: {e}"),
        }
    }
}

/// `kcp.*`: the KCP engine's tunables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KcpSettings {
    /// Size of the whole IP packet; KCP's own mtu is this less IP/UDP headers and framing.
    pub mtu: u32,
    pub sndwnd: u32,
    pub rcvwnd: u32,
    pub nodelay: u32,
    pub interval: u32,
    pub resend: u32,
    pub nc: bool,
    /// 0: flush only on the timer; 1: also after each send; 2: also flush ACKs at once.
    pub flush: u32,
    /// kcptun-rs addition, on by default: the sender paces at the measured delivery rate and
    /// keeps about two BDPs in flight, within `sndwnd` (wire-neutral). 0 = exactly ikcp's
    /// sender.
    pub rc: bool,
    /// kcptun-rs addition, 1 by default: datagrams of ACKs go out this many times while the
    /// received stream has a hole (see `KcpConfig::ack_copies`). Changes the receiver's
    /// wire behaviour, so it is opt-in.
    pub ack_copies: u32,
}

impl Default for KcpSettings {
    fn default() -> Self {
        KcpSettings {
            mtu: 1400,
            // kcptun-libev's 256 caps a 50 ms x 100 Mbit/s path at about half its rate. With
            // rate control the flight follows what the path carries (about two BDPs, plus the
            // holes being repaired), so these are memory caps, not targets: 2048 segments
            // (2.7 MiB) covers 50 Mbit/s x 100 ms with 2% loss, about Linux TCP's own
            // default buffer limits; a conversation holds memory only while busy.
            sndwnd: 2048,
            rcvwnd: 2048,
            nodelay: 1,
            interval: 100,
            resend: 0,
            nc: true,
            flush: 1,
            rc: true,
            ack_copies: 1,
        }
    }
}

/// `tcp.*`: options of every TCP socket (listener, accepted and dialled ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSettings {
    pub reuseport: bool,
    /// SO_KEEPALIVE.
    pub keepalive: bool,
    /// TCP_NODELAY.
    pub nodelay: bool,
    /// SO_SNDBUF in bytes; 0 leaves the system default.
    pub sndbuf: u32,
    /// SO_RCVBUF in bytes; 0 leaves the system default.
    pub rcvbuf: u32,
}

impl Default for TcpSettings {
    fn default() -> Self {
        TcpSettings {
            reuseport: false,
            keepalive: false,
            nodelay: true,
            sndbuf: 0,
            rcvbuf: 0,
        }
    }
}

/// `udp.*`: options of the UDP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpSettings {
    pub reuseport: bool,
    /// SO_SNDBUF in bytes; 0 leaves the system default.
    pub sndbuf: u32,
    /// SO_RCVBUF in bytes; 0 leaves the system default.
    pub rcvbuf: u32,
    /// kcptun-rs addition (server): at most this many peers get a UDP socket of their own,
    /// so a flood of garbage at the port does not crowd out their datagrams. 0 = off.
    pub peer_sockets: u32,
    /// kcptun-rs addition: send runs of equal datagrams with UDP GSO (`UDP_SEGMENT`), falling
    /// back by itself where the kernel refuses it.
    pub gso: bool,
}

impl Default for UdpSettings {
    fn default() -> Self {
        UdpSettings {
            reuseport: false,
            sndbuf: 0,
            rcvbuf: 0,
            peer_sockets: 64,
            gso: true,
        }
    }
}

/// A secret string: redacted in `Debug`, overwritten when dropped.
#[derive(Clone, PartialEq, Eq)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    /// TCP listen address (client role).
    pub listen: Option<Addr>,
    /// TCP address the server role dials for each conversation.
    pub connect: Option<Addr>,
    /// UDP bind address (server role; peer mode's shared socket). v2.0 name: `udp_bind`.
    pub kcp_bind: Option<Addr>,
    /// UDP server address (client role). v2.0 name: `udp_connect`.
    pub kcp_connect: Option<Addr>,
    /// `Method::None` when `method` is absent: plaintext datagrams.
    pub method: Method,
    psk: Option<Secret>,
    password: Option<Secret>,
    pub kcp: KcpSettings,
    pub tcp: TcpSettings,
    pub udp: UdpSettings,
    /// Seconds without payload before a conversation is closed.
    pub timeout: u32,
    /// Seconds a half-closed or closing conversation may go without progress.
    pub linger: u32,
    /// Seconds between UDP keepalive PINGs from the client; 0 disables them.
    pub keepalive: u32,
    /// Seconds a closed conversation's id is remembered.
    pub time_wait: u32,
    /// kcptun-libev's 0..=8 scale; see [`crate::logging`].
    pub loglevel: u8,
    /// Log sink (kcptun-rs addition).
    pub log: LogTarget,
    /// `USER[:GROUP]` to switch to after binding, when started as root.
    pub user: Option<String>,
    /// Network device to bind sockets to (SO_BINDTODEVICE).
    pub netdev: Option<String>,
    /// Address of the HTTP status listener.
    pub http_listen: Option<Addr>,
    /// Cap on live conversations (kcptun-rs addition; kcptun-libev's fixed cap is 65535).
    pub max_sessions: u32,
    /// Cap on TCP dials in progress on the server side (kcptun-rs addition).
    pub max_dials: u32,
}

/// Why a configuration was refused. Every message names the key at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    Io {
        path: String,
        error: String,
    },
    /// The file is 64 KiB or larger.
    TooLarge {
        path: String,
    },
    /// Not JSON (serde_json's message carries line and column).
    Json(String),
    /// The top level, `kcp`, `tcp` or `udp` is not an object (`key` is "" for the top level).
    NotObject {
        key: String,
    },
    UnknownKey {
        key: String,
    },
    /// A kcptun-libev key whose feature kcptun-rs does not implement.
    Unsupported {
        key: String,
    },
    WrongType {
        key: String,
        expected: &'static str,
    },
    OutOfRange {
        key: String,
        value: i64,
        min: i64,
        max: i64,
    },
    /// A key given under both its current and its v2.0 name.
    Alias {
        key: &'static str,
        alias: &'static str,
    },
    /// Neither a complete server pair nor a complete client pair (or a half pair left over).
    Mode {
        message: String,
    },
    Address {
        key: String,
        value: String,
        error: AddrError,
    },
    /// `kcp_bind` and `kcp_connect` share a socket but resolve to different address families.
    Family,
    UnknownMethod {
        value: String,
    },
    PskAndPassword,
    /// An encrypting method with neither `psk` nor `password`.
    NoKey {
        method: &'static str,
    },
    /// `psk` or `password` without `method`.
    KeyWithoutMethod {
        key: &'static str,
    },
    /// A bad `psk` or `password`; the value itself is never included.
    Key {
        key: &'static str,
        error: String,
    },
    Log {
        error: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConfigError::*;
        match self {
            Io { path, error } => write!(f, "cannot read config file {path:?}: {error}"),
            TooLarge { path } => {
                write!(
                    f,
                    "config file {path:?} is too large (limit {MAX_CONFIG_SIZE} bytes)"
                )
            }
            Json(e) => write!(f, "config is not valid JSON: {e}"),
            NotObject { key } if key.is_empty() => f.write_str("config must be a JSON object"),
            NotObject { key } => write!(f, "{key:?} must be an object"),
            UnknownKey { key } => write!(f, "unknown key {key:?}"),
            Unsupported { key } => write!(f, "{key:?} is not supported by kcptun-rs"),
            WrongType { key, expected } => write!(f, "{key:?} must be {expected}"),
            OutOfRange {
                key,
                value,
                min,
                max,
            } => {
                write!(
                    f,
                    "{key:?} is out of range: {value} (allowed {min} - {max})"
                )
            }
            Alias { key, alias } => {
                write!(
                    f,
                    "{key:?} and {alias:?} (its v2.0 name) cannot both be given"
                )
            }
            Mode { message } => f.write_str(message),
            Address { key, value, error } => write!(f, "{key:?}: {value:?}: {error}"),
            Family => f.write_str(
                "\"kcp_bind\" and \"kcp_connect\" share one UDP socket and must be of the same \
                 address family (both IPv4 or both IPv6)",
            ),
            UnknownMethod { value } => write!(
                f,
                "\"method\": unknown method {value:?} (expected one of {}; omit \"method\" for \
                 no encryption)",
                method_list()
            ),
            PskAndPassword => f.write_str("\"psk\" and \"password\" cannot both be given"),
            NoKey { method } => write!(
                f,
                "\"method\" is {method:?} but neither \"psk\" nor \"password\" is given \
                 (generate a key with --genpsk {method})"
            ),
            KeyWithoutMethod { key } => write!(
                f,
                "{key:?} is given without \"method\": set \"method\" (e.g. \
                 \"xchacha20poly1305_ietf\") or remove {key:?}"
            ),
            Key { key, error } => write!(f, "{key:?}: {error}"),
            Log { error } => write!(f, "\"log\": {error}"),
        }
    }
}

impl std::error::Error for ConfigError {}

fn method_list() -> String {
    Method::ALL
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every top-level key kcptun-rs accepts, for the unknown-key check.
const TOP_KEYS: &[&str] = &[
    "listen",
    "connect",
    "kcp_bind",
    "kcp_connect",
    "udp_bind",
    "udp_connect",
    "method",
    "psk",
    "password",
    "kcp",
    "tcp",
    "udp",
    "timeout",
    "linger",
    "keepalive",
    "time_wait",
    "loglevel",
    "log",
    "user",
    "netdev",
    "http_listen",
    "max_sessions",
    "max_dials",
];
const KCP_KEYS: &[&str] = &[
    "mtu",
    "sndwnd",
    "rcvwnd",
    "nodelay",
    "interval",
    "resend",
    "nc",
    "flush",
    "rc",
    "ack_copies",
];
const TCP_KEYS: &[&str] = &["reuseport", "keepalive", "nodelay", "sndbuf", "rcvbuf"];
const UDP_KEYS: &[&str] = &["reuseport", "sndbuf", "rcvbuf", "peer_sockets", "gso"];
/// kcptun-libev keys for features kcptun-rs leaves out.
const UNSUPPORTED_KEYS: &[&str] = &["obfs", "rendezvous_server", "service_id"];

/// Socket buffer sizes: kcptun-libev's schema allows up to 32 MiB.
const MAX_SOCKBUF: i64 = 33_554_432;

/// Range table: (key, min, max). Shared by the parser and the tests.
pub const RANGES: &[(&str, i64, i64)] = &[
    ("kcp.mtu", 300, 1500),
    ("kcp.sndwnd", 16, 65536),
    ("kcp.rcvwnd", 16, 65536),
    ("kcp.nodelay", 0, 2),
    ("kcp.interval", 10, 500),
    ("kcp.resend", 0, 100),
    ("kcp.nc", 0, 1),
    ("kcp.flush", 0, 2),
    ("kcp.rc", 0, 1),
    ("kcp.ack_copies", 1, 3),
    ("tcp.sndbuf", 0, MAX_SOCKBUF),
    ("tcp.rcvbuf", 0, MAX_SOCKBUF),
    ("udp.sndbuf", 0, MAX_SOCKBUF),
    ("udp.rcvbuf", 0, MAX_SOCKBUF),
    ("udp.peer_sockets", 0, 512),
    ("timeout", 60, 86400),
    ("linger", 5, 600),
    ("keepalive", 0, 600),
    ("time_wait", 5, 3600),
    ("loglevel", 0, MAX_LOGLEVEL as i64),
    ("max_sessions", 1, 65535),
    ("max_dials", 1, 65535),
];

fn range_of(key: &str) -> (i64, i64) {
    let (_, lo, hi) = RANGES
        .iter()
        .find(|(k, _, _)| *k == key)
        .expect("key in RANGES");
    (*lo, *hi)
}

/// Reads one object's keys, remembering the prefix for error messages.
struct Scope<'a> {
    prefix: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Scope<'a> {
    fn new(
        prefix: &'static str,
        map: &'a Map<String, Value>,
        known: &[&str],
    ) -> Result<Self, ConfigError> {
        for k in map.keys() {
            let full = format!("{prefix}{k}");
            if prefix.is_empty() && UNSUPPORTED_KEYS.contains(&k.as_str()) {
                return Err(ConfigError::Unsupported { key: full });
            }
            if !known.contains(&k.as_str()) {
                return Err(ConfigError::UnknownKey { key: full });
            }
        }
        Ok(Scope { prefix, map })
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn int(&self, key: &str, default: i64) -> Result<i64, ConfigError> {
        let full = self.full(key);
        let Some(v) = self.map.get(key) else {
            return Ok(default);
        };
        // kcptun-libev reads integers only: 1.0, "1" and true are all refused.
        let n = match (v.as_i64(), v.as_u64()) {
            (Some(n), _) => n,
            (None, Some(_)) => i64::MAX, // beyond i64: out of every range
            _ => {
                return Err(ConfigError::WrongType {
                    key: full,
                    expected: "an integer",
                })
            }
        };
        let (min, max) = range_of(&full);
        if n < min || n > max {
            return Err(ConfigError::OutOfRange {
                key: full,
                value: n,
                min,
                max,
            });
        }
        Ok(n)
    }

    fn uint(&self, key: &str, default: u32) -> Result<u32, ConfigError> {
        // Every range in RANGES lies within 0..=u32::MAX.
        self.int(key, default.into()).map(|n| n as u32)
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ConfigError::WrongType {
                key: self.full(key),
                expected: "true or false",
            }),
        }
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ConfigError::WrongType {
                key: self.full(key),
                expected: "a string",
            }),
        }
    }

    fn nonempty(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.string(key)? {
            Some("") => Err(ConfigError::WrongType {
                key: self.full(key),
                expected: "a non-empty string",
            }),
            other => Ok(other),
        }
    }

    fn object(&self, key: &'static str, known: &[&str]) -> Result<Option<Scope<'a>>, ConfigError> {
        let prefix = match key {
            "kcp" => "kcp.",
            "tcp" => "tcp.",
            _ => "udp.",
        };
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Scope::new(prefix, m, known).map(Some),
            Some(_) => Err(ConfigError::NotObject {
                key: key.to_owned(),
            }),
        }
    }

    /// An address key, possibly also given under its v2.0 name.
    fn addr(
        &self,
        key: &'static str,
        alias: Option<&'static str>,
    ) -> Result<Option<Addr>, ConfigError> {
        let (name, spec) = match (
            self.string(key)?,
            alias.map(|a| self.string(a)).transpose()?,
        ) {
            (Some(_), Some(Some(_))) => {
                return Err(ConfigError::Alias {
                    key,
                    alias: alias.unwrap(),
                });
            }
            (Some(s), _) => (key, s),
            (None, Some(Some(s))) => (alias.unwrap(), s),
            (None, _) => return Ok(None),
        };
        Addr::parse(spec)
            .map(Some)
            .map_err(|error| ConfigError::Address {
                key: name.to_owned(),
                value: spec.to_owned(),
                error,
            })
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let io_err = |e: io::Error| ConfigError::Io {
            path: shown.clone(),
            error: e.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if meta.len() >= MAX_CONFIG_SIZE {
            return Err(ConfigError::TooLarge { path: shown });
        }
        let text = std::fs::read_to_string(path).map_err(io_err)?;
        Config::from_json_str(&text)
    }

    /// Parses and validates a config given as JSON text; resolves its addresses.
    pub fn from_json_str(text: &str) -> Result<Config, ConfigError> {
        let root: Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        let Value::Object(map) = &root else {
            return Err(ConfigError::NotObject { key: String::new() });
        };
        let top = Scope::new("", map, TOP_KEYS)?;

        let mut kcp = KcpSettings::default();
        if let Some(s) = top.object("kcp", KCP_KEYS)? {
            kcp.mtu = s.uint("mtu", kcp.mtu)?;
            kcp.sndwnd = s.uint("sndwnd", kcp.sndwnd)?;
            kcp.rcvwnd = s.uint("rcvwnd", kcp.rcvwnd)?;
            kcp.nodelay = s.uint("nodelay", kcp.nodelay)?;
            kcp.interval = s.uint("interval", kcp.interval)?;
            kcp.resend = s.uint("resend", kcp.resend)?;
            kcp.nc = s.uint("nc", kcp.nc.into())? != 0;
            kcp.flush = s.uint("flush", kcp.flush)?;
            kcp.rc = s.uint("rc", kcp.rc.into())? != 0;
            kcp.ack_copies = s.uint("ack_copies", kcp.ack_copies)?;
        }
        let mut tcp = TcpSettings::default();
        if let Some(s) = top.object("tcp", TCP_KEYS)? {
            tcp.reuseport = s.bool("reuseport", tcp.reuseport)?;
            tcp.keepalive = s.bool("keepalive", tcp.keepalive)?;
            tcp.nodelay = s.bool("nodelay", tcp.nodelay)?;
            tcp.sndbuf = s.uint("sndbuf", tcp.sndbuf)?;
            tcp.rcvbuf = s.uint("rcvbuf", tcp.rcvbuf)?;
        }
        let mut udp = UdpSettings::default();
        if let Some(s) = top.object("udp", UDP_KEYS)? {
            udp.reuseport = s.bool("reuseport", udp.reuseport)?;
            udp.sndbuf = s.uint("sndbuf", udp.sndbuf)?;
            udp.rcvbuf = s.uint("rcvbuf", udp.rcvbuf)?;
            udp.peer_sockets = s.uint("peer_sockets", udp.peer_sockets)?;
            udp.gso = s.bool("gso", udp.gso)?;
        }

        let timeout = top.uint("timeout", 600)?;
        let linger = top.uint("linger", 30)?;
        let keepalive = top.uint("keepalive", 25)?;
        let time_wait = top.uint("time_wait", 120)?;
        let loglevel = top.uint("loglevel", DEFAULT_LOGLEVEL.into())? as u8;
        let max_sessions = top.uint("max_sessions", 65535)?;
        let max_dials = top.uint("max_dials", 4096)?;
        let log = match top.nonempty("log")? {
            None => LogTarget::default(),
            Some(s) => LogTarget::from_name(s).map_err(|e| ConfigError::Log {
                error: e.to_string(),
            })?,
        };
        let user = top.nonempty("user")?.map(str::to_owned);
        let netdev = top.nonempty("netdev")?.map(str::to_owned);

        // Keys and method: checked before the addresses so that a bad key is reported even
        // when a host name cannot be resolved at the moment.
        let psk = top.string("psk")?;
        let password = top.string("password")?;
        let method = match top.string("method")? {
            None => Method::None,
            Some(name) => Method::from_name(name).map_err(|_| ConfigError::UnknownMethod {
                value: name.to_owned(),
            })?,
        };
        match (method, psk, password) {
            (_, Some(_), Some(_)) => return Err(ConfigError::PskAndPassword),
            (Method::None, Some(_), None) => {
                return Err(ConfigError::KeyWithoutMethod { key: "psk" })
            }
            (Method::None, None, Some(_)) => {
                return Err(ConfigError::KeyWithoutMethod { key: "password" })
            }
            (Method::None, None, None) => {}
            (m, None, None) => return Err(ConfigError::NoKey { method: m.name() }),
            (_, Some(p), None) => {
                framing::key_from_psk(p).map_err(|e| ConfigError::Key {
                    key: "psk",
                    error: e.to_string(),
                })?;
            }
            (_, None, Some(p)) => {
                // Only the syntax here; the (deliberately cheap) KDF runs in `key()`.
                if p.as_bytes().contains(&0) {
                    return Err(ConfigError::Key {
                        key: "password",
                        error: "password contains a nul byte".into(),
                    });
                }
            }
        }

        let has = |k: &str| map.contains_key(k);
        let has_bind = has("kcp_bind") || has("udp_bind");
        let has_kconn = has("kcp_connect") || has("udp_connect");
        let server = has_bind && has("connect");
        let client = has("listen") && has_kconn;
        let mode = match (server, client) {
            (true, true) => Mode::Peer,
            (true, false) => Mode::Server,
            (false, true) => Mode::Client,
            (false, false) => {
                return Err(ConfigError::Mode {
                    message: mode_message(&has),
                })
            }
        };
        // A half pair next to a complete one is a mistake, not a mode.
        for (given, needs) in [
            (has("listen") && !client, "\"listen\" needs \"kcp_connect\""),
            (has_kconn && !client, "\"kcp_connect\" needs \"listen\""),
            (has("connect") && !server, "\"connect\" needs \"kcp_bind\""),
            (has_bind && !server, "\"kcp_bind\" needs \"connect\""),
        ] {
            if given {
                return Err(ConfigError::Mode {
                    message: format!(
                        "{needs} (a server has \"kcp_bind\" and \"connect\", a client \
                         \"listen\" and \"kcp_connect\", a peer all four)"
                    ),
                });
            }
        }

        let listen = top.addr("listen", None)?;
        let connect = top.addr("connect", None)?;
        let kcp_bind = top.addr("kcp_bind", Some("udp_bind"))?;
        let kcp_connect = top.addr("kcp_connect", Some("udp_connect"))?;
        let http_listen = top.addr("http_listen", None)?;
        if let (Some(b), Some(c)) = (&kcp_bind, &kcp_connect) {
            let same = b.is_wildcard()
                || b.addrs
                    .iter()
                    .any(|x| c.addrs.iter().any(|y| x.is_ipv4() == y.is_ipv4()));
            if !same {
                return Err(ConfigError::Family);
            }
        }

        Ok(Config {
            mode,
            listen,
            connect,
            kcp_bind,
            kcp_connect,
            method,
            psk: psk.map(|s| Secret(s.to_owned())),
            password: password.map(|s| Secret(s.to_owned())),
            kcp,
            tcp,
            udp,
            timeout,
            linger,
            keepalive,
            time_wait,
            loglevel,
            log,
            user,
            netdev,
            http_listen,
            max_sessions,
            max_dials,
        })
    }

    /// Server role active (server or peer mode).
    pub fn is_server(&self) -> bool {
        matches!(self.mode, Mode::Server | Mode::Peer)
    }

    /// Client role active (client or peer mode).
    pub fn is_client(&self) -> bool {
        matches!(self.mode, Mode::Client | Mode::Peer)
    }

    /// True when a `psk` was given (the value itself stays private).
    pub fn has_psk(&self) -> bool {
        self.psk.is_some()
    }

    /// True when a `password` was given.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// The key for the framing layer: `None` without encryption. Runs the password KDF.
    pub fn key(&self) -> Result<Option<Key>, ConfigError> {
        if self.method == Method::None {
            return Ok(None);
        }
        if let Some(p) = &self.psk {
            return framing::key_from_psk(&p.0)
                .map(Some)
                .map_err(|e| ConfigError::Key {
                    key: "psk",
                    error: e.to_string(),
                });
        }
        if let Some(p) = &self.password {
            return framing::key_from_password(&p.0)
                .map(Some)
                .map_err(|e| ConfigError::Key {
                    key: "password",
                    error: e.to_string(),
                });
        }
        // from_json_str refuses an encrypting method without a key.
        Err(ConfigError::NoKey {
            method: self.method.name(),
        })
    }

    /// KCP's own mtu: `kcp.mtu` less the IP and UDP headers (28 IPv4, 48 IPv6) and the
    /// per-datagram framing `overhead` (tag + nonce).
    pub fn kcp_mtu(&self, ipv6: bool, overhead: usize) -> usize {
        let ip = if ipv6 {
            IPV6_UDP_OVERHEAD
        } else {
            IPV4_UDP_OVERHEAD
        };
        // mtu >= 300 and overhead <= 40, so this never underflows.
        (self.kcp.mtu as usize).saturating_sub(ip + overhead)
    }

    /// Engine settings for one conversation. Windows above 65535 (kcptun-libev allows 65536)
    /// are clamped to the engine's u16.
    pub fn kcp_config(&self, ipv6: bool, overhead: usize) -> KcpConfig {
        let wnd = |w: u32| w.min(u16::MAX as u32) as u16;
        KcpConfig {
            mtu: self.kcp_mtu(ipv6, overhead),
            sndwnd: wnd(self.kcp.sndwnd),
            rcvwnd: wnd(self.kcp.rcvwnd),
            nodelay: self.kcp.nodelay,
            interval: self.kcp.interval,
            resend: self.kcp.resend,
            nc: self.kcp.nc,
            rate_control: self.kcp.rc,
            ack_copies: self.kcp.ack_copies as u8,
            ..KcpConfig::default()
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.into())
    }

    pub fn linger(&self) -> Duration {
        Duration::from_secs(self.linger.into())
    }

    /// `None` when UDP keepalive is disabled (`keepalive: 0`).
    pub fn keepalive(&self) -> Option<Duration> {
        (self.keepalive > 0).then(|| Duration::from_secs(self.keepalive.into()))
    }

    pub fn time_wait(&self) -> Duration {
        Duration::from_secs(self.time_wait.into())
    }
}

/// The message for a config with neither complete pair: which keys are missing for each role.
fn mode_message(has: &dyn Fn(&str) -> bool) -> String {
    let missing = |pairs: [(&str, bool); 2]| {
        pairs
            .iter()
            .filter(|(_, h)| !h)
            .map(|(k, _)| format!("{k:?}"))
            .collect::<Vec<_>>()
    };
    let srv = missing([
        ("kcp_bind", has("kcp_bind") || has("udp_bind")),
        ("connect", has("connect")),
    ]);
    let cli = missing([
        ("listen", has("listen")),
        ("kcp_connect", has("kcp_connect") || has("udp_connect")),
    ]);
    format!(
        "no forward configured: a server needs {} (missing {}); a client needs {} (missing {})",
        "\"kcp_bind\" and \"connect\"",
        srv.join(" and "),
        "\"listen\" and \"kcp_connect\"",
        cli.join(" and ")
    )
}
