"""The ``validator`` command line."""

import click

from validator import __version__


@click.group()
@click.version_option(__version__, prog_name="validator")
def cli() -> None:
    """Check OpenEnv inference stdout logs."""
