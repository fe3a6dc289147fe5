//! Sends one task attempt's measurements to the coordinator, in order.
//!
//! The engine's thread drops each measurement into an unbounded channel and
//! never waits on the network. A background task drains that channel into
//! `Report` calls numbered 1, 2, 3… per attempt, batching whatever has
//! queued up. A report that fails in transit is resent with the *same*
//! number: the coordinator stores each number once, so a resend after a lost
//! answer is harmless, and nothing is lost while the coordinator is away.
//!
//! A batch waits up to [`LINGER`] for more measurements before it goes. The
//! batch still waiting when the task ends is not sent on its own: it goes in
//! the task's `Complete` ([`Reporter::finish_holding_last`]), stored in the
//! same transaction, which saves the task's last round trip.

use std::sync::Arc;
use std::time::Duration;

use ridgeline_common::proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::rpc::{self, Backoff, Client, Refusal};
use super::task::{StopReason, TaskControl};

/// Most measurements in one `Report` (the coordinator accepts 10 000; small
/// batches keep each call, and each resend, quick).
pub(crate) const MAX_BATCH: usize = 64;

/// How long a batch waits for more measurements before it is sent: live
/// curves are that much late, and a task's last batch is usually still
/// waiting when the task ends, so it can ride with `Complete`.
pub(crate) const LINGER: Duration = Duration::from_millis(50);

/// A batch not sent yet: the report it would have been.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Held {
    pub(crate) seq: u64,
    pub(crate) items: Vec<pb::Progress>,
}

/// Where the engine's thread puts measurements (`send` never blocks).
pub(crate) type ProgressSender = mpsc::UnboundedSender<pb::Progress>;

/// How a reporter ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReporterEnd {
    /// Every measurement was acknowledged.
    Flushed,
    /// The attempt is no longer ours (`FAILED_PRECONDITION` / `NOT_FOUND`):
    /// the rest was dropped, and nothing more may be sent for it.
    LeaseLost(String),
    /// The coordinator refused a report for another reason.
    Refused(String),
}

/// The reporter of one task attempt. Dropping it stops the background task
/// (and drops whatever was still queued).
pub(crate) struct Reporter {
    tx: ProgressSender,
    handle: Option<JoinHandle<(ReporterEnd, Option<Held>)>>,
}

/// Where one attempt's reports go.
struct Sink {
    client: Client,
    worker_id: watch::Receiver<String>,
    task_id: String,
    attempt: u32,
    control: Arc<TaskControl>,
}

impl Reporter {
    pub(crate) fn spawn(
        client: Client,
        worker_id: watch::Receiver<String>,
        task_id: String,
        attempt: u32,
        control: Arc<TaskControl>,
    ) -> Reporter {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = Sink {
            client,
            worker_id,
            task_id,
            attempt,
            control,
        };
        // The background task logs under the task's span.
        let handle = tokio::spawn(send_all(sink, rx).in_current_span());
        Reporter {
            tx,
            handle: Some(handle),
        }
    }

    /// A handle for the engine's thread.
    pub(crate) fn sender(&self) -> ProgressSender {
        self.tx.clone()
    }

    /// Waits until everything queued so far was acknowledged, except the
    /// batch still waiting (if any), which is returned unsent for the
    /// caller to deliver (with `Complete`). Every [`Reporter::sender`] must
    /// be dropped first.
    pub(crate) async fn finish_holding_last(mut self) -> (ReporterEnd, Option<Held>) {
        let Some(handle) = self.handle.take() else {
            return (
                ReporterEnd::Refused("the reporter was already finished".into()),
                None,
            );
        };
        // Closing our sender ends the background task once it has drained
        // the channel.
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, closed));
        match handle.await {
            Ok(out) => out,
            Err(e) => (
                ReporterEnd::Refused(format!("the reporter task ended abnormally: {e}")),
                None,
            ),
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

async fn send_all(
    sink: Sink,
    mut rx: mpsc::UnboundedReceiver<pb::Progress>,
) -> (ReporterEnd, Option<Held>) {
    let mut seq = 0u64;
    while let Some(first) = rx.recv().await {
        let mut items = vec![first];
        let until = tokio::time::Instant::now() + LINGER;
        let mut closed = false;
        while items.len() < MAX_BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        seq += 1;
        if closed {
            // The task ended while this batch waited: its caller sends it.
            return (ReporterEnd::Flushed, Some(Held { seq, items }));
        }
        match send(&sink, seq, items).await {
            ReporterEnd::Flushed => {}
            end => {
                rx.close();
                return (end, None);
            }
        }
    }
    (ReporterEnd::Flushed, None)
}

/// Sends report `seq`, resending through transient failures.
async fn send(sink: &Sink, seq: u64, items: Vec<pb::Progress>) -> ReporterEnd {
    let mut backoff = Backoff::new();
    loop {
        let request = pb::ReportRequest {
            worker_id: sink.worker_id.borrow().clone(),
            task_id: sink.task_id.clone(),
            attempt: sink.attempt,
            seq,
            items: items.clone(),
        };
        let mut c = sink.client.clone();
        match rpc::call(rpc::RPC_TIMEOUT, c.report(request)).await {
            Ok(answer) => {
                if answer.stop {
                    tracing::info!("the coordinator asked to stop (job cancelled)");
                    sink.control.stop(StopReason::Coordinator);
                }
                return ReporterEnd::Flushed;
            }
            Err(status) => match rpc::classify(&status) {
                Refusal::Transient => {
                    let delay = backoff.next_delay();
                    tracing::warn!(seq, error = %rpc::describe(&status), ?delay, "report not delivered; resending");
                    tokio::time::sleep(delay).await;
                }
                Refusal::Precondition | Refusal::NotFound => {
                    let message = rpc::describe(&status);
                    tracing::warn!(seq, error = %message, "the attempt is no longer ours; stopping it");
                    sink.control.stop(StopReason::LeaseLost);
                    return ReporterEnd::LeaseLost(message);
                }
                Refusal::Permanent => {
                    let message = format!(
                        "the coordinator refused report {seq}: {}",
                        rpc::describe(&status)
                    );
                    tracing::error!(seq, error = %message, "report refused");
                    sink.control.stop(StopReason::Refused);
                    return ReporterEnd::Refused(message);
                }
            },
        }
    }
}
