import sys

from privbench.cli import main

sys.exit(main())
