//! Settings from a TOML file, under clap: `--config FILE` (or the
//! environment variable of the `config` argument, `RIDGELINE_CONFIG`).
//!
//! The file's keys are the long flag names, `kebab-case` or `snake_case`;
//! a subcommand's flags live in a table named after it (`[serve]`), global
//! flags at the top. A switch takes `true`/`false`, a repeatable flag an
//! array (or one value). Precedence, highest first: a flag on the command
//! line, its environment variable, the file, the built-in default.
//!
//! It works on any clap [`Command`]: each file setting whose flag is
//! neither on the command line nor set by its environment variable is
//! added to the arguments as `--flag=value` right after the (sub)command it
//! belongs to, and clap parses the whole as usual (so value checks,
//! `requires` and the like apply to file settings too). A new flag is
//! settable from the file with no change here. Unknown keys and values of
//! the wrong type are errors that name the key and the file.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, Command, Parser};
use toml::Value;

/// The id of the argument naming the file (`--config`). It is declared by
/// each binary (to appear in `--help` with its environment variable) and
/// cannot be set in the file itself.
pub const CONFIG_ARG: &str = "config";

/// Parses the process's arguments as [`Parser::parse`] does, with the
/// settings of the config file; exits with clap's message on an error.
pub fn parse<P: Parser>() -> P {
    try_parse_from(std::env::args_os(), |name| std::env::var_os(name)).unwrap_or_else(|e| e.exit())
}

/// Parses `args` (the first one is the program's name) with the settings of
/// the config file. `env` looks up environment variables (deciding which
/// file settings an environment variable overrides); clap itself reads
/// the process environment as usual.
pub fn try_parse_from<P, I, T>(
    args: I,
    env: impl Fn(&OsStr) -> Option<OsString>,
) -> Result<P, clap::Error>
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut cmd = P::command();
    let expanded = expand(&mut cmd, args.into_iter().map(Into::into).collect(), &env)?;
    let mut matches = cmd
        .try_get_matches_from_mut(expanded.args.clone())
        .map_err(|e| expanded.explain(&mut cmd, e))?;
    P::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd))
}

/// The arguments with the file's settings added.
struct Expanded {
    args: Vec<OsString>,
    file: Option<PathBuf>,
    /// Long name of each flag added → its key in the file (`serve.lease-ttl`).
    injected: BTreeMap<String, String>,
}

impl Expanded {
    /// A value clap refused that came from the file is reported with its
    /// key and the file.
    fn explain(&self, cmd: &mut Command, e: clap::Error) -> clap::Error {
        let Some(file) = &self.file else { return e };
        if !matches!(
            e.kind(),
            ErrorKind::InvalidValue | ErrorKind::ValueValidation
        ) {
            return e;
        }
        let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
            return e;
        };
        let long = arg
            .trim_start_matches('-')
            .split([' ', '='])
            .next()
            .unwrap_or_default();
        let Some(key) = self.injected.get(long) else {
            return e;
        };
        let rendered = e.render().to_string();
        let detail = rendered.split("\n\n").next().unwrap_or_default();
        let detail = detail.strip_prefix("error: ").unwrap_or(detail).trim();
        cmd.error(
            e.kind(),
            format!("config file {}: `{key}`: {detail}", file.display()),
        )
    }
}

/// The arguments and subcommands of `cmd`, at every depth, that have no
/// help text (`coordinator serve --lease-ttl`, `coordinator serve`): for a
/// test that `--help` documents everything.
pub fn undocumented(cmd: &mut Command) -> Vec<String> {
    fn walk(cmd: &Command, path: &str, out: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            if a.get_help().is_none() && a.get_long_help().is_none() {
                let name = a
                    .get_long()
                    .map_or_else(|| a.get_id().to_string(), |l| format!("--{l}"));
                out.push(format!("{path} {name}"));
            }
        }
        // `help` mirrors the real subcommands.
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                out.push(sub_path.clone());
            }
            walk(sub, &sub_path, out);
        }
    }
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, cmd.get_name(), &mut out);
    out
}

