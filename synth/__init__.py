"""gcl.synth: offline view-family synthesis (encoder -> latent augmenter -> decoder) into shards."""
