"""Alembic, driven from code: each service's migrations/env.py delegates here."""

from __future__ import annotations

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData

from retention_shared.db import create_db_engine
from retention_shared.runtime import ServiceDefinition


def alembic_config(definition: ServiceDefinition, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(definition.migrations_dir))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.set_main_option(
        "file_template", "%%(year)d-%%(month).2d-%%(day).2d-%%(hour).2d%%(minute).2d_%%(slug)s"
    )
    return config


def upgrade(definition: ServiceDefinition, url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(definition, url), revision)


def new_revision(definition: ServiceDefinition, message: str) -> None:
    """Autogenerate a migration by comparing the models with a scratch database at head."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{Path(scratch) / 'scratch.db'}"
        config = alembic_config(definition, url)
        command.upgrade(config, "head")
        command.revision(config, message=message, autogenerate=True)


def run_migrations(metadata: MetaData) -> None:
    """The body of every service's env.py (online mode only: we always have a database)."""
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("sqlalchemy.url is not set; run migrations through `retention migrate`")
    engine = create_db_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            user_module_prefix="retention_shared.db.",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
