"""The command line: click + rich, imported lazily so `--json` paths stay fast."""
