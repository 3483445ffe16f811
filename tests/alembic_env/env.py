"""alembic env.py for the silica cron interop environment.

Version table: cron_alembic_version.
Database URL: DATABASE_URL, then CRON_DATABASE_URL, else sqlite:///./silica-cron.db.
Supports online mode and offline (--sql) mode.
"""
import importlib.util
import os
import sys
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, pool

VERSION_TABLE = "cron_alembic_version"
DEFAULT_URL = "sqlite:///./silica-cron.db"

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name)


def _load_models():
    # Load models.py next to this file by path, so that whatever directory
    # alembic is run from (and whatever "models" module is on sys.path) does
    # not matter.
    name = "silica_cron_alembic_env_models"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parent / "models.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


target_metadata = _load_models().Base.metadata


def get_url() -> str:
    return (
        os.environ.get("DATABASE_URL")
        or os.environ.get("CRON_DATABASE_URL")
        or DEFAULT_URL
    )


def include_name(name, type_, parent_names):
    """With ALEMBIC_IGNORE_SILICA_LEDGER=1: the filter silica-cron's README gives to the original
    tool's env.py, so its autogenerate leaves silica-cron's revision ledger alone."""
    if type_ == "table" and os.environ.get("ALEMBIC_IGNORE_SILICA_LEDGER") == "1":
        return not name.startswith("silica_cron_")
    return True


def run_migrations_offline() -> None:
    """Emit SQL to stdout (alembic ... --sql) without a database connection."""
    context.configure(
        url=get_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table=VERSION_TABLE,
    )

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations against a live connection."""
    connectable = create_engine(get_url(), poolclass=pool.NullPool)

    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=VERSION_TABLE,
            include_name=include_name,
        )

        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
