//! CI check of the deployment examples in `deploy/` (issue 7, "Running on
//! clusters"). Nothing here needs a cluster, a Slurm controller, systemd as
//! PID 1 or a Docker daemon:
//!
//! * the Kubernetes manifests are parsed (YAML) and checked for the fields
//!   the API server needs and for consistency between them (selectors,
//!   Service ports, volumes, Secrets, probes, GPU requests, grace periods);
//! * the Slurm script passes `bash -n` and is run in its dry-run mode, which
//!   prints the worker command line it would `exec`;
//! * the systemd units go through `systemd-analyze verify` where it exists,
//!   and an INI check always (hardening, restart, stop timeout);
//! * the Dockerfiles are checked against the workspace (packages, binaries,
//!   features, copied paths, `.dockerignore`) and against `.ci/run`.
//!
//! Every command line in them is checked against the flags that the built
//! binaries print in `--help`, and every `RIDGELINE_*` variable against the
//! ones they read, so a renamed or removed flag fails here rather than on a
//! cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Fails with every problem found, one per line.
fn report(what: &str, errors: &[String]) {
    assert!(
        errors.is_empty(),
        "{what}: {} problem(s)\n  {}",
        errors.len(),
        errors.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// The binaries' command lines, as their --help describes them.

#[derive(Debug, Clone, Default)]
struct Flag {
    takes_value: bool,
    /// `[possible values: …]`; empty: any value.
    possible: Vec<String>,
    /// `[default: …]`.
    default: Option<String>,
}

#[derive(Debug, Default)]
struct Help {
    flags: BTreeMap<String, Flag>,
    /// Every `RIDGELINE_*` variable the help names (`[env: …]`, "or set …").
    env: BTreeSet<String>,
    /// Subcommands (`Commands:`).
    commands: BTreeSet<String>,
    /// How many positional arguments `Usage:` allows.
    positionals: usize,
}

fn bracketed<'a>(text: &'a str, open: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(']')? + start;
    Some(&text[start..end])
}

fn finish_flag(help: &mut Help, current: Option<(String, bool, String)>) {
    let Some((name, takes_value, description)) = current else {
        return;
    };
    let description = description.split_whitespace().collect::<Vec<_>>().join(" ");
    let possible = bracketed(&description, "[possible values: ")
        .map(|v| v.split(", ").map(str::to_string).collect())
        .unwrap_or_default();
    let default = bracketed(&description, "[default: ").map(str::to_string);
    help.flags.insert(
        name,
        Flag {
            takes_value,
            possible,
            default,
        },
    );
}

fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut section = String::new();
    let mut current: Option<(String, bool, String)> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if let Some(usage) = trimmed.strip_prefix("Usage:") {
            for word in usage.split_whitespace() {
                if word == "[OPTIONS]" || word == "<COMMAND>" {
                    continue;
                }
                if word.ends_with("...") {
                    help.positionals = usize::MAX;
                } else if word.starts_with('<') || word.starts_with('[') {
                    help.positionals = help.positionals.saturating_add(1);
                }
            }
            continue;
        }
        if indent == 0 && trimmed.ends_with(':') {
            finish_flag(&mut help, current.take());
            section = trimmed.to_string();
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        if section == "Commands:" && indent == 2 {
            if let Some(word) = trimmed.split_whitespace().next() {
                help.commands.insert(word.to_string());
            }
        } else if section == "Options:" && indent <= 6 && trimmed.starts_with('-') {
            finish_flag(&mut help, current.take());
            let mut words = trimmed.split_whitespace().peekable();
            let mut name = None;
            let mut takes_value = false;
            while let Some(word) = words.next() {
                if let Some(long) = word.strip_prefix("--") {
                    name = Some(long.trim_end_matches(',').to_string());
                    takes_value = words.peek().is_some_and(|w| w.starts_with('<'));
                    if takes_value {
                        words.next();
                    }
                    break;
                }
            }
            let rest = words.collect::<Vec<_>>().join(" ");
            current = name.map(|n| (n, takes_value, rest));
        } else if let Some((_, _, description)) = current.as_mut() {
            description.push(' ');
            description.push_str(trimmed);
        }
    }
    finish_flag(&mut help, current);
    let mut rest = text;
    while let Some(at) = rest.find("RIDGELINE_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        help.env.insert(name.clone());
        rest = &rest[at + name.len()..];
    }
    help
}

struct Clis {
    worker_path: PathBuf,
    coordinator_path: PathBuf,
    worker: Help,
    coordinator: Help,
    /// `coordinator SUBCOMMAND --help`, for every subcommand.
    subcommands: BTreeMap<String, Help>,
}

fn help_text(binary: &Path, args: &[&str]) -> String {
    let out = Command::new(binary)
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    assert!(
        out.status.success(),
        "{} {args:?} --help failed: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

fn clis() -> &'static Clis {
    static CLIS: OnceLock<Clis> = OnceLock::new();
    CLIS.get_or_init(|| {
        let worker_path = ridgeline_tests::binary("worker", "ridgeline-worker");
        let coordinator_path = ridgeline_tests::binary("coordinator", "ridgeline-coordinator");
        let worker = parse_help(&help_text(&worker_path, &[]));
        let coordinator = parse_help(&help_text(&coordinator_path, &[]));
        let subcommands = coordinator
            .commands
            .iter()
            .filter(|c| *c != "help")
            .map(|c| (c.clone(), parse_help(&help_text(&coordinator_path, &[c]))))
            .collect();
        Clis {
            worker_path,
            coordinator_path,
            worker,
            coordinator,
            subcommands,
        }
    })
}

/// A command line as the binary would read it.
#[derive(Debug, Default)]
struct Parsed {
    program: String,
    subcommand: Option<String>,
    /// Flag (without `--`) → the values given ("" for a switch).
    values: BTreeMap<String, Vec<String>>,
    positionals: Vec<String>,
}

impl Parsed {
    fn given(&self, flag: &str) -> Option<&str> {
        self.values
            .get(flag)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// The value given, else the default the help states.
    fn value(&self, flag: &str) -> Option<String> {
        self.given(flag)
            .map(str::to_string)
            .or_else(|| self.help().flags.get(flag).and_then(|f| f.default.clone()))
    }

    fn help(&self) -> &'static Help {
        let clis = clis();
        match (self.program.as_str(), &self.subcommand) {
            ("worker", _) => &clis.worker,
            (_, Some(sub)) => &clis.subcommands[sub],
            _ => &clis.coordinator,
        }
    }

    /// The `RIDGELINE_*` variables this command reads.
    fn env(&self) -> BTreeSet<String> {
        let mut env = self.help().env.clone();
        if self.program == "coordinator" {
            env.extend(clis().coordinator.env.iter().cloned());
        }
        env
    }
}

/// A value filled in later (`${VAR}`, `$(VAR)`, a systemd `%i`).
fn is_placeholder(value: &str) -> bool {
    value.contains('$') || value.contains('%')
}

/// Checks `program args…` against the binary's `--help`: known flags, a
/// value where one is needed, values from the listed ones, a known
/// subcommand, no stray arguments; then the values the deploy files rely on
/// (devices, slots, seconds, the listen address).
fn check_command(program: &str, args: &[String]) -> Result<Parsed, Vec<String>> {
    let clis = clis();
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program)
        .to_string();
    let mut help = match name.as_str() {
        "worker" => &clis.worker,
        "coordinator" => &clis.coordinator,
        other => {
            return Err(vec![format!(
                "`{other}` is neither of the binaries (worker, coordinator)"
            )])
        }
    };
    let mut parsed = Parsed {
        program: name.clone(),
        ..Parsed::default()
    };
    let mut errors = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let shown = match &parsed.subcommand {
            Some(sub) => format!("{name} {sub}"),
            None => name.clone(),
        };
        if let Some(long) = arg.strip_prefix("--") {
            let (flag_name, inline) = match long.split_once('=') {
                Some((f, v)) => (f, Some(v.to_string())),
                None => (long, None),
            };
            let Some(flag) = help.flags.get(flag_name) else {
                errors.push(format!("{shown}: no flag --{flag_name}"));
                continue;
            };
            let value = if flag.takes_value {
                match inline {
                    Some(v) => v,
                    None if i < args.len() && !args[i].starts_with("--") => {
                        i += 1;
                        args[i - 1].clone()
                    }
                    None => {
                        errors.push(format!("{shown}: --{flag_name} needs a value"));
                        continue;
                    }
                }
            } else {
                if inline.is_some() {
                    errors.push(format!("{shown}: --{flag_name} takes no value"));
                }
                String::new()
            };
            if !flag.possible.is_empty()
                && !is_placeholder(&value)
                && !flag.possible.contains(&value)
            {
                errors.push(format!(
                    "{shown}: --{flag_name} {value}: not one of {:?}",
                    flag.possible
                ));
            }
            parsed
                .values
                .entry(flag_name.to_string())
                .or_default()
                .push(value);
        } else if arg.starts_with('-') && arg.len() > 1 {
            errors.push(format!("{shown}: `{arg}`: use long flags in deploy files"));
        } else if name == "coordinator" && parsed.subcommand.is_none() {
            match clis.subcommands.get(arg.as_str()) {
                Some(sub) => {
                    help = sub;
                    parsed.subcommand = Some(arg.clone());
                }
                None => {
                    errors.push(format!("coordinator: no subcommand `{arg}`"));
                    return Err(errors);
                }
            }
        } else {
            parsed.positionals.push(arg.clone());
        }
    }
    if name == "coordinator" && parsed.subcommand.is_none() {
        errors.push("coordinator: no subcommand".to_string());
    }
    if parsed.positionals.len() > help.positionals {
        errors.push(format!(
            "{name}: unexpected argument(s) {:?}",
            parsed.positionals
        ));
    }
    errors.extend(check_values(&parsed));
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

