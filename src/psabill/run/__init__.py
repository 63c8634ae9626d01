"""``psabill run``: the guard that makes each occurrence run once, and the run itself.

* :mod:`~psabill.run.guard` decides what is due and runs it once, holding the lock;
* :mod:`~psabill.run.perform` records a run, settles it and sends its report;
* :mod:`~psabill.run.engine` is the refresh over a PSA client;
* :mod:`~psabill.run.mapping` reads the mapping file.
"""
