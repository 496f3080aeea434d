//! Object storage that fails on command: [`FaultyObjectStore`] wraps the domain's
//! [`ObjectStorage`] and, before every call, asks a shared [`FaultSwitch`] what to do. For
//! tests, outage scenarios and the circuit breaker's tests; compiled only with the `testing`
//! feature, so it never reaches the product.
//!
//! Duties:
//! 1. Delegate every [`ObjectStorage`] call (and every call on a multipart upload it hands out)
//!    to the wrapped storage, unchanged, while the switch says [`FaultMode::Healthy`].
//! 2. Otherwise apply the switch's [`Fault`] to the calls it covers ([`Fault::only`]):
//!    - [`FaultMode::Fail`]: return `object_store::Error::Generic` naming the injected outage
//!      ([`is_injected`] recognises it); the wrapped storage is not called.
//!    - [`FaultMode::Hang`]: wait until the switch changes, then decide again (a test "restores
//!      the network" with [`FaultSwitch::heal`], or drops the caller's future: a crash).
//!    - [`FaultMode::Slow`]: sleep, then delegate.
//!
//!    A fault can let the next N covered calls through first ([`Fault::after`]): e.g. fail the
//!    third part of a multipart upload, after two parts were stored.
//! 3. Count calls per [`Op`] (every call, whatever the outcome) and calls currently hanging.
//!
//! A failed or hung call never reaches the wrapped storage, so what a caller sees afterwards is
//! exactly what the real store holds. The switch is cheap to clone; all clones share one state.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, PutPayload, PutResult, UploadPart};
use tokio::sync::watch;

use crate::traces::objects::ObjectStorage;

/// The `store` named in injected errors.
pub const STORE_NAME: &str = "FaultyObjectStore";

/// One kind of call on the storage (or on a multipart upload from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `put`: a single-request write.
    Put,
    /// `start_multipart`: starting a multipart upload.
    StartMultipart,
    /// One part of a multipart upload.
    PutPart,
    /// Completing a multipart upload (the object appears).
    CompleteMultipart,
    /// Aborting a multipart upload.
    AbortMultipart,
    /// `get` and `get_range`.
    Get,
    /// `delete`.
    Delete,
}

impl Op {
    /// Every operation, in counter order.
    pub const ALL: [Op; 7] = [
        Op::Put,
        Op::StartMultipart,
        Op::PutPart,
        Op::CompleteMultipart,
        Op::AbortMultipart,
        Op::Get,
        Op::Delete,
    ];

    /// Every write: what "the bucket is read-only" refuses.
    pub const WRITES: [Op; 6] = [
        Op::Put,
        Op::StartMultipart,
        Op::PutPart,
        Op::CompleteMultipart,
        Op::AbortMultipart,
        Op::Delete,
    ];

    fn slot(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a covered call meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    Healthy,
    Fail,
    Hang,
    Slow(Duration),
}

/// The switch's setting: a mode, the operations it covers, and how many covered calls still
/// pass before it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub mode: FaultMode,
    /// `None`: every operation.
    pub ops: Option<Vec<Op>>,
    /// Covered calls that still pass untouched (each one that passes counts down).
    pub after: u64,
}

impl Fault {
    pub fn healthy() -> Self {
        Self::with_mode(FaultMode::Healthy)
    }

    pub fn fail() -> Self {
        Self::with_mode(FaultMode::Fail)
    }

    pub fn hang() -> Self {
        Self::with_mode(FaultMode::Hang)
    }

    pub fn slow(delay: Duration) -> Self {
        Self::with_mode(FaultMode::Slow(delay))
    }

    fn with_mode(mode: FaultMode) -> Self {
        Self {
            mode,
            ops: None,
            after: 0,
        }
    }

    /// Applies to `ops` only; other calls pass (and do not count down [`Self::after`]).
    pub fn only(mut self, ops: &[Op]) -> Self {
        self.ops = Some(ops.to_vec());
        self
    }

