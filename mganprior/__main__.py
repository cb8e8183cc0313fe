from mganprior.entry import main

raise SystemExit(main())
