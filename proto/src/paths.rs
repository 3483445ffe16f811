//! Where things are (DESIGN §2): the database, the control socket beside it, the lock file.
//!
//! Both binaries resolve the same settings from the same flags, environment and config file, so a
//! client run with the daemon's environment and working directory finds its socket with no flags.

use std::path::{Component, Path, PathBuf};

use crate::cli::GlobalArgs;
use crate::config::{ConfigError, ConfigFile, DEFAULT_CONFIG_PATH};

pub const DEFAULT_DB: &str = "silica-cron.db";
/// sun_path holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{var}: {url:?} is not a SQLite URL; silica-cron stores its data in SQLite only (use sqlite:///relative.db or sqlite:////absolute/path.db)")]
    NotSqlite { var: &'static str, url: String },
    #[error("{var}: {url:?} names no database file (use sqlite:///relative.db or sqlite:////absolute/path.db)")]
    NoFile { var: &'static str, url: String },
    #[error("cannot determine the working directory: {0}")]
    Cwd(std::io::Error),
}

/// The settings both binaries agree on, resolved with precedence flags > environment > file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub db: PathBuf,
    pub socket: PathBuf,
    pub lock: PathBuf,
    pub migrations_dir: Option<PathBuf>,
    pub production: bool,
    pub config_path: Option<PathBuf>,
    pub file: ConfigFile,
}

/// Environment variables that matter, captured once so resolution is a pure function.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub database_url: Option<String>,
    pub cron_database_url: Option<String>,
    pub socket: Option<String>,
    pub config: Option<String>,
    pub environment: Option<String>,
}

impl Env {
    pub fn capture() -> Env {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            database_url: get("DATABASE_URL"),
            cron_database_url: get("CRON_DATABASE_URL"),
            socket: get("SILICA_CRON_SOCKET"),
            config: get("SILICA_CRON_CONFIG"),
            environment: get("SILICA_ENVIRONMENT"),
        }
    }
}

impl Settings {
    /// Resolves from the process's own arguments and environment.
    pub fn resolve(args: &GlobalArgs) -> Result<Settings, ConfigError> {
        let cwd = std::env::current_dir().map_err(PathError::Cwd)?;
        Settings::resolve_with(args, &Env::capture(), &cwd, Path::new(DEFAULT_CONFIG_PATH))
    }

    pub fn resolve_with(
        args: &GlobalArgs,
        env: &Env,
        cwd: &Path,
        default_config: &Path,
    ) -> Result<Settings, ConfigError> {
        let config_path = match (&args.config, &env.config) {
            (Some(p), _) => Some(absolute(cwd, p)),
            (None, Some(p)) => Some(absolute(cwd, Path::new(p))),
            (None, None) if default_config.exists() => Some(default_config.to_owned()),
            _ => None,
        };
        let file = match &config_path {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::default(),
        };
        let db = if let Some(p) = &args.db {
            absolute(cwd, p)
        } else if let Some(url) = &env.database_url {
            absolute(cwd, &sqlite_url_path("DATABASE_URL", url)?)
        } else if let Some(url) = &env.cron_database_url {
            absolute(cwd, &sqlite_url_path("CRON_DATABASE_URL", url)?)
        } else if let Some(d) = &file.database {
            let p = if d.contains("://") {
                sqlite_url_path("database (config file)", d)?
            } else {
                PathBuf::from(d)
            };
            // A relative path in the config file is relative to the file, not to whoever runs us.
            let base = config_path.as_deref().and_then(Path::parent).unwrap_or(cwd);
            absolute(base, &p)
        } else {
            absolute(cwd, Path::new(DEFAULT_DB))
        };
        let socket = match (&args.socket, &env.socket, &file.socket) {
            (Some(p), _, _) => absolute(cwd, p),
            (None, Some(p), _) => absolute(cwd, Path::new(p)),
            (None, None, Some(p)) => absolute(cwd, p),
            _ => default_socket_for(&db),
        };
        let production = match &env.environment {
            Some(e) => e == "production",
            None => file.environment.as_deref() == Some("production"),
        };
        let migrations_dir = args
            .migrations_dir
            .as_ref()
            .or(file.migrations_dir.as_ref())
            .map(|p| absolute(cwd, p));
        Ok(Settings {
            lock: lock_path_for(&db),
            db,
            socket,
            migrations_dir,
            production,
            config_path,
            file,
        })
    }
}

impl Settings {
    /// Where backups without a PATH, and automatic ones, go: `backup_dir` (relative to the
    /// config file), else `backups` beside the database.
    pub fn backup_dir(&self) -> PathBuf {
        match &self.file.backup_dir {
            Some(d) => match self.config_path.as_deref().and_then(Path::parent) {
                Some(base) => base.join(d),
                None => d.clone(),
            },
            None => self.db.parent().unwrap_or(Path::new(".")).join("backups"),
        }
    }

