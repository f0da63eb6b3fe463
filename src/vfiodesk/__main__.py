from vfiodesk.cli.fast import run

run()
