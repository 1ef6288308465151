//! Configuration: typed defaults, overridden by environment variables, validated once at start.
//! `.env.example` at the repository root documents every variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod webhooks;

pub use webhooks::MerchantWebhookSettings;

use crate::cidr::Cidr;
use crate::money::Prices;
use crate::secret::Secret;

pub const DEFAULT_PRICES: &str = "basic=1000:usd,pro=2500:eur";

#[derive(Clone, Debug)]
pub struct Settings {
    /// What the pools use: Postgres itself, or a pooler in front of it. `DATABASE_CA_FILE`, when
    /// set, is added to it as `sslrootcert` (crate::db::connect reads libpq's `sslmode`).
    pub database_url: String,
    /// Migrations and LISTEN, which need a session of their own: Postgres itself, never a
    /// transaction-mode pooler (`DATABASE_DIRECT_URL`, default `database_url`).
    pub database_direct_url: String,
    /// Connections this process opens to Postgres at start and keeps (`DATABASE_POOL_SIZE`);
    /// unset: 16 for the api, `WORKER_CONCURRENCY` within 4..=16 for a worker.
    pub database_pool_size: Option<u32>,
    /// `redis://` or `rediss://` (TLS; `#insecure` skips verification, for development).
    pub redis_url: String,
    /// A PEM CA to verify a `rediss://` server with instead of the system's roots
    /// (`REDIS_CA_FILE`).
    pub redis_ca_file: Option<PathBuf>,
    /// Prefix of every Redis key this deployment uses.
    pub queue_namespace: String,
    pub api_addr: SocketAddr,
    pub merchant_api_key: Option<Secret>,
    /// Bearer token (or HTTP Basic password) for `/ops` and the api's `/metrics`; unset, they
    /// refuse everyone.
    pub admin_token: Option<Secret>,
    pub prices: Prices,
    pub stripe: StripeSettings,
    pub worker: WorkerSettings,
    pub http: HttpSettings,
    pub merchant_webhooks: MerchantWebhookSettings,
}

/// How the api treats the clients in front of it.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// `POST /transactions` per client IP per minute, one count for every api process (kept in
    /// Redis; 0: no limit). Generous by default: it stops a runaway script, not a busy shop.
    pub rate_limit_per_minute: u32,
    /// The same for `POST /transactions/{id}/confirm` (`CONFIRM_RATE_LIMIT_PER_MINUTE`).
    pub confirm_rate_limit_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` are believed (`TRUSTED_PROXIES`, a comma
    /// list of address blocks). Empty: the client is the socket's peer.
    pub trusted_proxies: Vec<Cidr>,
    /// Origins (`https://shop.example`) whose pages may call the api from a browser; empty:
    /// same-origin only.
    pub cors_allowed_origins: Vec<String>,
    /// A client must send its request headers within this, or its connection is closed.
    pub header_read_timeout: Duration,
    /// The longest a request may take, body included; work it handed off still finishes.
    pub request_timeout: Duration,
    /// The api as customers reach it (`PUBLIC_URL`, `https://pay.example.com`): the base of
    /// each checkout session's `url`. Unset: `http://` and the request's `Host`, which only
    /// suits development.
    pub public_url: Option<String>,
    /// The most new payments one insert sends (`API_INSERT_BATCH_MAX`, 64; 1: each alone): the
    /// payments POSTed at the same moment are inserted together (`api/src/inserts.rs`).
    pub insert_batch_max: usize,
    /// The most inserts of new payments one api process has running at once
    /// (`API_INSERT_PARALLEL`, default 1): POSTs that arrive meanwhile wait and go in the next
    /// one, together (`shared::rounds`).
    pub insert_parallel: usize,
}

/// `STRIPE_MAX_CONCURRENT_REQUESTS` when unset: the most requests one worker keeps open toward
/// Stripe at once.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;

