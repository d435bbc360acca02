//! Configuration: every key, every default, every range edge, one test per kind of error, the
//! sample files, and the real kcptun-libev configs recorded in ../shared/vectors.

use kcptun::config::{Addr, AddrError, Config, ConfigError, Mode, RANGES};
use kcptun::framing::{Key, Method};
use kcptun::logging::LogTarget;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;

const PSK: &str = "577Uf3H10ZS81/TrxItrcxAdJ5ZwHwdtKhJwTSwaDJw=";

fn server() -> Value {
    json!({"kcp_bind": "127.0.0.1:29900", "connect": "127.0.0.1:8080"})
}

fn client() -> Value {
    json!({"listen": "127.0.0.1:12345", "kcp_connect": "127.0.0.1:29900"})
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn parse(v: &Value) -> Result<Config, ConfigError> {
    Config::from_json_str(&v.to_string())
}

fn parse_err(v: &Value) -> ConfigError {
    parse(v).expect_err("config should be refused")
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ---- defaults and every key ---------------------------------------------------------------

#[test]
fn defaults() {
    let c = parse(&server()).unwrap();
    assert_eq!(c.mode, Mode::Server);
    assert!(c.is_server() && !c.is_client());
    assert_eq!(c.method, Method::None);
    assert!(!c.has_psk() && !c.has_password());
    assert!(c.key().unwrap().is_none());
    assert_eq!(
        (
            c.kcp.mtu,
            c.kcp.sndwnd,
            c.kcp.rcvwnd,
            c.kcp.nodelay,
            c.kcp.interval
        ),
        (1400, 2048, 2048, 1, 100)
    );
    assert_eq!(
        (
            c.kcp.resend,
            c.kcp.nc,
            c.kcp.flush,
            c.kcp.rc,
            c.kcp.ack_copies
        ),
        (0, true, 1, true, 1)
    );
    assert_eq!(
        (
            c.tcp.reuseport,
            c.tcp.keepalive,
            c.tcp.nodelay,
            c.tcp.sndbuf,
            c.tcp.rcvbuf
        ),
        (false, false, true, 0, 0)
    );
    assert_eq!(
        (
            c.udp.reuseport,
            c.udp.sndbuf,
            c.udp.rcvbuf,
            c.udp.peer_sockets,
            c.udp.gso
        ),
        (false, 0, 0, 64, true)
    );
    assert_eq!(
        (c.timeout, c.linger, c.keepalive, c.time_wait),
        (600, 30, 25, 120)
    );
    assert_eq!(c.timeout().as_secs(), 600);
    assert_eq!(c.linger().as_secs(), 30);
    assert_eq!(c.keepalive().unwrap().as_secs(), 25);
    assert_eq!(c.time_wait().as_secs(), 120);
    assert_eq!(c.loglevel, 4);
    assert_eq!(c.log, LogTarget::Stderr);
    assert_eq!((c.user.as_deref(), c.netdev.as_deref()), (None, None));
    assert!(c.http_listen.is_none() && c.listen.is_none() && c.kcp_connect.is_none());
    assert_eq!((c.max_sessions, c.max_dials), (65535, 4096));
}

#[test]
fn every_key() {
    let v = json!({
        "listen": "127.0.0.1:1",
        "connect": "127.0.0.1:2",
        "kcp_bind": "127.0.0.1:3",
        "kcp_connect": "127.0.0.1:4",
        "method": "chacha20poly1305_ietf",
        "psk": PSK,
        "kcp": {"mtu": 1200, "sndwnd": 512, "rcvwnd": 1024, "nodelay": 2, "interval": 20,
                "resend": 3, "nc": 0, "flush": 2},
        "tcp": {"reuseport": true, "keepalive": true, "nodelay": false, "sndbuf": 65536,
                "rcvbuf": 131072},
        "udp": {"reuseport": true, "sndbuf": 1048576, "rcvbuf": 2097152},
        "timeout": 300, "linger": 10, "keepalive": 0, "time_wait": 60,
        "loglevel": 6, "log": "stdout", "user": "nobody:nogroup", "netdev": "eth0",
        "http_listen": "127.0.0.1:8081", "max_sessions": 100, "max_dials": 10
    });
    let c = parse(&v).unwrap();
    assert_eq!(c.mode, Mode::Peer);
    assert!(c.is_server() && c.is_client());
    assert_eq!(c.listen.as_ref().unwrap().addr(), sa("127.0.0.1:1"));
    assert_eq!(c.connect.as_ref().unwrap().addr(), sa("127.0.0.1:2"));
    assert_eq!(c.kcp_bind.as_ref().unwrap().addr(), sa("127.0.0.1:3"));
    assert_eq!(c.kcp_connect.as_ref().unwrap().addr(), sa("127.0.0.1:4"));
    assert_eq!(c.method, Method::ChaCha20Poly1305Ietf);
    assert!(c.has_psk());
    assert!(c.key().unwrap().is_some());
    let k = &c.kcp;
    assert_eq!(
        (k.mtu, k.sndwnd, k.rcvwnd, k.nodelay, k.interval),
        (1200, 512, 1024, 2, 20)
    );
    assert_eq!((k.resend, k.nc, k.flush), (3, false, 2));
    let t = &c.tcp;
    assert_eq!(
        (t.reuseport, t.keepalive, t.nodelay, t.sndbuf, t.rcvbuf),
        (true, true, false, 65536, 131072)
    );
    assert_eq!(
        (c.udp.reuseport, c.udp.sndbuf, c.udp.rcvbuf),
        (true, 1048576, 2097152)
    );
    assert_eq!(
        (c.timeout, c.linger, c.keepalive, c.time_wait),
        (300, 10, 0, 60)
    );
    assert!(c.keepalive().is_none());
    assert_eq!((c.loglevel, c.log.clone()), (6, LogTarget::Stdout));
    assert_eq!(c.user.as_deref(), Some("nobody:nogroup"));
    assert_eq!(c.netdev.as_deref(), Some("eth0"));
    assert_eq!(c.http_listen.as_ref().unwrap().addr(), sa("127.0.0.1:8081"));
    assert_eq!((c.max_sessions, c.max_dials), (100, 10));
}

#[test]
fn modes() {
    let c = parse(&client()).unwrap();
    assert_eq!(c.mode, Mode::Client);
    assert!(c.is_client() && !c.is_server());
    assert_eq!(Mode::Peer.name(), "peer");
    let c = parse(&with(server(), client())).unwrap();
    assert_eq!(c.mode, Mode::Peer);
}

#[test]
fn v20_aliases() {
    let c = parse(&json!({"udp_bind": "127.0.0.1:3", "connect": "127.0.0.1:2"})).unwrap();
    assert_eq!(c.mode, Mode::Server);
    assert_eq!(c.kcp_bind.unwrap().addr(), sa("127.0.0.1:3"));
    let c = parse(&json!({"listen": "127.0.0.1:1", "udp_connect": "127.0.0.1:4"})).unwrap();
    assert_eq!(c.mode, Mode::Client);
    assert_eq!(c.kcp_connect.unwrap().spec, "127.0.0.1:4");
}

#[test]
fn password_key() {
    let c = parse(&with(
        server(),
        json!({"method": "xchacha20poly1305_ietf",
                                         "password": "vector-test-password"}),
    ))
    .unwrap();
    assert!(c.has_password() && !c.has_psk());
    assert!(c.key().unwrap().is_some());
}

#[test]
fn debug_never_shows_keys() {
    let c = parse(&with(
        server(),
        json!({"method": "xsalsa20poly1305", "psk": PSK}),
    ))
    .unwrap();
    let d = format!("{c:?}");
    assert!(!d.contains(PSK) && !d.contains("577Uf3H1"), "{d}");
    assert!(d.contains("redacted"));
    let c = parse(&with(
        server(),
        json!({"method": "aes256gcm", "password": "hunter2-secret"}),
    ))
    .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!format!("{:?}", c.key().unwrap()).contains("hunter2"));
}

#[test]
fn kcp_config_mtu() {
    let c = parse(&server()).unwrap();
    let k = c.kcp_config(false, 40);
    assert_eq!(k.mtu, 1332); // WIRE.md: defaults, IPv4, xchacha
    assert_eq!(c.kcp_config(true, 40).mtu, 1312);
    assert_eq!(c.kcp_config(false, 28).mtu, 1344);
    assert_eq!(c.kcp_config(false, 0).mtu, 1372);
    assert_eq!(
        (k.sndwnd, k.rcvwnd, k.nodelay, k.interval, k.resend, k.nc),
        (2048, 2048, 1, 100, 0, true)
    );
    let c = parse(&with(
        server(),
        json!({"kcp": {"sndwnd": 65536, "rcvwnd": 16, "mtu": 300}}),
    ))
    .unwrap();
    let k = c.kcp_config(true, 40);
    assert_eq!((k.sndwnd, k.rcvwnd, k.mtu), (65535, 16, 212));
    assert_eq!(k.ack_copies, 1);
    let c = parse(&with(server(), json!({"kcp": {"ack_copies": 2}}))).unwrap();
    assert_eq!(c.kcp_config(false, 40).ack_copies, 2);
}

// ---- ranges ---------------------------------------------------------------------------------

/// Builds a server config with `key` (dotted for the nested ones) set to `n`.
fn set_int(key: &str, n: i64) -> Value {
    let mut v = server();
    match key.split_once('.') {
        Some((obj, k)) => v[obj] = json!({ k: n }),
        None => v[key] = json!(n),
    }
    v
}

fn get_int(c: &Config, key: &str) -> i64 {
    match key {
        "kcp.mtu" => c.kcp.mtu.into(),
        "kcp.sndwnd" => c.kcp.sndwnd.into(),
        "kcp.rcvwnd" => c.kcp.rcvwnd.into(),
        "kcp.nodelay" => c.kcp.nodelay.into(),
        "kcp.interval" => c.kcp.interval.into(),
        "kcp.resend" => c.kcp.resend.into(),
        "kcp.nc" => c.kcp.nc.into(),
        "kcp.flush" => c.kcp.flush.into(),
        "kcp.rc" => c.kcp.rc.into(),
        "kcp.ack_copies" => c.kcp.ack_copies.into(),
        "tcp.sndbuf" => c.tcp.sndbuf.into(),
        "tcp.rcvbuf" => c.tcp.rcvbuf.into(),
        "udp.sndbuf" => c.udp.sndbuf.into(),
        "udp.rcvbuf" => c.udp.rcvbuf.into(),
        "udp.peer_sockets" => c.udp.peer_sockets.into(),
        "timeout" => c.timeout.into(),
        "linger" => c.linger.into(),
        "keepalive" => c.keepalive.into(),
        "time_wait" => c.time_wait.into(),
        "loglevel" => c.loglevel.into(),
        "max_sessions" => c.max_sessions.into(),
        "max_dials" => c.max_dials.into(),
        _ => panic!("no getter for {key}"),
    }
}

#[test]
fn range_edges() {
    let expected: &[(&str, i64, i64)] = &[
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
        ("tcp.sndbuf", 0, 33554432),
        ("tcp.rcvbuf", 0, 33554432),
        ("udp.sndbuf", 0, 33554432),
        ("udp.rcvbuf", 0, 33554432),
        ("udp.peer_sockets", 0, 512),
        ("timeout", 60, 86400),
        ("linger", 5, 600),
        ("keepalive", 0, 600),
        ("time_wait", 5, 3600),
        ("loglevel", 0, 8),
        ("max_sessions", 1, 65535),
        ("max_dials", 1, 65535),
    ];
    assert_eq!(RANGES, expected);
    for &(key, min, max) in RANGES {
        for ok in [min, max] {
            let c = parse(&set_int(key, ok)).unwrap_or_else(|e| panic!("{key}={ok}: {e}"));
            assert_eq!(get_int(&c, key), ok, "{key}");
        }
        for bad in [min - 1, max + 1] {
            let e = parse_err(&set_int(key, bad));
            assert_eq!(
                e,
                ConfigError::OutOfRange {
                    key: key.to_owned(),
                    value: bad,
                    min,
                    max
                },
                "{key}={bad}"
            );
            let msg = e.to_string();
            assert!(msg.contains(&format!("\"{key}\"")), "{msg}");
            assert!(msg.contains(&format!("{min} - {max}")), "{msg}");
        }
    }
}

#[test]
fn huge_integer_is_out_of_range() {
    let v: Value = serde_json::from_str(
        r#"{"kcp_bind": "127.0.0.1:3", "connect": "127.0.0.1:2", "timeout": 18446744073709551615}"#,
    )
    .unwrap();
    assert!(matches!(parse_err(&v), ConfigError::OutOfRange { key, .. } if key == "timeout"));
}

// ---- one test per kind of error -------------------------------------------------------------

#[test]
fn error_io() {
    let e = Config::from_file("/nonexistent/kcptun-rs.json").unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/kcptun-rs.json"));
}

#[test]
fn error_too_large() {
    let dir = std::env::temp_dir().join(format!("kcptun-rs-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("big.json");
    std::fs::write(&p, " ".repeat(65536)).unwrap();
    let e = Config::from_file(&p).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(e, ConfigError::TooLarge { .. }), "{e}");
}

#[test]
fn error_json_syntax() {
    let e = Config::from_json_str("{\"listen\": ").unwrap_err();
    assert!(matches!(e, ConfigError::Json(_)));
    assert!(e.to_string().contains("line 1"), "{e}");
}

#[test]
fn error_not_object() {
    assert_eq!(
        parse_err(&json!([1, 2])),
        ConfigError::NotObject { key: String::new() }
    );
    let e = parse_err(&with(server(), json!({"kcp": 5})));
    assert_eq!(e, ConfigError::NotObject { key: "kcp".into() });
    assert_eq!(e.to_string(), "\"kcp\" must be an object");
}

#[test]
fn error_unknown_key() {
    let e = parse_err(&with(server(), json!({"reuseport": true})));
    assert_eq!(
        e,
        ConfigError::UnknownKey {
            key: "reuseport".into()
        }
    );
    assert_eq!(e.to_string(), "unknown key \"reuseport\"");
    for (obj, k) in [("kcp", "mtux"), ("tcp", "nc"), ("udp", "keepalive")] {
        let e = parse_err(&with(server(), json!({ obj: { k: 1 } })));
        assert_eq!(
            e,
            ConfigError::UnknownKey {
                key: format!("{obj}.{k}")
            }
        );
    }
}

#[test]
fn error_unsupported() {
    for k in ["obfs", "rendezvous_server", "service_id"] {
        let e = parse_err(&with(server(), json!({ k: "x" })));
        assert_eq!(e, ConfigError::Unsupported { key: k.into() });
        assert!(e.to_string().contains("not supported"), "{e}");
    }
}

#[test]
fn error_wrong_type() {
    let cases = [
        (json!({"kcp": {"mtu": "1400"}}), "kcp.mtu", "an integer"),
        (json!({"kcp": {"nc": true}}), "kcp.nc", "an integer"),
        (json!({"timeout": 60.5}), "timeout", "an integer"),
        (
            json!({"tcp": {"nodelay": 1}}),
            "tcp.nodelay",
            "true or false",
        ),
        (
            json!({"udp": {"reuseport": "yes"}}),
            "udp.reuseport",
            "true or false",
        ),
        (json!({"connect": 8080}), "connect", "a string"),
        (json!({"method": null}), "method", "a string"),
        (json!({"user": ""}), "user", "a non-empty string"),
    ];
    for (extra, key, expected) in cases {
        let e = parse_err(&with(server(), extra));
        assert_eq!(
            e,
            ConfigError::WrongType {
                key: key.into(),
                expected
            },
            "{key}"
        );
        assert!(
            e.to_string().starts_with(&format!("\"{key}\" must be")),
            "{e}"
        );
    }
}

#[test]
fn error_alias_conflict() {
    let e = parse_err(&with(server(), json!({"udp_bind": "127.0.0.1:5"})));
    assert_eq!(
        e,
        ConfigError::Alias {
            key: "kcp_bind",
            alias: "udp_bind"
        }
    );
    let e = parse_err(&with(client(), json!({"udp_connect": "127.0.0.1:5"})));
    assert_eq!(
        e,
        ConfigError::Alias {
            key: "kcp_connect",
            alias: "udp_connect"
        }
    );
    assert!(e.to_string().contains("cannot both be given"));
}

#[test]
fn error_mode_names_missing_keys() {
    let e = parse_err(&json!({}));
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::Mode { .. }));
    assert!(
        msg.contains("missing \"kcp_bind\" and \"connect\""),
        "{msg}"
    );
    assert!(
        msg.contains("missing \"listen\" and \"kcp_connect\""),
        "{msg}"
    );
    let msg = parse_err(&json!({"kcp_bind": "127.0.0.1:1"})).to_string();
    assert!(msg.contains("(missing \"connect\")"), "{msg}");
    let msg = parse_err(&json!({"listen": "127.0.0.1:1"})).to_string();
    assert!(msg.contains("(missing \"kcp_connect\")"), "{msg}");
    // A half pair next to a complete one.
    let msg = parse_err(&with(server(), json!({"listen": "127.0.0.1:9"}))).to_string();
    assert!(msg.starts_with("\"listen\" needs \"kcp_connect\""), "{msg}");
    let msg = parse_err(&with(client(), json!({"connect": "127.0.0.1:9"}))).to_string();
    assert!(msg.starts_with("\"connect\" needs \"kcp_bind\""), "{msg}");
}

