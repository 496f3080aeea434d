//! The state one queue's backend, its ack layer and its background tasks share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::task::AtomicWaker;

use super::acks::AckBuffer;
use super::handoffs::Handoffs;
use crate::broker::{Ack, Broker, Lease};
use crate::clock::Clock;
use crate::job::JobOptions;

pub struct Shared {
    pub broker: Arc<dyn Broker>,
    pub clock: Arc<dyn Clock>,
    pub queue: &'static str,
    pub options: JobOptions,
    /// Deliveries leased by this worker whose run has not ended (fetched or running), by
    /// `(id, attempt)`: they hold the worker's slots and their leases are renewed.
    held: Mutex<HashMap<(String, u32), Lease>>,
    /// Deliveries handed to apalis whose run has not ended: at most the concurrency.
    running: AtomicUsize,
    /// How long runs take: a moving average (ns), `u64::MAX` before the first run ends.
    run_average_ns: AtomicU64,
    /// The worker's task while it waits for a free slot.
    pub slot_waker: AtomicWaker,
    pub acks: AckBuffer,
    pub handoffs: Arc<Handoffs>,
}

impl Shared {
    pub fn new(
        broker: Arc<dyn Broker>,
        clock: Arc<dyn Clock>,
        queue: &'static str,
        options: JobOptions,
        handoffs: Arc<Handoffs>,
    ) -> Self {
        Self {
            broker,
            clock,
            queue,
            options,
            held: Mutex::default(),
            running: AtomicUsize::new(0),
            run_average_ns: AtomicU64::new(u64::MAX),
            slot_waker: AtomicWaker::new(),
            acks: AckBuffer::default(),
            handoffs,
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<(String, u32), Lease>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn hold(&self, lease: &Lease) {
        self.held()
            .insert((lease.id.clone(), lease.attempt), lease.clone());
    }

    pub fn held_count(&self) -> usize {
        self.held().len()
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// A delivery is handed to apalis to run.
    pub fn run_started(&self) {
        self.running.fetch_add(1, Ordering::AcqRel);
    }

    /// A run ended (or its future was dropped): it counts in the average when it took `took`.
    /// Call before [`finish`](Self::finish) or [`release`](Self::release), which wake the worker.
    pub fn run_ended(&self, took: Option<Duration>) {
        // Saturating: a count that cannot go below zero.
        let _ = self
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if let Some(took) = took {
            let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            // Only the backend's ack layers write it; a lost update between two of them costs
            // one sample.
            let average = match self.run_average_ns.load(Ordering::Acquire) {
                u64::MAX => sample,
                // An exponential moving average over about the last eight runs.
                old => old - old / 8 + sample / 8,
            };
            self.run_average_ns.store(average, Ordering::Release);
        }
    }

    /// The recent runs' average duration, `None` before the first run ended.
    pub fn run_average(&self) -> Option<Duration> {
        match self.run_average_ns.load(Ordering::Acquire) {
            u64::MAX => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    pub fn held_leases(&self) -> Vec<Lease> {
        self.held().values().cloned().collect()
    }

    /// A delivery's run ended (or it is handed back): its ack waits for the next send and its
    /// slot is free at once.
    pub fn finish(&self, ack: Ack) {
        let lease = ack.lease();
        self.held().remove(&(lease.id.clone(), lease.attempt));
        self.acks.push(ack);
        self.slot_waker.wake();
    }

    /// Hands deliveries back (ready again at once, first in line, no attempt burnt).
    pub fn release(&self, leases: Vec<Lease>) {
        if leases.is_empty() {
            return;
        }
        tracing::info!(
            queue = self.queue,
            count = leases.len(),
            "handing back jobs that had not finished"
        );
        {
            let mut held = self.held();
            for lease in &leases {
                held.remove(&(lease.id.clone(), lease.attempt));
            }
        }
        self.acks
            .extend(leases.into_iter().map(|lease| Ack::Release { lease }));
        self.slot_waker.wake();
    }

    /// Sends every pending ack now.
    pub async fn flush(&self) {
        self.acks
            .flush(self.broker.as_ref(), self.clock.as_ref(), self.queue)
            .await;
    }

    /// [`release`](Self::release) and a flush on a background task: for `Drop`, which cannot
    /// wait. The process waits for it through [`Handoffs`].
    pub fn release_detached(self: &Arc<Self>, leases: Vec<Lease>) {
        self.release(leases);
        let shared = self.clone();
        if !self.handoffs.spawn(async move { shared.flush().await }) {
            tracing::warn!(
                queue = self.queue,
                "no runtime to send the last acks; those jobs run again when their leases expire"
            );
        }
    }
}
