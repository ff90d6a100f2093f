//! The code order of the release link: `build/symbol-order.txt`, which
//! `scripts/symbol-order.sh` makes from a callgrind profile with
//! `scripts/callgrind-functions.py`, and `scripts/build-image.sh` hands to
//! the linker.
//!
//! Without python3 the parser's test prints a notice and passes, unless
//! KITE_REQUIRE_PYTHON=1 (set by `.ci/run`), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The functions `scripts/callgrind-functions.py` lists for `profile`, or
/// `None` (with a notice) where python3 cannot be run; a panic instead
/// when KITE_REQUIRE_PYTHON=1.
fn functions_in(profile: &str) -> Option<Vec<String>> {
    let dir = std::env::temp_dir().join(format!("kite-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("callgrind.out");
    std::fs::write(&file, profile).unwrap();
    let script = root().join("scripts/callgrind-functions.py");
    let out = match Command::new("python3").arg(&script).arg(&file).output() {
        Ok(out) => out,
        Err(err) => {
            let required = std::env::var_os("KITE_REQUIRE_PYTHON").is_some_and(|v| v == "1");
            assert!(
                !required,
                "KITE_REQUIRE_PYTHON=1 but python3 cannot be run: {err}"
            );
            eprintln!("notice: python3 cannot be run ({err}); the parser is not checked");
            return None;
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(text.lines().map(str::to_owned).collect())
}

/// callgrind names a function once, where it first appears: a function
/// first seen as a callee (`cfn=`) is listed too, and a call's inclusive
/// cost counts for the callee, not the caller. A recursion level counts
/// for its function; valgrind's own entries are left out.
#[test]
fn the_parser_lists_every_function_that_ran_costliest_first() {
    let profile = "\
version: 1
creator: callgrind-3.19.0
events: Ir
ob=(1) /tmp/kite
fl=(1) ???
fn=(1) main
0 10
cfn=(2) _ZN4kite5proxy6splice7forward17h0123456789abcdefE
calls=1 0
0 1000
fn=(2)
0 500
cfn=(3) memcpy
calls=4 0
0 40
fn=(3)
0 40
fn=(4) _ZN4kite3run17h0000000000000000E
0 0
fn=(5) (below main)
0 7
fn=(6) memcpy'2
0 20
";
    let Some(functions) = functions_in(profile) else {
        return;
    };
    assert_eq!(
        functions,
        [
            "_ZN4kite5proxy6splice7forward17h0123456789abcdefE",
            "memcpy",
            "main",
            "_ZN4kite3run17h0000000000000000E",
        ]
    );
}

/// The committed order covers what a running kite runs: the splice, the
/// proxy's sockets, discovery, the runtime, and the TLS the AWS APIs
/// speak; and it names each function once.
#[test]
fn the_committed_order_covers_the_data_path_discovery_and_tls() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("build/symbol-order.txt");
    let text = std::fs::read_to_string(&path).expect("build/symbol-order.txt");
    let names: Vec<&str> = text.lines().collect();
    assert!(names.len() > 1000, "only {} functions", names.len());
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "a function is listed twice");
    assert!(
        names.iter().all(|n| !n.is_empty() && !n.contains(' ')),
        "a line that is not a symbol name"
    );
    for part in [
        "4kite5proxy6splice",
        "4kite5proxy3net",
        "4kite9discovery",
        "5tokio7runtime",
        "6rustls",
    ] {
        assert!(
            names.iter().any(|n| n.contains(part)),
            "nothing of {part} in the order"
        );
    }
}
