//! The migration engine: revision files ([`script`]), their graph ([`graph`]), the database side
//! ([`store`]) and the commands of `silica-cron migrate` ([`commands`]).
//!
//! Commands write their output as lines to a [`Sink`]; the daemon streams those lines to the
//! client, the one-shot `silica-crond migrate` prints them, so both give the same output.

pub mod authoring;
pub mod autogen;
#[cfg(test)]
mod autogen_props;
pub mod catalog;
pub mod commands;
pub mod graph;
pub mod script;
pub mod sqlsplit;
pub mod store;

use proto::message::{ErrorKind, ErrorReply, Output};

pub use commands::{run, Ctx};

/// The revision graph of a source. The built-in files never change, so they are parsed once;
/// a directory is read again each time (a developer edits it while the daemon runs).
pub fn load_graph(source: &script::Source) -> Result<std::sync::Arc<graph::Graph>, MigrateError> {
    use std::sync::{Arc, OnceLock};
    static BUILT_IN: OnceLock<Arc<graph::Graph>> = OnceLock::new();
    let build = || -> Result<Arc<graph::Graph>, MigrateError> {
        Ok(Arc::new(graph::Graph::build(source.load()?)?))
    };
    match source {
        script::Source::BuiltIn => {
            if let Some(g) = BUILT_IN.get() {
                return Ok(g.clone());
            }
            let g = build()?;
            Ok(BUILT_IN.get_or_init(|| g).clone())
        }
        script::Source::Dir(_) => build(),
    }
}

/// Where a command's output lines go.
pub struct Sink<'a>(pub &'a mut dyn FnMut(Output));

/// What starts alembic's migration log lines (`Running upgrade A -> B, message`).
pub const STEP_PREFIX: &str = "INFO  [alembic.runtime.migration] ";

impl Sink<'_> {
    pub fn out(&mut self, line: impl Into<String>) {
        (self.0)(Output::Stdout(line.into()))
    }
    pub fn err(&mut self, line: impl Into<String>) {
        (self.0)(Output::Stderr(line.into()))
    }
    /// A log line in alembic's format, so scripts that read alembic's output read ours.
    pub fn info(&mut self, msg: impl AsRef<str>) {
        self.err(format!("{STEP_PREFIX}{}", msg.as_ref()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Script(#[from] script::ScriptError),
    #[error(transparent)]
    Graph(#[from] graph::GraphError),
    /// Boxed: the statement error carries the revision, file, line and SQL.
    #[error(transparent)]
    Store(Box<store::StoreError>),
    #[error("the database is at revision {ids}, which no revision file defines (it was made by a newer silica-cron, or the file was removed). Check its schema, then record the right revision with: silica-cron migrate stamp --purge <revision>")]
    UnknownDbRevision { ids: String },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl From<store::StoreError> for MigrateError {
    fn from(e: store::StoreError) -> Self {
        MigrateError::Store(Box::new(e))
    }
}

impl MigrateError {
    pub fn to_reply(&self) -> ErrorReply {
        let kind = match self {
            MigrateError::Script(_) => ErrorKind::InvalidArgument,
            MigrateError::Graph(graph::GraphError::Unknown(_)) => ErrorKind::NotFound,
            MigrateError::Graph(_) | MigrateError::Usage(_) => ErrorKind::InvalidArgument,
            MigrateError::Store(_) | MigrateError::Io { .. } => ErrorKind::Database,
            MigrateError::UnknownDbRevision { .. } => ErrorKind::Conflict,
            MigrateError::Refused(_) => ErrorKind::Refused,
        };
        ErrorReply::new(kind, self.to_string())
    }
}
