//! Log setup: maps kcptun-libev's `loglevel` (0..=8) and the `-v`/`-s` flags onto the `log`
//! crate's levels, honours `RUST_LOG`, and chooses the sink ([`LogTarget`]).
//!
//! kcptun-libev's levels: 0 silent, 1 fatal, 2 error, 3 warning, 4 notice (default), 5 info,
//! 6 debug, 7 verbose, 8 very verbose. `log` has five, so:
//!
//! | loglevel | log level |
//! |---|---|
//! | 0 | off |
//! | 1, 2 | error |
//! | 3 | warn |
//! | 4, 5 | info |
//! | 6 | debug |
//! | 7, 8 | trace |
//!
//! Each `-v` then raises and each `-s` lowers the result by one step on `log`'s scale (off,
//! error, warn, info, debug, trace), so `-v` always has a visible effect. `RUST_LOG`, when set
//! and not empty, replaces both (it also allows per-module filters).
//!
//! Lines look like `2025-01-31T23:59:59.123Z I message`: UTC (reading local time needs libc's
//! `localtime_r`, and the crate keeps unsafe code out of this module), milliseconds, one level
//! letter. Nothing in this crate logs key material; this module adds none.

use log::LevelFilter;
use std::fmt;
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Highest `loglevel` (kcptun-libev's LOG_LEVEL_VERYVERBOSE).
pub const MAX_LOGLEVEL: u8 = 8;
/// kcptun-libev's default `loglevel` (LOG_LEVEL_NOTICE).
pub const DEFAULT_LOGLEVEL: u8 = 4;

/// Where log lines go; [`init`] maps each to an `env_logger` target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LogTarget {
    #[default]
    Stderr,
    Stdout,
    /// The local syslog daemon (`/dev/log`), facility daemon.
    Syslog,
    /// Appended to this file (an absolute path). Rotate it with copytruncate.
    File(PathBuf),
}

impl LogTarget {
    /// Parses the config `log` value: `stderr`, `stdout`, `syslog` or an absolute path.
    pub fn from_name(name: &str) -> Result<LogTarget, LogError> {
        match name {
            "stderr" => Ok(LogTarget::Stderr),
            "stdout" => Ok(LogTarget::Stdout),
            "syslog" => Ok(LogTarget::Syslog),
            p if p.starts_with('/') => Ok(LogTarget::File(PathBuf::from(p))),
            _ => Err(LogError::UnknownTarget(name.to_owned())),
        }
    }

    pub fn name(&self) -> String {
        match self {
            LogTarget::Stderr => "stderr".into(),
            LogTarget::Stdout => "stdout".into(),
            LogTarget::Syslog => "syslog".into(),
            LogTarget::File(p) => p.display().to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogError {
    /// A `log` value that names no sink.
    UnknownTarget(String),
    /// A logger was already installed in this process.
    AlreadyInitialised,
    /// The sink could not be opened (file, /dev/log).
    Open(String),
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::UnknownTarget(t) => {
                write!(
                    f,
                    "unknown log target {t:?} (expected \"stderr\", \"stdout\", \"syslog\" or an \
                     absolute file path)"
                )
            }
            LogError::AlreadyInitialised => f.write_str("the logger is already initialised"),
            LogError::Open(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for LogError {}

const STEPS: [LevelFilter; 6] = [
    LevelFilter::Off,
    LevelFilter::Error,
    LevelFilter::Warn,
    LevelFilter::Info,
    LevelFilter::Debug,
    LevelFilter::Trace,
];

/// The `log` level for a kcptun-libev `loglevel` (clamped to 0..=8) shifted by `verbosity`
/// steps (`-v` counts +1, `-s` counts -1), without looking at `RUST_LOG`.
pub fn level_filter(loglevel: u8, verbosity: i32) -> LevelFilter {
    let base: i32 = match loglevel.min(MAX_LOGLEVEL) {
        0 => 0,
        1 | 2 => 1,
        3 => 2,
        4 | 5 => 3,
        6 => 4,
        _ => 5,
    };
    STEPS[base.saturating_add(verbosity).clamp(0, 5) as usize]
}

/// Installs the process logger. Call once, early in `main`; [`set_level`] changes the level
/// later (SIGHUP).
pub fn init(loglevel: u8, verbosity: i32, target: &LogTarget) -> Result<(), LogError> {
    let mut builder = env_logger::Builder::new();
    let from_env = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            builder.parse_filters(&spec);
            true
        }
        _ => {
            // Everything passes the builder; log::max_level does the filtering, so that the
            // level can change at run time. mio's own traces are noise to an operator.
            builder.filter_level(LevelFilter::Trace);
            builder.filter_module("mio", LevelFilter::Warn);
            false
        }
    };
    let syslog = *target == LogTarget::Syslog;
    builder.target(match target {
        LogTarget::Stderr => env_logger::Target::Stderr,
        LogTarget::Stdout => env_logger::Target::Stdout,
        LogTarget::Syslog => env_logger::Target::Pipe(Box::new(SyslogWriter::open()?)),
        LogTarget::File(path) => env_logger::Target::Pipe(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| LogError::Open(format!("log file {}: {e}", path.display())))?,
        )),
    });
    let pid = std::process::id();
    builder.format(move |out, record| {
        let (letter, severity) = match record.level() {
            log::Level::Error => ('E', 3),
            log::Level::Warn => ('W', 4),
            log::Level::Info => ('I', 6),
            log::Level::Debug => ('D', 7),
            log::Level::Trace => ('V', 7),
        };
        if syslog {
            // RFC 3164 without a timestamp (the daemon adds it); facility daemon (3).
            writeln!(
                out,
                "<{}>kcptun-rs[{pid}]: {}",
                3 * 8 + severity,
                record.args()
            )
        } else {
            writeln!(out, "{} {letter} {}", Timestamp::now(), record.args())
        }
    });
    builder
        .try_init()
        .map_err(|_| LogError::AlreadyInitialised)?;
    if !from_env {
        log::set_max_level(level_filter(loglevel, verbosity));
    }
    Ok(())
}

/// Changes the level after [`init`] (a reload), unless `RUST_LOG` decides.
pub fn set_level(loglevel: u8, verbosity: i32) {
    if std::env::var("RUST_LOG").map_or(true, |s| s.trim().is_empty()) {
        log::set_max_level(level_filter(loglevel, verbosity));
    }
}

/// Sends each complete line written to it as one datagram to the syslog socket.
struct SyslogWriter {
    sock: UnixDatagram,
    line: Vec<u8>,
}

impl SyslogWriter {
    fn open() -> Result<SyslogWriter, LogError> {
        Self::open_at(std::path::Path::new("/dev/log"))
    }

