from rea_tools.cli import app

app()
