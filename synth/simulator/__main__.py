"""``python -m synth.simulator serve ...``: the same as ``synth sim serve``."""

from synth.simulator.cli import app

app(prog_name="python -m synth.simulator")
