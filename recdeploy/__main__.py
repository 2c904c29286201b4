import sys

from recdeploy.cli import main

sys.exit(main())
