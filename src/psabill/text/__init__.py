"""Text leaving the process: the one cleaner, the redactor, the file helpers and the log."""
