"""Which Ray a run uses, and getting there without surprises.

* No `--address` and no $RAY_ADDRESS: a private instance on loopback, never a cluster that happens to run
  on the machine (`ray.init()` would join one started with `ray start`). Token authentication is off for
  it (nothing leaves the machine), so nothing is written into ~/.ray. A watchdog process ends it if the
  driver dies, SIGKILL included (`ray_watchdog.py`).
* An address: checked before anything is written. A port nobody listens on, and a token-authenticated
  cluster (Ray >= 2.59) joined without its token, are one line within seconds, instead of Ray's
  retries and tracebacks. Ray Client addresses (`ray://`) are refused: Tune would run the driver's
  bookkeeping remotely, away from the store.

Everything here that sets Ray's environment runs before `ray` is imported, which reads it then.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Where a private instance's folder goes: short, because Ray's unix sockets live under it.
PRIVATE_PARENT = "/tmp" if os.path.isdir("/tmp") else None
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a local instance binds to 127.0.0.1 only
AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_HELP = ("set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN (or a file named by "
              "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token); `ray get-auth-token` on the head node prints it")


def cluster_address(option: str | None) -> str | None:
    """The cluster to join (`--address`, else $RAY_ADDRESS), or None for a private instance."""
    address = (option or os.environ.get("RAY_ADDRESS") or "").strip() or None
    if address in (None, "local"):
        return None
    if "://" in address:
        raise ValueError(f"--address {address}: Ray Client addresses (ray://...) are not supported: run "
                         "`lhdbench benchmark` on a node of the cluster (the head) with --address auto or "
                         "the head's host:port, so that the driver sits beside the store")
    return address


def prepare_environment(address: str | None) -> None:
    """Before `import ray`: a private instance stays on loopback and needs no token."""
    if address is None:
        os.environ.setdefault(LOOPBACK_ENV, "0")
        os.environ.setdefault(AUTH_MODE_ENV, "disabled")


def check_cluster(address: str, timeout: float = 5.0) -> None:
    """ValueError (one line) unless the cluster at host:port answers and accepts this driver."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" or a form Ray resolves itself: ray.init reports on it
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise ValueError(f"cannot reach the Ray cluster at {address} ({error.strerror or error}); is its "
                         "head running (`ray start --head`), and is this its GCS address?") from None
    try:
        from ray._raylet import GcsClient  # private, but the only check that answers within a second
        from ray.exceptions import AuthenticationError
    except ImportError:
        return
    with _quiet_stderr():  # Ray's C++ client logs a warning line of its own on a refused token
        try:
            GcsClient(address=address)
        except AuthenticationError:
            if os.environ.get(AUTH_MODE_ENV, "").lower() != "token":
                raise ValueError(f"the Ray cluster at {address} requires token authentication: "
                                 f"{TOKEN_HELP}") from None
            raise ValueError(f"the Ray cluster at {address} rejected this driver's token: "
                             f"{TOKEN_HELP}") from None
        except Exception:  # noqa: BLE001 - anything else is ray.init's to report
            return


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class PrivateInstance:
    """A Ray instance of this run's own: started here, in a temp folder of its own (short, because Ray's
    unix sockets live under it), and watched by a process that ends it if this one dies."""

    def __init__(self, init_kwargs: dict) -> None:
        import ray

        self.folder = tempfile.mkdtemp(prefix="lhdb-ray-", dir=PRIVATE_PARENT)
        read_end, self._write_end = os.pipe()  # the write end is not inherited by Ray's children
        try:
            watchdog = [sys.executable, str(Path(__file__).with_name("ray_watchdog.py")), self.folder,
                        str(os.getpid())]
            subprocess.Popen(watchdog, stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True, close_fds=True)
        finally:
            os.close(read_end)
        ray.init(address="local", _temp_dir=self.folder, **init_kwargs)

    def close(self) -> None:
        import ray

        ray.shutdown()
        os.write(self._write_end, b"clean")  # the watchdog's CLEAN: nothing for it to do
        os.close(self._write_end)
        shutil.rmtree(self.folder, ignore_errors=True)
