"""gcl: Generative Contrastive Learning.

The repository keeps the user's folders synth/, train/, eval/; pyproject.toml installs them as
gcl.synth, gcl.train and gcl.eval (see README, "Import names").
"""

__version__ = "0.1.0"
