from experiments.reproduce.command import main

main()
