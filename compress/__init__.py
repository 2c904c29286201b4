"""recdeploy.compress"""
