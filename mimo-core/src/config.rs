//! Reading RON configuration files with errors that name the file and the field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid RON for this config (the message names the field and position).
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// RON's message, e.g. "1:5: Unexpected missing field named `depth` in `ImageEncoderViTConfig`".
        message: String,
    },
    /// A field has a value the model cannot be built with.
    #[error("invalid config{}: field `{field}` {message}", file.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Invalid {
        /// Dotted path of the field, e.g. `image_encoder.num_heads`.
        field: String,
        /// What is wrong with it.
        message: String,
        /// The file, when known.
        #[doc(hidden)]
        file: Option<PathBuf>,
    },
    /// Neither a preset nor a file.
    #[error("unknown model `{name}`: expected one of {known} or a path to a .ron config file")]
    UnknownPreset {
        /// What was asked for.
        name: String,
        /// The accepted preset names.
        known: String,
    },
}

impl ConfigError {
    /// `Err(Invalid)` for `field` with `message`, for `validate` functions.
    pub fn invalid<T>(field: &str, message: String) -> Result<T, Self> {
        Err(ConfigError::Invalid {
            field: field.to_string(),
            message,
            file: None,
        })
    }

    /// Attaches the file name to an [`ConfigError::Invalid`] error.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            ConfigError::Invalid { field, message, .. } => ConfigError::Invalid {
                field,
                message,
                file: Some(path.to_path_buf()),
            },
            other => other,
        }
    }
}

/// Parses a RON file into `T`.
pub fn load_ron<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_ron(&text).map_err(|message| ConfigError::Parse {
        path: path.to_path_buf(),
        message: if text.trim_start().starts_with('{') {
            // RON's own message would be "Expected opening `(`".
            format!(
                "this is JSON (an HF config.json?), but a RON file is expected here, e.g. \
                 configs/sam/vit_h.ron or configs/mimo/mimo-7b.ron (RON's message: {message})"
            )
        } else {
            message
        },
    })
}

/// Parses RON text into `T`; the error is RON's message with its line and column.
pub fn parse_ron<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    ron::from_str(text).map_err(|e| e.to_string())
}

/// Writes `value` as pretty RON.
pub fn to_ron<T: serde::Serialize>(value: &T) -> String {
    let pretty = ron::ser::PrettyConfig::new().struct_names(true);
    // Serialising plain config structs cannot fail.
    ron::ser::to_string_pretty(value, pretty).unwrap_or_default()
}

/// A model configuration read from RON files or chosen by preset name.
pub trait ModelConfig: DeserializeOwned + Sized {
    /// Accepted preset names.
    const PRESET_NAMES: &'static [&'static str];

    /// The preset called `name`, if any.
    fn preset(name: &str) -> Option<Self>;

    /// Checks the relations between fields; the error names the field.
    fn validate(&self) -> Result<(), ConfigError>;

    /// Reads and validates a RON file.
    fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let cfg: Self = load_ron(path.as_ref())?;
        cfg.validate().map_err(|e| e.in_file(path.as_ref()))?;
        Ok(cfg)
    }

    /// A preset name or a path to a RON file.
    fn from_name_or_file(name: &str) -> Result<Self, ConfigError> {
        if let Some(cfg) = Self::preset(name) {
            return Ok(cfg);
        }
        let path = Path::new(name);
        if path.extension().is_some_and(|e| e == "ron") || path.exists() {
            return Self::load(path);
        }
        Err(ConfigError::UnknownPreset {
            name: name.to_string(),
            known: Self::PRESET_NAMES.join(", "),
        })
    }
}

#[cfg(test)]
mod tests;
