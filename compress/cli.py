"""``recdeploy compress``: prune / quantize a trained model (being built: see the compression issue)."""
import argparse
import sys


def main(argv=None) -> int:
    argparse.ArgumentParser(prog="recdeploy compress", description=__doc__).parse_args(argv)
    print("recdeploy compress: not available yet", file=sys.stderr)
    return 2
