//! `secret-mcp run --tenant SLUG [--map ENV=NAME ...] -- CMD ARGS...`: starts
//! CMD with a tenant's secrets as environment variables. Values go from the
//! vault (local or remote) to the child's environment only: never to a file,
//! the command line or a log. `SECRET_MCP_TOKEN` is not passed on. The
//! child's exit code is passed through; a child killed by signal N gives
//! 128+N, as shells do.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;

use tenant_vault::{Secret, SecretPath, Slug};

use crate::RunArgs;
use crate::backend::{Backend, CmdError, CmdResult, ExitKind};

/// The variable a secret name is passed as when no --map is given: the name
/// in capitals, every character other than A-Z and 0-9 turned into `_`.
pub(crate) fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            let c = c.to_ascii_uppercase();
            if c.is_ascii_uppercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn check_env_name(env: &str) -> CmdResult<()> {
    if env.is_empty() || env.contains(['=', '\0']) {
        return Err(CmdError::usage(format!(
            "`{env}` cannot be an environment variable name"
        )));
    }
    Ok(())
}

/// The variables to set: name → value.
fn collect(b: &dyn Backend, a: &RunArgs) -> CmdResult<BTreeMap<String, Secret>> {
    let slug = Slug::parse(&a.tenant)?;
    let mut vars = BTreeMap::new();
    if !a.map.is_empty() {
        for m in &a.map {
            let (env, name) = m
                .split_once('=')
                .ok_or_else(|| CmdError::usage(format!("--map takes ENV=NAME, not `{m}`")))?;
            check_env_name(env)?;
            let path = SecretPath::parse(&format!("tenant/{slug}/{name}"))?;
            if vars.contains_key(env) {
                return Err(CmdError::usage(format!("--map names `{env}` twice")));
            }
            vars.insert(env.to_owned(), b.get(&path, None)?.value);
        }
        return Ok(vars);
    }
    let mut names: BTreeMap<String, SecretPath> = BTreeMap::new();
    for p in crate::fingerprints::tenant_paths(b, &slug)? {
        let env = env_name(p.name().as_str());
        if let Some(other) = names.get(&env) {
            return Err(CmdError::usage(format!(
                "{other} and {p} would both be passed as {env}: name them with --map"
            )));
        }
        names.insert(env, p);
    }
    for (env, path) in names {
        match b.get(&path, None) {
            Ok(s) => {
                vars.insert(env, s.value);
            }
            // The current version is deleted or destroyed: not passed.
            Err(e) if e.kind == ExitKind::NotFound => {
                let _ = writeln!(std::io::stderr(), "secret-mcp: skipping {path}: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(vars)
}

#[cfg(unix)]
fn os_value<'a>(env: &str, v: &'a Secret) -> CmdResult<&'a OsStr> {
    use std::os::unix::ffi::OsStrExt;
    if v.expose().contains(&0) {
        return Err(CmdError::usage(format!(
            "the value for {env} holds a NUL byte and cannot be passed in the environment"
        )));
    }
    Ok(OsStr::from_bytes(v.expose()))
}

#[cfg(not(unix))]
fn os_value<'a>(env: &str, v: &'a Secret) -> CmdResult<&'a OsStr> {
    std::str::from_utf8(v.expose())
        .map(OsStr::new)
        .map_err(|_| CmdError::usage(format!("the value for {env} is not valid UTF-8")))
}

/// Runs the command; returns its exit code.
pub(crate) fn run(b: &dyn Backend, a: RunArgs) -> CmdResult<u8> {
    let vars = collect(b, &a)?;
    let (program, args) = a
        .command
        .split_first()
        .ok_or_else(|| CmdError::usage("give the command to run after `--`"))?;
    let mut cmd = std::process::Command::new(program);
    // The vault token stays with secret-mcp: the program gets its secrets,
    // not the means to read others.
    cmd.args(args).env_remove("SECRET_MCP_TOKEN");
    for (env, value) in &vars {
        cmd.env(env, os_value(env, value)?);
    }
    let child = cmd.spawn().map_err(|e| {
        CmdError::new(
            ExitKind::Failure,
            format!("cannot start {}: {e}", display(program)),
        )
    })?;
    drop(cmd);
    drop(vars);
    let status = wait(child)?;
    if let Some(c) = status.code() {
        return Ok(u8::try_from(c & 0xff).unwrap_or(1));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return Ok(u8::try_from((128 + sig) & 0xff).unwrap_or(1));
        }
    }
    Ok(1)
}

fn display(p: &OsString) -> String {
    p.to_string_lossy().into_owned()
}

/// Waits for the child. Meanwhile SIGINT and SIGTERM do not end this process
/// (the child, in the same process group, gets a terminal's Ctrl-C itself);
/// a SIGTERM sent to this process alone is passed on to the child.
fn wait(mut child: std::process::Child) -> CmdResult<std::process::ExitStatus> {
    let rt = crate::remote::runtime()?;
    let pid = child.id();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let fail = |e: std::io::Error| CmdError::new(ExitKind::Failure, format!("waiting: {e}"));
    rt.block_on(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut int = signal(SignalKind::interrupt()).map_err(fail)?;
            let mut term = signal(SignalKind::terminate()).map_err(fail)?;
            let mut rx = rx;
            loop {
                tokio::select! {
                    r = &mut rx => return r.map_err(|_| CmdError::new(ExitKind::Failure, "lost the child"))?.map_err(fail),
                    _ = int.recv() => {}
                    _ = term.recv() => {
                        let _ = std::process::Command::new("kill")
                            .args(["-s", "TERM", &pid.to_string()])
                            .status();
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = pid;
            rx.await
                .map_err(|_| CmdError::new(ExitKind::Failure, "lost the child"))?
                .map_err(fail)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert_eq!(env_name("db/password"), "DB_PASSWORD");
        assert_eq!(env_name("slack-token"), "SLACK_TOKEN");
        assert_eq!(env_name("api.key2"), "API_KEY2");
        assert_eq!(env_name("Already_OK"), "ALREADY_OK");
    }
}
