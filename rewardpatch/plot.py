"""`rewardpatch plot`: CSVs and plots of an mmengine run's scalars (issue 5)."""

import click


@click.command("plot")
def plot_command() -> int:
    """Plot an experiment's losses, rewards and validation metrics."""
    raise click.ClickException("plot is not implemented yet")
