from mlcp.devstack.cli import app

app(prog_name="python -m mlcp.devstack")
