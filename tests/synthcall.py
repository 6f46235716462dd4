"""What `gcl-synth run ARGS` would make, without making it: the command line runs as usual up to
the RunConfig it hands gcl.synth.run.execute, which is captured instead of run."""

from __future__ import annotations

import gcl.synth.defaults
import gcl.synth.run
from click.testing import CliRunner

from gcl.synth.cli import main


def resolved(args: list[str], monkeypatch) -> tuple[object, str, int]:
    """(the RunConfig gcl-synth run would execute or None, its output, its exit code)."""
    seen = []

    def capture(config):
        seen.append(config)
        return {"failed": [], "reference_match": None}

    monkeypatch.setattr(gcl.synth.run, "execute", capture)
    monkeypatch.setattr(gcl.synth.defaults, "check_default_model", lambda family, model: None)  # no hub lookups
    monkeypatch.setattr(gcl.synth.defaults, "resolve_cifar10", lambda split="train": f"<cifar10 {split}>")
    result = CliRunner().invoke(main, ["run", *[str(a) for a in args]])
    return (seen[0] if seen else None), result.output, result.exit_code
