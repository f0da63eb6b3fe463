"""The binding engine: the only code that writes PCI driver bindings in sysfs.

API for the CLI, the hook and `vfiodesk up`:

- ``bind_devices(host, patterns, force=, dry_run=, owner=) -> BindReport``
- ``release_devices(host, addresses | None, owner=) -> ReleaseReport`` (None: every journaled
  device); drivers whose modules went away are loaded again first

Every change is journaled under the root's run/vfiodesk before it happens; a failure rolls
the whole operation back; ``release_devices`` after a crash finishes the job.
"""
