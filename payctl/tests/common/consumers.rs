//! The consumers that move jobs: the real worker, and bare apalis workers that abort or hold
//! every job they fetch.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use shared::queue::{StripeCharge, queue_config, redis_connection};
use tokio::sync::{Semaphore, oneshot};
use uuid::Uuid;

use super::{Behaviour, Env, Running, WAIT};

async fn abort(_job: StripeCharge) -> Result<(), BoxDynError> {
    Err(Box::new(AbortError::new(
        "test consumer: aborted on purpose",
    )))
}

async fn hold(_job: StripeCharge, gate: Data<Arc<Semaphore>>) -> Result<(), BoxDynError> {
    let _permit = gate.acquire().await;
    Ok(())
}

impl Env {
    /// Starts the real worker (and a stripe-sim for it the first time).
    pub async fn start_real_worker(&mut self) {
        self.start_real_worker_with(stripe_sim::Faults::default())
            .await;
    }

    /// The stripe-sim the workers and payctl talk to, started on first use with `faults`.
    pub async fn sim_with(&mut self, faults: stripe_sim::Faults) -> &stripe_sim::RunningSim {
        if self.sim.is_none() {
            let config = stripe_sim::Config {
                faults,
                ..Default::default()
            };
            let sim = stripe_sim::Sim::spawn(config)
                .await
                .expect("start stripe-sim");
            self.settings.stripe.api_base = sim.base_url();
            self.sim = Some(sim);
        }
        self.sim.as_ref().expect("started above")
    }

    /// Starts the real worker; a stripe-sim with `faults` is started for the first one.
    pub async fn start_real_worker_with(&mut self, faults: stripe_sim::Faults) {
        self.sim_with(faults).await;
        let (stop, rx) = oneshot::channel::<()>();
        let settings = self.settings.clone();
        let task = tokio::spawn(async move {
            worker::startup::Application::build(settings)
                .await
                .unwrap()
                .run_until_stopped(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        self.running.push(Running {
            name: "real worker".into(),
            stop,
            task,
        });
    }

    /// Starts a bare apalis consumer of the charge queue; returns its worker name.
    pub fn start_test_worker(&mut self, behaviour: Behaviour) -> String {
        let name = format!("test-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let config = queue_config(&self.settings.queue_namespace)
            .batch_size(1)
            .heartbeat_interval(self.settings.worker.heartbeat)
            .missed_heartbeats(self.settings.worker.missed_heartbeats);
        let conn = redis_connection(&self.settings.redis_url, None).unwrap();
        let storage = RedisStorage::<StripeCharge>::new(conn).with_config(config);
        let poll = Duration::from_millis(50);
        let (stop, rx) = oneshot::channel::<()>();
        let (worker_name, gate) = (name.clone(), self.gate.clone());
        let monitor = match behaviour {
            Behaviour::Abort => Monitor::new().register(move |_| {
                WorkerBuilder::new(worker_name.clone())
                    .backend(storage.clone().poll_with_interval(poll))
                    .concurrency(1)
                    .build(abort)
            }),
            Behaviour::Hold => Monitor::new().register(move |_| {
                WorkerBuilder::new(worker_name.clone())
                    .backend(storage.clone().poll_with_interval(poll))
                    .concurrency(1)
                    .data(gate.clone())
                    .build(hold)
            }),
        };
        let task = tokio::spawn(async move {
            let _ = monitor
                .shutdown_timeout(Duration::from_secs(5))
                .run_with_signal(async {
                    let _ = rx.await;
                    Ok(())
                })
                .await;
        });
        self.running.push(Running {
            name: name.clone(),
            stop,
            task,
        });
        name
    }

    /// Lets every job held so far finish (a closed gate lets every waiter through); holders
    /// started later hold again.
    pub fn release_held(&mut self) {
        self.gate.close();
        self.gate = Arc::new(Semaphore::new(0));
    }

    /// Stops one consumer and waits until it has: its name stays in `{q}:workers` with its
    /// last heartbeat, as after any clean stop.
    pub async fn stop_worker(&mut self, name: &str) {
        let i = self
            .running
            .iter()
            .position(|r| r.name == name)
            .expect("worker");
        let r = self.running.remove(i);
        let _ = r.stop.send(());
        tokio::time::timeout(WAIT, r.task)
            .await
            .expect("worker stops")
            .unwrap();
    }

    /// Stops every consumer (the real worker included) and waits for them.
    pub async fn stop_all_workers(&mut self) {
        let names: Vec<String> = self.running.iter().map(|r| r.name.clone()).collect();
        self.release_held();
        for n in names {
            self.stop_worker(&n).await;
        }
    }
}
