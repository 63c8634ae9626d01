from psabill.cli import main

main()