#[test]
fn error_address() {
    let cases = [
        ("127.0.0.1", AddrError::NoPort),
        ("127.0.0.1:", AddrError::BadPort),
        ("127.0.0.1:65536", AddrError::BadPort),
        ("127.0.0.1:http", AddrError::BadPort),
        ("127.0.0.1:-1", AddrError::BadPort),
        ("[::1:80", AddrError::BadHost),
        ("[zz]:80", AddrError::BadHost),
        ("a:b:80", AddrError::BadHost),
        ("bad host:80", AddrError::BadHost),
    ];
    for (spec, want) in cases {
        let e = parse_err(&json!({"kcp_bind": spec, "connect": "127.0.0.1:2"}));
        assert_eq!(
            e,
            ConfigError::Address {
                key: "kcp_bind".into(),
                value: spec.into(),
                error: want
            },
            "{spec}"
        );
        assert!(e.to_string().starts_with("\"kcp_bind\": "), "{e}");
    }
    // The v2.0 name is reported under the name the file used.
    let e = parse_err(&json!({"udp_bind": "nope", "connect": "127.0.0.1:2"}));
    assert!(matches!(e, ConfigError::Address { key, .. } if key == "udp_bind"));
}

#[test]
fn error_family() {
    let e = parse_err(&json!({"kcp_bind": "127.0.0.1:1", "connect": "127.0.0.1:2",
                              "listen": "127.0.0.1:3", "kcp_connect": "[::1]:4"}));
    assert_eq!(e, ConfigError::Family);
    // A wildcard bind fits either family.
    parse(&json!({"kcp_bind": ":1", "connect": "127.0.0.1:2",
                  "listen": "127.0.0.1:3", "kcp_connect": "[::1]:4"}))
    .unwrap();
}

