"""Write the API keys held in one AWS Secrets Manager secret (a JSON object: variable name -> key)
to an env file only this user can read, so that `ray start` runs with them set and every Ray process
of the node (gateway actors included) inherits them. cluster/aws.yaml runs it in its setup commands
on every node; the keys never appear in the cluster config, the job file or Ray's job metadata, and
this script prints only the variables' names.

    python cluster/fetch_keys.py --secret-id synth/api-keys --region us-east-1 --out ~/.synth/keys.env
    set -a; . ~/.synth/keys.env; set +a; ray start ...

The node's IAM role needs secretsmanager:GetSecretValue on that secret.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any


class KeysError(Exception):
    """One line for the user; never holds a key."""


def render(secret: Any, source: str) -> str:
    """The env file's text: ``NAME='value'`` lines, shell-quoted, names checked."""
    if not isinstance(secret, dict) or not secret:
        raise KeysError(f'{source}: expected a JSON object of variable name -> key, e.g. {{"OPENAI_KEY_1": "sk-..."}}')
    lines = []
    for name, value in secret.items():
        if not (isinstance(name, str) and name.isidentifier() and name.isascii()):
            raise KeysError(f"{source}: {name!r} is not an environment variable name")
        if not isinstance(value, str) or not value:
            raise KeysError(f"{source}: the value of {name} must be a non-empty string")
        lines.append(f"{name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def fetch(secret_id: str, *, region: str | None, endpoint_url: str | None = None) -> Any:
    import botocore.exceptions
    import botocore.session

    client = botocore.session.get_session().create_client(
        "secretsmanager", region_name=region, endpoint_url=endpoint_url
    )
    try:
        text = client.get_secret_value(SecretId=secret_id)["SecretString"]
    except botocore.exceptions.ClientError as e:
        raise KeysError(
            f"secret {secret_id}: {e.response['Error'].get('Code', 'error')}; check its name, region and the node's IAM role"
        ) from None
    except botocore.exceptions.BotoCoreError as e:
        raise KeysError(
            f"secret {secret_id}: {type(e).__name__}; check the region and the node's credentials"
        ) from None
    try:
        return json.loads(text)
    except ValueError:
        raise KeysError(f"secret {secret_id}: not JSON; store a JSON object of variable name -> key") from None


def write(text: str, out: Path) -> None:
    """Written whole under a temporary name, mode 0600 from its creation, then moved into place."""
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = out.with_name(out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cluster/fetch_keys.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--secret-id", required=True, help="the secret's name or ARN")
    p.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    p.add_argument("--endpoint-url", default=None, help="a Secrets Manager endpoint other than AWS's")
    p.add_argument("--out", type=Path, required=True, help="the env file to write (mode 0600)")
    a = p.parse_args(argv)
    try:
        secret = fetch(a.secret_id, region=a.region, endpoint_url=a.endpoint_url)
        write(render(secret, f"secret {a.secret_id}"), a.out.expanduser())
    except KeysError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(secret)} key variables to {a.out}: {', '.join(sorted(secret))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
