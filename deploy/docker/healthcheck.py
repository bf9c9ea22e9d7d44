"""Docker HEALTHCHECK of an mlcp service image: exit 0 when GET /healthz answers 200.

The port is MLCP_HTTP_PORT when set, else the service's DEFAULT_PORT that the image build wrote to
/app/default-port. Only the standard library: the probe runs every few seconds and must stay cheap.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

DEFAULT_PORT_FILE = Path("/app/default-port")


def probe_url() -> str:
    """The /healthz URL of the service in this container."""
    host = os.environ.get("MLCP_HTTP_HOST", "127.0.0.1")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    port = os.environ.get("MLCP_HTTP_PORT") or DEFAULT_PORT_FILE.read_text().strip()
    return f"http://{host}:{port}/healthz"


def main() -> int:
    """0 when healthy, 1 otherwise (with the reason on stderr, shown by `docker inspect`)."""
    # No proxy: an HTTP(S)_PROXY in the container's environment must not intercept loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        url = probe_url()
        with opener.open(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except Exception as exc:
        print(f"healthcheck failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
