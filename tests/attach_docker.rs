//! `kite attach --docker` against the machine's real Docker daemon: a tiny
//! image built `FROM scratch` (Debian's static busybox), containers run
//! with the ECS agent's labels, and the task registered in the fake ECS on
//! an instance at 127.0.0.1. Mutual TLS goes through a rustls terminator in
//! front of the daemon's unix socket, with certificates the test makes with
//! openssl. (socat's openssl-listen cannot serve a client that resumes TLS
//! sessions while it demands client certificates: OpenSSL fails with
//! "session id context uninitialized" on the second connection.)
//!
//! Without a Docker daemon these tests print a notice and pass, unless
//! KITE_REQUIRE_DOCKER=1 (as in CI), where they fail.

mod attach_child;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use attach_child::{hermetic, kite_attach as kite, text, KITE};
use common::docker::*;
use common::*;
use tokio::io::AsyncWriteExt;

const SOCKET: &str = "/var/run/docker.sock";

/// Creates and starts a container as the ECS agent would label it, with
/// stdin open (closed after the first attach, like `docker run -i`).
fn start_container(
    cleanup: &mut Cleanup,
    name: &str,
    image: &str,
    task_arn: &str,
    tty: bool,
    script: &str,
) -> String {
    let task_label = format!("com.amazonaws.ecs.task-arn={task_arn}");
    let mut args = vec![
        "create",
        "-i",
        "-a",
        "stdin",
        "--name",
        name,
        "--label",
        &task_label,
        "--label",
        "com.amazonaws.ecs.container-name=app",
    ];
    if tty {
        args.push("-t");
    }
    args.extend([image, "sh", "-c", script]);
    cleanup.containers.push(name.to_owned());
    let id = docker(&args);
    docker(&["start", name]);
    id
}

/// A bridge task of one container "app" on an instance at 127.0.0.1, with
/// ECS's runtimeId when given; its ARN.
fn ecs_task(fake: &FakeAws, runtime_id: Option<&str>) -> String {
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.1", None);
        let td = c.add_task_definition("shell", 1, "bridge", &app(&[]));
        c.add_task(TaskSpec {
            container_instance_arn: Some(ci),
            containers: vec![TaskContainer {
                runtime_id: runtime_id.map(str::to_owned),
                ..TaskContainer::new("app")
            }],
            ..TaskSpec::new(&td)
        })
    })
}

/// Runs `kite attach` with `input` on stdin (then end of file).
async fn run(cmd: tokio::process::Command, input: &[u8]) -> Output {
    attach_child::run(cmd, input, Duration::from_secs(120)).await
}

/// A test's Docker side: a fresh image, and what to remove after.
struct Daemon {
    name: String,
    image: String,
    cleanup: Cleanup,
}

impl Daemon {
    /// `None` (after a notice) when no Docker daemon is there.
    fn start(test: &str, tag: &str) -> Option<Daemon> {
        if !docker_ready(test) {
            return None;
        }
        let name = suffix(tag);
        let mut cleanup = Cleanup::default();
        let image = build_image(&mut cleanup, &name);
        Some(Daemon {
            name,
            image,
            cleanup,
        })
    }

    /// A started container named `kite-NAME` plus `tail` (see
    /// [`start_container`]); its id.
    fn container(&mut self, tail: &str, task_arn: &str, tty: bool, script: &str) -> String {
        let cname = format!("kite-{}{tail}", self.name);
        start_container(
            &mut self.cleanup,
            &cname,
            &self.image,
            task_arn,
            tty,
            script,
        )
    }

    /// A scratch directory removed after the test.
    fn dir(&mut self, tag: &str) -> PathBuf {
        temp_dir(&mut self.cleanup, &format!("{tag}-{}", self.name))
    }
}

/// `script(1)` running `inner` in a pseudo-terminal, hermetic.
fn script(fake: &FakeAws, inner: &str) -> tokio::process::Command {
    let mut cmd = hermetic("script", fake, &[]);
    cmd.args(["-qefc", inner, "/dev/null"]);
    cmd
}