/// Where `--config` is given, which subcommands are invoked and which
/// arguments the command line sets.
#[derive(Default)]
struct Scan {
    config: Option<OsString>,
    /// Each subcommand invoked, outermost first, with the index of the
    /// argument right after its name.
    chain: Vec<(String, usize)>,
    /// `(depth, id)` of each argument on the command line; global ones at
    /// depth [`GLOBAL`].
    given: HashSet<(usize, String)>,
    /// `--help`, `--version` or `help`: the file is not read.
    help: bool,
}

const GLOBAL: usize = usize::MAX;

impl Scan {
    fn note(&mut self, depth: usize, arg: &Arg, value: Option<OsString>) {
        let id = arg.get_id().as_str().to_string();
        if matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        ) {
            self.help = true;
        }
        if id == CONFIG_ARG {
            self.config = value;
        }
        let depth = if arg.is_global_set() { GLOBAL } else { depth };
        self.given.insert((depth, id));
    }

    fn is_given(&self, depth: usize, arg: &Arg) -> bool {
        let id = arg.get_id().as_str().to_string();
        self.given.contains(&(depth, id.clone())) || self.given.contains(&(GLOBAL, id))
    }
}

/// Walks the command line as clap will (a built `cmd`): flags, their values
/// and subcommands. Everything it does not recognise is left to clap.
fn scan(cmd: &Command, args: &[OsString]) -> Scan {
    let mut s = Scan::default();
    let mut cur = cmd;
    let mut depth = 0;
    let mut i = 1;
    while i < args.len() {
        let Some(a) = args[i].to_str() else {
            i += 1;
            continue;
        };
        if a == "--" {
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(OsString::from(v))),
                None => (long, None),
            };
            if let Some(arg) = find_arg(cur, name) {
                let value = if arg.get_action().takes_values() && inline.is_none() {
                    i += 1;
                    args.get(i).cloned()
                } else {
                    inline
                };
                s.note(depth, arg, value);
            }
        } else if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            for (k, c) in chars.iter().enumerate() {
                let Some(arg) = cur.get_arguments().find(|x| {
                    x.get_short() == Some(*c)
                        || x.get_all_short_aliases().is_some_and(|v| v.contains(c))
                }) else {
                    break;
                };
                if arg.get_action().takes_values() {
                    let rest: String = chars[k + 1..].iter().collect();
                    let rest = rest.strip_prefix('=').unwrap_or(&rest);
                    let value = if rest.is_empty() {
                        i += 1;
                        args.get(i).cloned()
                    } else {
                        Some(OsString::from(rest))
                    };
                    s.note(depth, arg, value);
                    break;
                }
                s.note(depth, arg, None);
            }
        } else if let Some(sub) = cur.find_subcommand(a) {
            if sub.get_name() == "help" {
                s.help = true;
            }
            s.chain.push((sub.get_name().to_string(), i + 1));
            cur = sub;
            depth += 1;
        }
        i += 1;
    }
    s
}

/// The named (non-positional) argument of `cmd` with this long name or alias.
fn find_arg<'c>(cmd: &'c Command, name: &str) -> Option<&'c Arg> {
    cmd.get_arguments().find(|a| {
        !a.is_positional()
            && (a.get_long() == Some(name)
                || a.get_all_aliases().is_some_and(|v| v.contains(&name)))
    })
}

/// A subcommand of `cmd` by name or alias (not `help`).
fn find_subcommand<'c>(cmd: &'c Command, name: &str) -> Option<&'c Command> {
    cmd.get_subcommands().find(|s| {
        s.get_name() != "help" && (s.get_name() == name || s.get_all_aliases().any(|a| a == name))
    })
}

fn is_builtin(arg: &Arg) -> bool {
    matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    )
}