    /// The marker whose presence keeps the scheduler paused, across restarts.
    pub fn pause_marker(&self) -> PathBuf {
        let mut s = self.db.as_os_str().to_owned();
        s.push(".paused");
        s.into()
    }
}

/// `sqlite:///relative.db` -> `relative.db`, `sqlite:////abs/path.db` -> `/abs/path.db`.
pub fn sqlite_url_path(var: &'static str, url: &str) -> Result<PathBuf, PathError> {
    let rest = url
        .strip_prefix("sqlite:///")
        .or_else(|| url.strip_prefix("sqlite+pysqlite:///"))
        .ok_or_else(|| PathError::NotSqlite {
            var,
            url: url.to_owned(),
        })?;
    let rest = rest.split('?').next().unwrap_or("");
    if rest.is_empty() || rest == "/" {
        return Err(PathError::NoFile {
            var,
            url: url.to_owned(),
        });
    }
    Ok(PathBuf::from(rest))
}

/// The socket beside the database (`silica-cron.db.sock`), or, when that path is too long for a
/// Unix socket, a name derived from a hash of the database path in the runtime directory.
pub fn default_socket_for(db: &Path) -> PathBuf {
    let mut beside = db.as_os_str().to_owned();
    beside.push(".sock");
    let beside = PathBuf::from(beside);
    if beside.as_os_str().len() <= MAX_SOCKET_PATH {
        return beside;
    }
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    dir.join(format!(
        "silica-cron-{:016x}.sock",
        fnv1a(db.as_os_str().as_encoded_bytes())
    ))
}

pub fn lock_path_for(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// The URL alembic-style tools print for a database path.
pub fn sqlite_url_for(db: &Path) -> String {
    format!("sqlite:///{}", db.display())
}

/// FNV-1a: a stable short hash for names derived from a path (socket names, run markers).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

/// `base/p` with `.` and `..` removed lexically (the file may not exist yet).
pub fn absolute(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: GlobalArgs, env: Env) -> Settings {
        Settings::resolve_with(
            &args,
            &env,
            Path::new("/w"),
            Path::new("/nonexistent/c.toml"),
        )
        .unwrap()
    }

    #[test]
    fn urls() {
        assert_eq!(
            sqlite_url_path("X", "sqlite:///rel.db").unwrap(),
            PathBuf::from("rel.db")
        );
        assert_eq!(
            sqlite_url_path("X", "sqlite:////a/b.db").unwrap(),
            PathBuf::from("/a/b.db")
        );
        let e = sqlite_url_path("DATABASE_URL", "postgresql://u@h/db").unwrap_err();
        assert!(e.to_string().contains("DATABASE_URL") && e.to_string().contains("not a SQLite"));
        assert!(sqlite_url_path("X", "sqlite:///").is_err());
    }

    #[test]
    fn precedence() {
        let env = Env {
            database_url: Some("sqlite:///from_env.db".into()),
            cron_database_url: Some("sqlite:///cron.db".into()),
            ..Env::default()
        };
        let s = resolve(GlobalArgs::default(), env.clone());
        assert_eq!(s.db, PathBuf::from("/w/from_env.db"));
        assert_eq!(s.socket, PathBuf::from("/w/from_env.db.sock"));
        assert_eq!(s.lock, PathBuf::from("/w/from_env.db.lock"));
        let args = GlobalArgs {
            db: Some("./x/../flag.db".into()),
            ..GlobalArgs::default()
        };
        assert_eq!(resolve(args, env).db, PathBuf::from("/w/flag.db"));
        let env = Env {
            cron_database_url: Some("sqlite:////abs/c.db".into()),
            ..Env::default()
        };
        assert_eq!(
            resolve(GlobalArgs::default(), env).db,
            PathBuf::from("/abs/c.db")
        );
        assert_eq!(
            resolve(GlobalArgs::default(), Env::default()).db,
            PathBuf::from("/w/silica-cron.db")
        );
    }

    #[test]
    fn long_paths_get_a_hashed_socket() {
        let long = PathBuf::from(format!("/{}/silica-cron.db", "d".repeat(120)));
        let s = default_socket_for(&long);
        assert!(s.as_os_str().len() <= MAX_SOCKET_PATH || s.starts_with(std::env::temp_dir()));
        assert_eq!(s, default_socket_for(&long), "stable");
        assert!(s.to_string_lossy().ends_with(".sock"));
    }

    #[test]
    fn production_from_env() {
        let env = Env {
            environment: Some("production".into()),
            ..Env::default()
        };
        assert!(resolve(GlobalArgs::default(), env).production);
        let env = Env {
            environment: Some("staging".into()),
            ..Env::default()
        };
        assert!(!resolve(GlobalArgs::default(), env).production);
    }
}
