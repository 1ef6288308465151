//! The command line: subcommands, their arguments, and the dispatch that prints a report as
//! a table or, with `--json`, as JSON.

use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgGroup, Parser, Subcommand};
use shared::settings::Settings;

use crate::commands::{discrepancies, list, purge, reconcile, retry, show, stats, stuck, webhooks};
use crate::ctx::{Ctx, Report};
use crate::duration;
use shared::queue::task::JobState;

/// Inspect and steer the charge queue (Redis) and the payments (Postgres).
///
/// Configured like the services: DATABASE_URL, REDIS_URL, QUEUE_NAMESPACE,
/// WORKER_HEARTBEAT_MS, WORKER_MISSED_HEARTBEATS. Durations: 30s, 5m, 1h, 2d.
#[derive(Debug, Parser)]
#[command(name = "payctl", version)]
pub struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Jobs per queue state, workers and their heartbeats, transactions per state.
    Stats,
    /// Dead jobs (apalis gave up on them) with their last error; most recent first.
    Dead {
        /// At most this many jobs.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// The jobs in one queue state.
    List {
        #[arg(long, value_parser = job_state())]
        state: JobState,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Put dead jobs back on the schedule (the Stripe idempotency key makes a retry harmless).
    #[command(group(ArgGroup::new("which").required(true).args(["task_id", "all_dead"])))]
    Retry {
        /// The dead job's task id.
        task_id: Option<String>,
        /// Every job in the dead set.
        #[arg(long)]
        all_dead: bool,
    },
    /// A job and its transaction: give a task id, or a transaction id to see all its jobs.
    Show { id: String },
    /// Unfinished payments older than a threshold, and why they are not moving.
    Stuck {
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration::parse)]
        older_than: Duration,
        /// At most this many transactions, oldest first.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Where Stripe's word contradicted ours: corrections, likely double charges, and the rest.
    Discrepancies {
        /// Found within this long ago.
        #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = duration::parse)]
        since: Duration,
        /// At most this many, newest first.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Compare Postgres with Stripe's list of intents created within the window; fix what
    /// Stripe's word decides, record the rest as discrepancies (needs STRIPE_SECRET_KEY).
    Reconcile {
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = duration::parse)]
        since: Duration,
    },
    /// The merchant's webhooks: endpoints, deliveries, sending again.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Delete done jobs (set member, payload, meta) finished longer ago than the threshold.
    PurgeDone {
        #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
        older_than: Duration,
        /// Count what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Each endpoint's health and the newest deliveries.
    List {
        /// Only deliveries in this state.
        #[arg(long, value_parser = ["pending", "delivered", "failed"])]
        state: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// One event: its body, its deliveries and every attempt.
    Show { event_id: String },
    /// Send an event again to every endpoint, or every failed delivery of a window.
    #[command(group(ArgGroup::new("which").required(true).args(["event_id", "failed"])))]
    Redeliver {
        event_id: Option<String>,
        /// Every delivery that gave up, or whose last attempt failed.
        #[arg(long, requires = "since")]
        failed: bool,
        /// With `--failed`: deliveries created within this long ago.
        #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
        since: Option<Duration>,
    },
}

/// `--state`: one of the places a task can be listed from, with clap's list of them in help.
fn job_state() -> impl TypedValueParser<Value = JobState> {
    PossibleValuesParser::new(JobState::LISTABLE.map(JobState::as_str))
        .map(|s: String| JobState::parse(&s).unwrap_or(JobState::Nowhere))
}

/// Runs the command against the environment's Postgres and Redis and prints its report.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let mut ctx = Ctx::connect(settings).await?;
    let json = cli.json;
    match cli.command {
        Command::Stats => emit(json, &stats::run(&mut ctx).await?),
        Command::Dead { limit } => emit(
            json,
            &list::run(&mut ctx, JobState::Dead, limit as usize).await?,
        ),
        Command::List { state, limit } => {
            emit(json, &list::run(&mut ctx, state, limit as usize).await?)
        }
        Command::Retry { task_id, all_dead } => {
            let report = match task_id {
                Some(id) if !all_dead => retry::one(&mut ctx, &id).await?,
                _ => retry::all_dead(&mut ctx).await?,
            };
            emit(json, &report)
        }
        Command::Show { id } => emit(json, &show::run(&mut ctx, &id).await?),
        Command::Stuck { older_than, limit } => {
            emit(json, &stuck::run(&mut ctx, older_than, limit.into()).await?)
        }
        Command::Discrepancies { since, limit } => emit(
            json,
            &discrepancies::run(&mut ctx, since, limit.into()).await?,
        ),
        Command::Reconcile { since } => emit(json, &reconcile::run(&mut ctx, since).await?),
        Command::Webhooks { command } => match command {
            WebhooksCommand::List { state, limit } => emit(
                json,
                &webhooks::list(&mut ctx, state.as_deref(), limit.into()).await?,
            ),
            WebhooksCommand::Show { event_id } => {
                emit(json, &webhooks::show(&mut ctx, &event_id).await?)
            }
            WebhooksCommand::Redeliver {
                event_id, since, ..
            } => match (event_id, since) {
                (Some(id), _) => emit(json, &webhooks::redeliver(&mut ctx, &id).await?),
                (None, Some(since)) => {
                    emit(json, &webhooks::redeliver_failed(&mut ctx, since).await?)
                }
                (None, None) => anyhow::bail!("give an event id, or --failed --since"),
            },
        },
        Command::PurgeDone {
            older_than,
            dry_run,
        } => emit(json, &purge::run(&mut ctx, older_than, dry_run).await?),
    }
}

fn emit(json: bool, report: &impl Report) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.human());
    }
    match report.partial_failure() {
        Some(why) => anyhow::bail!(why),
        None => Ok(()),
    }
}

/// An error as one line: clap's usage hints and blank lines dropped, the rest joined.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("payctl").chain(args.iter().copied()))
    }

    #[test]
    fn durations_are_checked_while_parsing() {
        let err = parse(&["purge-done", "--older-than", "5x"]).unwrap_err();
        let line = one_line(&err.render().to_string());
        assert!(line.contains("unknown unit `x`"), "{line}");
        assert!(!line.contains('\n'));
        assert!(parse(&["stuck", "--older-than", "2d", "--json"]).is_ok());
    }

    #[test]
    fn retry_needs_an_id_or_all_dead_but_not_both() {
        assert!(parse(&["retry"]).is_err());
        assert!(parse(&["retry", "01J", "--all-dead"]).is_err());
        assert!(parse(&["retry", "01J"]).is_ok());
        assert!(parse(&["retry", "--all-dead"]).is_ok());
    }

    #[test]
    fn purge_needs_a_threshold() {
        let err = parse(&["purge-done"]).unwrap_err();
        assert!(one_line(&err.render().to_string()).contains("--older-than"));
    }
}
