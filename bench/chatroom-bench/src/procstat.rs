//! What a server process has used so far, read from Linux's `/proc`: CPU time and
//! resident memory. A process that is gone or unreadable counts as zero, so a report
//! still comes out; the scripts check that the pids they pass are alive.

/// Clock ticks a second in `/proc/PID/stat` (`USER_HZ`: 100 on every Linux ABI).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user + system, all threads) the process has used since it started.
pub fn cpu_secs(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| parse_cpu_ticks(&stat)).unwrap_or(0)
        as f64
        / TICKS_PER_SEC
}

/// The CPU seconds of several processes together.
pub fn total_cpu_secs(pids: &[u32]) -> f64 {
    pids.iter().map(|pid| cpu_secs(*pid)).sum()
}

/// utime + stime out of a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted from its closing one.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The resident memory of several processes together, in KiB.
pub fn total_rss_kib(pids: &[u32]) -> u64 {
    pids.iter().map(|pid| rss_kib(*pid)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces() {
        let stat = "4242 (tokio runtime) S 1 4242 4242 0 -1 4194560 1064 0 0 0 250 75 0 0 20 0 9 0 123 456 789";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu_and_memory() {
        let me = std::process::id();
        // Busy until the kernel has counted a tick (10 ms), within a bound.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut spin = 0u64;
        while cpu_secs(me) <= 0.0 && std::time::Instant::now() < until {
            spin = (0..1_000_000u64).fold(spin, |sum, n| sum.wrapping_add(n * n));
        }
        assert!(cpu_secs(me) > 0.0, "spun {spin}");
        assert!(rss_kib(me) > 0);
    }
}
