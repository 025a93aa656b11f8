from rea.cli import app

app()
