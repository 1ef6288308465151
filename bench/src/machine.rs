//! The machine the figures were measured on: cores, CPU, memory, Postgres and Redis versions
//! and settings, and how busy it was just before the run.

/// What the figures were measured on.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub date: String,
    pub cores: usize,
    pub cpu_model: String,
    pub mem_gb: f64,
    /// 1-minute load average just before the run: how quiet the machine was.
    pub load_before: String,
    pub postgres: String,
    pub redis: String,
}

fn command(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

pub async fn machine(database_url: &str, redis_url: &str) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let postgres = match crate::pg::connect(database_url).await {
        Ok(mut c) => {
            #[derive(diesel::QueryableByName)]
            struct V {
                #[diesel(sql_type = diesel::sql_types::Text)]
                v: String,
            }
            use diesel_async::RunQueryDsl;
            diesel::sql_query(
                "SELECT current_setting('server_version') || ', max_connections ' || \
                 current_setting('max_connections') || ', shared_buffers ' || \
                 current_setting('shared_buffers') || ', synchronous_commit ' || \
                 current_setting('synchronous_commit') AS v",
            )
            .get_result::<V>(&mut c)
            .await
            .map(|v| v.v)
            .unwrap_or_default()
        }
        Err(e) => format!("unreachable: {e}"),
    };
    let redis = match redis::Client::open(redis_url) {
        Ok(c) => match c.get_multiplexed_async_connection().await {
            Ok(mut conn) => redis::cmd("INFO")
                .arg("server")
                .query_async::<String>(&mut conn)
                .await
                .ok()
                .and_then(|i| {
                    i.lines()
                        .find_map(|l| l.strip_prefix("redis_version:").map(str::to_owned))
                })
                .unwrap_or_default(),
            Err(e) => format!("unreachable: {e}"),
        },
        Err(e) => format!("bad URL: {e}"),
    };
    Machine {
        date: command("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_default(),
        mem_gb: kb / 1_048_576.0,
        load_before: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        postgres,
        redis,
    }
}
