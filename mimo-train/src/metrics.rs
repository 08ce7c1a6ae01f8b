//! Dashboard metrics of a MIMO step: the losses, next-token accuracy on answer tokens and
//! mask IoU.

use std::sync::Arc;

use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

use crate::step::MimoStepStats;

/// Which number a [`MimoMetric`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MimoMetricKind {
    /// The total loss.
    Loss,
    /// Next-token cross-entropy.
    Ce,
    /// Weighted mask BCE.
    Bce,
    /// Weighted mask Dice loss.
    Dice,
    /// Next-token accuracy on answer tokens (%), weighted by tokens.
    TokenAccuracy,
    /// Mask IoU (%): Σ intersection / Σ union over the epoch (cIoU).
    MaskIou,
}

impl MimoMetricKind {
    /// Every kind, in dashboard order.
    pub const ALL: [MimoMetricKind; 6] = [
        Self::Loss,
        Self::Ce,
        Self::Bce,
        Self::Dice,
        Self::TokenAccuracy,
        Self::MaskIou,
    ];

    /// The name shown on the dashboard and used for the log files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loss => "Loss",
            Self::Ce => "CE",
            Self::Bce => "Mask BCE",
            Self::Dice => "Mask Dice",
            Self::TokenAccuracy => "Token Accuracy",
            Self::MaskIou => "Mask IoU",
        }
    }

    /// The value and its weight in the epoch mean, or `None` when the batch has nothing
    /// to count (no answer tokens, no masks).
    pub fn value(self, s: &MimoStepStats) -> Option<(f64, usize)> {
        let n = s.batch_size.max(1);
        match self {
            Self::Loss => Some((s.loss, n)),
            Self::Ce => Some((s.ce, n)),
            Self::Bce => Some((s.bce, n)),
            Self::Dice => Some((s.dice, n)),
            Self::TokenAccuracy => {
                (s.tokens > 0.0).then(|| (100.0 * s.correct_tokens / s.tokens, s.tokens as usize))
            }
            Self::MaskIou => {
                (s.union > 0.0).then(|| (100.0 * s.intersection / s.union, s.union as usize))
            }
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(self, Self::TokenAccuracy | Self::MaskIou)
    }

    fn unit(self) -> Option<&'static str> {
        self.higher_is_better().then_some("%")
    }
}

/// One of MIMO's dashboard metrics.
#[derive(Clone)]
pub struct MimoMetric {
    kind: MimoMetricKind,
    name: MetricName,
    state: NumericMetricState,
}

impl MimoMetric {
    /// The metric for `kind`.
    pub fn new(kind: MimoMetricKind) -> Self {
        Self {
            kind,
            name: Arc::new(kind.name().to_string()),
            state: NumericMetricState::new(),
        }
    }
}

impl Metric for MimoMetric {
    type Input = MimoStepStats;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: self.kind.unit().map(String::from),
            higher_is_better: self.kind.higher_is_better(),
        }
        .into()
    }

    fn update(&mut self, item: &MimoStepStats, _: &MetricMetadata) -> SerializedEntry {
        let mut format = FormatOptions::new(self.name.clone()).precision(4);
        if let Some(u) = self.kind.unit() {
            format = format.unit(u).precision(2);
        }
        match self.kind.value(item) {
            Some((v, w)) => self.state.update(v, w.max(1), format),
            // Nothing counted in this batch: keep the epoch value, weight 0.
            None => {
                let running = self.state.running_value().current();
                SerializedEntry::new(
                    format!("epoch {running:.2} - batch n/a"),
                    NumericEntry::Aggregated {
                        aggregated_value: running,
                        count: 0,
                    }
                    .serialize(),
                )
            }
        }
    }

    fn clear(&mut self) {
        self.state.reset();
    }
}

impl Numeric for MimoMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}
