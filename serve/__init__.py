"""recdeploy.serve"""
