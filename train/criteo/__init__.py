"""Criteo-format CTR data at 10^7 rows: the TSV schema, a reader for a user's own files, a
seeded synthetic generator in the same schema, and the streaming preprocessing into the
memory-mapped arrays the models train on.

    from recdeploy.train.criteo.tsv import read_tsv_chunks          # a user's day_0 / train.txt
    from recdeploy.train.criteo.synthetic import SyntheticCriteo     # the same schema, seeded
    from recdeploy.train.criteo.prepare import prepare               # -> vocabularies + .npy

The registered dataset ``criteo`` (``train/datasets/criteo.py``) ties them together.
"""
