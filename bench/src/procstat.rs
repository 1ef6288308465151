//! What a process costs, read from /proc: CPU seconds (utime + stime) and peak resident memory
//! (VmHWM). Also the CPU of the Postgres backends serving our database and of redis-server, so a
//! run can say where the machine's time went.

use std::collections::HashMap;

use diesel::QueryableByName;
use diesel::sql_types::Integer;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Clock ticks per second (`getconf CLK_TCK`); 100 on every Linux we run on, the fallback.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of `pid` in seconds; `None` once the process is gone.
pub fn cpu_seconds(pid: u32, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / ticks)
}

/// utime + stime (fields 14 and 15) from a /proc/<pid>/stat line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is at index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident set size of `pid` in bytes (VmHWM).
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

/// Resident set size of `pid` now, in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kb(&status, "VmRSS:")
}

pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    parse_status_kb(status, "VmHWM:")
}

/// A `Name:   123 kB` line of /proc/<pid>/status, in bytes.
fn parse_status_kb(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The whole machine's CPU time in ticks, from the first line of /proc/stat: what every process
/// (ours, Postgres' background writers, other users, the kernel) used, and what waited on I/O.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineTicks {
    pub busy: u64,
    pub iowait: u64,
    pub steal: u64,
    pub total: u64,
}

pub fn machine_ticks() -> Option<MachineTicks> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

pub fn parse_proc_stat(stat: &str) -> Option<MachineTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let (idle, iowait, steal) = (get(3), get(4), get(7));
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + steal;
    Some(MachineTicks {
        busy,
        iowait,
        steal,
        total: busy + idle + iowait,
    })
}

/// CPU seconds of a set of processes at one moment, by pid.
pub type CpuSnapshot = HashMap<u32, f64>;

pub fn snapshot(pids: &[u32], ticks: f64) -> CpuSnapshot {
    pids.iter()
        .filter_map(|&p| cpu_seconds(p, ticks).map(|c| (p, c)))
        .collect()
}

/// CPU used between two snapshots. A process present only at the end started in between, so
/// all of its time counts; one gone by the end is lost (rare: pools keep their connections).
pub fn used(before: &CpuSnapshot, after: &CpuSnapshot) -> f64 {
    after
        .iter()
        .map(|(pid, end)| end - before.get(pid).copied().unwrap_or(0.0))
        // fold from +0.0: an empty `sum()` of floats is -0.0, which prints as "-0.00".
        .fold(0.0, |a, b| a + b)
}

/// The backends (one process per connection) serving the database `conn` is connected to.
/// Asked on a connection the caller holds: under load the pools may take every slot Postgres has.
pub async fn postgres_backends(conn: &mut AsyncPgConnection) -> anyhow::Result<Vec<u32>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        pid: i32,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid()",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.pid as u32).collect())
}

/// redis-server's own CPU seconds (user + sys) from `INFO cpu`: the whole server, which other
/// users of this Redis share.
pub async fn redis_cpu_seconds(conn: &mut redis::aio::MultiplexedConnection) -> Option<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await.ok()?;
    let field = |name: &str| -> Option<f64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(field("used_cpu_user")? + field("used_cpu_sys")?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(320));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\tworker\nVmPeak:\t  999 kB\nVmHWM:\t   20480 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(20480 * 1024));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_peak() {
        let me = std::process::id();
        assert!(cpu_seconds(me, clock_ticks()).is_some());
        assert!(peak_rss_bytes(me).is_some_and(|b| b > 0));
    }

    #[test]
    fn proc_stat_splits_busy_idle_and_iowait() {
        let stat = "cpu  100 5 50 800 30 2 3 10 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let t = parse_proc_stat(stat).unwrap();
        assert_eq!((t.busy, t.iowait, t.steal, t.total), (170, 30, 10, 1000));
        assert!(machine_ticks().is_some());
    }

    #[test]
    fn used_counts_new_processes_whole() {
        let before = CpuSnapshot::from([(1, 1.0), (2, 5.0)]);
        let after = CpuSnapshot::from([(1, 1.5), (3, 2.0)]);
        assert!((used(&before, &after) - 2.5).abs() < 1e-9);
    }
}
