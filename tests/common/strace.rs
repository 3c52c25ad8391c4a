//! Reading `strace -f -yy -ttt -T` output, to prove what reached the disk before an acknowledgement.
//!
//! A trace line looks like
//! `4242 1795981777.030150 fdatasync(12</tmp/x/raft-log/db>) = 0 <0.000271>`, or is split in two when
//! another thread's line comes between (`... <unfinished ...>` then `4242 ... <... fdatasync resumed>)
//! = 0 <0.000271>`). Timestamps are wall-clock seconds, the same clock as `SystemTime::now()`, so a
//! test can compare them with the moments it sent a request and received its answer.

use std::collections::HashMap;

/// The syscalls a durability trace asks for.
pub const TRACED: &str = "trace=fsync,fdatasync,sync_file_range,pwrite64,write";

/// One completed syscall: when it started and ended (wall-clock seconds) and the path of its fd.
#[derive(Debug, Clone)]
pub struct Call {
    pub name: String,
    pub start: f64,
    pub end: f64,
    pub path: String,
    /// The rest of the line after the fd (the written bytes of a `write`, quoted by strace).
    pub args: String,
}

impl Call {
    /// An `fsync` or `fdatasync`: what makes written data survive a power cut.
    pub fn is_sync(&self) -> bool {
        self.name == "fsync" || self.name == "fdatasync"
    }

    pub fn is_write(&self) -> bool {
        self.name == "pwrite64" || self.name == "write"
    }
}

/// Every completed call of `text`, in the order they started.
pub fn parse(text: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    // Started but unfinished calls by thread id: (name, start, path, args).
    let mut pending: HashMap<&str, (String, f64, String, String)> = HashMap::new();
    for line in text.lines() {
        // strace pads the thread id to a fixed width: `9200  1795983819.203226 fsync(...`.
        let Some((tid, rest)) = line.trim_start().split_once(char::is_whitespace) else { continue };
        let Some((ts, rest)) = rest.trim_start().split_once(' ') else { continue };
        let Ok(ts) = ts.parse::<f64>() else { continue };
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, _)) = resumed.split_once(' ') else { continue };
            if let Some((pending_name, start, path, args)) = pending.remove(tid) {
                if pending_name == name {
                    let end = duration(rest).map(|d| start + d).unwrap_or(ts);
                    calls.push(Call { name: pending_name, start, end, path, args });
                }
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else { continue };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let (path, args) = fd_path(args);
        if rest.ends_with("<unfinished ...>") {
            pending.insert(tid, (name.to_string(), ts, path, args));
        } else {
            let end = duration(rest).map(|d| ts + d).unwrap_or(ts);
            calls.push(Call { name: name.to_string(), start: ts, end, path, args });
        }
    }
    calls.sort_by(|a, b| a.start.total_cmp(&b.start));
    calls
}

/// The `<0.000271>` duration at the end of a completed call.
fn duration(line: &str) -> Option<f64> {
    let open = line.rfind('<')?;
    line[open + 1..].strip_suffix('>')?.parse().ok()
}

/// The path in `12</tmp/x/db>` at the start of the arguments, and what follows it.
fn fd_path(args: &str) -> (String, String) {
    let Some(open) = args.find('<') else { return (String::new(), args.to_string()) };
    if !args[..open].chars().all(|c| c.is_ascii_digit()) {
        return (String::new(), args.to_string());
    }
    match args[open + 1..].find('>') {
        Some(close) => (args[open + 1..open + 1 + close].to_string(), args[open + 2 + close..].to_string()),
        None => (String::new(), args.to_string()),
    }
}

/// What happened to the log's files between a request and its acknowledgement.
#[derive(Debug)]
pub struct Window {
    /// Writes of the log's files inside the window.
    pub writes: usize,
    /// `fsync`/`fdatasync` calls of the log's files inside the window.
    pub syncs: usize,
    /// Those calls as `(syscall, path)`, in order.
    pub sync_calls: Vec<(String, String)>,
    /// Files written inside the window with no `fsync`/`fdatasync` of that file started after its
    /// last write and ended before the acknowledgement: what a power cut could still lose.
    pub unsynced: Vec<String>,
    /// An `fsync`/`fdatasync` of a written file started after the window's first write ended.
    pub synced_after_first_write: bool,
}

