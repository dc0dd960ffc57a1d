//! The service run under `strace -f -yy`, and its trace read back as system calls.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::process::Process;

/// Whether strace is installed; under CI it must be (the test command installs it), elsewhere a test without
/// it is skipped, loudly.
pub fn installed() -> bool {
    if std::process::Command::new("strace").arg("-V").output().is_ok() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "strace is not installed (scripts/test.sh installs it)");
    eprintln!("SKIPPED: strace is not installed");
    false
}

/// `anonymous-results serve --config <config>` in `dir` under strace, tracing the system calls `calls`
/// (strace's `-e trace=` list); answers the service and where its trace goes.
pub fn start(dir: &Path, config: &Path, calls: &str) -> (Process, PathBuf) {
    let trace = dir.join("trace");
    let filter = format!("trace={calls}");
    let strace = ["strace", "-f", "-yy", "-qq", "-s", "1000000", "-o", trace.to_str().unwrap(), "-e", &filter];
    let service = Process::start_wrapped(&strace, dir, "127.0.0.1:0", &["--config", config.to_str().unwrap()], &[]);
    (service, trace)
}

/// Stops the traced `service` (SIGTERM to the service itself, so that strace writes the whole trace and exits
/// with it) and answers its calls.
pub async fn stop(mut service: Process, trace: &Path) -> Vec<Call> {
    let pid = child_of(service.child.id()).expect("the service runs under strace");
    let stopped = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(stopped.success());
    service.wait().await;
    parse_trace(&std::fs::read_to_string(trace).unwrap())
}

/// One system call of a trace made with `strace -f -yy`: the line it began on and the one it ended on.
#[derive(Debug)]
pub struct Call {
    pub name: String,
    pub args: String,
    pub result: Option<i64>,
    pub began: usize,
    pub ended: usize,
}

impl Call {
    pub fn succeeded(&self) -> bool {
        self.result == Some(0)
    }

    /// The path strace printed for the first argument, a file descriptor (`13</some/folder>`).
    pub fn fd_path(&self) -> Option<&str> {
        let start = self.args.find('<')? + 1;
        let end = start + self.args[start..].find('>')?;
        Some(&self.args[start..end])
    }

    /// The names the call concerns, whole: each quoted name joined to the folder of the descriptor before it
    /// (`linkat(5</root/a>, "x", 6</root/b>, "y", 0)` concerns `/root/a/x` and `/root/b/y`).
    pub fn paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        let mut folder: Option<&str> = None;
        for (i, part) in self.args.split('"').enumerate() {
            match i % 2 {
                0 => {
                    if let Some(start) = part.rfind('<') {
                        folder = part[start + 1..].split('>').next();
                    }
                }
                _ => paths.push(match folder.take() {
                    Some(folder) => format!("{folder}/{part}"),
                    None => part.to_owned(),
                }),
            }
        }
        paths
    }

    pub fn writes_to_a_socket(&self) -> bool {
        matches!(self.name.as_str(), "write" | "writev" | "sendto" | "sendmsg") && self.args.contains("<TCP:")
    }
}

/// The calls of a trace, in the order they began; a call another thread interrupted (`<unfinished ...>`,
/// then `<... name resumed>`) ends on a later line.
pub fn parse_trace(text: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut unfinished: BTreeMap<String, Call> = BTreeMap::new();
    for (line_number, line) in text.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else { continue };
        let rest = rest.trim_start();
        if rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some(mut call) = unfinished.remove(pid) else { continue };
            let tail = resumed.split_once("resumed>").map_or("", |(_, tail)| tail);
            call.args.push_str(tail);
            call.result = result_of(tail);
            call.ended = line_number;
            calls.push(call);
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else { continue };
        let mut call =
            Call { name: name.to_owned(), args: args.to_owned(), result: None, began: line_number, ended: line_number };
        match args.strip_suffix("<unfinished ...>") {
            Some(args) => {
                call.args = args.to_owned();
                unfinished.insert(pid.to_owned(), call);
            }
            None => {
                call.result = result_of(args);
                calls.push(call);
            }
        }
    }
    calls.sort_by_key(|call| call.began);
    calls
}

/// The number after the last ` = ` of a finished call's line (strace pads short lines before it).
fn result_of(tail: &str) -> Option<i64> {
    let (call, result) = tail.rsplit_once(" = ")?;
    match call.trim_end().ends_with(')') {
        true => result.split_whitespace().next()?.parse().ok(),
        false => None,
    }
}

/// The pid of the first child of process `pid` (the service, under strace).
fn child_of(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}
