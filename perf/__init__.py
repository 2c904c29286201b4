"""recdeploy.perf"""
