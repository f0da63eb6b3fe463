"""Pure planners: what to change, decided from probed facts, before anything is touched."""
