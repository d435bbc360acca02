//! The OpenWRT packaging's UCI -> JSON step (`contrib/openwrt/uci2json.sh`): the sample
//! `/etc/config/kcptun-rs` must turn into JSON that kcptun-rs accepts, and UCI typos must be
//! caught by the script before procd starts a respawn loop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn sample() -> PathBuf {
    root().join("contrib/openwrt/kcptun-rs.config.sample")
}

/// `sh uci2json.sh ARGS...`; the script is POSIX sh + awk, as on the router (busybox).
fn uci2json(args: &[&std::ffi::OsStr]) -> Output {
    Command::new("sh")
        .arg(root().join("contrib/openwrt/uci2json.sh"))
        .args(args)
        .output()
        .expect("run sh")
}

fn convert(file: &Path, instance: &str) -> Value {
    let out = uci2json(&[file.as_os_str(), instance.as_ref()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "uci2json.sh {} {instance} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// A fresh file in the temp dir (no tempfile crate: the dependency list is fixed).
fn temp_file(tag: &str, contents: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!(
        "kcptun-rs-contrib-{}-{n}-{tag}",
        std::process::id()
    ));
    std::fs::write(&p, contents).expect("write temp file");
    p
}

/// Runs `kcptun-rs --check-config -c FILE` when the binary has that flag. Until it does, says
/// so and skips (the lead makes this strict once the flag has landed).
fn check_config(json: &Value, tag: &str) {
    let bin = env!("CARGO_BIN_EXE_kcptun-rs");
    let help = Command::new(bin)
        .arg("--help")
        .output()
        .expect("run kcptun-rs --help");
    let help = String::from_utf8_lossy(&help.stdout) + String::from_utf8_lossy(&help.stderr);
    if !help.contains("--check-config") {
        eprintln!("skipping check-config: not implemented yet");
        return;
    }
    let file = temp_file(&format!("{tag}.json"), &json.to_string());
    let out = Command::new(bin)
        .arg("--check-config")
        .arg("-c")
        .arg(&file)
        .output()
        .expect("run kcptun-rs --check-config");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "kcptun-rs --check-config rejected the JSON of instance {tag}: {}{}\n{json:#}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sample_client_converts_and_is_valid() {
    let v = convert(&sample(), "client");
    assert_eq!(v["listen"], "0.0.0.0:1080");
    assert_eq!(v["kcp_connect"], "203.0.113.10:29900");
    assert_eq!(v["method"], "xchacha20poly1305_ietf");
    assert_eq!(v["psk"].as_str().map(str::len), Some(44));
    assert_eq!(v["loglevel"], 4);
    assert_eq!(
        v["kcp"],
        json!({"sndwnd": 256, "rcvwnd": 256, "nodelay": 1, "interval": 50, "resend": 3, "nc": 1})
    );
    assert_eq!(v["tcp"], json!({"nodelay": true}));
    assert!(
        v.get("enabled").is_none(),
        "enabled is for the init script only"
    );
    assert!(v.get("udp").is_none());
    check_config(&v, "client");
}

#[test]
fn sample_server_converts_and_is_valid() {
    let v = convert(&sample(), "server");
    assert_eq!(v["kcp_bind"], "0.0.0.0:29900");
    assert_eq!(v["connect"], "192.168.1.1:22");
    assert_eq!(v["password"], "correct horse battery staple");
    assert_eq!(v["timeout"], 600);
    assert_eq!(v["keepalive"], 25);
    assert_eq!(v["kcp"], json!({"mtu": 1400}));
    assert_eq!(v["udp"], json!({"reuseport": true}));
    assert!(v.get("psk").is_none());
    check_config(&v, "server");
}

#[test]
fn sample_instances_ship_disabled() {
    // Installing the package must not start a tunnel with the demo key.
    let out = uci2json(&["-l".as_ref(), sample().as_os_str()]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

#[test]
fn quoting_anonymous_sections_and_listing() {
    let uci = temp_file(
        "quoting",
        concat!(
            "package kcptun-rs\n",
            "\n",
            "config globals 'main'\n",
            "\toption ignored 'not an instance'\n",
            "\n",
            "config instance\n",
            "\toption kcp_bind \":29900\"  # trailing comment\n",
            "\toption connect 127.0.0.1:22\n",
            "\toption method xchacha20poly1305_ietf\n",
            "\toption password 'it'\\''s \"quoted\" \\ back'\n",
            "\toption tcp_keepalive 'no'\n",
            "\toption udp_sndbuf '0065536'\n",
            "\n",
            "config instance 'off'\n",
            "\toption enabled '0'\n",
            "\toption listen '127.0.0.1:1'\n",
            "\n",
            "config instance 'on'\n",
            "\toption enabled 'yes'\n",
            "\toption listen '127.0.0.1:1080'\n",
            "\toption kcp_connect '127.0.0.1:29900'\n",
        ),
    );
    let out = uci2json(&["-l".as_ref(), uci.as_os_str()]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "instance0\non\n");

    let v = convert(&uci, "instance0");
    assert_eq!(v, convert(&uci, "@instance[0]"));
    assert_eq!(v["kcp_bind"], ":29900");
    assert_eq!(v["password"], "it's \"quoted\" \\ back");
    assert_eq!(v["tcp"], json!({"keepalive": false}));
    assert_eq!(v["udp"], json!({"sndbuf": 65536}));
    assert!(v.get("ignored").is_none());
    check_config(&v, "instance0");
    check_config(&convert(&uci, "on"), "on");
    let _ = std::fs::remove_file(&uci);
}

#[test]
fn typos_are_errors() {
    for (tag, body, needle) in [
        (
            "unknown",
            "\toption kcp_mut '1400'\n",
            "unknown option 'kcp_mut'",
        ),
        (
            "int",
            "\toption timeout '10m'\n",
            "timeout: expected an integer",
        ),
        (
            "bool",
            "\toption tcp_nodelay 'maybe'\n",
            "tcp_nodelay: expected a boolean",
        ),
        ("quote", "\toption psk 'abc\n", "unterminated quote"),
    ] {
        let uci = temp_file(tag, &format!("config instance 'x'\n{body}"));
        let out = uci2json(&[uci.as_os_str(), "x".as_ref()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{tag}: accepted");
        assert!(
            err.contains(needle),
            "{tag}: stderr {err:?} lacks {needle:?}"
        );
        assert!(out.stdout.is_empty(), "{tag}: printed JSON anyway");
        let _ = std::fs::remove_file(&uci);
    }
    let out = uci2json(&[sample().as_os_str(), "nope".as_ref()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no instance 'nope'"));
}

#[test]
fn busybox_gives_the_same_json() {
    // Routers run the script with busybox ash and awk; Debian's sh/awk are dash and mawk.
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        eprintln!("skipping: busybox not installed");
        return;
    };
    let bin = temp_file("bb", "");
    let _ = std::fs::remove_file(&bin);
    std::fs::create_dir(&bin).expect("mkdir");
    for applet in ["sh", "awk"] {
        std::os::unix::fs::symlink(busybox, bin.join(applet)).expect("symlink");
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for instance in ["client", "server"] {
        let out = Command::new(bin.join("sh"))
            .env("PATH", &path)
            .arg(root().join("contrib/openwrt/uci2json.sh"))
            .arg(sample())
            .arg(instance)
            .output()
            .expect("run busybox sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(v, convert(&sample(), instance), "{instance}");
    }
    let _ = std::fs::remove_dir_all(&bin);
}