#[test]
fn error_unknown_method() {
    for m in ["none", "chacha20", "XCHACHA20POLY1305_IETF", ""] {
        let e = parse_err(&with(server(), json!({"method": m, "psk": PSK})));
        assert_eq!(e, ConfigError::UnknownMethod { value: m.into() });
        assert!(e.to_string().contains("omit \"method\""), "{e}");
    }
}

#[test]
fn error_psk_and_password() {
    let e = parse_err(&with(
        server(),
        json!({"method": "xchacha20poly1305_ietf", "psk": PSK,
                                             "password": "x"}),
    ));
    assert_eq!(e, ConfigError::PskAndPassword);
}

#[test]
fn error_method_without_key() {
    for m in Method::ALL {
        let e = parse_err(&with(server(), json!({"method": m.name()})));
        assert_eq!(e, ConfigError::NoKey { method: m.name() });
        assert!(e.to_string().contains("--genpsk"), "{e}");
    }
}

#[test]
fn error_key_without_method() {
    let e = parse_err(&with(server(), json!({"psk": PSK})));
    assert_eq!(e, ConfigError::KeyWithoutMethod { key: "psk" });
    let e = parse_err(&with(server(), json!({"password": "x"})));
    assert_eq!(e, ConfigError::KeyWithoutMethod { key: "password" });
}

