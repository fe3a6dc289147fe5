//! Prometheus metrics of the coordinator, served at `/metrics` on the HTTP
//! port (see [`crate::dashboard`]).
//!
//! Counters move as the scheduler commits changes (task transitions, events
//! written, leases expired); a histogram times every Lease call inside the
//! coordinator; gauges (workers by state, tasks by state, jobs by state)
//! are read from the store at each scrape, so they are right after a
//! restart too. Counters start from zero with the process, as Prometheus
//! expects (`rate()` handles the reset).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use ridgeline_common::proto::v1 as pb;

type Labels = Vec<(&'static str, &'static str)>;

/// Observes the time since it was made into its histogram when dropped.
#[derive(Debug)]
pub struct Timer<'a> {
    histogram: &'a Histogram,
    start: std::time::Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// The coordinator's metrics; cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Task transitions committed: leased, done, failed, requeued, cancelled.
    tasks: Family<Labels, Counter>,
    leases_expired: Counter,
    events: Counter,
    reports: Counter,
    /// Claims of queued tasks answered: started, or refused (taken back);
    /// asked by StartQueued or carried by a Complete.
    queued_starts: Family<Labels, Counter>,
    /// Looks at the queue for a Lease (a long poll may look several
    /// times), by whether the heartbeat's renewals were committed before
    /// the answer or deferred (nothing to hand out: no commit of its own).
    leases: Family<Labels, Counter>,
    lease_seconds: Histogram,
    wait_seconds: Histogram,
    workers: Family<Labels, Gauge>,
    task_states: Family<Labels, Gauge>,
    job_states: Family<Labels, Gauge>,
}

