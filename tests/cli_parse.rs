//! Command line: each flag, clustered short flags, `--opt=VALUE`, and every kind of misuse.

use kcptun::cli::{parse, usage, Action, Cli, UsageError, USAGE_EXIT};
use kcptun::framing::Method;
use std::path::PathBuf;

fn ok(args: &[&str]) -> Cli {
    parse(args.iter().copied()).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn bad(args: &[&str]) -> String {
    let e: UsageError = parse(args.iter().copied()).expect_err("should be a usage error");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    msg
}

#[test]
fn config_forms() {
    for args in [
        &["-c", "a.json"][..],
        &["--config", "a.json"],
        &["--config=a.json"],
        &["-ca.json"],
    ] {
        let cli = ok(args);
        assert_eq!(cli.config, Some(PathBuf::from("a.json")), "{args:?}");
        assert_eq!(cli.action(), Action::Run(PathBuf::from("a.json")));
    }
}

#[test]
fn check_config() {
    let cli = ok(&["--check-config", "-c", "s.json"]);
    assert!(cli.check_config);
    assert_eq!(cli.action(), Action::CheckConfig(PathBuf::from("s.json")));
    assert!(bad(&["--check-config"]).contains("needs -c FILE"));
}

#[test]
fn verbosity() {
    assert_eq!(ok(&["-c", "x"]).verbosity, 0);
    assert_eq!(ok(&["-v", "-c", "x"]).verbosity, 1);
    assert_eq!(ok(&["-vv", "-c", "x"]).verbosity, 2);
    assert_eq!(ok(&["-v", "-v", "-v", "-c", "x"]).verbosity, 3);
    assert_eq!(ok(&["-s", "-c", "x"]).verbosity, -1);
    assert_eq!(ok(&["-ss", "-c", "x"]).verbosity, -2);
    assert_eq!(ok(&["-vvs", "-c", "x"]).verbosity, 1);
    assert_eq!(
        ok(&["--verbose", "--silence", "--verbose", "-c", "x"]).verbosity,
        1
    );
}

#[test]
fn combined_short_flags() {
    let cli = ok(&["-vvc", "x.json"]);
    assert_eq!(
        (cli.verbosity, cli.config),
        (2, Some(PathBuf::from("x.json")))
    );
    let cli = ok(&["-vcx.json"]);
    assert_eq!(
        (cli.verbosity, cli.config),
        (1, Some(PathBuf::from("x.json")))
    );
    let cli = ok(&["-svu", "nobody:nogroup", "-c", "x"]);
    assert_eq!(
        (cli.verbosity, cli.user.as_deref()),
        (0, Some("nobody:nogroup"))
    );
    let cli = ok(&["-hV"]);
    assert!(cli.help && cli.version);
    assert_eq!(cli.action(), Action::Help);
}

#[test]
fn user() {
    assert_eq!(
        ok(&["-u", "nobody", "-c", "x"]).user.as_deref(),
        Some("nobody")
    );
    assert_eq!(
        ok(&["--user", "a:b", "-c", "x"]).user.as_deref(),
        Some("a:b")
    );
    assert_eq!(ok(&["--user=a", "-c", "x"]).user.as_deref(), Some("a"));
    assert_eq!(ok(&["-unobody", "-c", "x"]).user.as_deref(), Some("nobody"));
    for v in [":g", "u:", "u:g:h"] {
        assert!(bad(&["-u", v, "-c", "x"]).contains("USER:GROUP"), "{v}");
    }
}

#[test]
fn genpsk() {
    let cli = ok(&["--genpsk"]);
    assert_eq!(cli.genpsk, Some(None));
    assert_eq!(cli.action(), Action::GenPsk(Method::XChaCha20Poly1305Ietf));
    for m in Method::ALL {
        let cli = ok(&["--genpsk", m.name()]);
        assert_eq!(cli.genpsk, Some(Some(m.name().to_owned())));
        assert_eq!(cli.action(), Action::GenPsk(m));
        assert_eq!(
            ok(&[&format!("--genpsk={}", m.name())]).action(),
            Action::GenPsk(m)
        );
    }
    // An option after --genpsk is not its method.
    let cli = ok(&["--genpsk", "-v"]);
    assert_eq!((cli.genpsk, cli.verbosity), (Some(None), 1));
    assert!(bad(&["--genpsk", "rot13"]).contains("unknown method \"rot13\""));
    assert!(bad(&["--genpsk", "--genpsk"]).contains("more than once"));
}

#[test]
fn actions_without_config() {
    assert_eq!(ok(&["--list-methods"]).action(), Action::ListMethods);
    assert_eq!(ok(&["-h"]).action(), Action::Help);
    assert_eq!(ok(&["--help"]).action(), Action::Help);
    assert_eq!(ok(&["-V"]).action(), Action::Version);
    assert_eq!(ok(&["--version"]).action(), Action::Version);
    // Help wins over everything else.
    assert_eq!(
        ok(&["--genpsk", "-c", "x", "--help"]).action(),
        Action::Help
    );
    assert_eq!(ok(&["--list-methods", "-V"]).action(), Action::Version);
}

#[test]
fn usage_errors() {
    assert_eq!(USAGE_EXIT, 2);
    assert!(bad(&[]).contains("no config file"));
    assert!(bad(&["-c"]).contains("-c needs a value"));
    assert!(bad(&["--config"]).contains("--config needs a value"));
    assert!(bad(&["--config="]).contains("non-empty"));
    assert!(bad(&["-u"]).contains("-u needs a value"));
    assert!(bad(&["-x"]).contains("unknown option -x"));
    assert!(bad(&["-vx", "-c", "f"]).contains("unknown option -x"));
    assert!(bad(&["--frobnicate"]).contains("unknown option --frobnicate"));
    assert!(bad(&["-c", "a", "-c", "b"]).contains("more than once"));
    assert!(bad(&["-c", "a", "-u", "x", "--user", "y"]).contains("more than once"));
    assert!(bad(&["-c", "a", "stray"]).contains("unexpected argument \"stray\""));
    assert!(bad(&["-c", "a", "-"]).contains("unexpected argument \"-\""));
    assert!(bad(&["-c", "a", "--", "x"]).contains("unexpected argument \"x\""));
    assert!(bad(&["--help=yes"]).contains("--help takes no value"));
    assert!(bad(&["--check-config=1", "-c", "a"]).contains("takes no value"));
    assert_eq!(bad(&["-x"]), "unknown option -x");
    // `--` alone just ends the options.
    assert_eq!(ok(&["-c", "a", "--"]).config, Some(PathBuf::from("a")));
}

#[cfg(unix)]
#[test]
fn non_utf8_argument() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let e = parse([OsString::from("-c"), OsString::from_vec(vec![0xff])]).unwrap_err();
    assert!(e.to_string().contains("not UTF-8"));
}

#[test]
fn usage_text() {
    let u = usage();
    for flag in [
        "-c, --config",
        "--check-config",
        "--genpsk",
        "--list-methods",
        "-v",
        "-s",
        "-u, --user",
        "-h, --help",
        "-V, --version",
    ] {
        assert!(u.contains(flag), "usage lacks {flag}");
    }
    assert!(u.lines().all(|l| l.len() <= 100));
}
