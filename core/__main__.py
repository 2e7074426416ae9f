from .commands.cli import cli

cli()
