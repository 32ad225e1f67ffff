from experiments.compare.command import main

main()
