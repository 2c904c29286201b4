"""recdeploy.clients"""
