"""A node that brings its own tailnet identity (``tailnet.backend = "managed"``).

The counterpart of Go's ``tsnet.Server``: the node starts its own ``tailscaled`` in userspace
networking mode (no TUN device, no root), with a state directory and a LocalAPI socket of its
own under ``STATE_DIR/tailscaled/``, logs it in with an auth key (read from
``tailnet.auth_key_file`` or the environment variable ``tailnet.auth_key_env``; never from the
TOML), sets its hostname and advertises the cluster tag, waits until it is ``Running`` and
tagged, and stops it when the node stops. A restart reuses the saved tailscaled state (no new
login, no new tailnet node).

It runs ``tailscaled --tun=userspace-networking --statedir=DIR --socket=PATH --port=0`` and
logs in through the LocalAPI (``POST start``: what ``tailscale up --authkey --hostname
--advertise-tags`` asks). Every failure is one :class:`TailnetError` line: a missing binary,
a tailscaled that exits, a refused auth key, a login that never completes, a node without the
cluster tag (:class:`NotTaggedError`).

Called from the thread that starts the node (blocking); :meth:`stop` from any thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from .admin_socket import MAX_UNIX_PATH
from .config import Config
from .errors import ConfigError, NotTaggedError, TailnetError
from .localapi import LocalAPIClient, LocalAPITailnet, TailnetStatus

log = logging.getLogger("tsconsensus.managed")

SUBDIR = "tailscaled"
_LOGIN_WORDS = ("key", "auth", "login")


def managed_dir(config: Config) -> Path:
    """Where a managed node's tailscaled keeps its state, socket and log."""
    return Path(config.storage.state_dir) / SUBDIR


def managed_socket_path(config: Config) -> Path:
    return managed_dir(config) / "tailscaled.sock"


def read_auth_key(config: Config, environ: Mapping[str, str]) -> str:
    """The auth key from ``tailnet.auth_key_file``, else from ``tailnet.auth_key_env``.
    Raises :class:`ConfigError` naming the key that should have provided it."""
    tailnet = config.tailnet
    if tailnet.auth_key_file:
        try:
            key = Path(tailnet.auth_key_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                "tailnet.auth_key_file", tailnet.auth_key_file, f"cannot be read: {exc.strerror}"
            ) from None
        if not key:
            raise ConfigError("tailnet.auth_key_file", tailnet.auth_key_file, "is empty")
        return key
    key = environ.get(tailnet.auth_key_env, "").strip()
    if not key:
        raise ConfigError(
            "tailnet.auth_key_env",
            tailnet.auth_key_env,
            "names an environment variable that is unset or empty (or set tailnet.auth_key_file)",
        )
    return key


class ManagedTailscaled:
    """The node's own tailscaled. :meth:`start` once, then :meth:`stop` (idempotent)."""

    def __init__(
        self, config: Config, cluster_tag: str, *, environ: Mapping[str, str] | None = None
    ) -> None:
        state_dir = config.storage.state_dir
        if not state_dir or state_dir == ":memory:":
            raise ConfigError(
                "storage.state_dir",
                state_dir,
                "must be a directory for a managed node (its tailscaled keeps its state there)",
            )
        self._config = config
        self._tag = cluster_tag
        self._environ = os.environ if environ is None else environ
        self.directory = managed_dir(config)
        self.socket_path = managed_socket_path(config)
        self.log_path = self.directory / "tailscaled.log"
        if len(os.fsencode(self.socket_path.absolute())) > MAX_UNIX_PATH:
            raise ConfigError(
                "storage.state_dir",
                state_dir,
                f"is too long for the managed tailscaled's socket {self.socket_path} (a unix "
                f"socket path holds at most {MAX_UNIX_PATH} bytes): use a shorter directory",
            )
        self.process: subprocess.Popen[bytes] | None = None

    # -- starting -----------------------------------------------------------------------------

    def _binary(self) -> str:
        name = self._config.tailnet.tailscaled_path
        found = shutil.which(name)
        if found is None:
            raise TailnetError(
                f"tailscaled not found: tailnet.tailscaled_path = {name!r} is not an executable "
                "(install Tailscale, or set tailnet.tailscaled_path to its tailscaled)"
            )
        return found

    def start(self) -> LocalAPITailnet:
        """Start tailscaled, log in if needed, wait until it is Running with the cluster tag;
        the tailnet backend over its socket. Raises :class:`TailnetError` (one line), or
        :class:`ConfigError` for a missing auth key; nothing is left running when it raises."""
        binary = self._binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        command = [
            binary,
            "--tun=userspace-networking",
            f"--statedir={self.directory}",
            f"--socket={self.socket_path}",
            "--port=0",
        ]
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.info("started tailscaled (pid %d) in userspace mode: %s", self.process.pid, command)
        try:
            client = LocalAPIClient(str(self.socket_path))
            deadline = time.monotonic() + self._config.tailnet.login_timeout_s
            status = self._wait_answering(client, deadline)
            if status.backend_state != "Running" or not status.self_peer.has_tag(self._tag):
                key = read_auth_key(self._config, self._environ)  # a restart needs none
                hostname = self._config.tailnet.hostname or socket.gethostname()
                client.start_login(key, hostname, (self._tag,))
                status = self._wait_running(client, deadline)
            if not status.self_peer.has_tag(self._tag):
                me = status.self_peer
                tags = ", ".join(me.tags) or "no tags"
                raise NotTaggedError(
                    f"the managed tailscaled logged in as {me.hostname} with {tags}, not the "
                    f"cluster tag {self._tag}: use an auth key tagged {self._tag} (its owner "
                    "must be allowed to apply it in tagOwners)"
                )
            log.info("managed tailscaled is Running as %s", status.self_peer.hostname)
            return LocalAPITailnet(str(self.socket_path), client)
        except BaseException:
            self.stop()
            raise

    def _exited(self) -> TailnetError | None:
        if self.process is None or self.process.poll() is None:
            return None
        last = ""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
            last = lines[-1] if lines else ""
        return TailnetError(
            f"tailscaled exited with code {self.process.returncode}"
            + (f": {last}" if last else f" (see {self.log_path})")
        )

    def _wait_answering(self, client: LocalAPIClient, deadline: float) -> TailnetStatus:
        while True:
            exited = self._exited()
            if exited is not None:
                raise exited
            try:
                return client.raw_status()
            except TailnetError:
                if time.monotonic() > deadline:
                    raise TailnetError(
                        f"tailscaled did not answer on {self.socket_path} within "
                        f"{self._config.tailnet.login_timeout_s:g}s (see {self.log_path})"
                    ) from None
            time.sleep(0.05)

    def _wait_running(self, client: LocalAPIClient, deadline: float) -> TailnetStatus:
        while True:
            status = self._wait_answering(client, deadline)
            if status.backend_state == "Running":
                return status
            refusal = [h for h in status.health if any(w in h.lower() for w in _LOGIN_WORDS)]
            if status.backend_state == "NeedsLogin" and refusal:
                raise TailnetError(f"tailscaled refused the auth key: {'; '.join(refusal)}")
            if time.monotonic() > deadline:
                raise TailnetError(
                    f"tailscaled did not reach Running within "
                    f"{self._config.tailnet.login_timeout_s:g}s (BackendState="
                    f"{status.backend_state or 'unknown'}); check the auth key and "
                    f"{self.log_path}"
                )
            time.sleep(0.1)

    # -- stopping -----------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """Stop tailscaled (SIGTERM, then SIGKILL after ``timeout``). Idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        log.info("managed tailscaled stopped")
