from mganprior.cli import main

raise SystemExit(main())
