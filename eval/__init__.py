"""gcl.eval: probes (kNN, linear) shared with gcl-train's online evaluation, comparison, pictures."""
