from experiments.plateaus.command import main

main()