const UNIX: &str = "unix:///var/run/docker.sock";

/// stdin reaches the container, stdout and stderr come back apart, and the
/// container's exit code is kite's: the container found by runtimeId, then
/// (no runtimeId) by the ECS labels.
#[tokio::test]
async fn docker_stdio_and_exit_code_by_runtime_id_and_by_labels() {
    let Some(mut daemon) = Daemon::start("docker_stdio_and_exit_code", "stdio") else {
        return;
    };
    let fake = FakeAws::start().await;
    let script = "cat; echo err-line >&2; exit 3";

    let cid = daemon.container("-a", "unused", false, script);
    let arn2 = ecs_task(&fake, Some(&cid));
    let args = ["--task", &arn2, "--docker", "--docker-host", UNIX];
    let out = run(kite(&fake, &args, &[]), b"to-stdin\n").await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(text(&out.stdout), "to-stdin\n");
    assert!(stderr.contains("err-line\n"), "{stderr}");
    assert!(stderr.contains("attached to container app"), "{stderr}");

    // No runtimeId: the labels find it.
    let arn3 = ecs_task(&fake, None);
    daemon.container("-b", &arn3, false, script);
    let args = ["--task", &arn3, "--docker", "--docker-host", UNIX];
    let out = run(kite(&fake, &args, &[]), b"by-labels\n").await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "by-labels\n");
    assert!(text(&out.stderr).contains("err-line"));
}

/// A container that already exited, one that does not exist, and a daemon
/// that is not there: one clear line each.
#[tokio::test]
async fn docker_errors_are_one_clear_line() {
    let fake = FakeAws::start().await;
    // No daemon at this socket: needs no Docker.
    let arn = ecs_task(&fake, Some("0123abcd"));
    let args = [
        "--task",
        &arn,
        "--docker",
        "--docker-host",
        "unix:///nonexistent/docker.sock",
    ];
    let out = run(kite(&fake, &args, &[]), b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot reach the Docker daemon at unix:///nonexistent/docker.sock"),
        "{err}"
    );
    // A tcp daemon without TLS files or --docker-tls=false.
    let args = ["--task", &arn, "--docker"];
    let out = run(kite(&fake, &args, &[]), b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("tcp://127.0.0.1:2376 needs TLS: set DOCKER_CERT_PATH"),
        "{err}"
    );

    // Fargate: no Docker daemon; execute-command is the way in.
    let farg = fake.edit(|c| {
        let td = c.add_task_definition("f", 1, "awsvpc", &app(&[]));
        c.add_task(TaskSpec {
            launch_type: "FARGATE".into(),
            eni: Some(("eni-f".into(), "127.0.0.9".into())),
            containers: vec![TaskContainer::new("app")],
            ..TaskSpec::new(&td)
        })
    });
    let out = run(kite(&fake, &["--task", &farg, "--docker"], &[]), b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("Fargate") && err.contains("aws ecs execute-command"),
        "{err}"
    );

    let Some(mut daemon) = Daemon::start("docker_errors_are_one_clear_line", "errors") else {
        return;
    };
    let cid = daemon.container("", "x", false, "exit 7");
    docker(&["wait", &cid]);
    let arn = ecs_task(&fake, Some(&cid));
    let args = ["--task", &arn, "--docker", "--docker-host", UNIX];
    let out = run(kite(&fake, &args, &[]), b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("is not running: exited, exit code 7"), "{err}");
    assert!(err.contains(UNIX), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );

    // Neither runtimeId nor labels match anything on that daemon.
    let arn = ecs_task(&fake, None);
    let args = ["--task", &arn, "--docker", "--docker-host", UNIX];
    let out = run(kite(&fake, &args, &[]), b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("has no container app of task"), "{err}");
}