    /// Lets the next `n` covered calls through first.
    pub fn after(mut self, n: u64) -> Self {
        self.after = n;
        self
    }

    fn covers(&self, op: Op) -> bool {
        self.ops.as_ref().is_none_or(|ops| ops.contains(&op))
    }
}

/// The error an injected failure carries (inside `object_store::Error::Generic`).
#[derive(Debug, thiserror::Error)]
#[error("injected outage: {op} refused by fault injection")]
pub struct InjectedFault {
    pub op: Op,
}

/// Whether `error` is one this module injected (not a real store error).
pub fn is_injected(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::Generic { store, source }
        if *store == STORE_NAME && source.is::<InjectedFault>())
}

fn injected(op: Op) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE_NAME,
        source: Box::new(InjectedFault { op }),
    }
}

/// What one call does, decided under the switch's lock.
enum Verdict {
    Pass,
    Fail,
    Hang,
    Slow(Duration),
}

struct SwitchState {
    fault: watch::Sender<Fault>,
    calls: [AtomicU64; Op::ALL.len()],
    injected: AtomicU64,
    hanging: watch::Sender<usize>,
}

/// The shared control of one or more [`FaultyObjectStore`]s. Clones share one state.
#[derive(Clone)]
pub struct FaultSwitch {
    state: Arc<SwitchState>,
}

impl Default for FaultSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FaultSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultSwitch")
            .field("fault", &*self.state.fault.borrow())
            .field("hanging", &*self.state.hanging.borrow())
            .finish()
    }
}

impl FaultSwitch {
    /// A healthy switch.
    pub fn new() -> Self {
        Self {
            state: Arc::new(SwitchState {
                fault: watch::Sender::new(Fault::healthy()),
                calls: std::array::from_fn(|_| AtomicU64::new(0)),
                injected: AtomicU64::new(0),
                hanging: watch::Sender::new(0),
            }),
        }
    }

    /// Replaces the setting; hanging calls decide again under the new one.
    pub fn set(&self, fault: Fault) {
        self.state.fault.send_replace(fault);
    }

    /// Back to healthy: every call passes, hanging ones resume.
    pub fn heal(&self) {
        self.set(Fault::healthy());
    }

    /// Every call fails.
    pub fn fail(&self) {
        self.set(Fault::fail());
    }

    /// Every call hangs until the setting changes.
    pub fn hang(&self) {
        self.set(Fault::hang());
    }

    /// Every call is delayed by `delay`.
    pub fn slow(&self, delay: Duration) {
        self.set(Fault::slow(delay));
    }

    /// Only `ops` fail.
    pub fn fail_only(&self, ops: &[Op]) {
        self.set(Fault::fail().only(ops));
    }

    /// The next `n` calls of `ops` succeed, the following ones fail.
    pub fn fail_after(&self, n: u64, ops: &[Op]) {
        self.set(Fault::fail().only(ops).after(n));
    }

    /// The current setting.
    pub fn fault(&self) -> Fault {
        self.state.fault.borrow().clone()
    }

    /// Calls of `op` made so far (passed, failed, delayed or hanging).
    pub fn calls(&self, op: Op) -> u64 {
        self.state.calls[op.slot()].load(Ordering::Relaxed)
    }

    /// Calls of every operation made so far.
    pub fn total_calls(&self) -> u64 {
        Op::ALL.iter().map(|op| self.calls(*op)).sum()
    }

    /// Calls refused with an injected error so far.
    pub fn injected_failures(&self) -> u64 {
        self.state.injected.load(Ordering::Relaxed)
    }

    /// Calls waiting in [`FaultMode::Hang`] right now.
    pub fn hanging(&self) -> usize {
        *self.state.hanging.borrow()
    }

    /// Waits until at least `n` calls hang (a signal for tests, instead of sleeping).
    pub async fn wait_hanging(&self, n: usize) {
        let mut rx = self.state.hanging.subscribe();
        // The sender lives in `self`: `wait_for` cannot see it dropped.
        let _ = rx.wait_for(|hanging| *hanging >= n).await;
    }