impl Window {
    /// How many `fdatasync` calls of a file whose path ends with `suffix` the window holds.
    pub fn fdatasyncs(&self, suffix: &str) -> usize {
        self.sync_calls.iter().filter(|(name, path)| name == "fdatasync" && path.ends_with(suffix)).count()
    }

    /// Something was written, and everything written was synced before the acknowledgement.
    pub fn durable(&self) -> bool {
        self.writes > 0 && self.unsynced.is_empty()
    }

    /// Something was written and then synced before the acknowledgement. For one request in
    /// flight its own entry is the first write; what may follow unsynced is bookkeeping that is
    /// not the request's (the log's committed index, which is relearned from the leader).
    pub fn written_then_synced(&self) -> bool {
        self.writes > 0 && self.synced_after_first_write
    }
}

/// Looks at the calls on files whose path contains `log_path` that started at or after `from` and
/// ended by `to`.
pub fn window(calls: &[Call], log_path: &str, from: f64, to: f64) -> Window {
    let inside: Vec<&Call> =
        calls.iter().filter(|c| c.path.contains(log_path) && c.start >= from && c.end <= to).collect();
    let mut last_write: HashMap<&str, f64> = HashMap::new();
    for c in inside.iter().filter(|c| c.is_write()) {
        let last = last_write.entry(&c.path).or_insert(c.end);
        *last = last.max(c.end);
    }
    let mut unsynced: Vec<String> = last_write
        .iter()
        .filter(|(path, written)| !inside.iter().any(|c| c.is_sync() && c.path == **path && c.start >= **written))
        .map(|(path, _)| path.to_string())
        .collect();
    unsynced.sort();
    let first_write = inside.iter().filter(|c| c.is_write()).min_by(|a, b| a.end.total_cmp(&b.end));
    let synced_after_first_write =
        first_write.is_some_and(|w| inside.iter().any(|c| c.is_sync() && c.path == w.path && c.start >= w.end));
    Window {
        synced_after_first_write,
        writes: inside.iter().filter(|c| c.is_write()).count(),
        syncs: inside.iter().filter(|c| c.is_sync()).count(),
        sync_calls: inside.iter().filter(|c| c.is_sync()).map(|c| (c.name.clone(), c.path.clone())).collect(),
        unsynced,
    }
}

/// Wall-clock seconds now, on the clock strace's `-ttt` uses.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[test]
fn parses_complete_and_split_calls_with_their_paths() {
    let text = "\
10  100.000100 fdatasync(12</d/raft-log/db>) = 0 <0.000200>
11 100.000200 pwrite64(7</d/state/db>, \"x\", 1, 0 <unfinished ...>
10 100.000300 write(5</d/acks>, \"acked 1\\n\", 8) = 8 <0.000010>
11 100.000400 <... pwrite64 resumed>) = 1 <0.000250>
10 100.000500 --- SIGCHLD {si_signo=SIGCHLD} ---
";
    let calls = parse(text);
    assert_eq!(calls.len(), 3);
    assert_eq!((calls[0].name.as_str(), calls[0].path.as_str()), ("fdatasync", "/d/raft-log/db"));
    assert!((calls[0].end - 100.0003).abs() < 1e-9);
    assert_eq!((calls[1].name.as_str(), calls[1].path.as_str()), ("pwrite64", "/d/state/db"));
    assert!((calls[1].end - 100.00045).abs() < 1e-9);
    assert!(calls[2].args.contains("acked 1"));
    let w = window(&calls, "raft-log", 100.0, 100.001);
    assert_eq!((w.writes, w.syncs), (0, 1));
    assert!(!w.durable(), "nothing was written");
    let w = window(&calls, "/d/", 100.0, 100.001);
    assert_eq!(w.unsynced, ["/d/acks", "/d/state/db"]);
    let w = window(&calls, "/d/", 100.0002, 100.001);
    assert_eq!(w.unsynced, ["/d/acks", "/d/state/db"]);
    assert_eq!(w.syncs, 0, "the sync started before the window");
}
