"""``python -m mlcp.cli`` = ``mlcp``."""

from mlcp.cli.main import app

app()
