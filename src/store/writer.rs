//! Group commit: one thread owns the embedded store and runs every call, flushing once per
//! batch.
//!
//! Why: sled 0.34 can stop answering for good when several flushes run at once, and one
//! fsync per request caps rotations at the disk's fsync rate, so throughput fell as clients
//! were added. Here every store call is a job on one queue. The writer thread runs whatever
//! is waiting, in order, then flushes once, and only then answers each caller of that batch:
//! a response still waits until its own data is on disk (durable before
//! visible), but N concurrent requests share one flush, and no two flushes ever overlap.
//!
//! Jobs run on this thread, never on the proxy's event loop: a flush is blocking I/O.
//!
//! A caller that gave up (its deadline passed, see `deadline.rs`) before its job started is
//! skipped: that job is never applied. A job that has started is finished and flushed with
//! its batch; if its caller is gone by then, the result is dropped and an audit line
//! (`store_late_commit`) says so. For a rotation that is harmless: the client still holds the
//! parent, and presenting it again inside `reuse_grace` yields the very same successor.

use super::StoreError;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// Jobs that may wait in the queue; beyond it callers wait to enqueue (under their deadline).
const QUEUE: usize = 4096;

/// Jobs per batch at most: bounds how long the last job of a batch waits for the first.
pub const MAX_BATCH: usize = 512;

/// The state the writer owns, and how to make its changes durable.
pub trait Durable: Send + 'static {
    /// Why a flush failed. Every caller of the batch is answered with it, hence `Clone`.
    type Error: std::error::Error + Clone + Send + 'static;

    /// Make every change made so far durable (sled: write the log and fsync).
    fn flush(&self) -> Result<(), Self::Error>;
}

/// Whether a job may change data: a batch holding one is flushed before anyone is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// Changes data that may wait for the next flush (a later write's batch, a prune, the
    /// store closing): throttling counters.
    Lazy,
}

/// What the writer has done so far: the ratio of flushes to jobs is what group commit saves.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Jobs taken from the queue (skipped ones included).
    pub jobs: u64,
    /// Jobs never applied because their caller had already given up.
    pub skipped: u64,
    /// Batches run.
    pub batches: u64,
    /// Flushes made (at most one per batch, none for a batch of reads).
    pub flushes: u64,
}

#[derive(Default)]
struct Counters {
    jobs: AtomicU64,
    skipped: AtomicU64,
    batches: AtomicU64,
    flushes: AtomicU64,
}

/// A job's result, held until its batch is flushed (`E`: why a flush fails).
struct Answer<E> {
    write: bool,
    deliver: Box<dyn FnOnce(Result<(), E>) + Send>,
}

/// `None`: the caller was gone, nothing was done.
type Job<S> = Box<dyn FnOnce(&S) -> Option<Answer<<S as Durable>::Error>> + Send>;

/// The handle callers use; dropping it lets the thread finish the queue and exit.
pub struct Writer<S: Durable> {
    queue: Option<mpsc::Sender<Job<S>>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store writer has stopped".into())
}

impl<S: Durable> Writer<S> {
    /// Move `state` to a new thread named `name` that runs jobs until the handle is dropped.
    pub fn start(state: S, name: &str) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(state, jobs, &c))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        Ok(Writer {
            queue: Some(queue),
            thread: Some(thread),
            counters,
        })
    }

    /// Run `job` on the writer thread; answers once the job's batch is durable. `op` names the
    /// call in logs.
    pub async fn call<T, F>(
        &self,
        access: Access,
        op: &'static str,
        job: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&S) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job<S> = Box::new(move |state: &S| {
            if reply.is_closed() {
                return None;
            }
            let result = job(state);
            let write = access == Access::Write;
            Some(Answer {
                write,
                deliver: Box::new(move |flushed| {
                    let result = match flushed {
                        Ok(()) => result,
                        Err(e) => Err(StoreError::Unavailable(e.to_string())),
                    };
                    let committed = write && result.is_ok();
                    if reply.send(result).is_err() && committed {
                        tracing::warn!(
                            target: "portcullis::audit",
                            event = "store_late_commit",
                            operation = op,
                            "a store write completed after its caller had given up"
                        );
                    }
                }),
            })
        });
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        queue.send(job).await.map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("a store job failed".into()))?
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            jobs: c.jobs.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
        }
    }
}

