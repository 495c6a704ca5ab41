"""`rewardpatch stats`: class frequencies and weights from annotation maps (issue 5)."""

import click


@click.command("stats")
def stats_command() -> int:
    """Count pixels per class over label maps and derive class weights."""
    raise click.ClickException("stats is not implemented yet")
