"""An LLM API simulator speaking the OpenAI and Gemini wire formats, so the official SDKs run
against it unmodified: deterministic fake content, per-key RPM/TPM/concurrency limits answered with
429 and the real headers, simulated latency, and injected faults (5xx, malformed JSON, hangs,
revoked keys). Reconfigurable at runtime under ``/_sim/``.

Run it with ``synth sim serve`` (first line of stdout: its URL), or in process::

    async with simulator(SimConfig(rpm=600, latency_ms=200)) as sim:
        client = AsyncOpenAI(base_url=sim.url + "/v1", api_key="any-key")
"""

from synth.simulator.config import KeyOverride, SimConfig
from synth.simulator.server import Simulator, simulator, start_server

__all__ = ["KeyOverride", "SimConfig", "Simulator", "simulator", "start_server"]