#[test]
fn error_bad_psk_never_echoed() {
    let bad = "577Uf3H10ZS81/TrxItrcxAdJ5ZwHwdtKhJwTSwaDJw"; // padding missing
    let e = parse_err(&with(
        server(),
        json!({"method": "xchacha20poly1305_ietf", "psk": bad}),
    ));
    assert!(matches!(e, ConfigError::Key { key: "psk", .. }), "{e}");
    assert!(!e.to_string().contains(bad), "{e}");
    let e = parse_err(&with(
        server(),
        json!({"method": "xchacha20poly1305_ietf",
                                             "password": "a\u{0}b"}),
    ));
    assert!(
        matches!(
            e,
            ConfigError::Key {
                key: "password",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn error_log_target() {
    let e = parse_err(&with(server(), json!({"log": "relative/file.log"})));
    assert!(matches!(e, ConfigError::Log { .. }));
    assert!(e.to_string().starts_with("\"log\": "), "{e}");
}

// ---- addresses ------------------------------------------------------------------------------

#[test]
fn address_forms() {
    let a = Addr::parse("[::1]:80").unwrap();
    assert_eq!(
        (a.host.as_deref(), a.port, a.addr()),
        (Some("::1"), 80, sa("[::1]:80"))
    );
    let a = Addr::parse("::1:80").unwrap();
    assert_eq!(a.addr(), sa("[::1]:80"));
    let a = Addr::parse(":12345").unwrap();
    assert!(a.is_wildcard());
    assert_eq!(a.addrs, vec![sa("[::]:12345"), sa("0.0.0.0:12345")]);
    let a = Addr::parse("localhost:7").unwrap();
    assert!(
        a.addrs
            .iter()
            .all(|x| x.ip().is_loopback() && x.port() == 7),
        "{a:?}"
    );
    assert_eq!(a.to_string(), "localhost:7");
    assert_eq!(a.resolve().unwrap(), a.addrs);
    let c = parse(&json!({"kcp_bind": ":29900", "connect": "localhost:22"})).unwrap();
    assert_eq!(c.kcp_bind.unwrap().spec, ":29900");
    assert_eq!(c.connect.unwrap().host.as_deref(), Some("localhost"));
}

// ---- sample files and recorded kcptun-libev configs -----------------------------------------

#[test]
fn sample_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let s = Config::from_file(root.join("server.json")).unwrap();
    let p = Config::from_file(root.join("peer.json")).unwrap();
    assert_eq!((s.mode, p.mode), (Mode::Server, Mode::Client));
    assert_eq!(s.method, Method::XChaCha20Poly1305Ietf);
    assert_eq!(
        s.kcp_bind.as_ref().unwrap().addr(),
        p.kcp_connect.as_ref().unwrap().addr()
    );
    assert_eq!(s.key().unwrap(), p.key().unwrap());
}

#[test]
fn vector_scenario_configs() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors"));
    if !dir.is_dir() {
        eprintln!("skipping: ../shared/vectors not found");
        return;
    }
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let Some(scenarios) = v.get("scenarios").and_then(Value::as_array) else {
            continue;
        };
        for sc in scenarios {
            for (role, mode) in [("server", Mode::Server), ("client", Mode::Client)] {
                let cfg = &sc["configs"][role];
                let c = parse(cfg)
                    .unwrap_or_else(|e| panic!("{} {} {role}: {e}", path.display(), sc["name"]));
                assert_eq!(c.mode, mode);
                assert_eq!(c.method.name(), cfg["method"].as_str().unwrap());
                assert_eq!(i64::from(c.loglevel), cfg["loglevel"].as_i64().unwrap());
                // The derived key is the one the reference used (psk or password).
                let hex = v["key_hex"].as_str().unwrap();
                let bytes: Vec<u8> = (0..64)
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                let want = Key::from_bytes(bytes.try_into().unwrap());
                assert_eq!(c.key().unwrap().unwrap(), want, "{}", path.display());
                n += 1;
            }
        }
    }
    assert!(n > 0);
    eprintln!("{n} recorded configs parsed");
}
