//! The Redis key layout of one apalis-redis 1.0 queue, named by apalis' own `Config` so a
//! library upgrade that renames a key shows up here (and in the tests) rather than as empty
//! output. The two keys `Config` cannot name without a live worker context (a worker's
//! in-flight set, a task's meta hash) are built the way apalis' Lua scripts build them.

use apalis_redis::Config;

#[derive(Clone, Debug)]
pub struct Keys {
    config: Config,
}

impl Keys {
    pub fn new(namespace: &str) -> Self {
        Self {
            config: crate::queue::queue_config(namespace),
        }
    }

    /// The queue name, `{namespace}:stripe_charge`.
    pub fn queue(&self) -> &str {
        self.config.queue.as_ref()
    }

    /// Sorted set task id → unix second it becomes due; every push lands here first.
    pub fn scheduled(&self) -> String {
        self.config.scheduled_jobs_set()
    }

    /// List of task ids due and waiting for a worker.
    pub fn active(&self) -> String {
        self.config.active_jobs_list()
    }

    /// Set of task ids fetched by `worker` (`Config::inflight_set_for`).
    pub fn inflight(&self, worker: &str) -> String {
        format!("{}:{worker}", self.config.inflight_jobs_set())
    }

    pub fn done(&self) -> String {
        self.config.done_jobs_set()
    }

    pub fn dead(&self) -> String {
        self.config.dead_jobs_set()
    }

    /// Hash task id → payload (the job's JSON bytes).
    pub fn data(&self) -> String {
        self.config.job_data_hash()
    }

    /// Prefix of the per-task meta hashes; the Lua scripts append `:{task id}`.
    pub fn meta_prefix(&self) -> String {
        self.config.job_meta_hash()
    }

    pub fn meta(&self, task_id: &str) -> String {
        format!("{}:{task_id}", self.meta_prefix())
    }

    /// Sorted set worker name → unix second of its last heartbeat.
    pub fn workers(&self) -> String {
        self.config.workers_set()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_charge_queue() {
        let k = Keys::new("payments");
        assert_eq!(k.queue(), "payments:stripe_charge");
        assert_eq!(k.scheduled(), "payments:stripe_charge:scheduled");
        assert_eq!(k.active(), "payments:stripe_charge:active");
        assert_eq!(k.inflight("w1"), "payments:stripe_charge:inflight:w1");
        assert_eq!(k.done(), "payments:stripe_charge:done");
        assert_eq!(k.dead(), "payments:stripe_charge:dead");
        assert_eq!(k.data(), "payments:stripe_charge:data");
        assert_eq!(k.meta("01J"), "payments:stripe_charge:meta:01J");
        assert_eq!(k.workers(), "payments:stripe_charge:workers");
    }
}
