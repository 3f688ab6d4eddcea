"""Up-front checks of where `--log-to` sends the metrics: a tracking server that does not answer is one
line within seconds, before anything is written or started. Left to the trackers, an unreachable MLflow
server costs minutes of retries and a traceback per trial, and W&B's online mode waits as long."""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

TRACKING_TIMEOUT = 3.0  # seconds for each server's answer, name lookup included
WANDB_SERVER = "https://api.wandb.ai"  # W&B's default, unless WANDB_BASE_URL names another
GATEWAY_ERRORS = (502, 503, 504)  # a proxy's "the server behind me does not answer"


def tracking_problem(tracker: str, environ: Mapping[str, str] | None = None,
                     timeout: float = TRACKING_TIMEOUT) -> str | None:
    """Why `tracker` (tensorboard, mlflow, wandb) cannot log from here, as one line, or None. Only the
    servers are checked: MLflow's at an http(s) MLFLOW_TRACKING_URI (another URI is a local store or
    one MLflow resolves itself), W&B's unless WANDB_MODE says offline or disabled."""
    environ = os.environ if environ is None else environ
    if tracker == "mlflow":
        uri = environ.get("MLFLOW_TRACKING_URI", "").strip()
        if urlsplit(uri).scheme not in ("http", "https"):
            return None
        why = no_answer(_shown(uri), timeout)
        if why:
            return (f"--log-to mlflow: the tracking server at {_shown(uri)} (MLFLOW_TRACKING_URI) does not "
                    f"answer ({why}); start it, or unset MLFLOW_TRACKING_URI to log into STORAGE/mlruns")
    elif tracker == "wandb":
        mode = (environ.get("WANDB_MODE") or "online").strip().lower()
        disabled = environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes")
        if mode in ("offline", "dryrun", "disabled") or disabled:
            return None
        server = (environ.get("WANDB_BASE_URL") or WANDB_SERVER).strip()
        why = no_answer(_shown(server), timeout)
        if why:
            return (f"--log-to wandb: the W&B server {_shown(server)} does not answer ({why}); set "
                    "WANDB_MODE=offline to log locally (`wandb sync` uploads the runs later)")
    return None


def no_answer(url: str, timeout: float = TRACKING_TIMEOUT) -> str | None:
    """Why an HTTP GET of `url` gets no answer from its server within `timeout` seconds (name lookup
    and proxies as urllib does them), or None when it answers. Any HTTP status counts as an answer
    (a 404 or 401 still means a server is there), except a proxy's gateway errors."""
    outcome: list[str | None] = [f"no answer within {timeout:g} s"]
    finished = threading.Event()

    def attempt() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout).close()
            outcome[0] = None
        except urllib.error.HTTPError as error:
            outcome[0] = f"HTTP {error.code} from a proxy" if error.code in GATEWAY_ERRORS else None
        except (OSError, ValueError) as error:  # URLError is an OSError; ValueError: a malformed URL
            reason = getattr(error, "reason", error)
            outcome[0] = " ".join(f"{type(reason).__name__}: {reason}".split())[:160]
        finished.set()

    # A thread, because socket timeouts do not bound the name lookup, which can hang far longer.
    threading.Thread(target=attempt, name="lhdbench-tracking-probe", daemon=True).start()
    finished.wait(timeout)
    return outcome[0] if finished.is_set() else f"no answer within {timeout:g} s"


def _shown(url: str) -> str:
    """A URL without the user name and password it may carry (urllib would take them for the host)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
