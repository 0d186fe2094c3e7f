from dvheval.cli import run

run()