/// With a TTY: kite in a pseudo-terminal (script(1)), raw mode while
/// attached and restored after, the window size sent, the exit code passed.
#[tokio::test]
async fn docker_tty_raw_mode_restored_and_window_size_sent() {
    let Some(mut daemon) = Daemon::start("docker_tty", "tty") else {
        return;
    };
    let dir = daemon.dir("tty");
    let fake = FakeAws::start().await;
    let sh = "read line; stty size; echo got:$line; exit 5";
    let cid = daemon.container("", "x", true, sh);
    let arn = ecs_task(&fake, Some(&cid));
    let d = dir.display();
    let inner = format!(
        "stty rows 33 cols 99; stty -g > {d}/before; \
         {KITE} attach --task {arn} --docker --docker-host {UNIX}; echo $? > {d}/rc; \
         stty -g > {d}/after"
    );
    let mut child = script(&fake, &inner).spawn().expect("running script(1)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"typed\r").await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(120), async {
        let out = child.wait_with_output().await;
        drop(stdin);
        out
    })
    .await
    .expect("kite in script(1) did not finish within 120 s")
    .unwrap();
    let screen = text(&out.stdout);
    let read = |f: &str| std::fs::read_to_string(Path::new(&dir).join(f)).unwrap_or_default();
    assert_eq!(read("rc").trim(), "5", "{screen}");
    assert!(screen.contains("got:typed"), "{screen}");
    assert!(screen.contains("33 99"), "window size not sent: {screen}");
    assert!(!read("before").is_empty());
    assert_eq!(
        read("before"),
        read("after"),
        "terminal left changed: {screen}"
    );
}

/// Mutual TLS through a TLS terminator in front of the daemon's socket: the right
/// certificates attach (the daemon found on the task's instance address,
/// port --docker-port); a wrong CA fails with one clear line.
#[tokio::test]
async fn docker_mutual_tls() {
    let Some(mut daemon) = Daemon::start("docker_mutual_tls", "tls") else {
        return;
    };
    let dir = daemon.dir("tls");
    let pki = Pki::make(&dir);
    let (_front, port) = TlsFront::start(&dir).await;
    let fake = FakeAws::start().await;
    let cid = daemon.container("", "x", false, "cat; echo tls-err >&2; exit 4");
    let arn = ecs_task(&fake, Some(&cid));
    let port_s = port.to_string();
    let args = ["--task", &arn, "--docker", "--docker-port", &port_s];
    let good = pki.client.to_str().unwrap();
    let out = run(
        kite(&fake, &args, &[("DOCKER_CERT_PATH", good)]),
        b"over-tls\n",
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert_eq!(text(&out.stdout), "over-tls\n");
    assert!(
        stderr.contains(&format!("tcp://127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("tls-err"), "{stderr}");

    let wrong = pki.wrong_ca.to_str().unwrap();
    let out = run(kite(&fake, &args, &[("DOCKER_CERT_PATH", wrong)]), b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("TLS handshake failed"), "{err}");
    assert!(err.contains("not signed by the CA"), "{err}");
    assert!(err.contains(&format!("tcp://127.0.0.1:{port}")), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );

    let wrong = pki.wrong_cert.to_str().unwrap();
    let out = run(kite(&fake, &args, &[("DOCKER_CERT_PATH", wrong)]), b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("rejected kite's client certificate"), "{err}");
    assert!(err.contains(&format!("tcp://127.0.0.1:{port}")), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );
}

/// Certificates made with openssl: a CA, the daemon's (for 127.0.0.1),
/// kite's client certificate, and a second CA that signed nothing.
struct Pki {
    /// ca.pem, cert.pem, key.pem: the right ones.
    client: PathBuf,
    /// The same client files with the other CA's ca.pem.
    wrong_ca: PathBuf,
    /// The right ca.pem, with a client certificate the other CA signed.
    wrong_cert: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

impl Pki {
    fn make(dir: &Path) -> Pki {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let mut a = vec!["req", "-x509", "-days", "2", "-subj"];
            let subj = format!("/CN=kite test {ca}");
            a.push(&subj);
            a.extend(ec);
            let (key, pem) = (format!("{ca}-key.pem"), format!("{ca}.pem"));
            a.extend(["-keyout", &key, "-out", &pem]);
            openssl(dir, &a);
        }
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (who, ca) in [("server", "ca"), ("client", "ca"), ("stranger", "other-ca")] {
            let ext = if who == "server" {
                "server.ext"
            } else {
                "client.ext"
            };
            let (key, csr, pem) = (
                format!("{who}-key.pem"),
                format!("{who}.csr"),
                format!("{who}.pem"),
            );
            let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}-key.pem"));
            let subj = format!("/CN={who}");
            let mut a = vec!["req", "-subj", &subj];
            a.extend(ec);
            a.extend(["-keyout", &key, "-out", &csr]);
            openssl(dir, &a);
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_pem,
                    "-CAkey",
                    &ca_key,
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    ext,
                    "-out",
                    &pem,
                ],
            );
        }
        let client = dir.join("client-dir");
        let wrong_ca = dir.join("wrong-ca-dir");
        let wrong_cert = dir.join("wrong-cert-dir");
        for (d, ca, who) in [
            (&client, "ca.pem", "client"),
            (&wrong_ca, "other-ca.pem", "client"),
            (&wrong_cert, "ca.pem", "stranger"),
        ] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::copy(dir.join(ca), d.join("ca.pem")).unwrap();
            std::fs::copy(dir.join(format!("{who}.pem")), d.join("cert.pem")).unwrap();
            std::fs::copy(dir.join(format!("{who}-key.pem")), d.join("key.pem")).unwrap();
        }
        Pki {
            client,
            wrong_ca,
            wrong_cert,
        }
    }
}

