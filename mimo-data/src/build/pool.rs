//! The worker pool: inputs handled on several threads, results kept in input order.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The number of worker threads: `requested`, else every core; at least one, and no more
/// than there are items.
pub(super) fn threads(requested: Option<usize>, items: usize) -> usize {
    requested
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, items.max(1))
}

/// Runs `task` on every item on `workers` threads, each taking the next item not yet taken.
/// `progress(done, total)` is called on this thread after each finished item. The first
/// error received stops the workers (items under way finish) and is returned; else the
/// results come back in item order, so they do not depend on the number of workers.
pub(super) fn run<I: Sync, T: Send, E: Send>(
    workers: usize,
    items: &[I],
    task: impl Fn(&I) -> Result<T, E> + Sync,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<T>, E> {
    let total = items.len();
    let mut outs: Vec<Option<T>> = (0..total).map(|_| None).collect();
    let mut failure = None;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..workers {
            let tx = tx.clone();
            let (task, next, stop) = (&task, &next, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else {
                        break;
                    };
                    if tx.send((i, task(item))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (done, (i, r)) in rx.into_iter().enumerate() {
            match r {
                Ok(o) => outs[i] = Some(o),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    failure.get_or_insert(e);
                }
            }
            progress(done + 1, total);
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(outs.into_iter().flatten().collect())
}
