//! The command line: a small hand-written parser (no crates; the binary must stay small).
//!
//! Accepted: `-c/--config FILE`, `--genpsk [METHOD]`, `--list-methods`, `-v`/`-s` (repeatable,
//! also clustered as `-vv`), `-u/--user USER[:GROUP]`, `-h/--help`, `-V/--version`,
//! `--check-config`. Short options cluster (`-vvc FILE`, `-cFILE`); long ones also take
//! `--opt=VALUE`. Wrong usage is a [`UsageError`]: `main` prints it on one line and exits 2.

use crate::framing::Method;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// Exit status for wrong usage.
pub const USAGE_EXIT: i32 = 2;

/// The parsed command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cli {
    pub config: Option<PathBuf>,
    /// `--genpsk` given: `Some(None)` without a method, `Some(Some(name))` with a valid one.
    pub genpsk: Option<Option<String>>,
    pub list_methods: bool,
    /// Number of `-v` minus number of `-s`.
    pub verbosity: i32,
    /// `-u USER[:GROUP]`; overrides the config's `user`.
    pub user: Option<String>,
    pub help: bool,
    pub version: bool,
    pub check_config: bool,
}

/// What `main` should do, in priority order (help and version win over everything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Help,
    Version,
    ListMethods,
    /// Print a fresh psk for this method.
    GenPsk(Method),
    /// Validate the config and exit 0, or print the error and exit 1.
    CheckConfig(PathBuf),
    Run(PathBuf),
}

impl Cli {
    pub fn action(&self) -> Action {
        if self.help {
            return Action::Help;
        }
        if self.version {
            return Action::Version;
        }
        if self.list_methods {
            return Action::ListMethods;
        }
        if let Some(m) = &self.genpsk {
            // parse() has validated the name.
            let m = m
                .as_deref()
                .map_or(Ok(Method::default()), Method::from_name);
            return Action::GenPsk(m.unwrap_or_default());
        }
        let path = self.config.clone().unwrap_or_default();
        if self.check_config {
            Action::CheckConfig(path)
        } else {
            Action::Run(path)
        }
    }
}

/// Wrong usage; the message is one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, without a trailing hint: main adds "(try --help)".
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn err<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

pub fn usage() -> &'static str {
    concat!(
        "usage: kcptun-rs -c FILE [-v|-s]... [-u USER[:GROUP]]\n",
        "       kcptun-rs --check-config -c FILE\n",
        "       kcptun-rs --genpsk [METHOD]\n",
        "       kcptun-rs --list-methods | -h | -V\n",
        "\n",
        "  -c, --config FILE       JSON config file (kcptun-libev format)\n",
        "      --check-config      validate the config file, then exit (0 valid, 1 invalid)\n",
        "      --genpsk [METHOD]   print a new random psk (default method\n",
        "                          xchacha20poly1305_ietf)\n",
        "      --list-methods      print the encryption methods this build supports\n",
        "  -v, --verbose           more log output (repeatable)\n",
        "  -s, --silence           less log output (repeatable)\n",
        "  -u, --user USER[:GROUP] run as this user after binding (when started as root)\n",
        "  -h, --help              print this help\n",
        "  -V, --version           print the version\n",
        "\n",
        "RUST_LOG, when set, overrides loglevel, -v and -s.\n",
    )
}

