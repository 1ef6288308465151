//! A whole deployment as child processes: stripe-sim, api, workers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

pub struct StackConfig {
    /// Directory holding the `api`, `worker` and `stripe-sim` binaries.
    pub bin_dir: PathBuf,
    /// Where process logs go.
    pub log_dir: PathBuf,
    pub workers: usize,
    /// stripe-sim's fault configuration (JSON, see stripe-sim's README).
    pub sim_faults: serde_json::Value,
    /// Extra environment for the api and the workers.
    pub env: Vec<(String, String)>,
    /// A Redis of the test's own (to stop and start it); default `REDIS_URL`.
    pub redis_url: Option<String>,
    /// A Postgres of the test's own (its URL's query, TLS options included, is kept for the
    /// deployment's database); default `DATABASE_URL`.
    pub database_url: Option<String>,
    /// stripe-sim sends its webhook events to the api (signed), as Stripe does.
    pub webhooks: bool,
    /// api processes, all started at once on the new database (each migrates at start); 0
    /// counts as 1.
    pub apis: usize,
    /// A pooler (PgBouncer) on this loopback port: the services' pools go through it
    /// (`DATABASE_URL`), their migrations straight to Postgres (`DATABASE_DIRECT_URL`).
    pub pooler_port: Option<u16>,
}

pub struct Stack {
    /// The first api's base URL; [`Stack::api_urls`] has them all.
    pub api_url: String,
    pub api_urls: Vec<String>,
    pub sim_url: String,
    pub database_url: String,
    pub redis_url: String,
    pub namespace: String,
    env: Vec<(String, String)>,
    bin_dir: PathBuf,
    log_dir: PathBuf,
    sim: Child,
    apis: Vec<Child>,
    pub workers: Vec<Child>,
    started_workers: usize,
    /// Set by `teardown`; otherwise `Drop` removes the data.
    torn_down: bool,
}

/// A free loopback port (the tiny window before the child binds it is acceptable for tests).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The directory of the binaries built next to the running executable (target/<profile>).
pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test executables live one level deeper, in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// How many times a stack is started afresh when one of its processes exits before it is
/// ready: a port [`free_port`] handed out can be taken by another test before the child binds it.
const START_ATTEMPTS: usize = 3;

/// A process of the stack ended before the stack was ready.
#[derive(Debug)]
struct Exited(&'static str, std::process::ExitStatus, String);

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited before the stack was ready ({}); see logs in {}",
            self.0, self.1, self.2
        )
    }
}

impl std::error::Error for Exited {}