#[derive(Clone, Debug)]
pub struct StripeSettings {
    pub secret_key: Option<Secret>,
    pub api_base: String,
    /// Per-request timeout; far below Stripe's SDK default of 80 s so a stalled call frees its
    /// worker slot quickly (the retry uses the same idempotency key, so nothing is lost).
    pub timeout: Duration,
    /// `pk_...`: with it the checkout page uses Stripe.js; without it, the test-card picker
    /// (development against stripe-sim). Not a secret: it is sent to browsers.
    pub publishable_key: Option<String>,
    /// Where a browser reaches stripe-sim's 3-D Secure page, when that differs from
    /// `api_base` (under compose the worker says `http://stripe-sim:12111`, the browser
    /// `http://127.0.0.1:12111`). Development only.
    pub sim_public_url: Option<String>,
    /// Requests per second toward Stripe across every worker process (0: no limit).
    pub rate_limit: u64,
    /// Most requests one worker process has open toward Stripe at once, so at most this many
    /// connections (Stripe also limits concurrency per account; each open connection costs the
    /// worker about 35 kB). Calls beyond it wait their turn before they take a rate-limit slot.
    pub max_concurrent_requests: usize,
    /// Consecutive outage-like failures that open the circuit breaker...
    pub breaker_threshold: u32,
    /// ...and how long it stays open before one probe call.
    pub breaker_cooldown: Duration,
    /// `whsec_...`: the signing secret of our webhook endpoint. Unset, `POST /webhooks/stripe`
    /// refuses every event (nothing can be verified).
    pub webhook_secret: Option<Secret>,
    /// How old a webhook's signed timestamp may be (Stripe's libraries use 300 s): an event
    /// captured and replayed later is refused.
    pub webhook_tolerance: Duration,
}

impl StripeSettings {
    /// The stripe-sim base a browser should use (its 3-D Secure page).
    pub fn browser_sim_base(&self) -> &str {
        self.sim_public_url.as_deref().unwrap_or(&self.api_base)
    }
}

#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub concurrency: usize,
    /// How often an idle worker polls Redis (apalis' default is its 30 s heartbeat).
    pub poll_interval: Duration,
    /// Heartbeat period; a worker missing `missed_heartbeats` of them is presumed dead and its
    /// in-flight jobs are re-queued by a live worker.
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    pub retry: RetrySettings,
    /// How long a claim on a transaction lasts; a crashed worker's claim expires after this.
    pub lease: Duration,
    pub sweep_interval: Duration,
    /// A payment unfinished and not due for this long is presumed to have lost its job.
    pub sweep_after: Duration,
    pub shutdown_timeout: Duration,
    /// How long a payment may wait for the customer's 3-D Secure before its intent is
    /// canceled and the payment fails.
    pub requires_action_timeout: Duration,
    /// How often the reconciler compares Postgres with Stripe's list (zero: never).
    pub reconcile_interval: Duration,
    /// How far back each reconciler pass looks.
    pub reconcile_window: Duration,
    /// Finished jobs (apalis' done set, their data and meta) older than this are deleted by
    /// the workers themselves (`DONE_JOB_RETENTION_MS`, default one day)...
    pub done_retention: Duration,
    /// ...by one worker every `DONE_JOB_PURGE_INTERVAL_MS` (default 10 minutes; 0: never).
    pub done_purge_interval: Duration,
    /// How often each worker analyzes the payments' tables that doubled since their statistics
    /// (`WORKER_ANALYZE_INTERVAL_MS`, default 1 s; 0: never; `shared::db::statistics`).
    pub analyze_interval: Duration,
    /// Where the worker serves `/metrics`; port 0 picks a free one, `off` disables it.
    pub metrics_addr: Option<SocketAddr>,
    /// Whether the worker's commits wait for their WAL flush (`WORKER_SYNCHRONOUS_COMMIT`,
    /// default `off`; the api's always do). See docs/reliability.md.
    pub synchronous_commit: bool,
    /// The most claims, and the most writes, one group commit sends (`WORKER_BATCH_MAX`,
    /// default 128; 1 sends each alone, as before group commit).
    pub batch_max: usize,
    /// The most group commits of each kind (claims; writes) one worker has running at once
    /// (`WORKER_BATCH_PARALLEL`, default 1): the asks that come meanwhile wait and go in the
    /// next one, together (`shared::rounds`).
    pub batch_parallel: usize,
}

impl WorkerSettings {
    /// How long a worker may go without a heartbeat before a live one presumes it dead and
    /// re-queues its in-flight jobs.
    pub fn presumed_dead_after(&self) -> Duration {
        self.heartbeat
            .saturating_mul(self.missed_heartbeats.try_into().unwrap_or(u32::MAX))
    }
}

