"""The ``auditctl`` command group: every command module contributes its ``COMMANDS``."""

from __future__ import annotations

import click

from services.auditctl import chain, erase, licenses, posture, proof, recovery, setup, tokens
from services.auditctl.settings import CliSettings
from shared.settings import load_settings


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Operate the audit ingest pipeline."""
    ctx.obj = load_settings(CliSettings)


for _module in (setup, licenses, tokens, chain, posture, recovery, proof, erase):
    for _command in _module.COMMANDS:
        main.add_command(_command)
