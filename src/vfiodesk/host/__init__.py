"""Read-only probes of a host tree (sysfs, procfs, kernel log) under a root."""