/// The daemon's TLS terminator, as a daemon started with --tlsverify would
/// be: it demands a client certificate signed by ca.pem, and passes each
/// connection on to the daemon's unix socket (half-close included). Stops
/// when dropped.
struct TlsFront(tokio::task::JoinHandle<()>);

impl TlsFront {
    async fn start(dir: &Path) -> (TlsFront, u16) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<_> = CertificateDer::pem_file_iter(dir.join("server.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("server-key.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots.into())
            .build()
            .unwrap();
        let config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(sock).await else {
                        return; // e.g. kite with the wrong CA hangs up
                    };
                    let mut unix = tokio::net::UnixStream::connect(SOCKET).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut unix).await;
                });
            }
        });
        (TlsFront(task), port)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The detach keys leave the container running and end kite with 0.
#[tokio::test]
async fn docker_tty_detach_keys_leave_the_container_running() {
    let Some(mut daemon) = Daemon::start("docker_tty_detach", "detach") else {
        return;
    };
    use tokio::io::AsyncReadExt;
    let fake = FakeAws::start().await;
    let cname = format!("kite-{}", daemon.name);
    let cid = daemon.container("", "x", true, "read line; exit 9");
    let arn = ecs_task(&fake, Some(&cid));
    let inner = format!(
        "{KITE} attach --task {arn} --docker --docker-host {UNIX} --detach-keys ctrl-x,k; \
         echo rc=$?"
    );
    let mut child = script(&fake, &inner).spawn().expect("running script(1)");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut screen = Vec::new();
    let run = async {
        let mut buf = [0u8; 4096];
        // Type the keys once kite is attached (and the terminal raw).
        while !text(&screen).contains("attached to container") {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "kite ended early: {}", text(&screen));
            screen.extend_from_slice(&buf[..n]);
        }
        stdin.write_all(b"\x18k").await.unwrap();
        stdout.read_to_end(&mut screen).await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("kite did not detach within 120 s");
    let screen = text(&screen);
    assert!(screen.contains("detached; container"), "{screen}");
    assert!(screen.contains("rc=0"), "{screen}");
    let running = docker(&["inspect", "-f", "{{.State.Running}}", &cname]);
    assert_eq!(running, "true", "{screen}");
}

