from experiments.bench.command import main

main()
