"""python -m recdeploy.perf --help"""
import sys

from recdeploy.perf.cli import main

sys.exit(main())
