//! The group-commit thread both nodes write through: jobs (a node's batch of
//! changes, with a token that only grows) queue on a channel; the thread
//! takes one, **drains whatever else is queued** and merges it in (waiting
//! briefly for the clients the last write acknowledged, see `Gather`), writes
//! the lot in one storage transaction (one fsync), and then reports the
//! highest token written ([`spawn`]'s `done`), which lets the node
//! acknowledge every job up to it. While one fsync runs, the jobs of every
//! other client pile up for the next, so many clients share one fsync.
//!
//! # Storage failures
//!
//! One policy for both nodes: a write that fails is never acknowledged.
//! The thread logs an error naming the store's path and the cause, and
//! stops the process with exit status [`STORAGE_FAILURE_EXIT`] (70,
//! `EX_SOFTWARE`). What was acknowledged before is durable; what was not
//! was never promised to anyone, and a restart recovers from what is on
//! disk (Bayou replays its log; Chord's replicas repair the node by
//! anti-entropy). Carrying on after a failed write would leave the node's
//! memory ahead of its disk, with no way to tell which acknowledgements a
//! later write would cover.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The exit status of a node whose storage failed (`EX_SOFTWARE`).
pub const STORAGE_FAILURE_EXIT: i32 = 70;

/// The sending side: queues jobs for the thread. Dropping every clone lets
/// the thread write what is queued and finish.
#[derive(Debug)]
pub struct Committer<J> {
    tx: mpsc::Sender<(u64, J)>,
}

impl<J> Clone for Committer<J> {
    fn clone(&self) -> Self {
        Committer {
            tx: self.tx.clone(),
        }
    }
}

/// The thread has stopped: the job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the storage thread has stopped")]
pub struct Closed;

impl<J> Committer<J> {
    /// Queues `job` under `token` (tokens only grow).
    pub fn commit(&self, token: u64, job: J) -> Result<(), Closed> {
        self.tx.send((token, job)).map_err(|_| Closed)
    }
}

/// Starts the group-commit thread `name` for the store at `path` (named in
/// errors). `merge(into, next)` folds a queued job into the one being
/// built; `write(job)` writes one merged job in one transaction, durable
/// when it returns `Ok`; `done(token)` is then called with the highest
/// token it covered. A failed write stops the process (see the module
/// documentation). The thread ends, dropping `write` (and the store it
/// owns), once every [`Committer`] is dropped and the queue is written.
pub fn spawn<J, E>(
    name: String,
    path: PathBuf,
    mut merge: impl FnMut(&mut J, J) + Send + 'static,
    mut write: impl FnMut(&J) -> Result<(), E> + Send + 'static,
    mut done: impl FnMut(u64) + Send + 'static,
) -> (Committer<J>, JoinHandle<()>)
where
    J: Send + 'static,
    E: Display,
{
    let (tx, rx) = mpsc::channel::<(u64, J)>();
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut gather = Gather::default();
            while let Ok((mut token, mut job)) = rx.recv() {
                let deadline = Instant::now() + gather.window();
                let mut jobs = 1;
                loop {
                    let next = if jobs >= gather.expect {
                        rx.try_recv().ok()
                    } else {
                        let left = deadline.saturating_duration_since(Instant::now());
                        rx.recv_timeout(left).ok()
                    };
                    let Some((t, next)) = next else { break };
                    token = token.max(t);
                    merge(&mut job, next);
                    jobs += 1;
                }
                let started = Instant::now();
                if let Err(e) = write(&job) {
                    storage_failed(&path, &e);
                }
                gather.wrote(jobs, started.elapsed());
                done(token);
            }
        })
        .expect("spawn the storage thread");
    (Committer { tx }, thread)
}

/// The durability mark a node's tasks wait on: the highest token the
/// storage thread has made durable, and the tasks waiting for a higher one.
///
/// Each waiter is woken once, when its own token is durable (a watch
/// channel would wake every waiter at every write, so 50 clients spread
/// over a few writes in flight cost 50 wake-ups a write, most of them
/// for nothing). Create it with [`DurableMark::new`], hand the
/// [`MarkAdvancer`] to [`spawn`]'s `done`; when the advancer is dropped
/// (the storage thread ended) every waiter still waiting gets [`Closed`].
#[derive(Debug, Default)]
pub struct DurableMark {
    state: Mutex<MarkState>,
}

#[derive(Debug, Default)]
struct MarkState {
    durable: u64,
    closed: bool,
    waiters: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
}

/// Moves a [`DurableMark`] forward; closes it when dropped.
#[derive(Debug)]
pub struct MarkAdvancer(Arc<DurableMark>);

impl DurableMark {
    /// A mark at 0 and the advancer that moves it.
    pub fn new() -> (Arc<DurableMark>, MarkAdvancer) {
        let mark = Arc::new(DurableMark::default());
        (mark.clone(), MarkAdvancer(mark))
    }

    /// The highest durable token.
    pub fn durable(&self) -> u64 {
        self.lock().durable
    }

