//! How much memory a process holds, from `/proc/<pid>/status` (Linux).

/// A process's resident memory, in MiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_mib: f64,
    /// `VmHWM`: the most it has been resident since it started.
    pub peak_mib: f64,
}

/// The memory of process `pid` now (`None` if it is gone or `/proc` is not Linux's).
pub fn of(pid: u32) -> Option<Memory> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse(status: &str) -> Option<Memory> {
    let kib = |field: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        line[field.len()..].split_whitespace().next()?.parse::<f64>().ok()
    };
    Some(Memory { rss_mib: kib("VmRSS:")? / 1024.0, peak_mib: kib("VmHWM:")? / 1024.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_and_peak_are_read_from_proc_status() {
        let text = "Name:\tskiff\nVmPeak:\t  900000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        let m = parse(text).expect("parsed");
        assert_eq!(m.rss_mib, 100.0);
        assert_eq!(m.peak_mib, 200.0);
        let own = of(std::process::id()).expect("this process's memory");
        assert!(own.rss_mib > 0.0 && own.peak_mib >= own.rss_mib);
    }
}