    fn open_at(path: &std::path::Path) -> Result<SyslogWriter, LogError> {
        let sock = UnixDatagram::unbound().map_err(|e| LogError::Open(format!("syslog: {e}")))?;
        sock.connect(path)
            .map_err(|e| LogError::Open(format!("syslog: {}: {e}", path.display())))?;
        sock.set_nonblocking(true)
            .map_err(|e| LogError::Open(format!("syslog: {e}")))?;
        Ok(SyslogWriter {
            sock,
            line: Vec::with_capacity(256),
        })
    }
}

impl Write for SyslogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                // A full syslog socket drops the line rather than stalling the event loop.
                let _ = self.sock.send(&self.line);
                self.line.clear();
            } else if self.line.len() < 4096 {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A UTC wall-clock time with millisecond resolution, printed as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            unix_ms: d.as_millis() as u64,
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.unix_ms / 1000;
        let (days, sod) = ((secs / 86400) as i64, secs % 86400);
        // Howard Hinnant's days-to-civil conversion (proleptic Gregorian calendar).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            sod / 3600,
            sod / 60 % 60,
            sod % 60,
            self.unix_ms % 1000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loglevel_mapping() {
        let want = [
            LevelFilter::Off,
            LevelFilter::Error,
            LevelFilter::Error,
            LevelFilter::Warn,
            LevelFilter::Info,
            LevelFilter::Info,
            LevelFilter::Debug,
            LevelFilter::Trace,
            LevelFilter::Trace,
        ];
        for (l, w) in want.iter().enumerate() {
            assert_eq!(level_filter(l as u8, 0), *w, "loglevel {l}");
        }
        assert_eq!(level_filter(200, 0), LevelFilter::Trace);
    }

    #[test]
    fn verbosity_steps() {
        assert_eq!(level_filter(DEFAULT_LOGLEVEL, 1), LevelFilter::Debug);
        assert_eq!(level_filter(DEFAULT_LOGLEVEL, 2), LevelFilter::Trace);
        assert_eq!(level_filter(DEFAULT_LOGLEVEL, 9), LevelFilter::Trace);
        assert_eq!(level_filter(DEFAULT_LOGLEVEL, -1), LevelFilter::Warn);
        assert_eq!(level_filter(DEFAULT_LOGLEVEL, -3), LevelFilter::Off);
        assert_eq!(level_filter(DEFAULT_LOGLEVEL, i32::MIN), LevelFilter::Off);
        assert_eq!(level_filter(0, 1), LevelFilter::Error);
        assert_eq!(level_filter(8, i32::MAX), LevelFilter::Trace);
    }

    #[test]
    fn targets() {
        assert_eq!(LogTarget::from_name("stderr"), Ok(LogTarget::Stderr));
        assert_eq!(LogTarget::from_name("stdout"), Ok(LogTarget::Stdout));
        assert_eq!(LogTarget::from_name("syslog"), Ok(LogTarget::Syslog));
        assert_eq!(
            LogTarget::from_name("/var/log/kcptun.log"),
            Ok(LogTarget::File("/var/log/kcptun.log".into()))
        );
        let e = LogTarget::from_name("kcptun.log").unwrap_err();
        assert!(e.to_string().contains("\"kcptun.log\""), "{e}");
        assert!(e.to_string().contains("absolute file path"), "{e}");
        assert_eq!(LogTarget::default().name(), "stderr");
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            Timestamp { unix_ms: 0 }.to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp {
                unix_ms: 951_782_400_123
            }
            .to_string(),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            Timestamp {
                unix_ms: 1_767_225_599_999
            }
            .to_string(),
            "2025-12-31T23:59:59.999Z"
        );
        assert!(Timestamp::now().to_string().ends_with('Z'));
    }

    #[test]
    fn syslog_writer_sends_one_datagram_per_line() {
        let dir = std::env::temp_dir().join(format!("kcptun-syslog-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("log.sock");
        let _ = std::fs::remove_file(&path);
        let daemon = UnixDatagram::bind(&path).unwrap();
        let mut w = SyslogWriter::open_at(&path).unwrap();
        // env_logger may hand over a record in pieces; lines are what count.
        w.write_all(b"<30>kcptun-rs[7]: first").unwrap();
        w.write_all(b" line\n<27>kcptun-rs[7]: second\n").unwrap();
        let mut buf = [0u8; 256];
        let n = daemon.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<30>kcptun-rs[7]: first line");
        let n = daemon.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<27>kcptun-rs[7]: second");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