    /// Waits until `token` is durable; [`Closed`] if the storage thread
    /// ended first.
    pub async fn wait(&self, token: u64) -> Result<(), Closed> {
        let rx = {
            let mut st = self.lock();
            if st.durable >= token {
                return Ok(());
            }
            if st.closed {
                return Err(Closed);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.entry(token).or_default().push(tx);
            rx
        };
        rx.await.map_err(|_| Closed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MarkState> {
        // The state stays consistent under any panic (plain assignments),
        // so a poisoned lock is taken as is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MarkAdvancer {
    /// Everything up to `token` is durable: wakes its waiters.
    pub fn advance(&self, token: u64) {
        let ready = {
            let mut st = self.0.lock();
            st.durable = st.durable.max(token);
            let later = st.waiters.split_off(&(token + 1));
            std::mem::replace(&mut st.waiters, later)
        };
        for tx in ready.into_values().flatten() {
            let _ = tx.send(());
        }
    }
}

impl Drop for MarkAdvancer {
    fn drop(&mut self) {
        let waiters = {
            let mut st = self.0.lock();
            st.closed = true;
            std::mem::take(&mut st.waiters)
        };
        drop(waiters);
    }
}

/// How long the thread waits for more jobs before it writes ([`spawn`]).
///
/// Draining only what is queued when a write finishes splits a steady set
/// of clients into small groups: the clients a write acknowledged send
/// their next requests while the thread has already started the next
/// write with the first few of them, and the rest wait a whole write for
/// the one after (measured: 50 redis-benchmark clients, about 12 writes
/// per fsync). So the thread expects as many jobs as the last write
/// carried, the clients it just acknowledged coming back, and waits for
/// them up to half the last write's duration (never more than
/// [`MAX_GATHER`]). A lone client is never delayed: one job meets an
/// expectation of one. This is PostgreSQL's `commit_delay` with
/// `commit_siblings`, sized from what the last write saw instead of
/// settings.
#[derive(Debug)]
struct Gather {
    /// The jobs the last write carried.
    expect: usize,
    /// How long the last write took.
    last_write: Duration,
}

/// The longest the thread waits for more jobs.
const MAX_GATHER: Duration = Duration::from_micros(500);

impl Default for Gather {
    fn default() -> Self {
        Gather {
            expect: 1,
            last_write: Duration::ZERO,
        }
    }
}

impl Gather {
    fn window(&self) -> Duration {
        (self.last_write / 2).min(MAX_GATHER)
    }

    fn wrote(&mut self, jobs: usize, took: Duration) {
        self.expect = jobs;
        self.last_write = took;
    }
}

/// The storage-failure policy: log and stop the process, acknowledging
/// nothing more.
fn storage_failed(path: &std::path::Path, e: &dyn Display) -> ! {
    tracing::error!(
        path = %path.display(),
        "storage write to {} failed: {e}; stopping (exit status {STORAGE_FAILURE_EXIT}) without acknowledging it",
        path.display()
    );
    eprintln!(
        "storage write to {} failed: {e}; stopping without acknowledging it",
        path.display()
    );
    std::process::exit(STORAGE_FAILURE_EXIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn a_waiter_wakes_when_its_token_is_durable_and_fails_when_storage_ends() {
        let (mark, advancer) = DurableMark::new();
        assert_eq!(mark.wait(0).await, Ok(()));
        let (m1, m3) = (mark.clone(), mark.clone());
        let one = tokio::spawn(async move { m1.wait(1).await });
        let three = tokio::spawn(async move { m3.wait(3).await });
        tokio::task::yield_now().await;
        advancer.advance(2);
        assert_eq!(one.await.unwrap(), Ok(()));
        assert_eq!(mark.durable(), 2);
        assert_eq!(mark.lock().waiters.len(), 1, "token 3 still waits");
        drop(advancer);
        assert_eq!(three.await.unwrap(), Err(Closed));
        assert_eq!(mark.wait(9).await, Err(Closed));
        assert_eq!(mark.wait(2).await, Ok(()), "what was durable stays so");
    }

    #[test]
    fn queued_jobs_are_written_together_and_acknowledged_in_order() {
        let writes: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        let w = writes.clone();
        let (c, thread) = spawn(
            "test-commit".into(),
            PathBuf::from("/nowhere"),
            |a: &mut Vec<u32>, b| a.extend(b),
            move |job: &Vec<u32>| {
                // The first write waits, so the next jobs queue up.
                if w.lock().unwrap().is_empty() {
                    gate_rx.recv().unwrap();
                }
                w.lock().unwrap().push(job.clone());
                Ok::<(), String>(())
            },
            move |t| done_tx.send(t).unwrap(),
        );
        c.commit(1, vec![1]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        c.commit(2, vec![2]).unwrap();
        c.commit(3, vec![3, 4]).unwrap();
        gate_tx.send(()).unwrap();
        drop(c);
        thread.join().unwrap();
        assert_eq!(*writes.lock().unwrap(), vec![vec![1], vec![2, 3, 4]]);
        assert_eq!(done_rx.iter().collect::<Vec<_>>(), vec![1, 3]);
    }
}
