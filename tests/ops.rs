//! Operations through the real binary: the HTTP status endpoints, NAT rebinding on the
//! server, the client's recovery after its server went silent or away.

mod harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use harness::*;

const MIB: usize = 1024 * 1024;

fn with_http(cfg: &mut serde_json::Value, port: u16) {
    cfg["http_listen"] = serde_json::json!(format!("127.0.0.1:{port}"));
}

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

#[test]
fn http_endpoints_answer_and_counters_move() {
    let echo = echo_server();
    let (sh, ch) = (free_tcp_port(), free_tcp_port());
    let t = tunnel_with(
        echo.addr,
        Impair::default(),
        Impair::default(),
        21,
        |s| with_http(s, sh),
        |c| with_http(c, ch),
    );
    // Before any traffic.
    assert_eq!(metric(addr(sh), "kcptun_conversations_opened_total"), 0.0);
    let before = metric(addr(ch), "kcptun_tcp_bytes_total{direction=\"in\"}");
    assert_eq!(before, 0.0);

    let mut c = connect(t.listen);
    c.write_all(&[7u8; 100_000]).unwrap();
    let mut back = vec![0u8; 100_000];
    c.read_exact(&mut back).unwrap();
    assert!(back.iter().all(|&b| b == 7));

    // While the conversation is open.
    let (status, stats) = http(addr(ch), "GET", "/stats");
    assert_eq!(status, 200);
    assert!(stats.contains("(client mode)"), "{stats}");
    assert!(stats.contains("1 open"), "{stats}");
    assert!(stats.contains("established"), "{stats}");
    let (status, _) = http(addr(sh), "POST", "/stats");
    assert_eq!(status, 200);
    assert_eq!(
        metric(addr(ch), "kcptun_conversations{state=\"open\"}"),
        1.0
    );
    assert_eq!(metric(addr(sh), "kcptun_conversations_opened_total"), 1.0);
    // The client's TCP bytes in are counted live (not only when the conversation ends).
    assert_eq!(
        metric(addr(ch), "kcptun_tcp_bytes_total{direction=\"in\"}"),
        100_000.0
    );
    assert_eq!(
        metric(addr(sh), "kcptun_tcp_bytes_total{direction=\"out\"}"),
        100_000.0
    );
    assert!(metric(addr(ch), "kcptun_udp_bytes_total{direction=\"out\"}") > 100_000.0);
    assert!(metric(addr(ch), "kcptun_kcp_segments_sent_total") >= 77.0);

    // Health: a server serves; a client has heard from its server.
    assert_eq!(http(addr(sh), "GET", "/healthy"), (200, "ok\n".to_string()));
    assert_eq!(http(addr(ch), "GET", "/healthy"), (200, "ok\n".to_string()));
    // Errors.
    assert_eq!(http(addr(sh), "GET", "/nope").0, 404);
    assert_eq!(http(addr(sh), "DELETE", "/stats").0, 405);
    let mut raw = connect(addr(sh));
    raw.write_all(b"this is not http\r\n\r\n").unwrap();
    let mut resp = String::new();
    raw.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    let mut big = connect(addr(sh));
    let _ = big.write_all(&vec![b'a'; 8192]);
    let mut resp = String::new();
    let _ = big.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 431 "), "{resp}");
    // A forged datagram shows up under its reason.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&[0u8; 100], t.kcp_bind).unwrap();
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        metric(addr(sh), "kcptun_dropped_datagrams_total{reason=\"auth\"}"),
        1.0
    );
}

