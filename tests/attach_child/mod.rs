//! `kite attach` as a test's child process (directly, or under script(1)
//! for a terminal): a hermetic environment pointed at the fake AWS, piped
//! stdio, killed when dropped. Shared by the `attach` and `attach_docker`
//! tests.

use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::common::FakeAws;

/// The binary under test.
pub const KITE: &str = env!("CARGO_BIN_EXE_kite");

/// `program` with only PATH, HOME, `fake`'s variables and `env` set, and
/// stdin, stdout and stderr piped.
pub fn hermetic(program: &str, fake: &FakeAws, env: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .envs(fake.child_env())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// `kite attach ARGS`, hermetic.
pub fn kite_attach(fake: &FakeAws, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = hermetic(KITE, fake, env);
    cmd.arg("attach").args(args);
    cmd
}

/// Runs `cmd` with `input` on stdin (then end of file); its output, which
/// must come within `limit`.
pub async fn run(mut cmd: tokio::process::Command, input: &[u8], limit: Duration) -> Output {
    let mut child = cmd.spawn().expect("starting kite");
    let mut stdin = child.stdin.take().unwrap();
    // kite may exit before reading stdin (an error): ignore a broken pipe.
    let _ = stdin.write_all(input).await;
    drop(stdin);
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kite attach did not finish within {limit:?}"))
        .expect("waiting for kite")
}

/// Bytes as text, for assertions and messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