#[derive(Clone, Debug)]
pub struct RetrySettings {
    pub max_attempts: i32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct SettingsError(pub String);

/// Where the settings are read from: the environment, or a table in tests.
struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, SettingsError> {
        Ok(self.optional(name)?.unwrap_or(default))
    }

    /// `None` when unset, otherwise the parsed value.
    fn optional<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, SettingsError> {
        match self.var(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| SettingsError(format!("{name}=`{v}` is not a valid value"))),
        }
    }

    /// A count that must be at least 1.
    fn count(&self, name: &str, default: usize) -> Result<usize, SettingsError> {
        match self.parsed(name, default)? {
            0 => Err(SettingsError(format!("{name} must be at least 1"))),
            n => Ok(n),
        }
    }

    fn millis(&self, name: &str, default_ms: u64) -> Result<Duration, SettingsError> {
        self.parsed(name, default_ms).map(Duration::from_millis)
    }
}

/// The variables that may be read from a file instead, as `NAME_FILE=/run/secrets/...`: the
/// secrets, and the URLs that can carry passwords.
pub const FILE_VARS: [&str; 8] = [
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "MERCHANT_API_KEY",
    "MERCHANT_WEBHOOK_SECRET",
    "ADMIN_TOKEN",
    "DATABASE_URL",
    "DATABASE_DIRECT_URL",
    "REDIS_URL",
];

/// The values of the [`FILE_VARS`] given as `NAME_FILE`: the file's contents without the
/// trailing newline. Both `NAME` and `NAME_FILE`, an unreadable file or an empty one is an error
/// that names the variable and the path, never the contents.
fn read_files(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(&'static str, String)>, SettingsError> {
    let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    let mut values = Vec::new();
    for name in FILE_VARS {
        let file_var = format!("{name}_FILE");
        let Some(path) = set(&file_var) else {
            continue;
        };
        if set(name).is_some() {
            return Err(SettingsError(format!(
                "{name} and {file_var} are both set: give one"
            )));
        }
        let contents = std::fs::read_to_string(path.trim()).map_err(|e| {
            SettingsError(format!("{file_var}={}: cannot read it: {e}", path.trim()))
        })?;
        let value = contents.trim_end_matches(['\n', '\r']).to_owned();
        if value.trim().is_empty() {
            return Err(SettingsError(format!(
                "{file_var}={}: the file is empty",
                path.trim()
            )));
        }
        values.push((name, value));
    }
    Ok(values)
}

/// `url` with `sslrootcert=<ca_file>` added, unless it names one already.
fn with_root_cert(url: String, ca_file: Option<&str>) -> String {
    match ca_file {
        Some(path) if !url.contains("sslrootcert=") => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!(
                "{url}{sep}sslrootcert={}",
                path.replace('%', "%25").replace('&', "%26")
            )
        }
        _ => url,
    }
}

