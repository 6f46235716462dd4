"""gcl: Generative Contrastive Learning.

The repository keeps the folders synth/, train/, eval/; pyproject.toml installs them as
gcl.synth, gcl.train and gcl.eval (see docs/layout.md, "The code: one core under three apps").
"""

__version__ = "0.1.0"
