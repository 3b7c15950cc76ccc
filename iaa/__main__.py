from iaa.cli import main

raise SystemExit(main())