/// The values whose form the binaries check only at start.
fn check_values(parsed: &Parsed) -> Vec<String> {
    let mut errors = Vec::new();
    for (flag, values) in &parsed.values {
        for value in values.iter().filter(|v| !is_placeholder(v)) {
            let ok = match flag.as_str() {
                "device" => is_device(value),
                "slots" => value.parse::<u32>().is_ok_and(|n| n >= 1),
                "exit-when-idle" | "shutdown-grace" | "lease-ttl" | "heartbeat" | "quarantine" => {
                    value
                        .parse::<f64>()
                        .is_ok_and(|s| s >= 0.0 && s.is_finite())
                }
                "listen" => value.parse::<std::net::SocketAddr>().is_ok(),
                _ => true,
            };
            if !ok {
                errors.push(format!(
                    "{}: --{flag} {value}: not a valid value",
                    parsed.program
                ));
            }
        }
    }
    errors
}

fn is_device(value: &str) -> bool {
    value == "cpu"
        || value == "auto"
        || value
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<u32>().is_ok())
}

fn seconds(value: &str) -> f64 {
    value
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("`{value}` is not a number of seconds"))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The checker itself: it sees the binaries' flags and refuses what they
/// refuse (so the checks below can fail).
#[test]
fn the_flag_checker_reads_the_binaries_help_and_refuses_what_they_refuse() {
    let c = clis();
    assert!(c.worker.flags.len() >= 10, "{:?}", c.worker.flags.keys());
    let serve = &c.subcommands["serve"];
    assert!(serve.flags.len() >= 10, "{:?}", serve.flags.keys());
    assert!(c.worker.flags["exit-when-idle"].takes_value);
    assert!(!c.worker.flags["help"].takes_value);
    assert!(c.worker.flags["log-format"]
        .possible
        .contains(&"json".to_string()));
    assert!(c.worker.env.contains("RIDGELINE_COORDINATOR"));
    assert!(serve.env.contains("RIDGELINE_DATA_DIR"));
    assert!(c.subcommands.contains_key("tls-init"));
    assert_eq!(c.worker.positionals, 0);
    assert_eq!(c.subcommands["submit"].positionals, 1);

    let ok = check_command(
        "/usr/local/bin/worker",
        &strings(&["--slots", "2", "--log-format=json", "--device", "${DEV}"]),
    )
    .expect("valid");
    assert_eq!(ok.given("slots"), Some("2"));
    // Not given: the default the help states.
    assert_eq!(
        ok.value("shutdown-grace"),
        clis().worker.flags["shutdown-grace"].default
    );
    assert!(ok.value("shutdown-grace").is_some());
    let ok = check_command(
        "coordinator",
        &strings(&["--log-format", "json", "serve", "--listen", "[::]:1"]),
    )
    .expect("valid");
    assert_eq!(ok.subcommand.as_deref(), Some("serve"));
    assert!(ok.env().contains("RIDGELINE_TOKENS"));
    assert!(ok.env().contains("RIDGELINE_TOKEN_FILE"));

    for (program, bad) in [
        ("worker", &["--bogus"][..]),
        ("worker", &["--log-format", "xml"]),
        ("worker", &["--slots"]),
        ("worker", &["--slots", "0"]),
        ("worker", &["--device", "gpu"]),
        ("worker", &["--exit-when-idle", "soon"]),
        ("worker", &["--help=yes"]),
        ("worker", &["-s", "2"]),
        ("worker", &["stray"]),
        ("coordinator", &[]),
        ("coordinator", &["launch"]),
        ("coordinator", &["serve", "--slots", "2"]),
        ("coordinator", &["serve", "--listen", "head:50051"]),
        ("coordinator", &["serve", "extra"]),
        ("python3", &[]),
    ] {
        assert!(
            check_command(program, &strings(bad)).is_err(),
            "{program} {bad:?} was accepted"
        );
    }
}

// ---------------------------------------------------------------------------
// Kubernetes.

fn k8s_docs() -> Vec<(String, Value)> {
    let dir = repo().join("deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&read(&path))
            .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
        docs.extend(
            parsed
                .into_iter()
                .filter(|d| !d.is_null())
                .map(|d| (name.clone(), d)),
        );
    }
    docs
}

