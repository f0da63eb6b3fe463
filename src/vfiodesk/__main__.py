from vfiodesk.cli.main import run

run()