/// Reads the config file, if one is named, and adds its settings to `args`.
fn expand(
    cmd: &mut Command,
    args: Vec<OsString>,
    env: &dyn Fn(&OsStr) -> Option<OsString>,
) -> Result<Expanded, clap::Error> {
    cmd.build();
    let scan = scan(cmd, &args);
    let unchanged = |args| Expanded {
        args,
        file: None,
        injected: BTreeMap::new(),
    };
    if scan.help {
        return Ok(unchanged(args));
    }
    let Some(config_arg) = cmd.get_arguments().find(|a| a.get_id() == CONFIG_ARG) else {
        return Ok(unchanged(args));
    };
    let from_env = config_arg.get_env().and_then(env);
    let path = match scan.config.clone().or(from_env) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => return Ok(unchanged(args)),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        cmd.error(
            ErrorKind::Io,
            format!("cannot read the config file {}: {e}", path.display()),
        )
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        cmd.error(
            ErrorKind::InvalidValue,
            format!("config file {} is not valid TOML: {e}", path.display()),
        )
    })?;
    let mut plan = Plan {
        env,
        scan: &scan,
        inserts: Vec::new(),
        injected: BTreeMap::new(),
    };
    if let Err((kind, message)) = plan.level(cmd, &table, 0, Some(1), "") {
        return Err(cmd.error(kind, format!("config file {}: {message}", path.display())));
    }
    let Plan {
        mut inserts,
        injected,
        ..
    } = plan;
    // Deepest first, so that earlier positions stay valid.
    inserts.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let mut args = args;
    for (at, flags) in inserts {
        let at = at.min(args.len());
        args.splice(at..at, flags);
    }
    Ok(Expanded {
        args,
        file: Some(path),
        injected,
    })
}

type PlanError = (ErrorKind, String);

struct Plan<'a> {
    env: &'a dyn Fn(&OsStr) -> Option<OsString>,
    scan: &'a Scan,
    /// Where to insert (an index into the arguments) and what.
    inserts: Vec<(usize, Vec<OsString>)>,
    injected: BTreeMap<String, String>,
}

impl Plan<'_> {
    /// Checks one table of the file against `cmd` (at `depth` subcommands
    /// down) and, if that command is invoked (`insert_at`), plans its
    /// settings. Tables of commands not invoked are checked all the same.
    fn level(
        &mut self,
        cmd: &Command,
        table: &toml::Table,
        depth: usize,
        insert_at: Option<usize>,
        prefix: &str,
    ) -> Result<(), PlanError> {
        let mut seen = HashSet::new();
        for (key, value) in table {
            let full_key = format!("{prefix}{key}");
            let name = key.replace('_', "-");
            if let Some(sub) = find_subcommand(cmd, &name) {
                let Value::Table(t) = value else {
                    return Err((
                        ErrorKind::InvalidValue,
                        format!(
                            "`{full_key}` holds the settings of `{}`: write it as a table, [{full_key}]",
                            sub.get_name()
                        ),
                    ));
                };
                let at = insert_at.and_then(|_| {
                    self.scan
                        .chain
                        .get(depth)
                        .filter(|(n, _)| n == sub.get_name())
                        .map(|(_, at)| *at)
                });
                self.level(sub, t, depth + 1, at, &format!("{full_key}."))?;
                continue;
            }
            let Some(arg) = find_arg(cmd, &name).filter(|a| !is_builtin(a)) else {
                return Err((
                    ErrorKind::UnknownArgument,
                    unknown_key(cmd, &full_key, depth),
                ));
            };
            if arg.get_id() == CONFIG_ARG {
                return Err((
                    ErrorKind::ArgumentConflict,
                    format!(
                        "`{full_key}`: the config file cannot name another config file (give --config on the command line or in {})",
                        arg.get_env()
                            .map_or("the environment".into(), |v| v.to_string_lossy())
                    ),
                ));
            }
            if depth > 0 && arg.is_global_set() {
                return Err((
                    ErrorKind::UnknownArgument,
                    format!("`{full_key}` is a global setting: put `{key}` at the top of the file, before any [table]"),
                ));
            }
            if !seen.insert(arg.get_id().as_str().to_string()) {
                return Err((
                    ErrorKind::ArgumentConflict,
                    format!("`{full_key}` is set twice (as kebab-case and snake_case)"),
                ));
            }
            let flags = values(arg, &full_key, value).map_err(|m| (ErrorKind::InvalidValue, m))?;
            let Some(at) = insert_at else { continue };
            if self.scan.is_given(depth, arg) {
                continue;
            }
            if arg.get_env().is_some_and(|v| (self.env)(v).is_some()) {
                continue;
            }
            if let Some(long) = arg.get_long() {
                self.injected.insert(long.to_string(), full_key);
            }
            self.inserts.push((at, flags));
        }
        Ok(())
    }
}

