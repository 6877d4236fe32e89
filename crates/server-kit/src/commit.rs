//! The group-commit thread both nodes write through: jobs (a node's batch of
//! changes, with a token that only grows) queue on a channel; the thread
//! takes one, **drains whatever else is queued** and merges it in, writes
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

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

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
            while let Ok((mut token, mut job)) = rx.recv() {
                while let Ok((t, next)) = rx.try_recv() {
                    token = token.max(t);
                    merge(&mut job, next);
                }
                if let Err(e) = write(&job) {
                    storage_failed(&path, &e);
                }
                done(token);
            }
        })
        .expect("spawn the storage thread");
    (Committer { tx }, thread)
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