#[test]
fn client_is_unhealthy_when_its_server_is_gone() {
    let echo = echo_server();
    let ch = free_tcp_port();
    let mut t = tunnel_with(
        echo.addr,
        Impair::default(),
        Impair::default(),
        22,
        |_| {},
        |c| {
            with_http(c, ch);
            c["keepalive"] = serde_json::json!(1); // peer silence: clamp(1*3+4, 10, 1800) = 10 s
        },
    );
    thread::sleep(Duration::from_millis(300));
    assert_eq!(http(addr(ch), "GET", "/healthy").0, 200);
    t.relay.stop(); // nothing reaches the server any more
    let start = Instant::now();
    loop {
        let (status, body) = http(addr(ch), "GET", "/healthy");
        if status == 503 {
            assert!(body.starts_with("no reply from the server for "), "{body}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "still healthy");
        thread::sleep(Duration::from_millis(250));
    }
    assert!(start.elapsed() >= Duration::from_secs(8));
}

/// Many slow clients on the status port (one byte a second each) do not stall forwarding.
#[test]
fn slow_loris_on_the_status_port_does_not_stall_forwarding() {
    let echo = echo_server();
    let sh = free_tcp_port();
    let t = tunnel_with(
        echo.addr,
        Impair::default(),
        Impair::default(),
        23,
        |s| with_http(s, sh),
        |_| {},
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut lorises = Vec::new();
    for _ in 0..100 {
        let stop = stop.clone();
        lorises.push(thread::spawn(move || {
            let Ok(mut c) = TcpStream::connect(addr(sh)) else {
                return;
            };
            while !stop.load(Ordering::Relaxed) {
                if c.write_all(b"G").is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(1000));
            }
        }));
    }
    thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    for i in 0..20 {
        // Fresh connections keep opening and moving data while the lorises hang on.
        let mut c = connect(t.listen);
        c.write_all(format!("request {i}").as_bytes()).unwrap();
        let mut got = vec![0u8; format!("request {i}").len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, format!("request {i}").as_bytes());
    }
    echo_roundtrip(t.listen, 31, 8 * MIB);
    let took = start.elapsed();
    // And the status port still answers (the oldest lorises were dropped to make room).
    assert_eq!(http(addr(sh), "GET", "/healthy").0, 200);
    stop.store(true, Ordering::Relaxed);
    assert!(took < Duration::from_secs(20), "forwarding took {took:?}");
}

/// The client's source address changes in the middle of a transfer (the relay is restarted
/// on the same front port, so the server sees the client from a new port): the server moves
/// the conversation and the transfer completes byte-exact.
#[test]
fn nat_rebinding_mid_transfer_is_survived() {
    let echo = echo_server();
    let sh = free_tcp_port();
    let mut t = tunnel_with(
        echo.addr,
        Impair::default(),
        Impair::default(),
        24,
        |s| with_http(s, sh),
        |_| {},
    );
    let len = 16 * MIB;
    let (writer, reader) = echo_in_background(t.listen, 41, len);
    // Let some data flow, then rebind.
    let t0 = Instant::now();
    while metric(addr(sh), "kcptun_tcp_bytes_total{direction=\"out\"}") < (2 * MIB) as f64 {
        assert!(t0.elapsed() < Duration::from_secs(20));
        thread::sleep(Duration::from_millis(20));
    }
    let front = t.relay.addr;
    t.relay.stop();
    drop(std::mem::replace(
        &mut t.relay,
        Relay::start_on(
            front,
            t.kcp_bind,
            Impair::default(),
            Impair::default(),
            25,
            false,
        ),
    ));
    assert_eq!(reader.join().unwrap(), Ok(len));
    writer.join().unwrap();
    assert!(metric(addr(sh), "kcptun_peer_moves_total") >= 1.0);
}

/// The client's NAT mapping disappears (everything from its address is dropped): after the
/// peer-silence time it re-opens its UDP socket (a new source port) and the transfer that was
/// running completes over it.
#[test]
fn client_reopens_its_socket_after_silence_and_resumes() {
    let echo = echo_server();
    let (sh, ch) = (free_tcp_port(), free_tcp_port());
    let t = tunnel_with(
        echo.addr,
        Impair::default(),
        Impair::default(),
        26,
        |s| {
            with_http(s, sh);
            s["linger"] = serde_json::json!(60);
        },
        |c| {
            with_http(c, ch);
            c["keepalive"] = serde_json::json!(1); // silence 10 s
            c["linger"] = serde_json::json!(60);
        },
    );
    let len = 4 * MIB;
    let (writer, reader) = echo_in_background(t.listen, 42, len);
    let t0 = Instant::now();
    while metric(addr(sh), "kcptun_tcp_bytes_total{direction=\"out\"}") < MIB as f64 {
        assert!(t0.elapsed() < Duration::from_secs(20));
        thread::sleep(Duration::from_millis(10));
    }
    let old = t.relay.block_current_client().expect("client seen");
    assert_eq!(reader.join().unwrap(), Ok(len));
    writer.join().unwrap();
    assert_ne!(t.relay.client_addr(), Some(old), "client kept its port");
    assert_eq!(metric(addr(ch), "kcptun_udp_reopens_total"), 1.0);
    // (The relay is the NAT here: the server keeps seeing the relay's port, so nothing moves
    // on its side; nat_rebinding_mid_transfer_is_survived covers the server's move.)
}

/// The server goes away for 5 s and comes back: new connections work within 2 s of its
/// return, while the conversation that was running when it died is reset by the new server
/// at its next retransmission (the timer backs off up to `rto_max`, 4 s).
#[test]
fn server_restart_new_connections_work_within_two_seconds() {
    let echo = echo_server();
    let mut t = tunnel_to(echo.addr, Impair::default(), Impair::default(), 27);
    let c = connect(t.listen);
    let mut w = c.try_clone().unwrap();
    // A transfer is running when the server dies.
    let writer = thread::spawn(move || {
        let _ = send_stream(&mut w, 43, 64 * MIB);
    });
    thread::sleep(Duration::from_millis(300));
    let cfg = server_config(t.kcp_bind, echo.addr);
    t.server.child.kill().unwrap();
    let _ = t.server.child.wait();
    thread::sleep(Duration::from_secs(5));
    t.server = start("server", &cfg);
    let back = Instant::now();
    // A new connection works, quickly, though the old conversation still waits for its timer.
    let mut n = connect(t.listen);
    n.write_all(b"after the restart").unwrap();
    let mut got = [0u8; 17];
    n.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"after the restart");
    let new_works = back.elapsed();
    assert!(new_works < Duration::from_secs(2), "took {new_works:?}");
    // The old conversation is reset by the new server; the client's connection ends.
    let mut r = c;
    r.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut sink = vec![0u8; 65536];
    loop {
        match r.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = writer.join();
    let old_ended = back.elapsed();
    assert!(
        old_ended < Duration::from_secs(10),
        "the old connection ended {old_ended:?} after the restart"
    );
    eprintln!("new connection worked after {new_works:?}, the old one ended after {old_ended:?}");
}

fn proc_ids(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    };
    (field("Uid:"), field("Gid:"))
}

fn is_root() -> bool {
    proc_ids(std::process::id()).0.starts_with("0 ")
}

#[test]
fn privileges_are_dropped_after_binding() {
    if !is_root() {
        eprintln!("skipping: privilege drop needs root");
        return;
    }
    let echo = echo_server();
    let t = tunnel_with(
        echo.addr,
        Impair::default(),
        Impair::default(),
        28,
        |s| s["user"] = serde_json::json!("nobody"),
        |c| c["user"] = serde_json::json!("nobody:nogroup"),
    );
    for p in [&t.server, &t.client] {
        wait_log(p, "running as nobody"); // logged right after the drop
        let (uid, gid) = proc_ids(p.pid());
        assert_eq!(uid, "65534 65534 65534 65534", "{} uid", p.name);
        assert_eq!(gid, "65534 65534 65534 65534", "{} gid", p.name);
        let groups = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap();
        let groups = groups.lines().find(|l| l.starts_with("Groups:")).unwrap();
        assert_eq!(
            groups.split_whitespace().skip(1).collect::<Vec<_>>(),
            ["65534"]
        );
    }
    // Still forwarding (the sockets were bound before the drop).
    echo_roundtrip(t.listen, 51, MIB);
}

#[test]
fn unknown_user_refuses_to_start() {
    let dir = tmpdir("baduser");
    let cfg = dir.join("c.json");
    let mut v = server_config(addr(free_udp_port()), addr(free_tcp_port()));
    v["user"] = serde_json::json!("no-such-user-kcptun");
    std::fs::write(&cfg, v.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kcptun-rs"))
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-user-kcptun"), "{err}");
}

fn banner_server(banner: &'static [u8]) -> SocketAddr {
    scripted_server(move |mut c| {
        let _ = c.write_all(banner);
    })
}

fn read_banner(listen: SocketAddr) -> Vec<u8> {
    let mut c = connect(listen);
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    got
}

fn wait_log(p: &Proc, needle: &str) {
    let t = Instant::now();
    while !p.log_text().contains(needle) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} never logged {needle:?}",
            p.name
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_applies_a_valid_config_and_keeps_the_old_one_on_errors() {
    let one = banner_server(b"ONE");
    let two = banner_server(b"TWO");
    let mut t = tunnel_with(
        one,
        Impair::default(),
        Impair::default(),
        29,
        |s| s["loglevel"] = serde_json::json!(4),
        |_| {},
    );
    assert_eq!(read_banner(t.listen), b"ONE");
    assert!(
        !t.server.log_text().contains(" D conv"),
        "debug lines at loglevel 4"
    );

    // A valid change: new target, more verbose.
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&t.server.config).unwrap()).unwrap();
    cfg["connect"] = serde_json::json!(two.to_string());
    cfg["loglevel"] = serde_json::json!(6);
    std::fs::write(&t.server.config, cfg.to_string()).unwrap();
    t.server.signal(1);
    wait_log(&t.server, "reloaded");
    assert_eq!(read_banner(t.listen), b"TWO");
    wait_log(&t.server, " D conv"); // debug level is on now

    // An invalid file: logged, nothing changes.
    std::fs::write(&t.server.config, "{ not json").unwrap();
    t.server.signal(1);
    wait_log(&t.server, "keeping the running configuration");
    assert_eq!(read_banner(t.listen), b"TWO");

    // A mode change (a client config for the server process): refused.
    let client_cfg = client_config(addr(free_tcp_port()), t.kcp_bind);
    std::fs::write(&t.server.config, client_cfg.to_string()).unwrap();
    t.server.signal(1);
    wait_log(&t.server, "needs a restart");
    assert_eq!(read_banner(t.listen), b"TWO");
    assert!(
        t.server.child.try_wait().unwrap().is_none(),
        "the server died"
    );
}