/// "unknown key …; valid keys: …".
fn unknown_key(cmd: &Command, key: &str, depth: usize) -> String {
    let mut valid: Vec<String> = cmd
        .get_arguments()
        .filter(|a| {
            let global_below = depth > 0 && a.is_global_set();
            !(a.is_positional() || is_builtin(a) || a.get_id() == CONFIG_ARG || global_below)
        })
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    valid.sort();
    valid.extend(
        cmd.get_subcommands()
            .filter(|s| s.get_name() != "help")
            .map(|s| format!("[{}]", s.get_name())),
    );
    let valid = if valid.is_empty() {
        "none".to_string()
    } else {
        valid.join(", ")
    };
    format!("unknown key `{key}`; valid keys here: {valid}")
}

/// The flags a setting stands for.
fn values(arg: &Arg, key: &str, value: &Value) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().unwrap_or_default();
    let flag = |v: String| OsString::from(format!("--{long}={v}"));
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            Value::Boolean(b) => {
                let on = matches!(arg.get_action(), ArgAction::SetTrue);
                Ok(if *b == on {
                    vec![OsString::from(format!("--{long}"))]
                } else {
                    Vec::new()
                })
            }
            v => Err(format!(
                "`{key}` is a switch: write true or false, not {}",
                describe(v)
            )),
        },
        ArgAction::Count => match value {
            Value::Integer(n) if *n >= 0 => Ok((0..*n)
                .map(|_| OsString::from(format!("--{long}")))
                .collect()),
            v => Err(format!(
                "`{key}` is a count: write a non-negative integer, not {}",
                describe(v)
            )),
        },
        ArgAction::Append => match value {
            Value::Array(items) => items
                .iter()
                .map(|v| scalar(key, v).map(flag))
                .collect::<Result<_, _>>(),
            v => Ok(vec![flag(scalar(key, v)?)]),
        },
        ArgAction::Set => match value {
            Value::Array(_) => Err(format!("`{key}` takes one value, not an array")),
            v => Ok(vec![flag(scalar(key, v)?)]),
        },
        _ => Err(format!("`{key}` cannot be set in a config file")),
    }
}

