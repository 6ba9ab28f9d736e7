"""The ``pgqueue`` command line. Minimal for now: ``migrate``; more commands join later."""

from __future__ import annotations

import os

import click
import psycopg

from pgqueue_py.migrate import MigrateError, migrate


class MissingDsn(click.ClickException):
    """No database to talk to: a usage error, shown as one line."""

    exit_code = 2

    def __init__(self) -> None:
        super().__init__("no database given: pass --dsn or set DATABASE_URL")


def _dsn_option(dsn: str | None) -> str:
    if not dsn:
        raise MissingDsn()
    return dsn


@click.group()
def main() -> None:
    """pgqueue: a job queue engine that lives inside PostgreSQL."""


@main.command("migrate")
@click.option(
    "--dsn",
    default=lambda: os.environ.get("DATABASE_URL"),
    help="PostgreSQL DSN (URL or key=value); defaults to $DATABASE_URL.",
)
def migrate_command(dsn: str | None) -> None:
    """Apply pending migrations, then (re)create every pgq function."""
    try:
        result = migrate(_dsn_option(dsn))
    except (MigrateError, psycopg.Error) as exc:
        raise click.ClickException(str(exc).strip()) from exc
    if result.applied_migrations:
        click.echo("applied migrations: " + ", ".join(result.applied_migrations))
    else:
        click.echo("no pending migrations")
    click.echo(f"applied {result.functions_applied} function files")
