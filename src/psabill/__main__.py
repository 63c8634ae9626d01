"""``python -m psabill``: the same entry point as the console script."""

from psabill.entry import main

main()