fn s<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// `labels ⊇ selector`.
fn selects(selector: Option<&Value>, labels: Option<&Value>) -> bool {
    let (Some(selector), Some(labels)) = (
        selector.and_then(Value::as_object),
        labels.and_then(Value::as_object),
    ) else {
        return false;
    };
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// CPU cores of a quantity (`"4"`, `4`, `"500m"`).
fn cores(q: &Value) -> Option<f64> {
    match q {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.strip_suffix('m') {
            Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

/// The mount holding `path` (longest mountPath that is a prefix of it).
fn mount_of<'a>(mounts: &'a [Value], path: &str) -> Option<&'a Value> {
    mounts
        .iter()
        .filter(|m| {
            s(m, "/mountPath").is_some_and(|mp| {
                let mp = mp.trim_end_matches('/');
                path == mp || path.starts_with(&format!("{mp}/"))
            })
        })
        .max_by_key(|m| s(m, "/mountPath").map_or(0, str::len))
}

/// What backs a pod volume: "secret", "persistentVolumeClaim", "emptyDir", …
/// (a StatefulSet's volumeClaimTemplates count as "persistentVolumeClaim").
fn volume_kind(workload: &Value, name: &str) -> Option<String> {
    if arr(workload, "/spec/volumeClaimTemplates")
        .iter()
        .any(|t| s(t, "/metadata/name") == Some(name))
    {
        return Some("persistentVolumeClaim".into());
    }
    let volume = arr(workload, "/spec/template/spec/volumes")
        .iter()
        .find(|v| s(v, "/name") == Some(name))?;
    volume.as_object()?.keys().find(|k| *k != "name").cloned()
}

/// Checks that `path` is a file of a Secret mounted in the container.
fn check_secret_file(
    workload: &Value,
    mounts: &[Value],
    path: &str,
    what: &str,
    errors: &mut Vec<String>,
) {
    let Some(mount) = mount_of(mounts, path) else {
        errors.push(format!("{what}: {path} is on no volume mount"));
        return;
    };
    let volume_name = s(mount, "/name").unwrap_or_default();
    if volume_kind(workload, volume_name).as_deref() != Some("secret") {
        errors.push(format!("{what}: {path} is not on a Secret volume"));
        return;
    }
    let volume = arr(workload, "/spec/template/spec/volumes")
        .iter()
        .find(|v| s(v, "/name") == Some(volume_name))
        .expect("volume");
    let items = arr(volume, "/secret/items");
    let relative = path
        .strip_prefix(
            s(mount, "/mountPath")
                .unwrap_or_default()
                .trim_end_matches('/'),
        )
        .unwrap_or(path)
        .trim_start_matches('/');
    if !items.is_empty() && !items.iter().any(|i| s(i, "/path") == Some(relative)) {
        errors.push(format!(
            "{what}: the Secret volume `{volume_name}` has no item with path {relative}"
        ));
    }
}

#[derive(Default)]
struct Seen {
    coordinator: bool,
    cpu_worker: bool,
    cuda_worker: bool,
}

fn check_container(
    file: &str,
    workload: &Value,
    container: &Value,
    services: &[&Value],
    seen: &mut Seen,
    errors: &mut Vec<String>,
) {
    let pod = workload.pointer("/spec/template/spec").expect("pod spec");
    let cname = s(container, "/name").unwrap_or("?");
    let what = format!(
        "{file}: {}/{} container {cname}",
        s(workload, "/kind").unwrap_or("?"),
        s(workload, "/metadata/name").unwrap_or("?")
    );
    if s(container, "/image").is_none_or(str::is_empty) {
        errors.push(format!("{what}: no image"));
    }
    let env = arr(container, "/env");
    let env_value = |name: &str| {
        env.iter()
            .find(|e| s(e, "/name") == Some(name))
            .and_then(|e| s(e, "/value"))
    };
    let command: Vec<String> = arr(container, "/command")
        .iter()
        .chain(arr(container, "/args"))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    let Some((program, args)) = command.split_first() else {
        errors.push(format!("{what}: no command (coordinator or worker)"));
        return;
    };
    let parsed = match check_command(program, args) {
        Ok(p) => p,
        Err(e) => {
            errors.extend(e.into_iter().map(|e| format!("{what}: {e}")));
            return;
        }
    };
    // $(VAR) in args is expanded by Kubernetes from the container's env.
    for arg in args {
        let mut rest = arg.as_str();
        while let Some(at) = rest.find("$(") {
            let end = rest[at..].find(')').map_or(rest.len(), |e| at + e);
            let var = &rest[at + 2..end];
            if !env.iter().any(|e| s(e, "/name") == Some(var)) {
                errors.push(format!("{what}: $({var}) in args is not in env"));
            }
            rest = &rest[end..];
        }
    }
    let known = parsed.env();
    for e in env {
        let name = s(e, "/name").unwrap_or_default();
        if name.starts_with("RIDGELINE_") && !known.contains(name) {
            errors.push(format!("{what}: {program} reads no variable {name}"));
        }
        if name == "RIDGELINE_TOKEN" && e.get("value").is_some() {
            errors.push(format!(
                "{what}: a token in the manifest; use a Secret (file or secretKeyRef)"
            ));
        }
    }
    let mounts = arr(container, "/volumeMounts");
    for m in mounts {
        let name = s(m, "/name").unwrap_or_default();
        if volume_kind(workload, name).is_none() {
            errors.push(format!("{what}: mount of an undeclared volume `{name}`"));
        }
    }
    let non_root = container.pointer("/securityContext/runAsNonRoot") == Some(&Value::Bool(true))
        || pod.pointer("/securityContext/runAsNonRoot") == Some(&Value::Bool(true));
    if !non_root {
        errors.push(format!("{what}: runAsNonRoot is not set"));
    }
    let read_only =
        container.pointer("/securityContext/readOnlyRootFilesystem") == Some(&Value::Bool(true));
    let limits = container.pointer("/resources/limits");
    let requests = container.pointer("/resources/requests");
    let gpus = |q: Option<&Value>| q.and_then(|q| q.get("nvidia.com/gpu")).and_then(cores);

    match (program.as_str(), parsed.subcommand.as_deref()) {
        ("coordinator", Some("serve")) => {
            seen.coordinator = true;
            if s(workload, "/kind") == Some("StatefulSet") {
                if workload.pointer("/spec/replicas").and_then(Value::as_u64) != Some(1) {
                    errors.push(format!(
                        "{what}: the coordinator needs exactly one replica (one SQLite writer)"
                    ));
                }
            } else if s(workload, "/kind") == Some("Deployment")
                && (workload.pointer("/spec/replicas").and_then(Value::as_u64) != Some(1)
                    || s(workload, "/spec/strategy/type") != Some("Recreate"))
            {
                errors.push(format!(
                    "{what}: a coordinator Deployment needs replicas: 1 and strategy Recreate"
                ));
            }
            let Some(listen) = parsed.given("listen") else {
                errors.push(format!("{what}: no --listen"));
                return;
            };
            let port: u64 = listen
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if !arr(container, "/ports")
                .iter()
                .any(|p| p.pointer("/containerPort").and_then(Value::as_u64) == Some(port))
            {
                errors.push(format!("{what}: --listen port {port} is no containerPort"));
            }
            for probe in ["readinessProbe", "livenessProbe"] {
                match container
                    .pointer(&format!("/{probe}/grpc/port"))
                    .and_then(Value::as_u64)
                {
                    Some(p) if p == port => {}
                    Some(p) => errors.push(format!(
                        "{what}: {probe} checks port {p}, the coordinator listens on {port}"
                    )),
                    None => errors.push(format!(
                        "{what}: no {probe} with gRPC health checking (grpc: port: {port})"
                    )),
                }
            }
            let data_dir = parsed
                .given("data-dir")
                .or_else(|| env_value("RIDGELINE_DATA_DIR"));
            match data_dir.map(|d| (d, mount_of(mounts, d))) {
                None => errors.push(format!("{what}: no --data-dir")),
                Some((d, None)) => errors.push(format!("{what}: --data-dir {d} is on no volume")),
                Some((d, Some(m))) => {
                    let kind = volume_kind(workload, s(m, "/name").unwrap_or_default());
                    if kind.as_deref() != Some("persistentVolumeClaim") {
                        errors.push(format!(
                            "{what}: --data-dir {d} is not on a PersistentVolumeClaim ({kind:?})"
                        ));
                    }
                }
            }
            match parsed
                .given("tokens")
                .or_else(|| env_value("RIDGELINE_TOKENS"))
            {
                Some(t) => check_secret_file(workload, mounts, t, &what, errors),
                None => errors.push(format!("{what}: no --tokens (anyone could call it)")),
            }
        }
        ("coordinator", sub) => errors.push(format!(
            "{what}: runs `coordinator {}`, not `serve`",
            sub.unwrap_or("")
        )),
        _ => {
            let device = parsed.value("device").unwrap_or_default();
            let gpus_limit = gpus(limits);
            if let Some(n) = device.strip_prefix("cuda:") {
                seen.cuda_worker = true;
                let index: f64 = n.parse().unwrap_or(0.0);
                match gpus_limit {
                    Some(g) if g > index => {}
                    _ => errors.push(format!(
                        "{what}: --device {device} without limits nvidia.com/gpu >= {}",
                        index + 1.0
                    )),
                }
                if gpus(requests).is_some_and(|r| Some(r) != gpus_limit) {
                    errors.push(format!(
                        "{what}: requests and limits of nvidia.com/gpu differ"
                    ));
                }
            } else {
                if device == "cpu" {
                    seen.cpu_worker = true;
                }
                if device != "auto" && (gpus_limit.is_some() || gpus(requests).is_some()) {
                    errors.push(format!("{what}: asks for a GPU but runs --device {device}"));
                }
            }
            let slots: f64 = parsed
                .value("slots")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1.0);
            if let Some(cpu) = limits
                .or(requests)
                .and_then(|q| q.get("cpu"))
                .and_then(cores)
            {
                if slots > cpu.ceil() {
                    errors.push(format!(
                        "{what}: --slots {slots} on {cpu} CPU(s): more tasks than cores"
                    ));
                }
            }
            let grace = seconds(&parsed.value("shutdown-grace").unwrap_or_default());
            let termination = pod
                .get("terminationGracePeriodSeconds")
                .and_then(Value::as_f64)
                .unwrap_or(30.0);
            if termination <= grace {
                errors.push(format!(
                    "{what}: terminationGracePeriodSeconds {termination} must exceed --shutdown-grace {grace}"
                ));
            }
            match parsed.given("cache-dir").map(|d| (d, mount_of(mounts, d))) {
                Some((_, Some(_))) => {}
                Some((d, None)) if read_only => errors.push(format!(
                    "{what}: --cache-dir {d} is on the read-only root filesystem"
                )),
                None if read_only => errors.push(format!(
                    "{what}: no --cache-dir on a volume, and the root filesystem is read-only"
                )),
                _ => {}
            }
            match parsed
                .given("token-file")
                .or_else(|| env_value("RIDGELINE_TOKEN_FILE"))
            {
                Some(t) => check_secret_file(workload, mounts, t, &what, errors),
                None => errors.push(format!("{what}: no worker token file")),
            }
            // The coordinator's address must be one of the Services here.
            let url = parsed
                .given("coordinator")
                .or_else(|| env_value("RIDGELINE_COORDINATOR"))
                .unwrap_or_default();
            let authority = url.split("://").last().unwrap_or_default();
            let (host, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
            let service = host.split('.').next().unwrap_or_default();
            let found = services.iter().any(|svc| {
                s(svc, "/metadata/name") == Some(service)
                    && arr(svc, "/spec/ports").iter().any(|p| {
                        p.get("port")
                            .and_then(Value::as_u64)
                            .map(|p| p.to_string())
                            .as_deref()
                            == Some(port)
                    })
            });
            if !found {
                errors.push(format!(
                    "{what}: coordinator address `{url}` is no Service port defined here"
                ));
            }
        }
    }
}

#[test]
fn kubernetes_manifests_are_complete_consistent_and_use_real_flags() {
    let docs = k8s_docs();
    assert!(!docs.is_empty(), "no YAML under deploy/k8s");
    let mut errors = Vec::new();
    let api = |kind: &str| match kind {
        "Namespace" | "Service" | "PersistentVolumeClaim" | "Secret" | "ConfigMap" => Some("v1"),
        "Deployment" | "StatefulSet" => Some("apps/v1"),
        "Kustomization" => Some("kustomize.config.k8s.io/v1beta1"),
        _ => None,
    };
    let namespaces: BTreeSet<&str> = docs
        .iter()
        .filter(|(_, d)| s(d, "/kind") == Some("Namespace"))
        .filter_map(|(_, d)| s(d, "/metadata/name"))
        .collect();
    for (file, doc) in &docs {
        let kind = s(doc, "/kind").unwrap_or_default();
        let what = format!("{file}: {kind}/{}", s(doc, "/metadata/name").unwrap_or("?"));
        match api(kind) {
            None => errors.push(format!("{what}: unknown or missing kind")),
            Some(v) if s(doc, "/apiVersion") != Some(v) => errors.push(format!(
                "{what}: apiVersion {:?}, expected {v}",
                s(doc, "/apiVersion")
            )),
            _ => {}
        }
        if kind == "Kustomization" {
            continue;
        }
        match s(doc, "/metadata/name") {
            Some(n) if is_dns_label(n) => {}
            other => errors.push(format!(
                "{what}: metadata.name {other:?} is not a DNS label"
            )),
        }
        if kind != "Namespace" && !namespaces.is_empty() {
            match s(doc, "/metadata/namespace") {
                Some(ns) if namespaces.contains(ns) => {}
                other => errors.push(format!(
                    "{what}: namespace {other:?} is not one of {namespaces:?}"
                )),
            }
        }
    }
    let services: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| s(d, "/kind") == Some("Service"))
        .collect();
    let workloads: Vec<(&String, &Value)> = docs
        .iter()
        .filter(|(_, d)| matches!(s(d, "/kind"), Some("Deployment" | "StatefulSet")))
        .map(|(f, d)| (f, d))
        .collect();
    let mut seen = Seen::default();
    for (file, w) in &workloads {
        let what = format!("{file}: {}", s(w, "/metadata/name").unwrap_or("?"));
        if !selects(
            w.pointer("/spec/selector/matchLabels"),
            w.pointer("/spec/template/metadata/labels"),
        ) {
            errors.push(format!(
                "{what}: spec.selector.matchLabels does not select the pod template's labels"
            ));
        }
        if s(w, "/kind") == Some("StatefulSet") {
            let service = s(w, "/spec/serviceName").unwrap_or_default();
            if !services
                .iter()
                .any(|svc| s(svc, "/metadata/name") == Some(service))
            {
                errors.push(format!(
                    "{what}: serviceName `{service}` is not defined here"
                ));
            }
        }
        let containers = arr(w, "/spec/template/spec/containers");
        if containers.is_empty() {
            errors.push(format!("{what}: no containers"));
        }
        for c in containers {
            check_container(file, w, c, &services, &mut seen, &mut errors);
        }
    }
    for svc in &services {
        let what = format!("Service/{}", s(svc, "/metadata/name").unwrap_or("?"));
        let pods: Vec<&Value> = workloads
            .iter()
            .filter(|(_, w)| {
                selects(
                    svc.pointer("/spec/selector"),
                    w.pointer("/spec/template/metadata/labels"),
                )
            })
            .map(|(_, w)| *w)
            .collect();
        if pods.is_empty() {
            errors.push(format!("{what}: its selector matches no pod template here"));
        }
        let ports = arr(svc, "/spec/ports");
        if ports.is_empty() {
            errors.push(format!("{what}: no ports"));
        }
        for p in ports {
            let target = p.get("targetPort").or_else(|| p.get("port"));
            let matches = |cp: &Value| match target {
                Some(Value::String(name)) => s(cp, "/name") == Some(name.as_str()),
                Some(n) => cp.get("containerPort") == Some(n),
                None => false,
            };
            let found = pods.iter().any(|w| {
                arr(w, "/spec/template/spec/containers")
                    .iter()
                    .any(|c| arr(c, "/ports").iter().any(matches))
            });
            if !found {
                errors.push(format!(
                    "{what}: targetPort {target:?} is no containerPort of its pods"
                ));
            }
        }
    }
    if !seen.coordinator {
        errors.push("no coordinator (`coordinator serve`) workload".into());
    }
    if !seen.cpu_worker {
        errors.push("no CPU worker workload (--device cpu)".into());
    }
    if !seen.cuda_worker {
        errors.push("no CUDA worker workload (--device cuda:N)".into());
    }
    // The kustomization lists every manifest, and only existing ones.
    let dir = repo().join("deploy/k8s");
    let files: BTreeSet<&str> = docs.iter().map(|(f, _)| f.as_str()).collect();
    match docs
        .iter()
        .find(|(_, d)| s(d, "/kind") == Some("Kustomization"))
    {
        None => errors.push("no kustomization.yaml".into()),
        Some((kfile, k)) => {
            let listed: BTreeSet<&str> = arr(k, "/resources")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            for r in &listed {
                if !dir.join(r).is_file() {
                    errors.push(format!("{kfile}: resource {r} does not exist"));
                }
            }
            for f in files.iter().filter(|f| *f != kfile) {
                if !listed.contains(f) {
                    errors.push(format!("{kfile}: does not list {f}"));
                }
            }
            if let Some(ns) = s(k, "/namespace") {
                if !namespaces.is_empty() && !namespaces.contains(ns) {
                    errors.push(format!("{kfile}: namespace {ns} is not defined here"));
                }
            }
        }
    }
    report("deploy/k8s", &errors);
}

// ---------------------------------------------------------------------------
// Slurm.

fn sbatch_path() -> PathBuf {
    repo().join("deploy/slurm/ridgeline-workers.sbatch")
}

/// Runs the script with a Slurm-like environment and only `vars` set.
fn run_sbatch(vars: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new("bash");
    cmd.arg(sbatch_path()).args(args).env_clear();
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("RIDGELINE_ENV_FILE", home.path().join("none.env"));
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run bash")
}

#[test]
fn slurm_script_parses_and_starts_valid_workers() {
    let path = sbatch_path();
    let text = read(&path);
    let mut errors = Vec::new();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash -n");
    if !syntax.status.success() {
        errors.push(format!(
            "bash -n: {}",
            String::from_utf8_lossy(&syntax.stderr)
        ));
    }
    // sbatch stops reading #SBATCH lines at the first command.
    let mut directives = BTreeMap::new();
    let mut in_header = true;
    for (n, line) in text.lines().enumerate().skip(1) {
        let t = line.trim();
        if let Some(d) = t.strip_prefix("#SBATCH") {
            if !in_header {
                errors.push(format!(
                    "line {}: #SBATCH after the first command is ignored by sbatch",
                    n + 1
                ));
            }
            let d = d.trim();
            let (k, v) = d.split_once('=').unwrap_or((d, ""));
            directives.insert(k.to_string(), v.to_string());
        } else if !t.is_empty() && !t.starts_with('#') {
            in_header = false;
        }
    }
    for needed in ["--array", "--cpus-per-task", "--time", "--signal"] {
        if !directives.contains_key(needed) {
            errors.push(format!("no #SBATCH {needed}"));
        }
    }

    let worker = clis().worker_path.to_string_lossy().to_string();
    let scratch = tempfile::tempdir().expect("tempdir");
    let scratch_dir = scratch.path().to_string_lossy().to_string();
    let base = [
        ("RIDGELINE_DRY_RUN", "1"),
        ("RIDGELINE_COORDINATOR", "https://head.lab.example:50051"),
        ("RIDGELINE_WORKER_BIN", worker.as_str()),
        ("SLURM_JOB_ID", "80"),
        ("SLURM_ARRAY_JOB_ID", "77"),
        ("SLURM_CPUS_PER_TASK", "6"),
        ("TMPDIR", scratch_dir.as_str()),
    ];
    let mut run = |task: &str, args: &[&str]| -> Option<Parsed> {
        let mut vars = base.to_vec();
        vars.push(("SLURM_ARRAY_TASK_ID", task));
        let out = run_sbatch(&vars, args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            errors.push(format!(
                "dry run {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            return None;
        }
        let words: Vec<String> = stdout.lines().map(str::to_string).collect();
        let Some((program, rest)) = words.split_first() else {
            errors.push(format!("dry run {args:?} printed nothing"));
            return None;
        };
        if *program != worker {
            errors.push(format!("dry run {args:?} runs {program}, not {worker}"));
        }
        match check_command(program, rest) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.extend(e.into_iter().map(|e| format!("dry run {args:?}: {e}")));
                None
            }
        }
    };
    let cpu = run("3", &[]);
    let cpu_other = run("4", &[]);
    let gpu = run("3", &["--gpu"]);
    let mut errors_after = Vec::new();
    if let (Some(cpu), Some(other), Some(gpu)) = (&cpu, &cpu_other, &gpu) {
        let mut expect = |p: &Parsed, flag: &str, want: &str, label: &str| {
            if p.given(flag) != Some(want) {
                errors_after.push(format!(
                    "{label}: --{flag} {:?}, expected {want}",
                    p.given(flag)
                ));
            }
        };
        expect(cpu, "device", "cpu", "CPU");
        expect(cpu, "slots", "6", "CPU (from SLURM_CPUS_PER_TASK)");
        expect(gpu, "device", "cuda:0", "GPU");
        expect(gpu, "slots", "1", "GPU");
        for (label, p) in [("CPU", cpu), ("GPU", gpu)] {
            match p.given("exit-when-idle").map(seconds) {
                Some(s) if s > 0.0 => {}
                other => errors_after.push(format!(
                    "{label}: --exit-when-idle {other:?}: the allocation is never returned"
                )),
            }
            if !p.given("name").is_some_and(|n| n.ends_with("-77_3")) {
                errors_after.push(format!(
                    "{label}: --name {:?} is not HOST-JOB_TASK",
                    p.given("name")
                ));
            }
            if !p
                .given("cache-dir")
                .is_some_and(|d| d.starts_with(&scratch_dir))
            {
                errors_after.push(format!(
                    "{label}: --cache-dir {:?} is not on node-local scratch ($TMPDIR)",
                    p.given("cache-dir")
                ));
            }
            // SIGTERM comes --signal=B:TERM@N seconds before the time limit:
            // the worker must have handed its tasks back by then.
            let lead = directives
                .get("--signal")
                .and_then(|s| s.rsplit('@').next())
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or(0.0);
            let grace = seconds(&p.value("shutdown-grace").unwrap_or_default());
            if lead <= grace {
                errors_after.push(format!(
                    "{label}: #SBATCH --signal gives {lead} s, less than --shutdown-grace {grace}"
                ));
            }
        }
        if other.given("name") == cpu.given("name")
            || other.given("cache-dir") == cpu.given("cache-dir")
        {
            errors_after.push("two array tasks share a name or a cache dir".into());
        }
    }
    errors.extend(errors_after);
    // Refusals: no coordinator, an unknown argument, no binary.
    let worker_var = ("RIDGELINE_WORKER_BIN", worker.as_str());
    for (vars, args, why) in [
        (
            vec![("RIDGELINE_DRY_RUN", "1"), worker_var],
            vec![],
            "without RIDGELINE_COORDINATOR",
        ),
        (
            vec![
                ("RIDGELINE_DRY_RUN", "1"),
                ("RIDGELINE_COORDINATOR", "x"),
                worker_var,
            ],
            vec!["--gpus"],
            "with an unknown argument",
        ),
        (
            vec![
                ("RIDGELINE_DRY_RUN", "1"),
                ("RIDGELINE_COORDINATOR", "x"),
                ("RIDGELINE_WORKER_BIN", "/nonexistent/worker"),
            ],
            vec![],
            "without a worker binary",
        ),
    ] {
        if run_sbatch(&vars, &args).status.success() {
            errors.push(format!("the script succeeds {why}"));
        }
    }
    report("deploy/slurm/ridgeline-workers.sbatch", &errors);
}

// ---------------------------------------------------------------------------
// systemd.

struct Unit {
    file: String,
    sections: BTreeMap<String, Vec<(String, String)>>,
}

impl Unit {
    fn parse(path: &Path) -> Result<Unit, String> {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let mut section: Option<String> = None;
        let mut pending = String::new();
        for (n, raw) in read(path).lines().enumerate() {
            let line = raw.trim();
            if pending.is_empty()
                && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
            {
                continue;
            }
            if let Some(cont) = line.strip_suffix('\\') {
                pending.push_str(cont);
                pending.push(' ');
                continue;
            }
            let line = std::mem::take(&mut pending) + line;
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = Some(name.to_string());
                sections.entry(name.to_string()).or_default();
                continue;
            }
            let Some(section) = &section else {
                return Err(format!("{file}:{}: outside a section", n + 1));
            };
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("{file}:{}: not KEY=VALUE", n + 1));
            };
            sections
                .get_mut(section)
                .expect("section")
                .push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(Unit { file, sections })
    }

    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.sections
            .get(section)
            .map(|kv| {
                kv.iter()
                    .filter(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn one(&self, section: &str, key: &str) -> Option<&str> {
        self.all(section, key).last().copied()
    }
}

/// VAR=value lines of an env file; with `commented`, also `#VAR=value`.
fn env_file(path: &Path, commented: bool) -> Vec<(String, String)> {
    read(path)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = match l.strip_prefix('#') {
                Some(rest) if commented => rest.trim_start(),
                Some(_) => return None,
                None => l,
            };
            let (k, v) = l.split_once('=')?;
            let ok = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            ok.then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// `${VAR}` and `$VAR` in an ExecStart line.
fn unit_vars(text: &str) -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        let name: String = after
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            vars.insert(name);
        }
        rest = after;
    }
    vars
}

