"""The ``tracer`` command line: a thin click layer over the library."""

import click

from tracer import __version__


@click.group()
@click.version_option(__version__, prog_name="tracer")
def cli() -> None:
    """Record, replay and inspect OpenEnv agent episodes."""
