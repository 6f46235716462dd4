"""gcl.train: contrastive training on view-family shards (Lightning 2, lightly building blocks)."""
