//! The optimiser and learning-rate schedule of MIMO's training.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use burn::module::AutodiffModule;
use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::{GradientsParams, MultiGradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};

/// DeepSpeed's `WarmupDecayLR` with linear warm-up, stepped once per optimiser step:
/// for step `s` (from 0), `lr = peak · s / W` while `s < W`, then
/// `peak · max(0, (T − s) / max(1, T − W))` (microsoft/DeepSpeed
/// `deepspeed/runtime/lr_schedules.py`, `WarmupLR.get_lr` and `WarmupDecayLR._get_gamma`).
/// `W = 0` means no warm-up; without decay the peak is held after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupDecay {
    /// Peak learning rate.
    pub peak: f64,
    /// Warm-up steps `W`.
    pub warmup: usize,
    /// Total optimiser steps `T`.
    pub total: usize,
    /// Decay after the warm-up.
    pub decay: bool,
    /// Steps taken.
    pub step: usize,
}

impl WarmupDecay {
    /// The learning rate of optimiser step `s`.
    pub fn lr_at(&self, s: usize) -> f64 {
        if s < self.warmup {
            return self.peak * s as f64 / self.warmup as f64;
        }
        if !self.decay {
            return self.peak;
        }
        let t = self.total as f64;
        let w = self.warmup as f64;
        self.peak * ((t - s as f64) / (t - w).max(1.0)).max(0.0)
    }
}

impl LrScheduler for WarmupDecay {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        let lr = self.lr_at(self.step);
        self.step += 1;
        lr
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.step
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.step = record;
        self
    }
}

/// An optimiser that can hand out its state after a step: burn's learner keeps its
/// optimiser private, and a MIMO checkpoint holds the optimiser state of the trained
/// parts only (not a whole-model record).
#[derive(Clone)]
pub struct Snapshotting<O> {
    inner: O,
    want: Arc<AtomicBool>,
    slot: Arc<Mutex<Option<Box<dyn std::any::Any + Send>>>>,
}

/// The other end of a [`Snapshotting`] optimiser.
#[derive(Clone)]
pub struct SnapshotHandle {
    want: Arc<AtomicBool>,
    slot: Arc<Mutex<Option<Box<dyn std::any::Any + Send>>>>,
}

impl SnapshotHandle {
    /// Asks for the state after the next optimiser step.
    pub fn request(&self) {
        self.want.store(true, Ordering::SeqCst);
    }

    /// The state taken after the requested step, if any.
    pub fn take<R: 'static>(&self) -> Option<R> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.take().and_then(|b| b.downcast::<R>().ok()).map(|b| *b)
    }
}

impl<O> Snapshotting<O> {
    /// Wraps `inner`; the handle takes its state.
    pub fn new(inner: O) -> (Self, SnapshotHandle) {
        let want = Arc::new(AtomicBool::new(false));
        let slot = Arc::new(Mutex::new(None));
        (
            Self {
                inner,
                want: want.clone(),
                slot: slot.clone(),
            },
            SnapshotHandle { want, slot },
        )
    }
}

impl<O, M, B> Optimizer<M, B> for Snapshotting<O>
where
    O: Optimizer<M, B>,
    O::Record: Send + 'static,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    type Record = O::Record;

    fn step(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        let m = self.inner.step(lr, module, grads);
        if self.want.swap(false, Ordering::SeqCst) {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            *slot = Some(Box::new(self.inner.to_record()));
        }
        m
    }

    fn step_multi(&mut self, lr: f64, module: M, grads: MultiGradientsParams) -> M {
        let m = self.inner.step_multi(lr, module, grads);
        if self.want.swap(false, Ordering::SeqCst) {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            *slot = Some(Box::new(self.inner.to_record()));
        }
        m
    }

    fn to_record(&self) -> Self::Record {
        self.inner.to_record()
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self {
            inner: self.inner.load_record(record),
            ..self
        }
    }
}

#[cfg(test)]
mod tests;