/// Plays the ECS agent for the next task RunTask starts (the
/// `run_requests` beyond `seen`): creates container "app" with the
/// overridden command and the agent's labels, starts it, waits until its
/// output holds `ready` (or, with `None`, until it exits), then reports
/// the task RUNNING with the container's runtimeId.
async fn play_agent(fake: &FakeAws, daemon: &mut Daemon, seen: usize, ready: Option<&str>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while fake.edit(|c| c.run_requests.len()) <= seen {
        assert!(tokio::time::Instant::now() < deadline, "no RunTask");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (arn, command) = fake.edit(|c| {
        let req = &c.run_requests[seen];
        let command: Vec<String> = req["overrides"]["containerOverrides"][0]["command"]
            .as_array()
            .expect("a command override")
            .iter()
            .map(|w| w.as_str().unwrap().to_owned())
            .collect();
        let arn = c.tasks.last().unwrap()["taskArn"]
            .as_str()
            .unwrap()
            .to_owned();
        (arn, command)
    });
    let name = format!("kite-{}-run{seen}", daemon.name);
    daemon.cleanup.containers.push(name.clone());
    let task_label = format!("com.amazonaws.ecs.task-arn={arn}");
    let mut args = vec!["create", "--name", &name, "--label", &task_label];
    args.extend([
        "--label",
        "com.amazonaws.ecs.container-name=app",
        &daemon.image,
    ]);
    args.extend(command.iter().map(String::as_str));
    let cid = docker(&args);
    docker(&["start", &cid]);
    match ready {
        None => {
            docker(&["wait", &cid]);
        }
        Some(line) => {
            while !docker(&["logs", &cid]).contains(line) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never printed {line}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    fake.edit(|c| {
        let task = c.task_mut(&arn).unwrap();
        task["lastStatus"] = "RUNNING".into();
        task["containers"][0]["lastStatus"] = "RUNNING".into();
        task["containers"][0]["runtimeId"] = cid.clone().into();
    });
}

/// `--run` with a command: what it printed before kite attached comes
/// out once, then the rest, and kite exits with its code; a command done
/// before kite attached has its whole output printed once, stdout and
/// stderr apart, and its code passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_loses_no_output_of_a_short_command() {
    let Some(mut daemon) = Daemon::start("run_loses_no_output", "runout") else {
        return;
    };
    let fake = FakeAws::start().await;
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.1", None);
        let td = c.add_task_definition("oneoff", 1, "bridge", &app(&[]));
        c.run_template = Some(TaskSpec {
            container_instance_arn: Some(ci),
            containers: vec![TaskContainer::new("app")],
            ..TaskSpec::new(&td)
        });
    });
    let base = [
        "--run",
        "oneoff",
        "--docker",
        "--docker-host",
        UNIX,
        "--poll",
        "10ms",
        "--",
    ];

    // Still running when kite attaches, with a line already printed.
    let script = "echo early; echo early-err >&2; sleep 1; echo late; exit 4";
    let mut args = base.to_vec();
    args.extend(["sh", "-c", script]);
    let (out, ()) = tokio::join!(
        run(kite(&fake, &args, &[]), b""),
        play_agent(&fake, &mut daemon, 0, Some("early"))
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert_eq!(text(&out.stdout), "early\nlate\n", "{stderr}");
    assert_eq!(stderr.matches("early-err").count(), 1, "{stderr}");

    // Done before kite attaches.
    let script = "echo out-line; echo err-line >&2; exit 3";
    let mut args = base.to_vec();
    args.extend(["sh", "-c", script]);
    let (out, ()) = tokio::join!(
        run(kite(&fake, &args, &[]), b""),
        play_agent(&fake, &mut daemon, 1, None)
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(text(&out.stdout), "out-line\n", "{stderr}");
    assert_eq!(stderr.matches("err-line").count(), 1, "{stderr}");
    assert!(
        stderr.contains("had exited (code 3) before kite attached"),
        "{stderr}"
    );
    assert_eq!(fake.call_count("StopTask"), 2, "--run stops its tasks");
}

/// Without --docker-host, kite uses the daemon DOCKER_HOST names, as the
/// docker CLI does; --docker-host wins over it.
#[tokio::test]
async fn docker_host_from_the_environment() {
    let Some(mut daemon) = Daemon::start("docker_host_from_the_environment", "envhost") else {
        return;
    };
    let fake = FakeAws::start().await;
    let cid = daemon.container("", "unused", false, "cat; exit 5");
    let arn = ecs_task(&fake, Some(&cid));
    let env = [("DOCKER_HOST", UNIX)];
    let out = run(
        kite(&fake, &["--task", &arn, "--docker"], &env),
        b"via-env\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "via-env\n");

    let env = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    let args = ["--task", &arn, "--docker", "--docker-host", UNIX];
    let out = run(kite(&fake, &args, &env), b"").await;
    let err = text(&out.stderr);
    assert!(!err.contains("nonexistent"), "the flag did not win: {err}");
    // The container ended above: the flag's daemon says so.
    assert!(err.contains("is not running"), "{err}");
}

/// Starts `kite attach ARGS`, reads its stdout until a line `line`, and
/// returns the child with the rest of its stdout still to read.
async fn kite_until(
    fake: &FakeAws,
    args: &[&str],
    line: &str,
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut child = kite(fake, args, &[]).spawn().expect("starting kite");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let seen = async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l == line {
                return true;
            }
        }
        false
    };
    let seen = tokio::time::timeout(Duration::from_secs(60), seen)
        .await
        .expect("the container never printed its line");
    if !seen {
        let mut err = String::new();
        let mut stderr = child.stderr.take().unwrap();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err)
            .await
            .unwrap();
        let status = child.wait().await.unwrap();
        panic!("kite's stdout ended before {line} ({status}): {err}");
    }
    (child, lines)
}

