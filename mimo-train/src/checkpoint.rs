//! Training checkpoints: what training changes, not the frozen base. A checkpoint is a
//! directory `checkpoints/step-NNNNNNNN/` holding
//! - `params.safetensors`: every parameter the experiment trains (burn paths),
//! - `optimizer.bin`: the optimiser state of those parameters (full precision),
//! - `state.json`: stage, epoch, position in the epoch, optimiser steps taken.
//!
//! It is written into a temporary directory and renamed into place, so a crash leaves
//! either the previous checkpoints or the new one, never half of one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The run summary, in a run directory.
pub const RUN_FILE: &str = "run.json";
/// Per-optimiser-step training metrics, in a run directory.
pub const TRAIN_CSV: &str = "train.csv";
/// Per-epoch validation metrics, in a run directory.
pub const VALID_CSV: &str = "valid.csv";
/// The final checkpoint directory, in a run directory.
pub const FINAL_DIR: &str = "final";

/// Where training stands (what resuming needs besides the weights and optimiser state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainState {
    /// Stage index (0-based).
    pub stage: usize,
    /// Epoch within the stage (1-based) that the next step belongs to.
    pub epoch: usize,
    /// Optimiser steps already taken in that epoch.
    pub step_in_epoch: usize,
    /// Optimiser steps taken in the stage (the schedule's position).
    pub stage_step: usize,
    /// Optimiser steps taken in the whole run.
    pub global_step: usize,
    /// Whether the epoch's validation has run (a checkpoint at an epoch's end).
    pub epoch_done: bool,
}

impl TrainState {
    /// The start of stage `stage` after `global_step` optimiser steps of earlier stages.
    pub fn stage_start(stage: usize, global_step: usize) -> Self {
        Self {
            stage,
            epoch: 1,
            step_in_epoch: 0,
            stage_step: 0,
            global_step,
            epoch_done: false,
        }
    }
}

/// The parameters file.
pub const PARAMS_FILE: &str = "params.safetensors";
/// The optimiser-state file (burn's binary recorder adds `.bin`).
pub const OPTIMIZER_FILE: &str = "optimizer";
/// The state file.
pub const STATE_FILE: &str = "state.json";

/// The directory of the checkpoint after `global_step` optimiser steps.
pub fn checkpoint_dir(run: &Path, global_step: usize) -> PathBuf {
    run.join("checkpoints")
        .join(format!("step-{global_step:08}"))
}

/// Complete checkpoints of a run, oldest first.
pub fn list(run: &Path) -> Vec<(usize, PathBuf)> {
    let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(run.join("checkpoints"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse::<usize>().ok()?;
            let dir = e.path();
            dir.join(STATE_FILE).is_file().then_some((step, dir))
        })
        .collect();
    out.sort();
    out
}

/// Reads a checkpoint's state.
pub fn read_state(dir: &Path) -> Result<TrainState, String> {
    let p = dir.join(STATE_FILE);
    let text =
        std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

/// Flushes every file under `dir` to disk.
pub(crate) fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)?.sync_all()?;
        }
    }
    Ok(())
}

/// Writes a checkpoint with `write(tmp_dir)` filling its files, then `state.json`, then
/// renames it into place and deletes all but the newest `keep` checkpoints.
pub fn save(
    run: &Path,
    state: &TrainState,
    keep: usize,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let dir = checkpoint_dir(run, state.global_step);
    let parent = dir.parent().expect("checkpoint dir has a parent");
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let tmp = parent.join(format!(".tmp-step-{:08}", state.global_step));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    write(&tmp)?;
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    std::fs::write(tmp.join(STATE_FILE), json)
        .map_err(|e| format!("cannot write {}: {e}", tmp.join(STATE_FILE).display()))?;
    // On disk before the rename makes the checkpoint visible (a power loss must not leave a
    // checkpoint whose files are empty).
    sync_tree(&tmp).map_err(|e| format!("cannot sync {}: {e}", tmp.display()))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot replace {}: {e}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| format!("cannot rename {}: {e}", tmp.display()))?;
    // The rename itself (best effort: not every platform syncs a directory).
    let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
    let all = list(run);
    if all.len() > keep {
        for (_, old) in &all[..all.len() - keep] {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    Ok(dir)
}
