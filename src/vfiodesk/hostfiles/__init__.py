"""The host-file editor: atomic writes, backups, a change journal, and undo."""
