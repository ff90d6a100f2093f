//! The original Task Kite's argument form: Go-style flags and no
//! subcommand, rewritten into kite's.

use std::ffi::OsString;

/// The subcommand names, so that anything else in first position is read as
/// `kite proxy` flags.
const SUBCOMMANDS: &[&str] = &["proxy", "targets", "attach", "health", "whoami", "help"];

/// The original Task Kite's flags (Go `flag` package names) and kite's.
const ORIGINAL_FLAGS: &[(&str, &str)] = &[
    ("family", "family"),
    ("service", "service"),
    ("name", "name"),
    ("cluster", "cluster"),
    ("public", "public"),
    ("loglevel", "log-level"),
];

/// Rewrites the original's argument form into kite's.
///
/// The original took Go-style flags and no subcommand
/// (`kite -family=web -name=nginx -cluster=prod -public -loglevel=debug`).
/// When the first argument is not a subcommand (nor help or version), this
/// inserts `proxy` and turns each original flag into its kite spelling, so
/// existing task definitions keep working. Anything else is passed through
/// for clap to accept or reject.
pub fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return args;
    };
    if SUBCOMMANDS.contains(&first) || ["-h", "--help", "-V", "--version"].contains(&first) {
        return args;
    }
    let mut out = Vec::with_capacity(args.len() + 1);
    out.push(args[0].clone());
    out.push(OsString::from("proxy"));
    for arg in &args[1..] {
        match arg.to_str().and_then(rewrite_original_flag) {
            Some(Some(new)) => out.push(OsString::from(new)),
            Some(None) => {} // `-public=false`: the default, so nothing to pass.
            None => out.push(arg.clone()),
        }
    }
    out
}

/// One original flag in kite's spelling: `Some(None)` drops it, `None` is
/// "not a flag, keep as is". Go accepts `-flag` and `--flag` alike, so any
/// other single-dash word becomes `--word` too, and clap names it in full
/// if it is unknown.
fn rewrite_original_flag(arg: &str) -> Option<Option<String>> {
    let bare = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    let (flag, value) = match bare.split_once('=') {
        Some((f, v)) => (f, Some(v)),
        None => (bare, None),
    };
    let is_word = flag.len() > 1 && flag.chars().all(|c| c.is_ascii_alphabetic() || c == '-');
    if !is_word {
        return None;
    }
    let kite = ORIGINAL_FLAGS
        .iter()
        .find(|(old, _)| *old == flag)
        .map_or(flag, |(_, kite)| kite);
    if kite == "public" {
        // Go's boolean flags accept these spellings.
        return match value {
            None | Some("1" | "t" | "T" | "true" | "TRUE" | "True") => {
                Some(Some("--public".into()))
            }
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Some(None),
            Some(other) => Some(Some(format!("--public={other}"))),
        };
    }
    Some(Some(match value {
        Some(v) => format!("--{kite}={v}"),
        None => format!("--{kite}"),
    }))
}
