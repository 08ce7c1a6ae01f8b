//! How training progress is shown: burn's terminal dashboard when stdout is a terminal
//! (feature `tui`), plain log lines otherwise (CI, pipes, `nohup`).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use burn::train::Interrupter;
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

/// Plain progress lines: one every `every` training iterations and one per validation
/// epoch, each with the epoch means of the numeric metrics.
pub struct LogRenderer {
    out: Box<dyn Write + Send + Sync>,
    every: usize,
    prefix: String,
    names: HashMap<MetricId, String>,
    train: Vec<(String, String)>,
    valid: Vec<(String, String)>,
    last_valid_epoch: Option<usize>,
}

impl LogRenderer {
    /// Lines go to `out`, one per `every` iterations, each starting with `prefix`.
    pub fn new(out: Box<dyn Write + Send + Sync>, every: usize, prefix: &str) -> Self {
        Self {
            out,
            every: every.max(1),
            prefix: prefix.to_string(),
            names: HashMap::new(),
            train: Vec::new(),
            valid: Vec::new(),
            last_valid_epoch: None,
        }
    }

    fn set(list: &mut Vec<(String, String)>, name: String, value: String) {
        match list.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 = value,
            None => list.push((name, value)),
        }
    }

    fn update(&mut self, state: MetricState, valid: bool) {
        let (entry, value) = match state {
            MetricState::Numeric(entry, numeric) => {
                // `formatted` is "epoch X unit - batch Y unit": keep the epoch mean.
                let f = entry.serialized_entry.formatted.clone();
                let mean = f
                    .strip_prefix("epoch ")
                    .and_then(|r| r.split(" - ").next())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{:.4}", numeric.current()));
                (entry, mean)
            }
            MetricState::Generic(entry) => {
                let v = entry.serialized_entry.formatted.clone();
                (entry, v)
            }
        };
        let name = self
            .names
            .get(&entry.metric_id)
            .cloned()
            .unwrap_or_else(|| "?".into());
        let list = if valid {
            &mut self.valid
        } else {
            &mut self.train
        };
        Self::set(list, name, value);
    }

    fn line(&mut self, what: &str, item: &TrainingProgress, valid: bool) {
        let list = if valid { &self.valid } else { &self.train };
        let metrics: Vec<String> = list.iter().map(|(n, v)| format!("{n} {v}")).collect();
        let progress = item
            .progress
            .as_ref()
            .map(|p| format!(" {}/{}", p.items_processed, p.items_total))
            .unwrap_or_default();
        let _ = writeln!(
            self.out,
            "{}{what} epoch {}/{}{progress}: {}",
            self.prefix,
            item.global_progress.items_processed,
            item.global_progress.items_total,
            metrics.join(", ")
        );
        let _ = self.out.flush();
    }
}

impl MetricsRendererTraining for LogRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.update(state, false);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.update(state, true);
    }

    fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let i = item.iteration.unwrap_or(0);
        let last = item
            .progress
            .as_ref()
            .is_some_and(|p| p.items_processed >= p.items_total);
        if i.is_multiple_of(self.every) || last {
            self.line("train", &item, false);
        }
    }

    fn render_valid(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let done = item
            .progress
            .as_ref()
            .is_some_and(|p| p.items_processed >= p.items_total);
        let epoch = item.global_progress.items_processed;
        if done && self.last_valid_epoch != Some(epoch) {
            self.last_valid_epoch = Some(epoch);
            self.line("valid", &item, true);
        }
    }

    fn on_train_end(
        &mut self,
        _: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        Ok(())
    }
}

impl MetricsRendererEvaluation for LogRenderer {
    fn update_test(&mut self, _: EvaluationName, state: MetricState) {
        self.update(state, true);
    }

    fn render_test(&mut self, _: EvaluationProgress, _: Vec<ProgressType>) {}

    fn on_test_end(
        &mut self,
        _: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        Ok(())
    }
}

impl MetricsRenderer for LogRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// burn's terminal dashboard if compiled in (feature `tui`) and stdout is a
    /// terminal, log lines otherwise.
    Auto,
    /// Log lines on standard error.
    Log,
    /// Nothing (tests).
    Quiet,
}

/// The renderer for `display`; `every` is the log-line interval in iterations.
pub fn renderer(
    display: Display,
    every: usize,
    prefix: &str,
    interrupter: &Interrupter,
) -> Box<dyn MetricsRenderer> {
    match display {
        Display::Auto if std::io::stdout().is_terminal() => tui_or_log(every, prefix, interrupter),
        Display::Auto | Display::Log => {
            Box::new(LogRenderer::new(Box::new(std::io::stderr()), every, prefix))
        }
        Display::Quiet => Box::new(LogRenderer::new(Box::new(std::io::sink()), every, prefix)),
    }
}

#[cfg(feature = "tui")]
fn tui_or_log(_: usize, _: &str, interrupter: &Interrupter) -> Box<dyn MetricsRenderer> {
    Box::new(burn::train::renderer::tui::TuiMetricsRendererWrapper::new(
        interrupter.clone(),
        None,
    ))
}

#[cfg(not(feature = "tui"))]
fn tui_or_log(every: usize, prefix: &str, _: &Interrupter) -> Box<dyn MetricsRenderer> {
    Box::new(LogRenderer::new(Box::new(std::io::stderr()), every, prefix))
}

/// A boxed renderer as a renderer (burn's builder takes one by value).
pub struct RendererBox(pub Box<dyn burn::train::renderer::MetricsRenderer>);

impl burn::train::renderer::MetricsRendererTraining for RendererBox {
    fn update_train(&mut self, state: burn::train::renderer::MetricState) {
        self.0.update_train(state)
    }
    fn update_valid(&mut self, state: burn::train::renderer::MetricState) {
        self.0.update_valid(state)
    }
    fn render_train(
        &mut self,
        item: burn::train::renderer::TrainingProgress,
        p: Vec<burn::train::renderer::ProgressType>,
    ) {
        self.0.render_train(item, p)
    }
    fn render_valid(
        &mut self,
        item: burn::train::renderer::TrainingProgress,
        p: Vec<burn::train::renderer::ProgressType>,
    ) {
        self.0.render_valid(item, p)
    }
    fn on_train_end(
        &mut self,
        summary: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        self.0.on_train_end(summary)
    }
}

impl burn::train::renderer::MetricsRendererEvaluation for RendererBox {
    fn update_test(
        &mut self,
        name: burn::train::renderer::EvaluationName,
        state: burn::train::renderer::MetricState,
    ) {
        self.0.update_test(name, state)
    }
    fn render_test(
        &mut self,
        item: burn::train::renderer::EvaluationProgress,
        p: Vec<burn::train::renderer::ProgressType>,
    ) {
        self.0.render_test(item, p)
    }
}

impl burn::train::renderer::MetricsRenderer for RendererBox {
    fn manual_close(&mut self) {
        self.0.manual_close()
    }
    fn register_metric(&mut self, definition: burn::train::metric::MetricDefinition) {
        self.0.register_metric(definition)
    }
}
