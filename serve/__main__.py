import sys

from recdeploy.serve.cli import main

sys.exit(main())
