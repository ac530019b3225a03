from aivcs_ledgerd.cli import main

raise SystemExit(main())
