//! The `coordinator` binary as a user runs it: `serve` in one process,
//! client commands in others, over a real socket.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_coordinator");

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &std::path::Path) -> Server {
    serve_with(dir, &[])
}

fn serve_with(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env_remove("RIDGELINE_TOKENS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start coordinator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the address");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    Server {
        child,
        url: format!("http://{addr}"),
    }
}

fn client(url: &str, args: &[&str]) -> (bool, String, String) {
    client_env(url, args, &[])
}

fn client_env(url: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["--coordinator", url])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("RIDGELINE_TOKEN")
        .env_remove("RIDGELINE_TOKEN_FILE")
        .env_remove("RIDGELINE_TLS_CA")
        .envs(env.iter().copied())
        .output()
        .expect("run client");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn submit_status_list_and_refusals_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/lr_ramp.toml");
    let (ok, out, err) = client(&server.url, &["submit", example]);
    assert!(ok, "{err}");
    let id = out.trim();
    assert_eq!(id.len(), 36, "the job id alone on stdout: {out:?}");

    let (ok, out, _) = client(&server.url, &["status", id]);
    assert!(ok);
    assert!(out.contains("queued"), "{out}");
    assert!(out.contains("lr_ramp"), "{out}");
    let (ok, out, _) = client(&server.url, &["list"]);
    assert!(ok && out.contains(id), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(example)
            .unwrap()
            .replace("[lr_ramp]", "[lr_ramp]\nspeed = 3"),
    )
    .unwrap();
    let (ok, _, err) = client(&server.url, &["submit", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("speed"), "the error names the field: {err}");
    assert!(!err.contains("backtrace"), "{err}");

    let (ok, _, err) = client(
        &server.url,
        &["status", "00000000-0000-0000-0000-000000000000"],
    );
    assert!(!ok && err.contains("no job"), "{err}");

    let (ok, _, err) = client("http://127.0.0.1:1", &["list"]);
    assert!(
        !ok && err.contains("127.0.0.1:1"),
        "names the unreachable coordinator: {err}"
    );
}

#[test]
fn tokens_come_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "client = [\"cli-client-token-0123\"]\n").unwrap();
    let server = serve_with(
        &dir.path().join("data"),
        &["--tokens", tokens.to_str().unwrap()],
    );
    let (ok, _, err) = client(&server.url, &["list"]);
    assert!(!ok);
    assert!(err.contains("no bearer token"), "{err}");
    let (ok, out, err) = client_env(
        &server.url,
        &["list"],
        &[("RIDGELINE_TOKEN", "cli-client-token-0123")],
    );
    assert!(ok, "{err}");
    assert!(out.contains("no jobs"), "{out}");
    let file = dir.path().join("my-token");
    std::fs::write(&file, "cli-client-token-0123\n").unwrap();
    let (ok, _, err) = client(
        &server.url,
        &["--token-file", file.to_str().unwrap(), "list"],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = client_env(
        &server.url,
        &["list"],
        &[("RIDGELINE_TOKEN", "wrong-token-000000000")],
    );
    assert!(!ok);
    assert!(err.contains("token is not valid"), "{err}");
}

#[test]
fn tls_init_then_serve_and_call_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let out = Command::new(BIN)
        .args(["tls-init", "--host", "127.0.0.1", "--out"])
        .arg(&tls)
        .output()
        .expect("tls-init");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("--tls-ca"), "{said}");
    // A second run never overwrites the CA.
    let again = Command::new(BIN)
        .args(["tls-init", "--host", "127.0.0.1", "--out"])
        .arg(&tls)
        .output()
        .expect("tls-init");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let path = |f: &str| tls.join(f).display().to_string();
    let server = serve_with(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            &path("server.pem"),
            "--tls-key",
            &path("server.key"),
        ],
    );
    let https = server.url.replace("http://", "https://");
    let (ok, stdout, stderr) = client(&https, &["--tls-ca", &path("ca.pem"), "list"]);
    assert!(ok, "{stdout}{stderr}");
    // The CA from the environment works too, and a bare host:port then
    // means https.
    let bare = server.url.trim_start_matches("http://").to_string();
    let (ok, _, stderr) = client_env(&bare, &["list"], &[("RIDGELINE_TLS_CA", &path("ca.pem"))]);
    assert!(ok, "{stderr}");
    // Without the CA the certificate is not trusted, and plain http with a
    // CA given is refused before dialling.
    let (ok, _, stderr) = client(&https, &["list"]);
    assert!(!ok);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    let (ok, _, stderr) = client(&server.url, &["--tls-ca", &path("ca.pem"), "list"]);
    assert!(!ok);
    assert!(stderr.contains("use https://"), "{stderr}");
    // A key passed as the certificate is named at start.
    let bad = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data2"))
        .args([
            "--tls-cert",
            &path("server.key"),
            "--tls-key",
            &path("server.key"),
        ])
        .output()
        .expect("serve");
    assert!(!bad.status.success());
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(e.contains("--tls-cert") && e.contains("CERTIFICATE"), "{e}");
}
