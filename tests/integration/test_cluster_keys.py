"""cluster/fetch_keys.py against a real Secrets Manager API (moto's server, as the S3 tests use): the
keys land in a 0600 env file that a shell sources into `ray start`'s environment, and only their
names are printed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "cluster" / "fetch_keys.py"
KEYS = {"OPENAI_KEY_1": "sk-fetch-one-$(not run)", "OPENAI_KEY_2": "sk-fetch 'two'", "GEMINI_KEY": "gm-fetch-3"}


def fetch(endpoint: str, secret_id: str, out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SCRIPT), "--secret-id", secret_id, "--region", "us-east-1"]
    return subprocess.run(
        [*cmd, "--endpoint-url", endpoint, "--out", str(out)], capture_output=True, text=True, timeout=60
    )


def test_keys_from_secrets_manager_reach_a_sourced_environment_and_nothing_prints_them(s3_server, tmp_path):
    import botocore.session

    client = botocore.session.get_session().create_client(
        "secretsmanager", region_name="us-east-1", endpoint_url=s3_server
    )
    client.create_secret(Name="synth/api-keys", SecretString=json.dumps(KEYS))
    out = tmp_path / "home" / ".synth" / "keys.env"
    r = fetch(s3_server, "synth/api-keys", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote 3 key variables to {out}: GEMINI_KEY, OPENAI_KEY_1, OPENAI_KEY_2"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # what aws.yaml's start commands do: source the file, then start Ray (here: print the environment)
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    shown = subprocess.run(
        [
            "bash",
            "-c",
            f"set -a && . {out} && set +a && {sys.executable} -c 'import json, os; print(json.dumps(dict(os.environ)))'",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    assert {k: json.loads(shown.stdout)[k] for k in KEYS} == KEYS
    for value in KEYS.values():
        assert value not in r.stdout + r.stderr

    # an unknown secret and a secret that is not a JSON object: one line, exit 2, nothing written
    client.create_secret(Name="synth/flat", SecretString="sk-just-a-key-value")
    for secret_id, message in (
        (
            "synth/none",
            "error: secret synth/none: ResourceNotFoundException; check its name, region and the node's IAM role",
        ),
        ("synth/flat", "error: secret synth/flat: not JSON; store a JSON object of variable name -> key"),
    ):
        bad = fetch(s3_server, secret_id, tmp_path / "other.env")
        assert (bad.returncode, bad.stderr.strip(), bad.stdout) == (2, message, "")
        assert not (tmp_path / "other.env").exists()
