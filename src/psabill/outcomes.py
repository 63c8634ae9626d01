"""The words a run and its items end in, and what each one means for the run.

Plain strings, in a module of their own so that the ledger's query on the
not-due cron path can name them without loading the run model. Everything that
counts items (the email, ``history``, the site, ``--json``) counts by these
words as they come out of the items: no list of them is kept anywhere else.
"""

# -- item outcomes ----------------------------------------------------------------
PLANNED = "planned"  # in the plan, not written (yet): a dry run ends here
UPDATED = "updated"
UNCHANGED = "unchanged"
FAILED = "failed"
UNMAPPED = "unmapped"
HELD = "held"  # the guard held it for approval (see run.safety)
UNKNOWN = "unknown"  # a write was sent but its outcome could not be read back: re-checked, never assumed
REJECTED = "rejected"  # a held item an admin discarded with `psabill reject`

#: The order items and counts are shown in: what needs action first.
ITEM_ORDER = (HELD, FAILED, UNKNOWN, UNMAPPED, UPDATED, PLANNED, UNCHANGED, REJECTED)

# -- run statuses -------------------------------------------------------------------
RUNNING = "running"
SUCCESS = "success"
PARTIAL = "partial"
FAILED_RUN = "failed"
ABORTED = "aborted"
INTERRUPTED = "interrupted"
HELD_RUN = "held"  # the run held at least one item for approval
UNMAPPED_RUN = "unmapped"  # nothing failed, but too few rows mapped to a PSA line to call it a success
PLANNED_RUN = "planned"  # a dry run, or a run between its plan and its writes

#: Statuses after which a scheduled occurrence is not done: a later firing within catch-up tries again.
NOT_DONE = (RUNNING, ABORTED, INTERRUPTED)

#: Statuses that need someone to look (red in `status`, the subject's first word).
BAD = (FAILED_RUN, ABORTED, INTERRUPTED)
