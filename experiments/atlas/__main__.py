from experiments.atlas.command import main
raise SystemExit(main())