    /// Counts the call, then lets it through, fails it, delays it or holds it, per the setting.
    async fn gate(&self, op: Op) -> object_store::Result<()> {
        self.state.calls[op.slot()].fetch_add(1, Ordering::Relaxed);
        let mut changes = self.state.fault.subscribe();
        loop {
            match self.verdict(op) {
                Verdict::Pass => return Ok(()),
                Verdict::Slow(delay) => {
                    tokio::time::sleep(delay).await;
                    return Ok(());
                }
                Verdict::Fail => {
                    self.state.injected.fetch_add(1, Ordering::Relaxed);
                    return Err(injected(op));
                }
                Verdict::Hang => {
                    let _hanging = Hanging::enter(&self.state.hanging);
                    // The sender lives in `self`, so `changed` only returns on a new setting.
                    let _ = changes.changed().await;
                }
            }
        }
    }

    /// Decides one call, counting down `after` (a check and a count-down in one step, so two
    /// calls racing never both take the last free pass).
    fn verdict(&self, op: Op) -> Verdict {
        let mut verdict = Verdict::Pass;
        // A count-down is no news for hanging calls: never notify.
        self.state.fault.send_if_modified(|fault| {
            if fault.mode == FaultMode::Healthy || !fault.covers(op) {
                return false;
            }
            if fault.after > 0 {
                fault.after -= 1;
                return false;
            }
            verdict = match fault.mode {
                FaultMode::Healthy => Verdict::Pass,
                FaultMode::Fail => Verdict::Fail,
                FaultMode::Hang => Verdict::Hang,
                FaultMode::Slow(delay) => Verdict::Slow(delay),
            };
            false
        });
        verdict
    }
}

/// One hanging call, counted while it lives (also when its future is dropped: a "crash").
struct Hanging<'a>(&'a watch::Sender<usize>);

impl<'a> Hanging<'a> {
    fn enter(count: &'a watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count)
    }
}

impl Drop for Hanging<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Storage that consults its [`FaultSwitch`] before every call, then delegates.
#[derive(Debug, Clone)]
pub struct FaultyObjectStore {
    inner: Arc<dyn ObjectStorage>,
    switch: FaultSwitch,
}

impl FaultyObjectStore {
    /// `inner` behind a fresh (healthy) switch: the storage to hand out, and its switch.
    pub fn wrap(inner: Arc<dyn ObjectStorage>) -> (Arc<dyn ObjectStorage>, FaultSwitch) {
        let switch = FaultSwitch::new();
        let faulty = Self {
            inner,
            switch: switch.clone(),
        };
        (Arc::new(faulty), switch)
    }
}

#[async_trait]
impl ObjectStorage for FaultyObjectStore {
    async fn put(&self, path: &Path, bytes: Bytes) -> object_store::Result<()> {
        self.switch.gate(Op::Put).await?;
        self.inner.put(path, bytes).await
    }

    async fn get(&self, path: &Path) -> object_store::Result<Bytes> {
        self.switch.gate(Op::Get).await?;
        self.inner.get(path).await
    }

    async fn get_range(&self, path: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        self.switch.gate(Op::Get).await?;
        self.inner.get_range(path, range).await
    }

    async fn delete(&self, path: &Path) -> object_store::Result<()> {
        self.switch.gate(Op::Delete).await?;
        self.inner.delete(path).await
    }

    async fn start_multipart(&self, path: &Path) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.switch.gate(Op::StartMultipart).await?;
        let inner = self.inner.start_multipart(path).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            switch: self.switch.clone(),
        }))
    }
}

