"""vfiodesk: a GPU-passthrough virtual desktop on a Linux host, checked, planned, applied and undone."""

__version__ = "0.1.0"
