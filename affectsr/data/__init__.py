"""Training data: build a sharded face cache (``prepare``), degrade HR crops to LR, and serve batches.

- :mod:`affectsr.data.prepare`: a folder of face images (or one with ``labels.csv``) -> square face
  crops at the HR size, landmarks on the HR and the LR crops, FER soft labels, labels, splits,
  stored in a few ``.npz`` shards (resumable, parallel).
- :mod:`affectsr.data.degrade`: bicubic (the paper's protocol) and seeded blind degradations.
- :mod:`affectsr.data.dataset`: the shards in memory, with exact-resume sampling.

The ``affectsr prepare`` command is :mod:`affectsr.commands.prepare`.
"""
