//! The original-argument rewriter and the command line behind it: any
//! argument list either parses or is a usage error, never a panic.
#![no_main]

use std::ffi::OsString;

use clap::Parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut args: Vec<OsString> = vec!["kite".into()];
    args.extend(text.split('\0').map(OsString::from));
    let rewritten = kite::cli::normalize_args(args.clone());
    // The rewrite only ever inserts `proxy` and respells flags.
    assert!(rewritten.len() <= args.len() + 1);
    let _ = kite::cli::Cli::try_parse_from(rewritten);
});
