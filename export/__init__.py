"""recdeploy.export"""
