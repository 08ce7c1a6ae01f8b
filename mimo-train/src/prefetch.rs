//! Training batches prepared ahead by loader threads, in the order training consumes them.
//!
//! Reading a sample (image decoding, mask RLE) and batching it (CLIP and SAM resizing and
//! normalisation, tokenising, the upload to the device) is CPU work: ~40 ms per sample at
//! SAM's 1024 px on one core. Done on the training thread it adds to every step; loader
//! threads do it while the devices compute. Batches depend only on their samples, so a run
//! trains the same with any number of loader threads.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;
use mimo_data::batch::{MimoBatch, MimoBatcher, RecordsDataset, Sample};
use mimo_data::mix::MixedDataset;

/// One batch to prepare: dataset indices for one device.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// Index into the devices.
    pub(crate) device: usize,
    /// Dataset indices of the batch's samples.
    pub(crate) indices: Vec<usize>,
}

/// What the loader needs to make batches.
#[derive(Clone)]
pub(crate) struct Source<B: Backend> {
    pub(crate) dataset: Arc<MixedDataset<RecordsDataset>>,
    pub(crate) batcher: Arc<MimoBatcher>,
    pub(crate) devices: Arc<Vec<B::Device>>,
}

impl<B: Backend> Source<B> {
    fn make(&self, job: &Job) -> MimoBatch<B> {
        let items: Vec<Sample> = job
            .indices
            .iter()
            .filter_map(|&i| self.dataset.get(i))
            .collect();
        self.batcher
            .as_ref()
            .batch(items, &self.devices[job.device])
    }
}

/// Batches of a list of jobs, handed out in job order.
pub(crate) struct Prefetch<B: Backend> {
    source: Source<B>,
    jobs: Arc<Vec<Job>>,
    /// One channel per loader thread; job `j` comes from thread `j % threads`.
    receivers: Vec<Receiver<MimoBatch<B>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
}

impl<B: Backend> Prefetch<B> {
    /// Starts `workers` loader threads over `jobs`, each keeping at most one finished batch
    /// waiting besides the one it is making. With no workers, [`Prefetch::next`] makes each
    /// batch when asked, on the calling thread.
    pub(crate) fn new(source: Source<B>, jobs: Vec<Job>, workers: usize) -> Self {
        let jobs = Arc::new(jobs);
        let threads = workers.min(jobs.len());
        let mut receivers = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for w in 0..threads {
            let (tx, rx): (SyncSender<MimoBatch<B>>, _) = sync_channel(1);
            let (source, jobs) = (source.clone(), jobs.clone());
            let handle = std::thread::Builder::new()
                .name(format!("mimo-loader-{w}"))
                .spawn(move || {
                    for job in jobs.iter().skip(w).step_by(threads) {
                        // The receiver is gone when training stopped early.
                        if tx.send(source.make(job)).is_err() {
                            break;
                        }
                    }
                });
            match handle {
                Ok(h) => {
                    receivers.push(rx);
                    handles.push(h);
                }
                Err(_) => {
                    // No thread to be had: every batch is made on the calling thread.
                    receivers.clear();
                    for h in handles.drain(..) {
                        let _ = h.join();
                    }
                    break;
                }
            }
        }
        Self {
            source,
            jobs,
            receivers,
            handles,
            next: 0,
        }
    }

    /// The next job's batch, or `None` after the last job; `Err` if its loader thread
    /// died (a panic while reading or batching).
    pub(crate) fn next(&mut self) -> Option<Result<MimoBatch<B>, String>> {
        let j = self.next;
        let job = self.jobs.get(j)?;
        self.next += 1;
        if self.receivers.is_empty() {
            return Some(Ok(self.source.make(job)));
        }
        let w = j % self.receivers.len();
        Some(self.receivers[w].recv().map_err(|_| {
            format!(
                "data loader thread {w} stopped while preparing samples {:?}",
                job.indices
            )
        }))
    }
}

impl<B: Backend> Drop for Prefetch<B> {
    fn drop(&mut self) {
        // Closing the channels stops the threads at their next batch.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
