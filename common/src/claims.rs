//! The worker side of claims of queued tasks, carried by the next
//! `Complete` (used by the worker and by the load bench's simulated ones).
//!
//! A task leased ahead (assigned `queued`) may be taken back for another
//! worker until its holder claims it. The holder claims it as it starts
//! the task, which happens the moment a running task's engine work ends;
//! that task's `Complete` follows within milliseconds, so the claim rides
//! with it (`CompleteRequest.queued_starts`) instead of costing a
//! `StartQueued` call of its own. A claim no `Complete` picks up within
//! [`RIDE`] (the freeing task is uploading a large checkpoint, say), or
//! whose `Complete` got no answer, is asked with `StartQueued` instead.
//! Either way the coordinator settles it once: a claim asked twice gets
//! the same answer.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::proto::v1 as pb;
use tokio::sync::oneshot;

/// How long a claim waits for a `Complete` to carry it before it is asked
/// on its own.
pub const RIDE: Duration = Duration::from_millis(100);

/// The claims waiting for a `Complete` to carry them.
#[derive(Default)]
pub struct Claims {
    pending: Mutex<Vec<Claim>>,
}

struct Claim {
    task_id: String,
    attempt: u32,
    answer: oneshot::Sender<pb::StartQueuedResponse>,
}

/// A claim made, waiting for its answer (see [`Ride::answer`]).
pub struct Ride {
    claims: Arc<Claims>,
    task_id: String,
    attempt: u32,
    answer: oneshot::Receiver<pb::StartQueuedResponse>,
}

/// Claims taken by one `Complete`: answered from its response, or, if it
/// has none for them, dropped (their tasks then ask `StartQueued`).
#[derive(Default)]
pub struct Carried {
    claims: Vec<Claim>,
}

impl Claims {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Claim>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `task_id`'s `attempt`, held queued and starting now.
    pub fn claim(self: &Arc<Self>, task_id: &str, attempt: u32) -> Ride {
        let (tx, rx) = oneshot::channel();
        self.lock().push(Claim {
            task_id: task_id.to_string(),
            attempt,
            answer: tx,
        });
        Ride {
            claims: self.clone(),
            task_id: task_id.to_string(),
            attempt,
            answer: rx,
        }
    }

    /// Every waiting claim, for a `Complete` about to be sent.
    pub fn take(&self) -> Carried {
        Carried {
            claims: std::mem::take(&mut *self.lock()),
        }
    }
}

impl Ride {
    /// The coordinator's answer, carried by a `Complete`; `None` when no
    /// `Complete` took the claim within [`RIDE`] (it is withdrawn) or its
    /// `Complete` brought no answer: ask `StartQueued` then.
    pub async fn answer(mut self) -> Option<pb::StartQueuedResponse> {
        if let Ok(answer) = tokio::time::timeout(RIDE, &mut self.answer).await {
            return answer.ok();
        }
        let withdrawn = {
            let mut pending = self.claims.lock();
            let at = pending
                .iter()
                .position(|c| c.task_id == self.task_id && c.attempt == self.attempt);
            at.map(|i| pending.remove(i)).is_some()
        };
        if withdrawn {
            None
        } else {
            // Taken meanwhile: its Complete answers it, or drops it.
            self.answer.await.ok()
        }
    }
}

impl Carried {
    /// What the `Complete` asks.
    pub fn requests(&self) -> Vec<pb::RunningTask> {
        self.claims
            .iter()
            .map(|c| pb::RunningTask {
                task_id: c.task_id.clone(),
                attempt: c.attempt,
            })
            .collect()
    }

    /// Hands each claim its answer, in order; claims without one are
    /// dropped (a coordinator of an earlier version answers none).
    pub fn answer(self, answers: Vec<pb::StartQueuedResponse>) {
        for (claim, answer) in self.claims.into_iter().zip(answers) {
            // The task may have ended meanwhile: nobody to tell.
            let _ = claim.answer.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yes() -> pb::StartQueuedResponse {
        pb::StartQueuedResponse {
            start: true,
            reason: String::new(),
        }
    }

    #[tokio::test]
    async fn a_claim_is_answered_by_the_complete_that_carries_it() {
        let claims = Arc::new(Claims::default());
        let a = claims.claim("t1", 1);
        let b = claims.claim("t2", 3);
        let carried = claims.take();
        assert_eq!(
            carried
                .requests()
                .iter()
                .map(|r| (r.task_id.as_str(), r.attempt))
                .collect::<Vec<_>>(),
            vec![("t1", 1), ("t2", 3)]
        );
        assert!(claims.take().requests().is_empty(), "taken once");
        let no = pb::StartQueuedResponse {
            start: false,
            reason: "taken back".into(),
        };
        carried.answer(vec![yes(), no.clone()]);
        assert_eq!(a.answer().await, Some(yes()));
        assert_eq!(b.answer().await, Some(no));
    }

    #[tokio::test]
    async fn a_claim_nobody_carries_is_withdrawn_and_one_left_unanswered_says_so() {
        let claims = Arc::new(Claims::default());
        // Not carried within RIDE: withdrawn, to be asked on its own.
        let a = claims.claim("t1", 1);
        assert_eq!(a.answer().await, None);
        assert!(claims.take().requests().is_empty(), "withdrawn");
        // Carried by a Complete whose answer has none for it (an older
        // coordinator, or a Complete that failed): no answer either.
        let b = claims.claim("t2", 1);
        let c = claims.claim("t3", 1);
        claims.take().answer(vec![yes()]);
        assert_eq!(b.answer().await, Some(yes()));
        assert_eq!(c.answer().await, None);
        // Taken just after RIDE ran out but before it was withdrawn: the
        // Complete's answer still counts.
        let d = claims.claim("t4", 2);
        let carried = claims.take();
        let waiting = tokio::spawn(d.answer());
        tokio::time::sleep(RIDE * 2).await;
        carried.answer(vec![yes()]);
        assert_eq!(waiting.await.unwrap(), Some(yes()));
    }
}
