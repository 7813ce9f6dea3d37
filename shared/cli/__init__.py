"""``auditctl``: operator commands for licences, keys, topics, migrations and verification."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from shared.cli.settings import CliSettings
from shared.settings import load_settings

T = TypeVar("T")


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    async def runner() -> T:
        return await factory()

    return asyncio.run(runner())


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Operate the audit ingest pipeline."""
    ctx.obj = load_settings(CliSettings)


def _register() -> None:
    from shared.cli import (  # noqa: PLC0415 - they import this module
        chain,
        licenses,
        ops,
        posture,
        proof,
        setup,
        tokens,
    )

    for module in (setup, licenses, tokens, chain, posture, ops, proof):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
