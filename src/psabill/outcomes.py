"""The words a run and its items end in: item outcomes and run statuses.

Plain strings, in a module of their own so that the history's ledger query
(on the not-due cron path) can name them without loading the report classes.
"""

# Item outcomes
UPDATED = "updated"
UNCHANGED = "unchanged"
FAILED = "failed"
UNMAPPED = "unmapped"
PLANNED = "planned"  # dry-run: would be updated

# Run statuses
RUNNING = "running"
SUCCESS = "success"
PARTIAL = "partial"
FAILED_RUN = "failed"
ABORTED = "aborted"
INTERRUPTED = "interrupted"
