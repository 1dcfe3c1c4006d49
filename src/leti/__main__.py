from leti.cli import main

raise SystemExit(main())
