//! The `kcptun-rs` binary: parse the command line, load the configuration, run the event loop.
//!
//! Exit codes: 0 on a clean stop (SIGINT/SIGTERM) or a successful one-shot command, 1 on a
//! configuration or start-up error, 2 on wrong usage.

use std::process::ExitCode;

use kcptun::cli::{self, Action};
use kcptun::config::Config;
use kcptun::event_loop::{EventLoop, ReloadSource, Settings};
use kcptun::framing::{self, Framer, Method, ReplayFilter};
use kcptun::logging;
use kcptun::sys;
use log::{error, info};

fn main() -> ExitCode {
    let args = match cli::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kcptun-rs: {e} (try --help)");
            return ExitCode::from(cli::USAGE_EXIT as u8);
        }
    };
    if framing::init().is_err() {
        eprintln!("kcptun-rs: libsodium failed to initialise");
        return ExitCode::FAILURE;
    }
    match args.action() {
        Action::Help => {
            print!("{}", cli::usage());
            ExitCode::SUCCESS
        }
        Action::Version => {
            println!("kcptun-rs {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Action::ListMethods => {
            for m in Method::ALL {
                if m.available() {
                    println!("{}", m.name());
                }
            }
            ExitCode::SUCCESS
        }
        Action::GenPsk(_method) => {
            println!("{}", framing::genpsk());
            ExitCode::SUCCESS
        }
        Action::CheckConfig(path) => match load(&path) {
            Ok(cfg) => {
                println!("{}: ok ({} mode)", path.display(), cfg.mode.name());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kcptun-rs: {e}");
                ExitCode::FAILURE
            }
        },
        Action::Run(path) => run(&path, args.verbosity, args.user.clone()),
    }
}

fn load(path: &std::path::Path) -> Result<Config, String> {
    if path.as_os_str().is_empty() {
        return Err("no configuration file: use -c FILE".into());
    }
    let cfg = Config::from_file(path).map_err(|e| e.to_string())?;
    // Derive the key now, so a bad psk or password is a start-up error, not a runtime one.
    cfg.key().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn run(path: &std::path::Path, verbosity: i32, user: Option<String>) -> ExitCode {
    // The key is derived once, below (a password costs an Argon2id run).
    let cfg = match Config::from_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kcptun-rs: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = logging::init(cfg.loglevel, verbosity, &cfg.log) {
        eprintln!("kcptun-rs: log: {e}");
        return ExitCode::FAILURE;
    }
    // The replay filter is sized for the role, as in kcptun-libev: a server remembers 2^20
    // nonces (7.2 MiB for both filters), a client 2^14 (173 KiB).
    let replay = if cfg.is_server() {
        ReplayFilter::server_default()
    } else {
        ReplayFilter::client_default()
    };
    let framer = match cfg.key().map_err(|e| e.to_string()).and_then(|key| {
        Framer::with_replay_filter(cfg.method, key, replay).map_err(|e| e.to_string())
    }) {
        Ok(f) => f,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    info!(
        "kcptun-rs {} starting in {} mode, method {}",
        env!("CARGO_PKG_VERSION"),
        cfg.mode.name(),
        cfg.method.name()
    );
    // `-u` wins over the config's `user`. Resolved before binding (so a typo fails fast),
    // applied after (so privileged ports and SO_BINDTODEVICE work).
    let identity = match user.or_else(|| cfg.user.clone()) {
        Some(spec) => match sys::lookup_identity(&spec) {
            Ok(id) => Some((spec, id)),
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let mut ev = match EventLoop::new(Settings::from_config(&cfg), framer) {
        Ok(ev) => ev,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some((spec, id)) = identity {
        if let Err(e) = sys::drop_privileges(&id) {
            error!("dropping privileges to {spec}: {e}; refusing to run");
            return ExitCode::FAILURE;
        }
        info!("running as {spec} (uid {}, gid {})", id.uid, id.gid);
    }
    ev.set_reload_source(ReloadSource {
        path: path.to_path_buf(),
        verbosity,
        current: cfg,
    });
    match ev.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("event loop: {e}");
            ExitCode::FAILURE
        }
    }
}
