from experiments.mechanism.command import main

main()
