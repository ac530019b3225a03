from aivcs_ledgerd.process.cli import main

raise SystemExit(main())