/// Parses the arguments after the program name (`std::env::args_os().skip(1)`).
pub fn parse<I, S>(args: I) -> Result<Cli, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut args: Vec<String> = args
        .into_iter()
        .map(|a| {
            a.into()
                .into_string()
                .map_err(|a| UsageError(format!("argument {a:?} is not UTF-8")))
        })
        .collect::<Result<_, _>>()?;
    args.reverse(); // pop() takes the next argument
    let mut cli = Cli::default();

    while let Some(arg) = args.pop() {
        if arg == "--" {
            if let Some(extra) = args.pop() {
                return err(format!("unexpected argument {extra:?}"));
            }
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            let no_value = |inline: &Option<String>| match inline {
                Some(_) => err(format!("--{name} takes no value")),
                None => Ok(()),
            };
            match name {
                "config" => {
                    let v = value_of(&format!("--{name}"), inline, &mut args)?;
                    set_once(&mut cli.config, PathBuf::from(v), "--config")?;
                }
                "user" => {
                    let v = value_of("--user", inline, &mut args)?;
                    set_once(&mut cli.user, check_user(v)?, "--user")?;
                }
                "genpsk" => {
                    // The method is optional: take the next argument only if it is no option.
                    let method = match inline {
                        Some(v) => Some(v),
                        None if args.last().is_some_and(|a| !a.starts_with('-')) => args.pop(),
                        None => None,
                    };
                    if let Some(m) = &method {
                        check_method(m)?;
                    }
                    set_once(&mut cli.genpsk, method, "--genpsk")?;
                }
                "list-methods" => {
                    no_value(&inline)?;
                    cli.list_methods = true;
                }
                "check-config" => {
                    no_value(&inline)?;
                    cli.check_config = true;
                }
                "verbose" => {
                    no_value(&inline)?;
                    cli.verbosity = cli.verbosity.saturating_add(1);
                }
                "silence" => {
                    no_value(&inline)?;
                    cli.verbosity = cli.verbosity.saturating_sub(1);
                }
                "help" => {
                    no_value(&inline)?;
                    cli.help = true;
                }
                "version" => {
                    no_value(&inline)?;
                    cli.version = true;
                }
                _ => return err(format!("unknown option --{name}")),
            }
            continue;
        }
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            return err(format!("unexpected argument {arg:?}"));
        };
        for (i, c) in cluster.char_indices() {
            match c {
                'v' => cli.verbosity = cli.verbosity.saturating_add(1),
                's' => cli.verbosity = cli.verbosity.saturating_sub(1),
                'h' => cli.help = true,
                'V' => cli.version = true,
                'c' | 'u' => {
                    // The rest of the cluster is the value (-cFILE), else the next argument.
                    let rest = &cluster[i + 1..];
                    let inline = (!rest.is_empty()).then(|| rest.to_owned());
                    let v = value_of(&format!("-{c}"), inline, &mut args)?;
                    if c == 'c' {
                        set_once(&mut cli.config, PathBuf::from(v), "-c/--config")?;
                    } else {
                        set_once(&mut cli.user, check_user(v)?, "-u/--user")?;
                    }
                    break;
                }
                _ => return err(format!("unknown option -{c}")),
            }
        }
    }

    if cli.help || cli.version || cli.list_methods || cli.genpsk.is_some() {
        return Ok(cli);
    }
    if cli.config.is_none() {
        return err(if cli.check_config {
            "--check-config needs -c FILE"
        } else {
            "no config file given: use -c FILE"
        });
    }
    Ok(cli)
}

fn value_of(
    opt: &str,
    inline: Option<String>,
    args: &mut Vec<String>,
) -> Result<String, UsageError> {
    let v = match inline {
        Some(v) => v,
        None => args
            .pop()
            .ok_or_else(|| UsageError(format!("{opt} needs a value")))?,
    };
    if v.is_empty() {
        return err(format!("{opt} needs a non-empty value"));
    }
    Ok(v)
}

fn set_once<T>(slot: &mut Option<T>, v: T, opt: &str) -> Result<(), UsageError> {
    if slot.is_some() {
        return err(format!("{opt} given more than once"));
    }
    *slot = Some(v);
    Ok(())
}

fn check_user(v: String) -> Result<String, UsageError> {
    let (user, group) = match v.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (v.as_str(), None),
    };
    if user.is_empty() || group.is_some_and(|g| g.is_empty() || g.contains(':')) {
        return err(format!("-u/--user: {v:?} is not USER or USER:GROUP"));
    }
    Ok(v)
}

fn check_method(m: &str) -> Result<(), UsageError> {
    Method::from_name(m).map(|_| ()).or_else(|_| {
        let names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
        err(format!(
            "--genpsk: unknown method {m:?} (expected one of {})",
            names.join(", ")
        ))
    })
}