fn substitute(text: &str, env: &BTreeMap<String, String>, instance: &str) -> String {
    let mut out = text.replace("%i", instance).replace("%H", "node1");
    for (k, v) in env {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

/// `150`, `150s`, `2min`, `2min 30s` → seconds.
fn systemd_seconds(value: &str) -> Option<f64> {
    let mut total = 0.0;
    for part in value.split_whitespace() {
        let split = part
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(part.len());
        let (n, unit) = part.split_at(split);
        let n: f64 = n.parse().ok()?;
        total += n * match unit {
            "" | "s" | "sec" => 1.0,
            "min" | "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
    }
    Some(total)
}

fn under(path: &str, dirs: &[String]) -> bool {
    dirs.iter().any(|d| {
        let d = d.trim_end_matches('/');
        path == d || path.starts_with(&format!("{d}/"))
    })
}

/// The INI check of one unit and its example env files. Returns the
/// binary the unit starts.
fn check_unit(unit: &Unit, dir: &Path, errors: &mut Vec<String>) -> Option<String> {
    let f = &unit.file;
    for section in ["Unit", "Service", "Install"] {
        if !unit.sections.contains_key(section) {
            errors.push(format!("{f}: no [{section}]"));
        }
    }
    if unit.one("Unit", "Description").is_none() {
        errors.push(format!("{f}: no Description="));
    }
    if unit.one("Install", "WantedBy").is_none() {
        errors.push(format!("{f}: no WantedBy= (cannot be enabled)"));
    }
    match unit.one("Service", "User") {
        None | Some("root") | Some("0") => {
            errors.push(format!("{f}: runs as root; give it a dedicated User="))
        }
        Some(_) => {}
    }
    for (key, want) in [
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectSystem", "strict"),
    ] {
        if unit.one("Service", key) != Some(want) {
            errors.push(format!(
                "{f}: {key}={:?}, expected {want}",
                unit.one("Service", key)
            ));
        }
    }
    let writable: Vec<String> = unit
        .all("Service", "ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|p| p.trim_start_matches('-').to_string())
        .collect();
    if writable.is_empty() {
        errors.push(format!("{f}: ProtectSystem=strict without ReadWritePaths="));
    }
    let template = f.contains("@.");
    let instance = "0";
    let mut env_files = Vec::new();
    for ef in unit.all("Service", "EnvironmentFile") {
        let optional = ef.starts_with('-');
        let path = ef.trim_start_matches('-');
        if !path.starts_with("/etc/ridgeline/") || !path.ends_with(".env") {
            errors.push(format!(
                "{f}: EnvironmentFile {path} is not /etc/ridgeline/*.env"
            ));
        }
        let example = dir.join(
            Path::new(&path.replace("%i", instance))
                .file_name()
                .unwrap(),
        );
        if example.is_file() {
            env_files.push(example);
        } else if !optional {
            errors.push(format!(
                "{f}: no example {} for EnvironmentFile {path}",
                example.display()
            ));
        }
    }
    if env_files.is_empty() {
        errors.push(format!(
            "{f}: no EnvironmentFile with an example in deploy/systemd"
        ));
    }
    let exec = unit.all("Service", "ExecStart");
    let [exec] = exec.as_slice() else {
        errors.push(format!("{f}: needs exactly one ExecStart="));
        return None;
    };
    if template && !exec.contains("%i") {
        errors.push(format!(
            "{f}: a template whose ExecStart ignores the instance (%i)"
        ));
    }
    let exec_vars = unit_vars(exec);
    let mut defaults = BTreeMap::new();
    for line in unit.all("Service", "Environment") {
        for assignment in line.split_whitespace() {
            if let Some((k, v)) = assignment.trim_matches('"').split_once('=') {
                defaults.insert(k.to_string(), v.to_string());
            }
        }
    }
    for var in &exec_vars {
        if !defaults.contains_key(var) {
            errors.push(format!(
                "{f}: ExecStart uses ${{{var}}} without an Environment={var}=… default"
            ));
        }
    }
    // ExecStart=[-@+!:]PATH ARGS…: the prefixes are systemd's, not the path's.
    let exec = exec.trim_start_matches(['-', '@', '+', '!', ':']);
    let words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    let program = words[0].clone();
    if !program.starts_with('/') {
        errors.push(format!("{f}: ExecStart {program} is not an absolute path"));
    }
    // The command with the defaults, then with each env file in turn on top
    // (the per-instance one last): every combination must be valid.
    let mut env = defaults.clone();
    let mut scenarios = vec![env.clone()];
    for ef in &env_files {
        for (k, v) in env_file(ef, false) {
            env.insert(k, v);
        }
        scenarios.push(env.clone());
    }
    let parsed = check_command(&program, &words[1..]).map_err(|e| {
        errors.extend(e.into_iter().map(|e| format!("{f}: {e}")));
    });
    let parsed = parsed.ok()?;
    let known = parsed.env();
    for ef in &env_files {
        for (k, _) in env_file(ef, true) {
            if k.starts_with("RIDGELINE_") && !known.contains(&k) && !exec_vars.contains(&k) {
                errors.push(format!(
                    "{}: {k} is read neither by {} nor by the unit's ExecStart",
                    ef.display(),
                    parsed.program
                ));
            }
        }
    }
    for k in defaults.keys() {
        if k.starts_with("RIDGELINE_") && !known.contains(k) && !exec_vars.contains(k) {
            errors.push(format!("{f}: Environment={k} is read by nothing"));
        }
    }
    for scenario in &scenarios {
        let line = substitute(exec, scenario, instance);
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let p = match check_command(&words[0], &words[1..]) {
            Ok(p) => p,
            Err(e) => {
                errors.extend(e.into_iter().map(|e| format!("{f} ({line}): {e}")));
                continue;
            }
        };
        let writable: Vec<String> = writable.iter().map(|w| w.replace("%i", instance)).collect();
        if p.program == "coordinator" {
            let data_dir = p
                .given("data-dir")
                .map(str::to_string)
                .or_else(|| scenario.get("RIDGELINE_DATA_DIR").cloned());
            match data_dir {
                Some(d) if under(&d, &writable) => {}
                other => errors.push(format!(
                    "{f}: the data dir {other:?} is not in ReadWritePaths {writable:?}"
                )),
            }
        } else {
            match p.given("cache-dir") {
                Some(d) if under(d, &writable) => {}
                other => errors.push(format!(
                    "{f}: --cache-dir {other:?} is not in ReadWritePaths {writable:?}"
                )),
            }
            let grace = seconds(&p.value("shutdown-grace").unwrap_or_default());
            let stop = unit
                .one("Service", "TimeoutStopSec")
                .and_then(systemd_seconds)
                .unwrap_or(90.0);
            if stop <= grace {
                errors.push(format!(
                    "{f}: TimeoutStopSec {stop} s must exceed --shutdown-grace {grace} s"
                ));
            }
            if p.given("exit-when-idle").is_some() {
                errors.push(format!(
                    "{f}: --exit-when-idle in a service: it would exit and stay down"
                ));
            }
        }
    }
    if parsed.program == "worker" {
        // What would keep a GPU worker from its GPU.
        for (key, closes) in [
            ("PrivateDevices", "hides /dev/nvidia*"),
            ("ProtectClock", "implies DeviceAllow=, closing /dev/nvidia*"),
            ("DeviceAllow", "closes every other device"),
            ("DevicePolicy", "closes devices"),
            (
                "MemoryDenyWriteExecute",
                "breaks CUDA's run-time kernel compilation",
            ),
        ] {
            if unit
                .one("Service", key)
                .is_some_and(|v| !matches!(v, "no" | "false" | "auto" | ""))
            {
                errors.push(format!("{f}: {key}= {closes}"));
            }
        }
    }
    Some(parsed.program)
}

#[test]
fn systemd_units_verify_and_start_valid_commands() {
    let dir = repo().join("deploy/systemd");
    let mut errors = Vec::new();
    let names = ["ridgeline-coordinator.service", "ridgeline-worker@.service"];
    let mut programs = BTreeSet::new();
    let mut users = BTreeSet::new();
    for name in names {
        match Unit::parse(&dir.join(name)) {
            Err(e) => errors.push(e),
            Ok(unit) => {
                if let Some(u) = unit.one("Service", "User") {
                    users.insert(u.to_string());
                }
                if let Some(p) = check_unit(&unit, &dir, &mut errors) {
                    programs.insert(p);
                }
            }
        }
    }
    if programs != BTreeSet::from(["coordinator".to_string(), "worker".to_string()]) {
        errors.push(format!(
            "the units start {programs:?}, not the coordinator and the worker"
        ));
    }
    // The sysusers.d file creates the user the units run as.
    let sysusers = read(&dir.join("ridgeline.sysusers.conf"));
    for user in &users {
        if !sysusers
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", user.as_str()]))
        {
            errors.push(format!(
                "ridgeline.sysusers.conf does not create user {user}"
            ));
        }
    }

    // systemd's own check, on copies whose ExecStart points at the built
    // binaries (verify wants an executable there). It exits 0 on unknown
    // keys and unparsable values, so any line about our units fails too.
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if available {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clis = clis();
        let mut paths = Vec::new();
        for name in names {
            let text = read(&dir.join(name))
                .replace(
                    "/usr/local/bin/coordinator",
                    &clis.coordinator_path.to_string_lossy(),
                )
                .replace("/usr/local/bin/worker", &clis.worker_path.to_string_lossy());
            let path = tmp.path().join(name);
            std::fs::write(&path, text).expect("write unit");
            paths.push(path);
        }
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&paths)
            .output()
            .expect("systemd-analyze verify");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tmp_dir = tmp.path().to_string_lossy().to_string();
        let about_ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(&tmp_dir) || l.contains("ridgeline-"))
            .collect();
        if !out.status.success() || !about_ours.is_empty() {
            errors.push(format!(
                "systemd-analyze verify (exit {:?}):\n{stderr}",
                out.status.code()
            ));
        }
    } else {
        eprintln!("systemd-analyze not found: the units were checked by the INI parser only");
    }
    report("deploy/systemd", &errors);
}

// ---------------------------------------------------------------------------
// Docker.

struct Package {
    name: String,
    dir: PathBuf,
    bins: BTreeSet<String>,
    features: BTreeSet<String>,
}

fn workspace() -> Vec<Package> {
    let root = repo();
    let manifest: toml::Table = read(&root.join("Cargo.toml")).parse().expect("Cargo.toml");
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("workspace.members");
    members
        .iter()
        .map(|m| {
            let dir = root.join(m.as_str().expect("member"));
            let t: toml::Table = read(&dir.join("Cargo.toml"))
                .parse()
                .expect("member manifest");
            let name = t["package"]["name"].as_str().expect("name").to_string();
            let mut bins: BTreeSet<String> = t
                .get("bin")
                .and_then(|b| b.as_array())
                .map(|b| {
                    b.iter()
                        .filter_map(|b| b.get("name")?.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if dir.join("src/main.rs").is_file() {
                bins.insert(name.clone());
            }
            if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
                for e in entries.flatten() {
                    if let Some(stem) = e.path().file_stem() {
                        bins.insert(stem.to_string_lossy().to_string());
                    }
                }
            }
            let features = t
                .get("features")
                .and_then(|f| f.as_table())
                .map(|f| f.keys().cloned().collect())
                .unwrap_or_default();
            Package {
                name,
                dir,
                bins,
                features,
            }
        })
        .collect()
}

/// (INSTRUCTION, arguments), continuation lines joined, comments dropped.
fn dockerfile(path: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in read(path).lines() {
        let t = line.trim();
        if t.starts_with('#') || (pending.is_empty() && t.is_empty()) {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        let full = std::mem::take(&mut pending) + t;
        let (instr, rest) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        out.push((instr.to_ascii_uppercase(), rest.trim().to_string()));
    }
    out
}

/// A `.dockerignore` pattern against a relative path (`*`, `?` within a
/// component, `**` across components); a match on a parent counts.
fn ignored(patterns: &[String], path: &str) -> bool {
    fn component(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => component(&p[1..], s) || (!s.is_empty() && component(p, &s[1..])),
            (Some(b'?'), Some(_)) => component(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => component(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn parts(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&"**"), _) => parts(&p[1..], s) || (!s.is_empty() && parts(p, &s[1..])),
            (Some(a), Some(b)) => component(a.as_bytes(), b.as_bytes()) && parts(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let path: Vec<&str> = path.split('/').collect();
    patterns.iter().any(|pattern| {
        let p: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        (1..=path.len()).any(|n| parts(&p, &path[..n]))
    })
}

/// Files the build reads: every member's files and what their build
/// scripts reach outside them (`"../proto"`), build output left out.
fn build_inputs(packages: &[Package]) -> Vec<String> {
    let root = repo();
    let mut dirs: Vec<PathBuf> = packages.iter().map(|p| p.dir.clone()).collect();
    for p in packages {
        let Ok(build) = std::fs::read_to_string(p.dir.join("build.rs")) else {
            continue;
        };
        for piece in build.split('"').skip(1).step_by(2) {
            if let Some(rel) = piece.strip_prefix("../") {
                let top = rel.split('/').next().unwrap_or_default();
                dirs.push(root.join(top));
            }
        }
    }
    let mut files = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    let mut stack = dirs;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                if name != "target" && name != "__pycache__" {
                    stack.push(path);
                }
            } else if !name.ends_with(".pyc") {
                let rel = path.strip_prefix(&root).expect("under the repo");
                files.push(rel.to_string_lossy().to_string());
            }
        }
    }
    files
}

struct DockerCheck<'a> {
    file: &'a str,
    /// Packages the image must build.
    packages: &'a [&'a str],
    /// Features the build must enable.
    features: &'a [&'a str],
}

fn check_dockerfile(check: &DockerCheck, ws: &[Package], errors: &mut Vec<String>) {
    let root = repo();
    let f = check.file;
    let instructions = dockerfile(&root.join(f));
    let text = read(&root.join(f));
    if !text.contains(".ci/run") {
        errors.push(format!("{f}: no note that its build steps mirror .ci/run"));
    }
    let mut stages: Vec<(String, String)> = Vec::new(); // (name, image)
    let mut global_args = BTreeSet::new();
    let mut copied_bins: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut built_packages = BTreeSet::new();
    let mut built_features = BTreeSet::new();
    let mut user: Option<String> = None;
    let mut cmd: Option<Vec<String>> = None;
    for (instr, rest) in &instructions {
        let stage = stages.last().map(|(n, _)| n.clone());
        match instr.as_str() {
            "ARG" if stages.is_empty() => {
                let (name, default) = rest.split_once('=').unwrap_or((rest, ""));
                if default.is_empty() {
                    errors.push(format!("{f}: ARG {name} before FROM has no default"));
                }
                global_args.insert(name.to_string());
            }
            "FROM" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let image = words.first().copied().unwrap_or_default().to_string();
                for var in unit_vars(&image) {
                    if !global_args.contains(&var) {
                        errors.push(format!("{f}: FROM uses ${var}, not declared before FROM"));
                    }
                }
                match words.as_slice() {
                    [_, kw, name] if kw.eq_ignore_ascii_case("as") => {
                        stages.push((name.to_string(), image))
                    }
                    _ => errors.push(format!("{f}: FROM {rest} has no stage name (AS …)")),
                }
                user = None;
                cmd = None;
            }
            "COPY" | "ADD" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let from = words.iter().find_map(|w| w.strip_prefix("--from="));
                let paths: Vec<&str> = words
                    .iter()
                    .filter(|w| !w.starts_with("--"))
                    .copied()
                    .collect();
                let Some((_, sources)) = paths.split_last() else {
                    errors.push(format!("{f}: {instr} {rest}: no source"));
                    continue;
                };
                match from {
                    Some(from) => {
                        if !stages.iter().any(|(n, _)| n == from) {
                            errors.push(format!("{f}: COPY --from={from}: no such earlier stage"));
                        }
                        let entry = copied_bins
                            .entry(stage.clone().unwrap_or_default())
                            .or_default();
                        for src in sources {
                            entry.insert(src.rsplit('/').next().unwrap_or_default().to_string());
                        }
                    }
                    None => {
                        for src in sources {
                            if !root.join(src).exists() {
                                errors.push(format!(
                                    "{f}: COPY {src}: no such path in the repository"
                                ));
                            }
                        }
                    }
                }
            }
            "RUN" if rest.contains("cargo build") => {
                let after = &rest[rest.find("cargo build").unwrap() + "cargo build".len()..];
                let command: Vec<&str> = after
                    .split_whitespace()
                    .take_while(|w| !matches!(*w, "&&" | ";" | "|" | "||"))
                    .collect();
                for needed in ["--release", "--locked"] {
                    if !command.contains(&needed) {
                        errors.push(format!("{f}: cargo build without {needed}"));
                    }
                }
                let mut words = command.iter();
                while let Some(w) = words.next() {
                    match *w {
                        "-p" | "--package" => {
                            built_packages.extend(words.next().map(|p| p.to_string()))
                        }
                        "-F" | "--features" => built_features.extend(
                            words
                                .next()
                                .into_iter()
                                .flat_map(|f| f.split(','))
                                .map(str::to_string),
                        ),
                        _ => {}
                    }
                }
                // The binaries it copies out of target/release.
                for piece in rest.split_whitespace() {
                    if let Some(bin) = piece.strip_prefix("target/release/") {
                        let known = ws
                            .iter()
                            .filter(|p| built_packages.contains(&p.name))
                            .any(|p| p.bins.contains(bin));
                        if !known {
                            errors.push(format!(
                                "{f}: target/release/{bin} is not a binary of the packages built"
                            ));
                        }
                    }
                }
            }
            "USER" => user = Some(rest.clone()),
            "CMD" | "ENTRYPOINT" => match serde_json::from_str::<Vec<String>>(rest) {
                Ok(words) => cmd = Some(words),
                Err(_) => errors.push(format!("{f}: {instr} is not in exec (JSON) form")),
            },
            "ENV" => {
                for word in rest.split_whitespace() {
                    if let Some((k, _)) = word.split_once('=') {
                        if k.starts_with("RIDGELINE_")
                            && !clis().worker.env.contains(k)
                            && !clis().subcommands["serve"].env.contains(k)
                        {
                            errors.push(format!("{f}: ENV {k} is read by neither binary"));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if stages.len() < 2 {
        errors.push(format!("{f}: not a multi-stage build"));
    }
    let wanted: BTreeSet<String> = check.packages.iter().map(|p| p.to_string()).collect();
    if built_packages != wanted {
        errors.push(format!(
            "{f}: builds {built_packages:?}, expected {wanted:?}"
        ));
    }
    for p in &built_packages {
        if !ws.iter().any(|w| &w.name == p) {
            errors.push(format!("{f}: -p {p} is not a workspace package"));
        }
    }
    for feature in check.features {
        if !built_features.contains(*feature) {
            errors.push(format!("{f}: builds without --features {feature}"));
        }
    }
    for feature in &built_features {
        if !ws
            .iter()
            .filter(|p| built_packages.contains(&p.name))
            .any(|p| p.features.contains(feature))
        {
            errors.push(format!("{f}: no package built has a feature `{feature}`"));
        }
    }
    let final_stage = stages.last().map(|(n, _)| n.clone()).unwrap_or_default();
    match user.as_deref() {
        None => errors.push(format!("{f}: the final image runs as root (no USER)")),
        Some(u) if u == "root" || u == "0" || u.starts_with("0:") || u.starts_with("root:") => {
            errors.push(format!("{f}: the final image runs as root"))
        }
        Some(_) => {}
    }
    let in_image = copied_bins.get(&final_stage).cloned().unwrap_or_default();
    match cmd {
        None => errors.push(format!("{f}: no CMD")),
        Some(words) => match words.split_first() {
            Some((program, args)) if in_image.contains(program) => {
                if let Err(e) = check_command(program, args) {
                    errors.extend(e.into_iter().map(|e| format!("{f}: CMD: {e}")));
                }
            }
            _ => errors.push(format!(
                "{f}: CMD {words:?} does not run a binary copied into the final image ({in_image:?})"
            )),
        },
    }
    for package in ws.iter().filter(|p| built_packages.contains(&p.name)) {
        if !package.bins.iter().any(|b| in_image.contains(b)) {
            errors.push(format!(
                "{f}: the final image has no binary of {} ({:?})",
                package.name, package.bins
            ));
        }
    }
    if f.ends_with(".cuda") {
        let first = stages.first().map(|(_, i)| i.as_str()).unwrap_or_default();
        let last = stages.last().map(|(_, i)| i.as_str()).unwrap_or_default();
        if !(first.starts_with("nvidia/cuda:") && first.contains("devel")) {
            errors.push(format!(
                "{f}: the builder is not an nvidia/cuda devel image"
            ));
        }
        if !(last.starts_with("nvidia/cuda:") && last.contains("runtime")) {
            errors.push(format!(
                "{f}: the runtime is not an nvidia/cuda runtime image"
            ));
        }
        // No GPU answers during `docker build`: candle's kernels need the
        // compute capability given.
        if !instructions
            .iter()
            .any(|(i, r)| i == "ENV" && r.contains("CUDA_COMPUTE_CAP="))
        {
            errors.push(format!("{f}: no ENV CUDA_COMPUTE_CAP for nvcc"));
        }
    }
}

#[test]
fn dockerfiles_build_the_workspace_packages_like_ci() {
    let ws = workspace();
    let mut errors = Vec::new();
    let worker = ws
        .iter()
        .find(|p| p.name == "ridgeline-worker")
        .expect("the worker package");
    assert!(
        worker.features.contains("cuda"),
        "the worker has no cuda feature"
    );
    check_dockerfile(
        &DockerCheck {
            file: "deploy/docker/Dockerfile",
            packages: &["ridgeline-coordinator", "ridgeline-worker"],
            features: &[],
        },
        &ws,
        &mut errors,
    );
    check_dockerfile(
        &DockerCheck {
            file: "deploy/docker/Dockerfile.cuda",
            packages: &["ridgeline-worker"],
            features: &["cuda"],
        },
        &ws,
        &mut errors,
    );
    // The build mirrors .ci/run: the same lock discipline, and rustup the
    // same way where the image installs it.
    let ci = read(&repo().join(".ci/run"));
    if !ci.contains("--locked") {
        errors.push(".ci/run no longer uses --locked: update the Dockerfiles' note".into());
    }
    let cuda = read(&repo().join("deploy/docker/Dockerfile.cuda"));
    if cuda.contains("sh.rustup.rs") {
        for part in ["sh.rustup.rs", "--profile minimal"] {
            if !ci.contains(part) || !cuda.contains(part) {
                errors.push(format!(
                    "Dockerfile.cuda and .ci/run install rustup differently ({part})"
                ));
            }
        }
    }
    // The context: build output out, everything the build reads in.
    let patterns: Vec<String> = read(&repo().join(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if patterns.iter().any(|p| p.starts_with('!')) {
        errors.push(".dockerignore: exceptions (!) are not checked here".into());
    }
    for out in ["target", "target/release/worker", "ridgeline-demo"] {
        if !ignored(&patterns, out) {
            errors.push(format!(".dockerignore does not exclude {out}"));
        }
    }
    for input in build_inputs(&ws) {
        if ignored(&patterns, &input) {
            errors.push(format!(
                ".dockerignore excludes {input}, which the build reads"
            ));
        }
    }
    report("deploy/docker", &errors);
}

#[test]
fn the_dockerignore_matcher_matches_like_docker() {
    let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(ignored(&p(&["target"]), "target/release/worker"));
    assert!(!ignored(&p(&["target"]), "worker/target"));
    assert!(ignored(&p(&["**/target"]), "worker/target/x"));
    assert!(ignored(&p(&["**/*.pyc"]), "examples/python/a.pyc"));
    assert!(ignored(&p(&["*.log"]), "x.log"));
    assert!(!ignored(&p(&["*.log"]), "a/x.log"));
    assert!(!ignored(&p(&["proto2"]), "proto/x.proto"));
    assert!(ignored(&p(&["/bench/out/"]), "bench/out/a.csv"));
}
