//! Where Postgres' time goes, when `perf` can tell: a system-wide `perf record -e cpu-clock -g`
//! (at ~500 Hz)
//! while the ceiling loop runs, summarised as the share of the Postgres backends' samples spent
//! under a few well-known functions (parse, plan, execute, commit, send). Hardware counters are
//! not needed (`cpu-clock` is a software event), so this works in most VMs; without `perf` or
//! the permission for `-a`, the report says so and the rest of the benchmark is unaffected.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

/// The functions whose inclusive share is reported, and what each stands for. They are (nearly)
/// disjoint subtrees under PostgresMain, so the shares do not double count.
pub const PARTS: [(&[&str], &str); 9] = [
    (&["pg_parse_query"], "parse SQL text"),
    (&["pg_analyze_and_rewrite"], "analyze and rewrite"),
    (&["pg_plan_queries"], "plan"),
    (&["standard_ExecutorStart"], "executor start-up"),
    (&["standard_ExecutorRun"], "execute"),
    (&["CommitTransactionCommand"], "commit"),
    (&["XLogFlush"], "…of which waiting for the WAL flush"),
    // libc's wrapper includes the kernel's work and resolves even when kernel symbols do not;
    // the syscall's own entry symbols (which differ between kernels) are the fallback.
    (
        &["__send", "__libc_send", "__x64_sys_sendto", "__sys_sendto"],
        "send results (send syscall)",
    ),
    (&["secure_read"], "read requests"),
];

/// Shares (percent of Postgres backend samples) of each of [`PARTS`] found.
#[derive(Clone, Debug, Default)]
pub struct PgProfile {
    pub samples: u64,
    pub parts: Vec<(&'static str, f64)>,
}

/// Records every CPU for `secs` into a temporary file; `None` when perf is missing or refused.
pub async fn record(secs: Duration) -> Option<PathBuf> {
    let path = std::env::temp_dir().join(format!("bench-perf-{}.data", std::process::id()));
    let status = Command::new("perf")
        // ~500 Hz per CPU: thousands of samples in a few seconds, too few to slow the loop
        // being measured.
        .args([
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-F",
            "499",
            "-a",
            "-g",
            "-o",
        ])
        .arg(&path)
        .args(["--", "sleep", &format!("{:.1}", secs.as_secs_f64())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .ok()?;
    status.success().then_some(path)
}

/// Summarises a recording made by [`record`], then deletes it.
pub async fn summarize(path: PathBuf) -> Option<PgProfile> {
    // Each sample's whole stack, so inclusive shares are counted here rather than taken from
    // `perf report --children`, which drops some call paths from its listing.
    let out = Command::new("perf")
        .args(["script", "--comms", "postgres", "-F", "comm,ip,sym", "-i"])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .output()
        .await;
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("data.old"));
    parse_script(&String::from_utf8_lossy(&out.ok()?.stdout))
}

/// Reads `perf script -F comm,ip,sym` output: a line with the command per sample, then one
/// indented line per frame ("ip symbol"). A part's share is the percentage of samples with
/// one of its functions anywhere on the stack.
pub fn parse_script(script: &str) -> Option<PgProfile> {
    let mut samples = 0u64;
    let mut hits = [0u64; PARTS.len()];
    let mut seen = [false; PARTS.len()];
    let mut flush = |seen: &mut [bool; PARTS.len()]| {
        for (h, s) in hits.iter_mut().zip(seen.iter_mut()) {
            *h += u64::from(*s);
            *s = false;
        }
    };
    for line in script.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            if samples > 0 {
                flush(&mut seen);
            }
            samples += 1;
            continue;
        }
        let Some(sym) = line.split_whitespace().nth(1) else {
            continue;
        };
        for (i, (funcs, _)) in PARTS.iter().enumerate() {
            // Variants share a prefix (…_varparams, …_fixedparams).
            seen[i] |= funcs.iter().any(|f| sym.starts_with(f));
        }
    }
    flush(&mut seen);
    if samples == 0 {
        return None;
    }
    let parts = PARTS
        .iter()
        .zip(hits)
        .filter(|(_, h)| *h > 0)
        .map(|((_, what), h)| (*what, 100.0 * h as f64 / samples as f64))
        .collect();
    Some(PgProfile { samples, parts })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn stacks_are_counted_once_per_part() {
        let script = "postgres \n\
                      \tffff _raw_spin_unlock\n\
                      \tffff __x64_sys_sendto\n\
                      \t1234 __send\n\
                      \t5678 PostgresMain\n\
                      \n\
                      postgres \n\
                      \t1111 pg_plan_queries\n\
                      \t2222 pg_plan_queries\n\
                      \t3333 PostgresMain\n\
                      \n\
                      postgres \n\
                      \t4444 pg_analyze_and_rewrite_varparams\n\
                      \t5555 PostgresMain\n\
                      \n\
                      postgres \n\
                      \t6666 epoll_wait\n";
        let p = parse_script(script).unwrap();
        assert_eq!(p.samples, 4);
        assert!(p.parts.contains(&("send results (send syscall)", 25.0)));
        assert!(p.parts.contains(&("plan", 25.0)));
        assert!(p.parts.contains(&("analyze and rewrite", 25.0)));
        assert!(!p.parts.iter().any(|(w, _)| *w == "parse SQL text"));
        assert!(parse_script("").is_none());
    }
}
