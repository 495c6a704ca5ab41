"""`rewardpatch config`: turn a cross-entropy config into a reward fine-tune config (issue 5)."""

import click


@click.command("config")
def config_command() -> int:
    """Write a config that fine-tunes SRC's model with reward heads."""
    raise click.ClickException("config is not implemented yet")