/// What the store says at a scrape.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// `(state, count)`: active, lost, quarantined.
    pub workers: Vec<(&'static str, i64)>,
    /// `(state, count)`: pending (the queue), leased, done, failed, cancelled.
    pub tasks: Vec<(&'static str, i64)>,
    /// `(state, count)`: queued, running, succeeded, failed, cancelled.
    pub jobs: Vec<(&'static str, i64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ridgeline");
        let tasks = Family::<Labels, Counter>::default();
        registry.register(
            "task_transitions",
            "Task state changes committed (leased, done, failed, requeued, cancelled)",
            tasks.clone(),
        );
        let leases_expired = Counter::default();
        registry.register(
            "leases_expired",
            "Leases that ran out without a heartbeat (their tasks were requeued)",
            leases_expired.clone(),
        );
        let events = Counter::default();
        registry.register(
            "events_written",
            "Job events appended to the event log",
            events.clone(),
        );
        let reports = Counter::default();
        registry.register(
            "reports_stored",
            "Worker reports stored (resends are acknowledged, not counted)",
            reports.clone(),
        );
        let queued_starts = Family::<Labels, Counter>::default();
        registry.register(
            "queued_starts",
            "Workers asking to start a task they held queued (leased ahead), by answer (started, or refused: taken back for an idle worker) and by the call that asked (start_queued, or complete: carried by a completion)",
            queued_starts.clone(),
        );
        let leases = Family::<Labels, Counter>::default();
        registry.register(
            "leases",
            "Looks at the queue for a Lease (heartbeat) call, by whether its lease renewals were committed before the answer (committed) or deferred to ride with the next batch of changes, the worker asking for no task (deferred)",
            leases.clone(),
        );
        // 0.1 ms … ~0.4 s.
        let lease_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1e-4, 2.0, 13),
        );
        registry.register(
            "lease_duration_seconds",
            "Time the coordinator takes to answer a Lease (heartbeat) call",
            lease_seconds.clone(),
        );
        // 10 ms … ~5.8 h.
        let wait_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.01, 4.0, 12),
        );
        registry.register(
            "task_wait_seconds",
            "Time a task waited in the queue, from ready (stored, previous chunk done, or re-queued) to leased",
            wait_seconds.clone(),
        );
        let workers = Family::<Labels, Gauge>::default();
        registry.register(
            "workers",
            "Registered workers by state (active, lost, quarantined)",
            workers.clone(),
        );
        let task_states = Family::<Labels, Gauge>::default();
        registry.register(
            "tasks",
            "Tasks by state; state=\"pending\" is the queue depth",
            task_states.clone(),
        );
        let job_states = Family::<Labels, Gauge>::default();
        registry.register("jobs", "Jobs by state", job_states.clone());
        Self {
            registry,
            tasks,
            leases_expired,
            events,
            reports,
            queued_starts,
            leases,
            lease_seconds,
            wait_seconds,
            workers,
            task_states,
            job_states,
        }
    }

    /// Counts what a committed change published.
    pub fn committed<'a>(&self, events: impl IntoIterator<Item = &'a pb::JobEvent>) {
        for e in events {
            self.events.inc();
            if let Some(pb::job_event::Kind::Task(t)) = &e.kind {
                let state = match pb::TaskState::try_from(t.state) {
                    Ok(pb::TaskState::Leased) => "leased",
                    Ok(pb::TaskState::Done) => "done",
                    Ok(pb::TaskState::Failed) => "failed",
                    Ok(pb::TaskState::Pending) => "requeued",
                    Ok(pb::TaskState::Cancelled) => "cancelled",
                    _ => continue,
                };
                self.tasks.get_or_create(&vec![("to", state)]).inc();
            }
        }
    }

    pub fn leases_expired(&self, n: usize) {
        self.leases_expired.inc_by(n as u64);
    }

    /// A task leased `ms` after it became ready.
    pub fn task_waited(&self, ms: i64) {
        self.wait_seconds.observe(ms as f64 / 1e3);
    }

    /// A claim of a queued task answered: `start` or refused; asked by
    /// StartQueued, or carried by a Complete (`carried`).
    pub fn queued_start(&self, start: bool, carried: bool) {
        let answer = if start { "started" } else { "refused" };
        let via = if carried { "complete" } else { "start_queued" };
        self.queued_starts
            .get_or_create(&vec![("answer", answer), ("via", via)])
            .inc();
    }

    /// A look at the queue for a Lease: its renewals `committed` before
    /// the answer, or deferred.
    pub fn heartbeat(&self, committed: bool) {
        let renewals = if committed { "committed" } else { "deferred" };
        self.leases
            .get_or_create(&vec![("renewals", renewals)])
            .inc();
    }

    pub fn report_stored(&self) {
        self.reports.inc();
    }

    /// Times a Lease call until the returned guard is dropped.
    pub fn lease_timer(&self) -> Timer<'_> {
        Timer {
            histogram: &self.lease_seconds,
            start: std::time::Instant::now(),
        }
    }

    /// The text exposition of every metric, with the gauges set from
    /// `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        for (family, values) in [
            (&self.workers, &snapshot.workers),
            (&self.task_states, &snapshot.tasks),
            (&self.job_states, &snapshot.jobs),
        ] {
            for (state, n) in values {
                family.get_or_create(&vec![("state", *state)]).set(*n);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_and_gauges_are_exposed() {
        let m = Metrics::new();
        let task = |state: pb::TaskState| pb::JobEvent {
            kind: Some(pb::job_event::Kind::Task(pb::TaskEvent {
                state: state as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        m.committed(&[task(pb::TaskState::Leased), task(pb::TaskState::Done)]);
        m.committed(&[task(pb::TaskState::Leased)]);
        m.leases_expired(2);
        drop(m.lease_timer());
        m.task_waited(1500);
        m.queued_start(true, true);
        m.queued_start(false, false);
        m.queued_start(false, false);
        m.heartbeat(false);
        let text = m.render(&Snapshot {
            workers: vec![("active", 3), ("lost", 1)],
            tasks: vec![("pending", 7)],
            jobs: vec![("running", 1)],
        });
        for line in [
            "ridgeline_task_transitions_total{to=\"leased\"} 2",
            "ridgeline_task_transitions_total{to=\"done\"} 1",
            "ridgeline_events_written_total 3",
            "ridgeline_leases_total{renewals=\"deferred\"} 1",
            "ridgeline_leases_expired_total 2",
            "ridgeline_workers{state=\"active\"} 3",
            "ridgeline_tasks{state=\"pending\"} 7",
            "ridgeline_lease_duration_seconds_count 1",
            "ridgeline_task_wait_seconds_count 1",
            "ridgeline_task_wait_seconds_sum 1.5",
            "ridgeline_queued_starts_total{answer=\"started\",via=\"complete\"} 1",
            "ridgeline_queued_starts_total{answer=\"refused\",via=\"start_queued\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
