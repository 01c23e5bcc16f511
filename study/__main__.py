"""`python -m study` is the `study` command."""

from study.cli import app

app(prog_name="study")
