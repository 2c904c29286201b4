"""recdeploy.train"""
