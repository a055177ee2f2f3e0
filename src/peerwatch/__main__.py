from peerwatch.cli import main

raise SystemExit(main())
