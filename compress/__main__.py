import sys

from recdeploy.compress.cli import main

sys.exit(main())
