//! The TOML configuration file. Every key is optional; unknown keys are errors naming the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/silica-cron/config.toml";

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Database file path, or a `sqlite:///` URL.
    pub database: Option<String>,
    pub socket: Option<PathBuf>,
    pub migrations_dir: Option<PathBuf>,
    /// "production" or "development".
    pub environment: Option<String>,
    /// Most control connections served at once; more are answered "busy" and closed.
    pub max_connections: Option<usize>,
    pub bind_host: Option<String>,
    pub bind_port: Option<u16>,
    /// The agent command, an argv template (never a shell string); placeholders {prompt},
    /// {model}, {persona}, {session_id}, {workdir}, {job_name}.
    pub runner: Option<Vec<String>>,
    /// Seconds a run may take unless its job says otherwise.
    pub job_timeout: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when a run is stopped.
    pub kill_grace: Option<u64>,
    /// Bytes of stdout and of stderr kept per run.
    pub output_cap: Option<usize>,
    /// Runs at once; more due runs wait, highest prompt priority first.
    pub max_concurrent_runs: Option<usize>,
    /// History retention: keep at most this many finished executions per job (or per prompt,
    /// for manual runs without a job). None keeps all.
    pub keep_executions_per_job: Option<u64>,
    /// History retention: drop finished executions older than this many days. None keeps all.
    pub keep_executions_days: Option<u64>,
    /// Log level (LOG_LEVEL beats it); read at start only.
    pub log_level: Option<String>,
    /// Also write cron.log and cron-errors.log (LOG_TO_FILE beats it); read at start only.
    pub log_to_file: Option<bool>,
    /// Directory of the log files (LOG_DIR beats it); read at start only.
    pub log_dir: Option<PathBuf>,
    /// Directory of backups made without a PATH and of automatic ones. Default: `backups`
    /// beside the database; a relative path is relative to this file.
    pub backup_dir: Option<PathBuf>,
    /// Automatic backups (before rebuild, production upgrades, restores) kept; older
    /// automatic ones are deleted, manual ones never.
    pub keep_automatic_backups: Option<usize>,
    /// Recent log lines kept in memory for `silica-cron logs` (0 keeps none).
    pub log_buffer_lines: Option<usize>,
}

/// Lines `silica-cron logs` can show from before it was started (about 200 bytes each).
pub const DEFAULT_LOG_BUFFER_LINES: usize = 2000;

/// How the agent is run when the config file does not say (as the original ran its agent).
pub const DEFAULT_RUNNER: [&str; 13] = [
    "silica",
    "--prompt",
    "{prompt}",
    "--model",
    "{model}",
    "--sandbox-mode",
    "ALLOW_ALL",
    "--session-id",
    "{session_id}",
    "--disable-compaction",
    "--persona",
    "{persona}",
    "{workdir}",
];

impl ConfigFile {
    pub fn runner_argv(&self) -> Vec<String> {
        match &self.runner {
            Some(r) => r.clone(),
            None => DEFAULT_RUNNER.iter().map(|a| a.to_string()).collect(),
        }
    }
    pub fn job_timeout_secs(&self) -> u64 {
        self.job_timeout.unwrap_or(300)
    }
    pub fn kill_grace_secs(&self) -> u64 {
        self.kill_grace.unwrap_or(10)
    }
    pub fn output_cap_bytes(&self) -> usize {
        self.output_cap.unwrap_or(1024 * 1024)
    }
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent_runs.unwrap_or(4)
    }
    pub fn automatic_backups_kept(&self) -> usize {
        self.keep_automatic_backups.unwrap_or(5)
    }

    pub fn log_buffer(&self) -> usize {
        self.log_buffer_lines.unwrap_or(DEFAULT_LOG_BUFFER_LINES)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: max_connections must be at least 1")]
    BadMaxConnections { path: PathBuf },
    #[error("{0}")]
    Path(#[from] crate::paths::PathError),
}

impl ConfigFile {
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            // Name the line and quote it, so the key at fault is visible whatever toml says.
            let message = match e.span() {
                Some(span) => {
                    let line_no = text[..span.start].matches('\n').count() + 1;
                    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
                    format!("line {line_no} ({line}): {}", e.message().trim())
                }
                None => e.message().trim().to_string(),
            };
            ConfigError::Parse {
                path: path.to_owned(),
                message,
            }
        })?;
        if file
            .runner
            .as_ref()
            .is_some_and(|r| r.is_empty() || r[0].is_empty())
        {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: "runner must name a program as its first element".into(),
            });
        }
        if file.max_concurrent_runs == Some(0)
            || file.job_timeout == Some(0)
            || file.keep_executions_per_job == Some(0)
            || file.keep_automatic_backups == Some(0)
        {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: "max_concurrent_runs, job_timeout, keep_executions_per_job and keep_automatic_backups must be at least 1".into(),
            });
        }
        if file.max_connections == Some(0) {
            return Err(ConfigError::BadMaxConnections {
                path: path.to_owned(),
            });
        }
        if let Some(env) = &file.environment {
            if env != "production" && env != "development" {
                return Err(ConfigError::Parse {
                    path: path.to_owned(),
                    message: format!(
                        "environment must be \"production\" or \"development\", not {env:?}"
                    ),
                });
            }
        }
        Ok(file)
    }

    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        ConfigFile::parse(path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = ConfigFile::parse(Path::new("/x.toml"), "databse = 'a.db'\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/x.toml") && msg.contains("databse"), "{msg}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = ConfigFile::parse(Path::new("c"), "max_connections = 'many'").unwrap_err();
        assert!(
            err.to_string()
                .contains("line 1 (max_connections = 'many')"),
            "{err}"
        );
        let err = ConfigFile::parse(Path::new("c"), "environment = 'prod'").unwrap_err();
        assert!(err.to_string().contains("prod"));
    }

    /// The shipped example names every key with a valid value.
    #[test]
    fn example_file_is_complete_and_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/config.toml.example");
        let text = std::fs::read_to_string(&path).unwrap();
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let f = ConfigFile::parse(&path, &uncommented).unwrap();
        assert!(f.database.is_some() && f.socket.is_some() && f.migrations_dir.is_some());
        assert!(f.environment.is_some() && f.max_connections.is_some());
        assert!(f.bind_host.is_some() && f.bind_port.is_some());
        assert!(f.runner.is_some() && f.job_timeout.is_some() && f.kill_grace.is_some());
        assert!(f.output_cap.is_some() && f.max_concurrent_runs.is_some());
        assert!(f.keep_executions_per_job.is_some() && f.keep_executions_days.is_some());
        assert!(f.log_level.is_some() && f.log_to_file.is_some() && f.log_dir.is_some());
        assert!(f.backup_dir.is_some() && f.keep_automatic_backups.is_some());
        assert!(f.log_buffer_lines.is_some());
    }

    #[test]
    fn full_file_parses() {
        let f = ConfigFile::parse(
            Path::new("c"),
            "database = 'sqlite:////var/lib/x.db'\nsocket = '/run/x.sock'\nmax_connections = 9\n",
        )
        .unwrap();
        assert_eq!(f.max_connections, Some(9));
        assert_eq!(f.socket.as_deref(), Some(Path::new("/run/x.sock")));
    }
}
