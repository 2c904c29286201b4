"""recdeploy: recommender models from training to a measured NVIDIA Triton deployment.

Stages live in their own folders and import as ``recdeploy.<stage>``:
train, compress, export, serve, clients, perf.
"""
__version__ = "0.1.0"
