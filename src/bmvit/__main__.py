import sys

from bmvit.cli import main

sys.exit(main())
