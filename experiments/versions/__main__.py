from experiments.versions.command import main

main()