fn scalar(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if s.is_empty() => Err(format!("`{key}` is empty")),
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        v => Err(format!(
            "`{key}` takes a string or a number, not {}",
            describe(v)
        )),
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Subcommand;
    use std::io::Write;

    /// The environment variable only [`precedence`] sets.
    const TTL_ENV: &str = "RIDGELINE_CLI_CONFIG_TEST_LEASE_TTL";

    #[derive(Debug, Parser)]
    #[command(name = "t")]
    struct Cli {
        /// The config file.
        #[arg(long, global = true, env = "RIDGELINE_CLI_CONFIG_TEST_CONFIG")]
        config: Option<PathBuf>,
        /// A global flag with an alias.
        #[arg(
            long,
            global = true,
            alias = "server",
            default_value = "http://default"
        )]
        coordinator: String,
        /// A top-level flag.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        #[command(subcommand)]
        command: Option<Cmd>,
    }

    #[derive(Debug, PartialEq, Subcommand)]
    enum Cmd {
        /// A subcommand with settings.
        Serve {
            /// Seconds.
            #[arg(long, env = TTL_ENV, default_value_t = 30.0)]
            lease_ttl: f64,
            /// Repeatable.
            #[arg(long = "data-root", value_delimiter = ':')]
            data_roots: Vec<PathBuf>,
            /// A switch.
            #[arg(long)]
            verbose: bool,
            /// Checked by its parser.
            #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
            slots: u32,
            /// Needs --key.
            #[arg(long, requires = "key")]
            cert: Option<PathBuf>,
            /// The key of --cert.
            #[arg(long)]
            key: Option<PathBuf>,
        },
        /// A subcommand with a required repeatable flag.
        TlsInit {
            /// Required.
            #[arg(long = "host", required = true)]
            hosts: Vec<String>,
        },
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn no_env(_: &OsStr) -> Option<OsString> {
        None
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        try_parse_from(std::iter::once("t").chain(args.iter().copied()), no_env)
    }

    fn with(f: &tempfile::NamedTempFile, args: &[&str]) -> Result<Cli, clap::Error> {
        let path = f.path().to_str().unwrap();
        let mut all = vec!["--config", path];
        all.extend_from_slice(args);
        parse(&all)
    }

    fn serve(cli: Cli) -> (f64, Vec<PathBuf>, bool, u32) {
        match cli.command {
            Some(Cmd::Serve {
                lease_ttl,
                data_roots,
                verbose,
                slots,
                ..
            }) => (lease_ttl, data_roots, verbose, slots),
            c => panic!("not serve: {c:?}"),
        }
    }

    fn err(r: Result<Cli, clap::Error>) -> String {
        r.expect_err("an error").to_string()
    }

    #[test]
    fn precedence_flag_env_file_default() {
        let f = file("coordinator = \"http://file\"\n[serve]\nlease-ttl = 5\n");
        // Default.
        assert_eq!(serve(parse(&["serve"]).unwrap()).0, 30.0);
        // File beats default.
        let cli = with(&f, &["serve"]).unwrap();
        assert_eq!(cli.coordinator, "http://file");
        assert_eq!(serve(cli).0, 5.0);
        // Flag beats file, before or after the subcommand (global).
        let cli = with(&f, &["--coordinator", "http://flag", "serve"]).unwrap();
        assert_eq!(cli.coordinator, "http://flag");
        let cli = with(&f, &["serve", "--server=http://alias", "--lease-ttl", "7"]).unwrap();
        assert_eq!(cli.coordinator, "http://alias");
        assert_eq!(serve(cli).0, 7.0);
        // Env beats file; flag beats env. (Only this test uses TTL_ENV, and
        // clap reads it when the command is built.)
        std::env::set_var(TTL_ENV, "9");
        let env = |n: &OsStr| std::env::var_os(n);
        let path = f.path().to_str().unwrap();
        let cli: Cli = try_parse_from(["t", "--config", path, "serve"], env).unwrap();
        assert_eq!(serve(cli).0, 9.0);
        let cli: Cli =
            try_parse_from(["t", "serve", "--config", path, "--lease-ttl=11"], env).unwrap();
        assert_eq!(serve(cli).0, 11.0);
    }

    #[test]
    fn the_file_may_be_named_by_the_environment() {
        let f = file("log_format = \"json\"\n");
        let path = f.path().as_os_str().to_owned();
        let env = move |n: &OsStr| (n == "RIDGELINE_CLI_CONFIG_TEST_CONFIG").then(|| path.clone());
        let cli: Cli = try_parse_from(["t"], env).unwrap();
        assert_eq!(cli.log_format, "json");
        // No file named: nothing read.
        assert_eq!(parse(&[]).unwrap().log_format, "text");
    }

    #[test]
    fn arrays_switches_and_snake_case() {
        let f = file(
            "[serve]\ndata_root = [\"/a\", \"/b\"]\nverbose = true\nslots = 4\n\n[tls_init]\nhost = [\"h1\", \"10.0.0.5\"]\n",
        );
        let (_, roots, verbose, slots) = serve(with(&f, &["serve"]).unwrap());
        assert_eq!(roots, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(verbose);
        assert_eq!(slots, 4);
        // A list on the command line replaces the file's whole list.
        let (_, roots, ..) = serve(with(&f, &["serve", "--data-root", "/c"]).unwrap());
        assert_eq!(roots, [PathBuf::from("/c")]);
        // A required flag may come from the file.
        let cli = with(&f, &["tls-init"]).unwrap();
        assert_eq!(
            cli.command,
            Some(Cmd::TlsInit {
                hosts: vec!["h1".into(), "10.0.0.5".into()]
            })
        );
        // One value where a list is expected; false leaves a switch off.
        let f = file("[serve]\ndata-root = \"/only\"\nverbose = false\n");
        let (_, roots, verbose, _) = serve(with(&f, &["serve"]).unwrap());
        assert_eq!(roots, [PathBuf::from("/only")]);
        assert!(!verbose);
    }

    #[test]
    fn unknown_keys_are_named_with_the_file_and_the_valid_keys() {
        let f = file("bogus = 1\n");
        let e = err(with(&f, &[]));
        let path = f.path().display().to_string();
        assert!(e.contains("`bogus`") && e.contains(&path), "{e}");
        assert!(
            e.contains("coordinator") && e.contains("log-format") && e.contains("[serve]"),
            "{e}"
        );
        assert!(!e.contains("help,") && !e.contains("config,"), "{e}");
        // In a table, whether or not that command is invoked.
        let f = file("[tls-init]\nhost = [\"h\"]\nyears = 3\n");
        let e = err(with(&f, &["serve"]));
        assert!(e.contains("`tls-init.years`") && e.contains("host"), "{e}");
        let f = file("[serve]\nlog-format = \"json\"\n");
        let e = err(with(&f, &["serve"]));
        assert!(e.contains("`serve.log-format`"), "{e}");
        let f = file("[serve]\ncoordinator = \"http://x\"\n");
        let e = err(with(&f, &["serve"]));
        assert!(e.contains("global setting"), "{e}");
        let f = file("serve = 1\n");
        assert!(err(with(&f, &["serve"])).contains("[serve]"));
    }

    #[test]
    fn wrong_types_and_values_name_the_key() {
        for (text, key, what) in [
            (
                "[serve]\nlease-ttl = [1, 2]\n",
                "`serve.lease-ttl`",
                "not an array",
            ),
            (
                "[serve]\nverbose = \"yes\"\n",
                "`serve.verbose`",
                "true or false",
            ),
            (
                "[serve]\ndata-root = [{ a = 1 }]\n",
                "`serve.data-root`",
                "a table",
            ),
            ("coordinator = \"\"\n", "`coordinator`", "empty"),
            ("log-format = \"xml\"\n", "`log-format`", "xml"),
            ("[serve]\nslots = 0\n", "`serve.slots`", "0"),
            (
                "[serve]\nlease-ttl = \"soon\"\n",
                "`serve.lease-ttl`",
                "soon",
            ),
        ] {
            let f = file(text);
            let e = err(with(&f, &["serve"]));
            assert!(e.contains(key) && e.contains(what), "{text}: {e}");
            assert!(e.contains(&f.path().display().to_string()), "{e}");
        }
        // A bad value on the command line is clap's usual error.
        let f = file("[serve]\nslots = 2\n");
        let e = err(with(&f, &["serve", "--slots", "0"]));
        assert!(e.contains("--slots") && !e.contains("config file"), "{e}");
        // Checks between flags apply to file settings too.
        let f = file("[serve]\ncert = \"c.pem\"\n");
        let e = err(with(&f, &["serve"]));
        assert!(e.contains("--key"), "{e}");
        // Not TOML; no such file.
        let e = err(with(&file("slots = "), &["serve"]));
        assert!(e.contains("not valid TOML"), "{e}");
        let e = err(parse(&["--config", "/nonexistent/ridgeline.toml"]));
        assert!(e.contains("/nonexistent/ridgeline.toml"), "{e}");
    }

    #[test]
    fn the_file_cannot_name_a_config_file() {
        for text in ["config = \"other.toml\"\n", "[serve]\nconfig = \"x\"\n"] {
            let e = err(with(&file(text), &["serve"]));
            assert!(e.contains("cannot name another config file"), "{e}");
        }
    }

    #[test]
    fn undocumented_arguments_are_found() {
        use clap::CommandFactory;
        assert_eq!(undocumented(&mut Cli::command()), Vec::<String>::new());
        #[derive(Parser)]
        #[command(name = "bare")]
        struct Bare {
            #[arg(long)]
            quiet: bool,
            #[command(subcommand)]
            sub: Option<BareSub>,
        }
        #[derive(Subcommand)]
        enum BareSub {
            Run {
                /// Documented.
                #[arg(long)]
                fast: bool,
                file: Option<String>,
            },
        }
        assert_eq!(
            undocumented(&mut Bare::command()),
            ["bare --quiet", "bare run", "bare run file"]
        );
    }

    #[test]
    fn help_and_version_work_with_a_broken_file() {
        let f = file("bogus = 1\n");
        let e = with(&f, &["--help"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayHelp);
        let e = with(&f, &["serve", "-h"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayHelp);
    }
}