impl<S: Durable> Drop for Writer<S> {
    /// Let the thread finish what is queued, then wait for it: the state (sled's file lock)
    /// is released when this returns, so the same database can be opened again.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer loop: take what is waiting (up to [`MAX_BATCH`]), run it, flush once, answer.
fn run<S: Durable>(state: S, mut jobs: mpsc::Receiver<Job<S>>, c: &Counters) {
    let mut answers: Vec<Answer<S::Error>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        let mut next = Some(first);
        let mut taken = 0u64;
        let mut write = false;
        while let Some(job) = next.take() {
            taken += 1;
            match std::panic::catch_unwind(AssertUnwindSafe(|| job(&state))) {
                Ok(Some(answer)) => {
                    write |= answer.write;
                    answers.push(answer);
                }
                Ok(None) => {
                    c.skipped.fetch_add(1, Ordering::Relaxed);
                }
                // The job's reply channel went with it: its caller gets an error, the writer
                // goes on serving everyone else.
                Err(_) => {
                    tracing::error!(target: "portcullis::store", "a store job panicked");
                }
            }
            if taken < MAX_BATCH as u64 {
                next = jobs.try_recv().ok();
            }
        }
        c.jobs.fetch_add(taken, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        let flushed = if write {
            c.flushes.fetch_add(1, Ordering::Relaxed);
            state.flush()
        } else {
            Ok(())
        };
        if let Err(e) = &flushed {
            tracing::error!(target: "portcullis::store", error = %e, "store flush failed");
        }
        for answer in answers.drain(..) {
            (answer.deliver)(flushed.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A store whose flush takes 5 ms and is counted, and which notices overlapping flushes.
    struct Slow {
        flushing: Arc<AtomicUsize>,
        overlaps: Arc<AtomicUsize>,
        data: std::cell::RefCell<Vec<u32>>,
    }

    impl Durable for Slow {
        type Error = std::convert::Infallible;

        fn flush(&self) -> Result<(), Self::Error> {
            if self.flushing.fetch_add(1, Ordering::SeqCst) > 0 {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(5));
            self.flushing.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn slow() -> (Writer<Slow>, Arc<AtomicUsize>) {
        let overlaps = Arc::new(AtomicUsize::new(0));
        let s = Slow {
            flushing: Arc::new(AtomicUsize::new(0)),
            overlaps: overlaps.clone(),
            data: Default::default(),
        };
        (Writer::start(s, "test-writer").unwrap(), overlaps)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_share_flushes_and_never_overlap() {
        let (w, overlaps) = slow();
        let w = Arc::new(w);
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                w.call(Access::Write, "test", move |s: &Slow| {
                    s.data.borrow_mut().push(i);
                    Ok(i)
                })
                .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), i as u32);
        }
        let stats = w.stats();
        assert_eq!(stats.jobs, 200);
        assert!(
            stats.flushes < 50,
            "200 concurrent writes took {} flushes",
            stats.flushes
        );
        assert_eq!(overlaps.load(Ordering::SeqCst), 0);
        // Reads alone are never flushed.
        let before = w.stats().flushes;
        let n = w
            .call(Access::Read, "test", |s: &Slow| Ok(s.data.borrow().len()))
            .await
            .unwrap();
        assert_eq!(n, 200);
        assert_eq!(w.stats().flushes, before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_gave_up_is_never_applied_and_a_panic_is_contained() {
        let (w, _) = slow();
        // Block the writer for a while, then queue a job whose caller gives up at once.
        let w = Arc::new(w);
        let blocker = {
            let w = w.clone();
            tokio::spawn(async move {
                w.call(Access::Read, "test", |_: &Slow| {
                    std::thread::sleep(Duration::from_millis(200));
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let gave_up = tokio::time::timeout(
            Duration::from_millis(20),
            w.call(Access::Write, "test", |s: &Slow| {
                s.data.borrow_mut().push(7);
                Ok(())
            }),
        )
        .await;
        assert!(gave_up.is_err());
        blocker.await.unwrap().unwrap();
        let data = w
            .call(Access::Read, "test", |s: &Slow| Ok(s.data.borrow().clone()))
            .await
            .unwrap();
        assert!(data.is_empty(), "the abandoned write was applied: {data:?}");
        assert_eq!(w.stats().skipped, 1);

        let panicked = w
            .call(
                Access::Write,
                "test",
                |_: &Slow| -> Result<(), StoreError> { panic!("a bug in one job") },
            )
            .await;
        assert!(matches!(panicked, Err(StoreError::Unavailable(_))));
        assert!(
            w.call(Access::Read, "test", |_: &Slow| Ok(()))
                .await
                .is_ok(),
            "the writer survives"
        );
    }
}