impl Settings {
    /// Reads the environment. Nothing is logged here: some of these are secrets.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_vars(&|name| std::env::var(name).ok())
    }

    /// Reads the variables `get` returns, as [`Settings::from_env`] reads the environment.
    /// Each of [`FILE_VARS`] may instead be given as `NAME_FILE`, a file holding the value
    /// (Docker and Kubernetes secrets).
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let from_files = read_files(get)?;
        let get = |name: &str| {
            from_files
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| get(name))
        };
        let v = Vars(&get);
        let prices = Prices::parse(&v.var("PRICES").unwrap_or_else(|| DEFAULT_PRICES.into()))
            .map_err(|e| SettingsError(format!("PRICES: {e}")))?;
        let stripe_timeout = v.millis("STRIPE_TIMEOUT_MS", 10_000)?;
        let database_url = v
            .var("DATABASE_URL")
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/payments".into());
        let database_direct_url = v
            .var("DATABASE_DIRECT_URL")
            .unwrap_or_else(|| database_url.clone());
        let ca_file = v.var("DATABASE_CA_FILE");
        let settings = Settings {
            database_url: with_root_cert(database_url, ca_file.as_deref()),
            database_direct_url: with_root_cert(database_direct_url, ca_file.as_deref()),
            database_pool_size: v.optional("DATABASE_POOL_SIZE")?,
            redis_url: v
                .var("REDIS_URL")
                .unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            redis_ca_file: v.var("REDIS_CA_FILE").map(PathBuf::from),
            queue_namespace: v
                .var("QUEUE_NAMESPACE")
                .unwrap_or_else(|| "payments".into()),
            api_addr: v.parsed("API_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            merchant_api_key: v.var("MERCHANT_API_KEY").map(Secret::new),
            admin_token: v.var("ADMIN_TOKEN").map(Secret::new),
            prices,
            stripe: StripeSettings {
                secret_key: v.var("STRIPE_SECRET_KEY").map(Secret::new),
                api_base: v
                    .var("STRIPE_API_BASE")
                    .unwrap_or_else(|| "https://api.stripe.com".into()),
                timeout: stripe_timeout,
                publishable_key: v.var("STRIPE_PUBLISHABLE_KEY"),
                sim_public_url: v.var("STRIPE_SIM_PUBLIC_URL"),
                rate_limit: v.parsed("STRIPE_RATE_LIMIT", 25)?,
                max_concurrent_requests: v.count(
                    "STRIPE_MAX_CONCURRENT_REQUESTS",
                    DEFAULT_MAX_CONCURRENT_REQUESTS,
                )?,
                breaker_threshold: v.parsed("STRIPE_BREAKER_THRESHOLD", 5)?,
                breaker_cooldown: v.millis("STRIPE_BREAKER_COOLDOWN_MS", 5_000)?,
                webhook_secret: v.var("STRIPE_WEBHOOK_SECRET").map(Secret::new),
                webhook_tolerance: v
                    .parsed("STRIPE_WEBHOOK_TOLERANCE_SECS", 300)
                    .map(Duration::from_secs)?,
            },
            worker: WorkerSettings {
                concurrency: v.parsed("WORKER_CONCURRENCY", 10)?,
                poll_interval: v.millis("WORKER_POLL_INTERVAL_MS", 100)?,
                heartbeat: v.millis("WORKER_HEARTBEAT_MS", 2_000)?,
                missed_heartbeats: v.parsed("WORKER_MISSED_HEARTBEATS", 3)?,
                retry: RetrySettings {
                    max_attempts: v.parsed("RETRY_MAX_ATTEMPTS", 12)?,
                    base_delay: v.millis("RETRY_BASE_DELAY_MS", 500)?,
                    max_delay: v.millis("RETRY_MAX_DELAY_MS", 30_000)?,
                },
                lease: v.millis("WORKER_LEASE_MS", stripe_timeout.as_millis() as u64 + 5_000)?,
                sweep_interval: v.millis("SWEEP_INTERVAL_MS", 5_000)?,
                sweep_after: v.millis("SWEEP_AFTER_MS", 30_000)?,
                shutdown_timeout: v.millis("WORKER_SHUTDOWN_TIMEOUT_MS", 30_000)?,
                requires_action_timeout: v.millis("REQUIRES_ACTION_TIMEOUT_MS", 3_600_000)?,
                reconcile_interval: v.millis("RECONCILE_INTERVAL_MS", 300_000)?,
                reconcile_window: v.millis("RECONCILE_WINDOW_MS", 3_600_000)?,
                done_retention: v.millis("DONE_JOB_RETENTION_MS", 86_400_000)?,
                done_purge_interval: v.millis("DONE_JOB_PURGE_INTERVAL_MS", 600_000)?,
                analyze_interval: v.millis("WORKER_ANALYZE_INTERVAL_MS", 1_000)?,
                synchronous_commit: match v.var("WORKER_SYNCHRONOUS_COMMIT").as_deref() {
                    None | Some("off") => false,
                    Some("on") => true,
                    Some(other) => {
                        return Err(SettingsError(format!(
                            "WORKER_SYNCHRONOUS_COMMIT=`{other}`: use on or off"
                        )));
                    }
                },
                batch_max: v.count("WORKER_BATCH_MAX", 128)?,
                batch_parallel: v.count("WORKER_BATCH_PARALLEL", 1)?,
                metrics_addr: match v.var("WORKER_METRICS_ADDR").as_deref() {
                    Some("off") => None,
                    None => Some(SocketAddr::from(([127, 0, 0, 1], 9091))),
                    Some(v) => Some(v.parse().map_err(|_| {
                        SettingsError(format!("WORKER_METRICS_ADDR=`{v}` is not an address"))
                    })?),
                },
            },
            http: HttpSettings {
                rate_limit_per_minute: v.parsed("RATE_LIMIT_PER_MINUTE", 6_000)?,
                confirm_rate_limit_per_minute: v.parsed("CONFIRM_RATE_LIMIT_PER_MINUTE", 600)?,
                trusted_proxies: v
                    .var("TRUSTED_PROXIES")
                    .map(|list| {
                        list.split(',')
                            .map(str::trim)
                            .filter(|c| !c.is_empty())
                            .map(|c| {
                                c.parse()
                                    .map_err(|e| SettingsError(format!("TRUSTED_PROXIES: {e}")))
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()?
                    .unwrap_or_default(),
                cors_allowed_origins: v
                    .var("CORS_ALLOWED_ORIGINS")
                    .map(|v| {
                        v.split(',')
                            .map(|o| o.trim().trim_end_matches('/').to_owned())
                            .filter(|o| !o.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                header_read_timeout: v.millis("HTTP_HEADER_READ_TIMEOUT_MS", 10_000)?,
                request_timeout: v.millis("HTTP_REQUEST_TIMEOUT_MS", 15_000)?,
                public_url: v
                    .var("PUBLIC_URL")
                    .map(|u| {
                        let u = u.trim().trim_end_matches('/').to_owned();
                        let scheme_ok = u.starts_with("https://") || u.starts_with("http://");
                        if scheme_ok && !u.contains(['?', '#', ' ']) {
                            Ok(u)
                        } else {
                            Err(SettingsError(
                                "PUBLIC_URL: an http(s) URL without query or fragment".into(),
                            ))
                        }
                    })
                    .transpose()?,
                insert_batch_max: v.count("API_INSERT_BATCH_MAX", 64)?,
                insert_parallel: v.count("API_INSERT_PARALLEL", 1)?,
            },
            merchant_webhooks: webhooks::read(&v)?,
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let bad = |m: &str| Err(SettingsError(m.into()));
        if !(1..=10_000).contains(&self.worker.concurrency) {
            return bad("WORKER_CONCURRENCY must be between 1 and 10000");
        }
        if self
            .database_pool_size
            .is_some_and(|n| !(1..=1_000).contains(&n))
        {
            return bad("DATABASE_POOL_SIZE must be between 1 and 1000");
        }
        if self.worker.retry.max_attempts < 1 {
            return bad("RETRY_MAX_ATTEMPTS must be at least 1");
        }
        if self.worker.lease <= self.stripe.timeout {
            return bad("WORKER_LEASE_MS must be longer than STRIPE_TIMEOUT_MS");
        }
        if self.queue_namespace.is_empty()
            || !self
                .queue_namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
        {
            return bad("QUEUE_NAMESPACE may hold only letters, digits and - _ : .");
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|k| k.expose().len() < 16)
        {
            return bad("ADMIN_TOKEN must be at least 16 characters");
        }
        if self
            .merchant_api_key
            .as_ref()
            .is_some_and(|k| k.expose().len() < 16)
        {
            return bad("MERCHANT_API_KEY must be at least 16 characters");
        }
        if let Some(o) =
            self.http.cors_allowed_origins.iter().find(|o| {
                !(o.starts_with("http://") || o.starts_with("https://")) || o.contains('*')
            })
        {
            return Err(SettingsError(format!(
                "CORS_ALLOWED_ORIGINS: `{o}` is not an http(s) origin (no wildcards)"
            )));
        }
        if self
            .stripe
            .webhook_secret
            .as_ref()
            .is_some_and(|k| k.expose().len() < 16)
        {
            return bad("STRIPE_WEBHOOK_SECRET must be at least 16 characters");
        }
        if self.http.header_read_timeout.is_zero() {
            return bad("HTTP_HEADER_READ_TIMEOUT_MS must be positive");
        }
        if self.http.request_timeout.is_zero() {
            return bad("HTTP_REQUEST_TIMEOUT_MS must be positive");
        }
        if !self.stripe.api_base.starts_with("http://")
            && !self.stripe.api_base.starts_with("https://")
        {
            return bad("STRIPE_API_BASE must be an http(s) URL");
        }
        Ok(())
    }

    /// Redis keys of the charge queue live under `{namespace}:stripe_charge`.
    pub fn charge_queue(&self) -> String {
        crate::queue::charge_queue_name(&self.queue_namespace)
    }
}

#[cfg(test)]
mod tests;