#[test]
fn log_goes_to_a_file_when_asked() {
    let dir = tmpdir("logfile");
    let file = dir.join("kcptun.log");
    let echo = echo_server();
    let kcp_bind = addr(free_udp_port());
    let mut cfg = server_config(kcp_bind, echo.addr);
    cfg["log"] = serde_json::json!(file.to_str().unwrap());
    let cfg_path = dir.join("c.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kcptun-rs"))
        .arg("-c")
        .arg(&cfg_path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !std::fs::read_to_string(&file)
        .unwrap_or_default()
        .contains("udp socket on")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "nothing logged to the file"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(" I kcptun-rs "), "{text}");
}

/// A syslog sink that cannot be opened is a start-up error, not a silent loss of logs; with
/// a syslog socket present, the lines arrive there in RFC 3164 form.
#[test]
fn syslog_sink_sends_rfc3164_lines_or_fails_clearly() {
    let dir = tmpdir("syslog");
    let mut cfg = server_config(addr(free_udp_port()), addr(free_tcp_port()));
    cfg["log"] = serde_json::json!("syslog");
    let cfg_path = dir.join("c.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    if !std::path::Path::new("/dev/log").exists() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kcptun-rs"))
            .arg("-c")
            .arg(&cfg_path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("syslog: /dev/log"), "{err}");
        return;
    }
    eprintln!("a system syslog socket exists: checking only that the process starts");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kcptun-rs"))
        .arg("-c")
        .arg(&cfg_path)
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited with syslog present"
    );
    let _ = child.kill();
    let _ = child.wait();
}