fn sigint(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let status = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(status.success());
}

/// --sig-proxy, the default without a TTY: Ctrl-C reaches a container that
/// traps it, and kite streams on until the container exits, with its code.
/// Two Ctrl-Cs within a second leave at once; the container runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_reaches_the_container() {
    let Some(mut daemon) = Daemon::start("sigint_reaches_the_container", "sigint") else {
        return;
    };
    let fake = FakeAws::start().await;
    let ticks = "while true; do echo tick; sleep 0.2; done";
    let trap = format!("trap 'echo got-int; exit 9' INT; {ticks}");
    let cid = daemon.container("-a", "unused", false, &trap);
    let arn = ecs_task(&fake, Some(&cid));
    let args = ["--task", &arn, "--docker", "--docker-host", UNIX];
    let (mut child, mut lines) = kite_until(&fake, &args, "tick").await;
    sigint(&child);
    let mut rest = Vec::new();
    while let Some(l) = lines.next_line().await.unwrap() {
        rest.push(l);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(9), "{rest:?}");
    assert_eq!(rest.last().map(String::as_str), Some("got-int"), "{rest:?}");

    let ignore = format!("trap 'echo ignored' INT; {ticks}");
    let cid = daemon.container("-b", "unused", false, &ignore);
    let arn = ecs_task(&fake, Some(&cid));
    let (mut child, _lines) = kite_until(&fake, &args_for(&arn), "tick").await;
    sigint(&child);
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigint(&child);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("a second Ctrl-C did not leave")
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let running = docker(&["inspect", "-f", "{{.State.Running}}", &cid]);
    assert_eq!(running.trim(), "true", "the container runs on");
}

fn args_for(arn: &str) -> [&str; 5] {
    ["--task", arn, "--docker", "--docker-host", UNIX]
}