impl Stack {
    /// Starts the stack; when a process exits before it is ready (a port taken under it), once
    /// more on new ports, up to [`START_ATTEMPTS`] times.
    pub async fn start(cfg: StackConfig) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(&cfg).await {
                Err(e) if e.is::<Exited>() && attempt < START_ATTEMPTS => {
                    eprintln!("stack: {e}; starting it again on new ports");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(cfg: &StackConfig) -> anyhow::Result<Self> {
        for bin in ["api", "worker", "stripe-sim"] {
            if !cfg.bin_dir.join(bin).exists() {
                bail!(
                    "{} not found: run `cargo build --bins` first",
                    cfg.bin_dir.join(bin).display()
                );
            }
        }
        std::fs::create_dir_all(&cfg.log_dir)?;
        let base_db = cfg
            .database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let redis_url = cfg
            .redis_url
            .clone()
            .or_else(|| std::env::var("REDIS_URL").ok())
            .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        let run = uuid::Uuid::new_v4().simple().to_string();
        let db_name = format!("chaos_{}", &run[..12]);
        let database_url = shared::db::with_database(&base_db, &db_name)
            .ok_or_else(|| anyhow::anyhow!("DATABASE_URL has no database name"))?;
        let namespace = format!("chaos:{}", &run[..12]);

        let sim_port = free_port()?;
        let api_ports = (0..cfg.apis.max(1))
            .map(|_| free_port())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sim_url = format!("http://127.0.0.1:{sim_port}");
        let api_urls: Vec<String> = api_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let api_url = api_urls[0].clone();
        let pooled_url = match cfg.pooler_port {
            Some(port) => shared::db::with_database(
                &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                &db_name,
            )
            .unwrap_or_default(),
            None => database_url.clone(),
        };
        let mut env = vec![
            ("WORKER_METRICS_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            ("DATABASE_URL".to_owned(), pooled_url),
            ("DATABASE_DIRECT_URL".to_owned(), database_url.clone()),
            ("REDIS_URL".to_owned(), redis_url.clone()),
            ("QUEUE_NAMESPACE".to_owned(), namespace.clone()),
            ("STRIPE_SECRET_KEY".to_owned(), "sk_test_chaos".to_owned()),
            ("STRIPE_API_BASE".to_owned(), sim_url.clone()),
            (
                "RUST_LOG".to_owned(),
                "warn,worker=info,api=info".to_owned(),
            ),
        ];
        let webhook_secret = "whsec_stack_0123456789abcdef";
        if cfg.webhooks {
            env.push((
                "STRIPE_WEBHOOK_SECRET".to_owned(),
                webhook_secret.to_owned(),
            ));
        }
        env.extend(cfg.env.iter().cloned());

        let log = |name: &str| -> anyhow::Result<Stdio> {
            Ok(Stdio::from(std::fs::File::create(
                cfg.log_dir.join(format!("{name}.log")),
            )?))
        };
        let mut sim = Command::new(cfg.bin_dir.join("stripe-sim"));
        if cfg.webhooks {
            sim.env(
                "STRIPE_SIM_WEBHOOK_URL",
                format!("{api_url}/webhooks/stripe"),
            )
            .env("STRIPE_SIM_WEBHOOK_SECRET", webhook_secret);
        }
        let sim = sim
            .env("STRIPE_SIM_ADDR", format!("127.0.0.1:{sim_port}"))
            .env("STRIPE_SIM_FAULTS", cfg.sim_faults.to_string())
            .env("RUST_LOG", "warn")
            .stdout(log("stripe-sim")?)
            .stderr(log("stripe-sim.err")?)
            .kill_on_drop(true)
            .spawn()
            .context("starting stripe-sim")?;
        // The apis create and migrate the database, all at once; workers wait for the schema.
        let mut apis = Vec::new();
        for (i, port) in api_ports.iter().enumerate() {
            let name = if i == 0 {
                "api".to_owned()
            } else {
                format!("api-{}", i + 1)
            };
            apis.push(
                Command::new(cfg.bin_dir.join("api"))
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .env("API_ADDR", format!("127.0.0.1:{port}"))
                    .stdout(log(&name)?)
                    .stderr(log(&format!("{name}.err"))?)
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting api")?,
            );
        }
        let mut stack = Stack {
            api_url,
            api_urls,
            sim_url,
            database_url,
            redis_url,
            namespace,
            env,
            bin_dir: cfg.bin_dir.clone(),
            log_dir: cfg.log_dir.clone(),
            sim,
            apis,
            workers: vec![],
            started_workers: 0,
            torn_down: false,
        };
        stack.wait_ready(Duration::from_secs(60)).await?;
        for _ in 0..cfg.workers {
            stack.start_worker()?;
        }
        Ok(stack)
    }

    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            let logs = self.log_dir.display().to_string();
            if let Ok(Some(status)) = self.sim.try_wait() {
                return Err(Exited("stripe-sim", status, logs).into());
            }
            for api in &mut self.apis {
                if let Ok(Some(status)) = api.try_wait() {
                    return Err(Exited("an api", status, logs).into());
                }
            }
            let mut ready = client
                .get(format!("{}/sim/stats", self.sim_url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            for api in &self.api_urls {
                let api = client.get(format!("{api}/readyz")).send().await;
                ready &= api.is_ok_and(|r| r.status().is_success());
            }
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the stack did not become ready; see logs in {}",
                    self.log_dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts one more worker process (each start registers under a fresh name).
    pub fn start_worker(&mut self) -> anyhow::Result<()> {
        self.started_workers += 1;
        let name = format!("worker-{}", self.started_workers);
        let out = std::fs::File::create(self.log_dir.join(format!("{name}.log")))?;
        let child = Command::new(self.bin_dir.join("worker"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .kill_on_drop(true)
            .spawn()
            .context("starting worker")?;
        self.workers.push(child);
        Ok(())
    }

    /// SIGKILLs worker `i` (no chance to finish or hand anything back) and reaps it.
    pub async fn kill_worker(&mut self, i: usize) -> anyhow::Result<()> {
        let mut child = self.workers.remove(i);
        child.start_kill()?;
        child.wait().await?;
        Ok(())
    }

    /// Deletes every Redis key of this deployment: what a Redis restart without persistence does.
    pub async fn empty_redis(&self) -> anyhow::Result<usize> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        Ok(shared::queue::cleanup::delete_keys(&mut conn, &self.namespace).await?)
    }

    /// SIGTERMs worker `i` and waits for it to exit: the graceful shutdown path.
    pub async fn terminate_worker(&mut self, i: usize) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.workers.remove(i);
        let pid = child.id().context("worker already exited")?;
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        Ok(child.wait().await?)
    }

    /// Replaces stripe-sim's faults at run time.
    pub async fn set_sim_faults(&self, faults: &serde_json::Value) -> anyhow::Result<()> {
        let res = reqwest::Client::new()
            .post(format!("{}/sim/faults", self.sim_url))
            .json(faults)
            .send()
            .await?;
        anyhow::ensure!(
            res.status().is_success(),
            "stripe-sim refused the faults: {}",
            res.text().await?
        );
        Ok(())
    }

    /// Worker processes that have exited although nobody killed them: a worker must survive
    /// Redis and Postgres going away by itself.
    pub fn workers_exited(&mut self) -> usize {
        self.workers
            .iter_mut()
            .filter_map(|c| c.try_wait().ok().flatten())
            .count()
    }

    pub fn started_workers(&self) -> usize {
        self.started_workers
    }

    /// The (first) api's process id (for reading its CPU time and peak memory from /proc).
    pub fn api_pid(&self) -> Option<u32> {
        self.apis.first().and_then(Child::id)
    }

    /// stripe-sim's process id.
    pub fn sim_pid(&self) -> Option<u32> {
        self.sim.id()
    }

    /// Process ids of the running workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(Child::id).collect()
    }

    /// Where the processes write their logs (`api.log`, `worker-N.log`, ...).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Stops every process and removes the database and the Redis keys.
    pub async fn teardown(mut self) -> anyhow::Result<()> {
        let mut workers = std::mem::take(&mut self.workers);
        let mut apis = std::mem::take(&mut self.apis);
        for child in workers
            .iter_mut()
            .chain(apis.iter_mut())
            .chain([&mut self.sim])
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.torn_down = true;
        remove_data(&self.database_url, &self.redis_url, &self.namespace).await
    }
}

/// A test that panics never reaches `teardown`: the children die with their handles
/// (`kill_on_drop`), and the database and Redis keys are removed here.
impl Drop for Stack {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        let (db, redis_url, ns) = (
            self.database_url.clone(),
            self.redis_url.clone(),
            self.namespace.clone(),
        );
        // Drop cannot await, and may run inside a runtime: clean up on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let _ = rt.block_on(remove_data(&db, &redis_url, &ns));
        });
        let _ = cleanup.join();
    }
}

async fn remove_data(database_url: &str, redis_url: &str, namespace: &str) -> anyhow::Result<()> {
    shared::db::drop_database(database_url).await?;
    let client = shared::queue::redis_client(redis_url, None)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    shared::queue::cleanup::remove_namespace(&mut conn, namespace).await?;
    Ok(())
}