/// A multipart upload whose every call goes through the switch too.
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    switch: FaultSwitch,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        // The part takes its place in the upload now (part numbers follow call order); its
        // bytes go out only if the gate lets it through.
        let part = self.inner.put_part(data);
        let switch = self.switch.clone();
        Box::pin(async move {
            switch.gate(Op::PutPart).await?;
            part.await
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.switch.gate(Op::CompleteMultipart).await?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.switch.gate(Op::AbortMultipart).await?;
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::object_store_backend::ObjectStoreBackend;
    use crate::traces::objects::{MultipartWriter, is_not_found};
    use object_store::local::LocalFileSystem;
    use object_store::{ObjectStore, ObjectStoreExt};

    const PART: usize = 5 * 1024 * 1024;

    /// A temp folder as storage, and the same folder through object_store (to look behind the
    /// wrapper).
    fn local() -> (
        tempfile::TempDir,
        Arc<dyn ObjectStorage>,
        Arc<dyn ObjectStore>,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let raw: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
        (dir, Arc::new(ObjectStoreBackend::new(raw.clone())), raw)
    }

    async fn exists(store: &dyn ObjectStore, path: &Path) -> bool {
        match store.head(path).await {
            Ok(_) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => panic!("head {path}: {e}"),
        }
    }

    #[tokio::test]
    async fn a_healthy_switch_delegates_every_call_and_counts_it() {
        let (_dir, real, raw) = local();
        let (store, switch) = FaultyObjectStore::wrap(real);
        let path = Path::from("a/b.log");
        store
            .put(&path, Bytes::from_static(b"\xff\x00bytes"))
            .await
            .unwrap();
        assert_eq!(store.get(&path).await.unwrap().as_ref(), b"\xff\x00bytes");
        assert_eq!(store.get_range(&path, 2..4).await.unwrap().as_ref(), b"by");
        store.delete(&path).await.unwrap();
        assert!(
            !exists(raw.as_ref(), &path).await,
            "the delete reached the real store"
        );
        assert_eq!(
            [Op::Put, Op::Get, Op::Delete].map(|op| switch.calls(op)),
            [1, 2, 1]
        );
        assert_eq!(switch.total_calls(), 4);
        assert_eq!(switch.injected_failures(), 0);
    }

    #[tokio::test]
    async fn fail_refuses_calls_with_a_recognisable_error_and_touches_nothing() {
        let (_dir, real, raw) = local();
        let (store, switch) = FaultyObjectStore::wrap(real);
        let path = Path::from("x.log");
        switch.fail();
        let err = store
            .put(&path, Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(is_injected(&err), "{err}");
        assert!(err.to_string().contains("injected outage: Put"), "{err}");
        assert!(!exists(raw.as_ref(), &path).await, "nothing written");
        assert!(is_injected(
            &store.get_range(&path, 0..1).await.unwrap_err()
        ));
        assert!(is_injected(&store.delete(&path).await.unwrap_err()));
        switch.heal();
        store.put(&path, Bytes::from_static(b"x")).await.unwrap();
        assert!(exists(raw.as_ref(), &path).await);
        assert_eq!(switch.injected_failures(), 3);
        let real_error = store.get(&Path::from("missing")).await.unwrap_err();
        assert!(
            !is_injected(&real_error),
            "real errors pass through as they are"
        );
    }

    #[tokio::test]
    async fn only_the_chosen_operations_fail() {
        let (_dir, real, _raw) = local();
        let (store, switch) = FaultyObjectStore::wrap(real);
        let path = Path::from("y.log");
        store.put(&path, Bytes::from_static(b"y")).await.unwrap();
        switch.fail_only(&[Op::Delete]);
        assert!(store.get(&path).await.is_ok(), "reads still work");
        store.put(&path, Bytes::from_static(b"z")).await.unwrap();
        assert!(is_injected(&store.delete(&path).await.unwrap_err()));
        assert_eq!(store.get(&path).await.unwrap().as_ref(), b"z");
        switch.fail_only(&Op::WRITES);
        assert!(store.put(&path, Bytes::from_static(b"w")).await.is_err());
        assert!(store.get(&path).await.is_ok());
    }

    #[tokio::test]
    async fn fail_after_n_parts_stops_a_multipart_upload_midway() {
        let (_dir, real, raw) = local();
        let (store, switch) = FaultyObjectStore::wrap(real);
        let path = Path::from("big/job.log");
        switch.fail_after(2, &[Op::PutPart]);
        let mut upload = store.start_multipart(&path).await.unwrap();
        // One part at a time, each awaited: the first two are stored, the third is refused.
        for part in 0..2 {
            upload.put_part(vec![part; PART].into()).await.unwrap();
        }
        let err = upload.put_part(vec![2; PART].into()).await.unwrap_err();
        assert!(is_injected(&err), "{err}");
        upload.abort().await.unwrap();
        assert_eq!(
            [
                Op::StartMultipart,
                Op::PutPart,
                Op::CompleteMultipart,
                Op::AbortMultipart
            ]
            .map(|op| switch.calls(op)),
            [1, 3, 0, 1]
        );
        assert_eq!(switch.injected_failures(), 1, "only the third part failed");
        assert!(
            !exists(raw.as_ref(), &path).await,
            "an unfinished upload shows nothing"
        );
        // The count-down is spent: the fault now hits every part, until healed.
        assert_eq!(switch.fault().after, 0);
        switch.heal();
        let mut writer = MultipartWriter::start(store.as_ref(), &path).await.unwrap();
        writer.write(vec![7u8; PART + 10]).await.unwrap();
        writer.finish().await.unwrap();
        assert_eq!(raw.head(&path).await.unwrap().size, PART as u64 + 10);
    }

    #[tokio::test]
    async fn hang_holds_calls_until_healed_and_a_dropped_call_leaves_nothing() {
        let (_dir, real, raw) = local();
        let (store, switch) = FaultyObjectStore::wrap(real);
        switch.hang();
        let (a, b) = (Path::from("a.log"), Path::from("b.log"));
        let dropped = {
            let (store, a) = (store.clone(), a.clone());
            tokio::spawn(async move { store.put(&a, Bytes::from_static(b"a")).await })
        };
        let held = {
            let (store, b) = (store.clone(), b.clone());
            tokio::spawn(async move { store.put(&b, Bytes::from_static(b"b")).await })
        };
        switch.wait_hanging(2).await;
        assert_eq!(switch.hanging(), 2);
        dropped.abort();
        assert!(dropped.await.unwrap_err().is_cancelled());
        switch.wait_hanging(1).await;
        assert_eq!(switch.hanging(), 1, "the crashed call no longer hangs");
        assert!(
            !exists(raw.as_ref(), &b).await,
            "nothing reached the store yet"
        );
        switch.heal();
        held.await.unwrap().unwrap();
        assert!(exists(raw.as_ref(), &b).await);
        assert!(
            !exists(raw.as_ref(), &a).await,
            "the crashed put never happened"
        );
        assert_eq!(switch.hanging(), 0);
    }

    #[tokio::test]
    async fn a_hanging_call_decides_again_under_a_new_setting() {
        let (_dir, real, _raw) = local();
        let (store, switch) = FaultyObjectStore::wrap(real);
        switch.hang();
        let pending = {
            let store = store.clone();
            tokio::spawn(async move { store.get(&Path::from("nothing")).await.map(drop) })
        };
        switch.wait_hanging(1).await;
        switch.fail();
        let err = pending.await.unwrap().unwrap_err();
        assert!(is_injected(&err), "{err}");
    }

    #[tokio::test]
    async fn slow_delays_then_delegates() {
        let (_dir, real, _raw) = local();
        let (store, switch) = FaultyObjectStore::wrap(real);
        let path = Path::from("s.log");
        switch.slow(Duration::from_millis(40));
        let started = std::time::Instant::now();
        store.put(&path, Bytes::from_static(b"s")).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(40));
        assert_eq!(store.get(&path).await.unwrap().as_ref(), b"s");
        assert!(started.elapsed() >= Duration::from_millis(80));
    }
}
