"""Downloading checkpoints into the cache: Hugging Face Hub files and plain http(s) URLs.

Hub files go through `huggingface_hub` (its cache, resumable downloads, file locks, progress bars,
`HF_HUB_OFFLINE`). Plain URLs go through `fetch_url`, written here because `urllib` and
`torch.hub.download_url_to_file` follow redirects on their own, cap neither size nor total time
and know nothing of public servers. Either way:

- nothing half-downloaded is ever loaded: bytes go to `<file>.part`, which becomes the file only
  once its length matches the server's Content-Length and its sha256 the expected one;
- a second request for a file waits for the download under way (a lock in the process and a file
  lock across processes), then uses its result;
- progress goes to a callback `progress(done_bytes, total_bytes_or_None)` (the app feeds it to
  `gr.Progress`), or to a tqdm bar on the command line;
- every download has a size cap, a per-read timeout and a total deadline;
- a file whose sha256 was not known in advance has the hash of its first download recorded next
  to it (`<file>.sha256`) and checked whenever it is used again.

Public mode (`SPACE_ID` set, as on a Hugging Face Space, or DINO_DEMO_PUBLIC=1) is for a server
whose visitors type URLs: only https, only to public addresses (every host of every redirect is
resolved and checked, and the connection goes to the checked address), only to the hosts of
DINO_DEMO_ALLOWED_HOSTS (default: the model zoo's; `*` for any public host); every network
failure reads the same to the visitor (the detail goes to the server log, one line); the
download cache has a quota (DINO_DEMO_CACHE_QUOTA_GB, default 10 in public mode), least recently
used files first out. Stale `.part` files are removed everywhere.
"""
from __future__ import annotations

import hashlib
import http.client
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from ..checksum import file_sha256, record_path, recorded_sha256, remember, write_record
from .. import env

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]

PUBLIC_VARIABLE = "DINO_DEMO_PUBLIC"
HOSTS_VARIABLE = "DINO_DEMO_ALLOWED_HOSTS"
QUOTA_VARIABLE = "DINO_DEMO_CACHE_QUOTA_GB"
DEADLINE_VARIABLE = "DINO_DEMO_DOWNLOAD_DEADLINE"
PUBLIC_DEADLINE_S = 600.0
OFFLINE_VARIABLES = ("DINO_DEMO_OFFLINE", "HF_HUB_OFFLINE")
MAX_DOWNLOAD_BYTES = 2 * 1024**3
# A host that opens no connection in this time counts as unreachable (instead of waiting out the
# read timeout, or a download library's retries).
CONNECT_TIMEOUT_S = 5.0
PUBLIC_QUOTA_BYTES = 10 * 1024**3
# What a visitor of a public server reads for every network failure (no port-scan oracle).
GENERIC_FAILURE = "the download failed (the address is not allowed or did not answer as expected)"
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 1 << 20
USER_AGENT = "dino-explorer"
# Hosts the model zoo downloads from and the hosts their downloads redirect to (the Hub and GitHub
# serve files from CDNs): the default allow-list of a public server. ".x" means x's subdomains.
ZOO_HOSTS = ("huggingface.co", ".huggingface.co", ".hf.co", "github.com", ".githubusercontent.com",
             "download.openmmlab.com")


class DownloadError(ValueError):
    """A download that did not happen or did not produce the expected file; the message is for
    the person who asked for it."""


class Unreachable(DownloadError):
    """No connection to the host opened: this machine is offline, or the host is down. The
    message is one short line naming the host."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"{host} is unreachable ({reason}): this machine looks offline, or the host is down")
        self.host = host


class _Failure(Exception):
    """Internal: a network failure whose detail a public server keeps to its log."""


class _HostUnreachable(_Failure):
    """Internal: no connection opened (name not resolved, refused, no route, no answer in time)."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"{host} is unreachable ({reason})")
        self.host, self.reason = host, reason


@dataclass(frozen=True)
class Policy:
    """What downloads may do. `public`: the protections of public mode (https only unless
    `allow_http`, public addresses only, one failure text). `allowed_hosts`: host names, `.suffix`
    patterns (any subdomain), or None for any host. `quota_bytes`: the most the download folders
    may hold, or None."""

    public: bool = False
    allow_http: bool = False
    allowed_hosts: frozenset[str] | None = None
    max_bytes: int = MAX_DOWNLOAD_BYTES
    deadline_s: float = 3600.0
    read_timeout_s: float = 30.0
    max_redirects: int = 5
    quota_bytes: int | None = None

    @classmethod
    def from_env(cls, **overrides) -> "Policy":
        """The policy the environment asks for (see the module docstring)."""
        public = bool(env.text("SPACE_ID")) or env.flag(PUBLIC_VARIABLE)
        hosts_setting = (env.text(HOSTS_VARIABLE) or "").strip()
        if hosts_setting == "*":
            hosts = None
        elif hosts_setting:
            hosts = frozenset(h.strip().lower() for h in hosts_setting.split(",") if h.strip())
        else:
            hosts = frozenset(ZOO_HOSTS) if public else None
        quota = env.positive_number(QUOTA_VARIABLE)
        quota_bytes = int(quota * 1024**3) if quota is not None else (PUBLIC_QUOTA_BYTES if public else None)
        deadline = env.positive_number(DEADLINE_VARIABLE)
        values = dict(public=public, allowed_hosts=hosts, quota_bytes=quota_bytes)
        if deadline is not None:
            values["deadline_s"] = deadline
        elif public:  # a visitor's slow-drip server must not hold one of the app's workers for long
            values["deadline_s"] = PUBLIC_DEADLINE_S
        return cls(**{**values, **overrides})

    def host_allowed(self, host: str) -> bool:
        if self.allowed_hosts is None:
            return True
        host = host.lower().rstrip(".")
        return any(host == p or (p.startswith(".") and host.endswith(p)) for p in self.allowed_hosts)


def offline() -> bool:
    """Whether downloads are switched off (DINO_DEMO_OFFLINE or HF_HUB_OFFLINE)."""
    return any(env.flag(v, strict=v.startswith(env.PREFIX)) for v in OFFLINE_VARIABLES)


# -- locks -----------------------------------------------------------------------------------------
_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


class _TargetLock:
    """One download per target at a time: a lock within the process, then a file lock across
    processes. Waits at most `timeout` seconds."""

    def __init__(self, target: Path, timeout: float):
        with _process_locks_guard:
            self.local = _process_locks.setdefault(str(target), threading.Lock())
        self.file = FileLock(str(target) + ".lock", timeout=timeout)
        self.timeout = timeout

    def __enter__(self):
        if not self.local.acquire(timeout=self.timeout):
            raise DownloadError("another download of this file is still running; try again later")
        try:
            self.file.acquire()
        except Timeout:
            self.local.release()
            raise DownloadError("another download of this file is still running; try again later") from None
        return self

    def __exit__(self, *exc):
        self.file.release()
        self.local.release()


# -- hashes --------------------------------------------------------------------------------------
def verify_file(path: Path, sha256: str | None = None, sha256_prefix: str | None = None,
                record: Path | None = None) -> str:
    """Check `path` against the expected sha256 (or its published prefix), else against the hash
    recorded for it (at `record`, default next to it), recording the hash when none is; marks the
    file as just used (for the cache's least-recently-used order). Returns the hash."""
    record = record or path
    actual = file_sha256(path)
    expected = (sha256 or recorded_sha256(record) or "").lower()
    if expected and actual != expected:
        raise DownloadError(f"{record.name}: sha256 {actual} does not match the expected {expected}")
    if sha256_prefix and not actual.startswith(sha256_prefix.lower()):
        raise DownloadError(f"{record.name}: sha256 {actual} does not start with the published {sha256_prefix}")
    if recorded_sha256(record) != actual:
        write_record(record, actual)
    else:
        record_path(record).touch()
    return actual


# -- the cache -----------------------------------------------------------------------------------
_SIDE_FILES = (".part", ".lock", ".sha256", ".tmp")


def remove_stale_parts(folder: Path, older_than_s: float) -> list[Path]:
    """Delete `*.part` files not written to for `older_than_s` seconds (no download lasts longer
    than its deadline, so nobody is writing them)."""
    removed = []
    now = time.time()
    for part in folder.glob("*.part"):
        try:
            if now - part.stat().st_mtime > older_than_s:
                part.unlink()
                removed.append(part)
        except FileNotFoundError:
            pass
    if removed:
        log.info("removed %d stale partial downloads in %s", len(removed), folder)
    return removed


def enforce_quota(folders: list[Path], quota_bytes: int | None, incoming_bytes: int = 0,
                  keep: tuple[Path, ...] = ()) -> list[Path]:
    """Delete the least recently used downloaded files of `folders` until they and `incoming_bytes`
    more fit in `quota_bytes`. A file's last use is its hash record's time (see `verify_file`)."""
    if quota_bytes is None:
        return []
    if incoming_bytes > quota_bytes:
        raise DownloadError(f"the file ({incoming_bytes >> 20} MiB) is larger than the download cache's quota "
                            f"({quota_bytes >> 20} MiB, {QUOTA_VARIABLE})")
    files = []
    for folder in folders:
        if folder.is_dir():
            files += [p for p in folder.iterdir() if p.is_file() and not p.name.endswith(_SIDE_FILES)
                      and not p.name.startswith(".")]
    used = sum(p.stat().st_size for p in files) + incoming_bytes
    removed = []

    def last_use(p: Path) -> float:
        marker = record_path(p)
        return marker.stat().st_mtime if marker.exists() else p.stat().st_mtime

    for p in sorted(files, key=last_use):
        if used <= quota_bytes:
            break
        if p in keep:
            continue
        used -= p.stat().st_size
        p.unlink(missing_ok=True)
        record_path(p).unlink(missing_ok=True)
        removed.append(p)
    if removed:
        log.info("cache quota: removed %s", ", ".join(p.name for p in removed))
    return removed


# -- plain URLs ----------------------------------------------------------------------------------
def check_url(url: str, policy: Policy) -> urllib.parse.SplitResult:
    """Refuse a URL by its text alone: scheme, credentials, host allow-list. Explicit messages
    (they reveal nothing about the network)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError(f"not an http(s) URL: {url[:200]}")
    if policy.public and parts.scheme != "https" and not policy.allow_http:
        raise DownloadError("only https URLs can be downloaded on this server")
    if policy.public and (parts.username or parts.password):
        raise DownloadError("URLs with user names or passwords cannot be downloaded on this server")
    if not policy.host_allowed(parts.hostname):
        allowed = ", ".join(sorted(policy.allowed_hosts or ()))
        raise DownloadError(f"downloads from {parts.hostname} are not allowed here (allowed: {allowed}; {HOSTS_VARIABLE})")
    return parts


def _public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _resolve(host: str, port: int, policy: Policy) -> str:
    """The address to connect to; in public mode every address the name resolves to must be public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise _HostUnreachable(host, f"its name does not resolve: {e.args[-1] if e.args else e}") from None
    addresses = [info[4][0] for info in infos]
    if policy.public:
        inward = [a for a in addresses if not _public_address(a)]
        if inward:
            raise _Failure(f"{host} resolves to non-public address {inward[0]}")
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address checked beforehand, whatever the name resolves to now."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self):
        self.sock = _connect(self.host, self.address, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address, with the certificate checked for the host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address

    def connect(self):
        sock = _connect(self.host, self.address, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _connect(host: str, address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to `address`, opened within CONNECT_TIMEOUT_S (else _HostUnreachable),
    then reading with `timeout`."""
    try:
        sock = socket.create_connection((address, port), min(timeout, CONNECT_TIMEOUT_S))
    except TimeoutError:
        raise _HostUnreachable(host, f"no answer within {min(timeout, CONNECT_TIMEOUT_S):g} s") from None
    except OSError as e:
        raise _HostUnreachable(host, (e.strerror or type(e).__name__).lower()) from None
    sock.settimeout(timeout)
    return sock


def probe(url: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise Unreachable (one line naming the host) unless a TCP connection to the host of `url`,
    or to the proxy configured for it, opens within `timeout` seconds."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = None if urllib.request.proxy_bypass(host) else urllib.request.getproxies().get(parts.scheme)
    if proxy:
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or "", proxy_parts.port or 80
    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
        _connect(host, address, port, timeout).close()
    except (socket.gaierror, UnicodeError) as e:
        raise Unreachable(host, f"its name does not resolve: {e.args[-1] if e.args else e}") from None
    except _HostUnreachable as e:
        raise Unreachable(e.host, e.reason) from None


def _connection(parts: urllib.parse.SplitResult, policy: Policy, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """(connection, request target) for one hop; a configured proxy is used only outside public mode."""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    proxy = None if policy.public or urllib.request.proxy_bypass(parts.hostname) else \
        urllib.request.getproxies().get(parts.scheme)
    if proxy:
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        proxy_port = proxy_parts.port or 80
        if https:
            conn = http.client.HTTPSConnection(proxy_parts.hostname, proxy_port, timeout=timeout,
                                               context=ssl.create_default_context())
            conn.set_tunnel(parts.hostname, port)
            return conn, path
        return http.client.HTTPConnection(proxy_parts.hostname, proxy_port, timeout=timeout), \
            urllib.parse.urlunsplit(parts._replace(fragment=""))
    address = _resolve(parts.hostname, port, policy)
    if https:
        return _PinnedHTTPSConnection(parts.hostname, port, address, timeout, ssl.create_default_context()), path
    return _PinnedHTTPConnection(parts.hostname, port, address, timeout), path


def _open(url: str, policy: Policy, deadline: float):
    """GET `url`, following redirects here (each hop checked as the first), until a 200.
    Returns (connection, response, socket): the socket is kept because http.client lets go of it
    when the server says it will close the connection."""
    for _ in range(policy.max_redirects + 1):
        parts = check_url(url, policy)
        conn, target = _connection(parts, policy, _remaining(deadline, policy))
        try:
            conn.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
            sock = conn.sock
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _Failure(f"{parts.hostname}: {type(e).__name__}: {e}") from None
        if response.status in _REDIRECTS:
            location = response.getheader("Location")
            response.close()
            conn.close()
            if not location:
                raise _Failure(f"redirect {response.status} without a Location")
            url = urllib.parse.urljoin(url, location)
            continue
        if response.status != 200:
            response.close()
            conn.close()
            raise _Failure(f"HTTP status {response.status} {response.reason}")
        return conn, response, sock
    raise _Failure(f"more than {policy.max_redirects} redirects")


def _remaining(deadline: float, policy: Policy) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Failure(f"the download took longer than its deadline of {policy.deadline_s:.0f} s")
    return min(policy.read_timeout_s, left)


def fetch_url(url: str, target: str | os.PathLike, *, sha256: str | None = None, sha256_prefix: str | None = None,
              progress: Progress | None = None, policy: Policy | None = None,
              cache_folders: tuple[Path, ...] = ()) -> Path:
    """Download `url` to `target` once and return it; later calls return the cached file after
    checking its hash (a file that fails the check is removed and downloaded again). The policy's
    quota covers `target`'s folder and `cache_folders`. Raises DownloadError (GENERIC_FAILURE as
    the reason for every network failure in public mode)."""
    policy = policy or Policy.from_env()
    target = Path(target)
    check_url(url, policy)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _TargetLock(target, timeout=policy.deadline_s):
        if target.is_file():
            try:
                verify_file(target, sha256, sha256_prefix)
                return target
            except DownloadError as e:
                log.warning("%s: removed from the cache", e)
                target.unlink(missing_ok=True)
                record_path(target).unlink(missing_ok=True)
        if offline():
            raise DownloadError(f"downloads are switched off ({' / '.join(OFFLINE_VARIABLES)})")
        remove_stale_parts(target.parent, policy.deadline_s + 60)
        part = target.with_name(target.name + ".part")
        part.unlink(missing_ok=True)
        try:
            remember(part, _stream(url, part, target, policy, progress, (target.parent, *cache_folders)))
            digest = verify_file(part, sha256, sha256_prefix, record=target)
            os.replace(part, target)
            remember(target, digest)  # a rename keeps size and mtime: the next use reads no byte again
        except _Failure as e:
            raise _network_error(url, e, policy) from None
        except DownloadError as e:
            record_path(target).unlink(missing_ok=True)
            if policy.public:
                raise _network_error(url, str(e), policy) from None
            raise
        finally:
            part.unlink(missing_ok=True)
        return target


def _network_error(url: str, detail: str | _Failure, policy: Policy) -> DownloadError:
    if policy.public:
        log.warning("download failed: %s: %s", url[:300], detail)
        return DownloadError(GENERIC_FAILURE)
    if isinstance(detail, _HostUnreachable):
        return Unreachable(detail.host, detail.reason)
    return DownloadError(f"could not download {url}: {detail}")


def _stream(url: str, part: Path, target: Path, policy: Policy, progress: Progress | None,
            folders: tuple[Path, ...]) -> str:
    """Write the body of `url` to `part`; returns its sha256, computed as it arrives."""
    deadline = time.monotonic() + policy.deadline_s
    conn, response, sock = _open(url, policy, deadline)
    try:
        length = response.getheader("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > policy.max_bytes:
            raise _Failure(f"Content-Length {total} is over the limit of {policy.max_bytes} bytes")
        enforce_quota(list(dict.fromkeys(folders)), policy.quota_bytes, total or 0, keep=(target,))
        done, digest = 0, hashlib.sha256()
        with open(part, "wb") as out, _Reporter(progress, total, target.name) as report:
            while True:
                sock.settimeout(_remaining(deadline, policy))
                try:
                    chunk = response.read1(_CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Failure(f"connection lost after {done} bytes: {type(e).__name__}: {e}") from None
                if not chunk:
                    break
                done += len(chunk)
                if done > policy.max_bytes:
                    raise _Failure(f"more than {policy.max_bytes} bytes")
                out.write(chunk)
                digest.update(chunk)
                report.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if total is not None and done != total:
            raise _Failure(f"got {done} of the {total} bytes announced")
        return digest.hexdigest()
    finally:
        response.close()
        conn.close()


class _Reporter:
    """Progress to a callback (at most ~10 calls a second, and the last) or else to a tqdm bar."""

    def __init__(self, progress: Progress | None, total: int | None, label: str):
        self.progress, self.total, self.done, self.last = progress, total, 0, 0.0
        self.bar = None
        if progress is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False)

    def __enter__(self):
        return self

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif time.monotonic() - self.last > 0.1:
            self.last = time.monotonic()
            self.progress(self.done, self.total)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        elif exc[0] is None:
            self.progress(self.done, self.total)


# -- Hugging Face Hub ----------------------------------------------------------------------------
def fetch_hub(repo_id: str, filename: str, *, revision: str = "main", progress: Progress | None = None,
              policy: Policy | None = None) -> Path:
    """A file of a Hub repository from the huggingface_hub cache, downloaded there if missing
    (resumable; honours HF_HUB_OFFLINE). Progress, the size cap and the deadline act through the
    progress hook huggingface_hub reports to."""
    from huggingface_hub import constants as hub_constants
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    policy = policy or Policy.from_env()
    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    if offline():
        raise DownloadError(f"downloads are switched off ({' / '.join(OFFLINE_VARIABLES)})")
    key = f"hub:{repo_id}/{revision}/{filename}"
    with _process_locks_guard:
        lock = _process_locks.setdefault(key, threading.Lock())
    if not lock.acquire(timeout=policy.deadline_s):
        raise DownloadError("another download of this file is still running; try again later")
    try:
        probe(hub_constants.ENDPOINT)  # offline: one short error now, not after the library's retries
        return Path(hf_hub_download(repo_id, filename, revision=revision, endpoint=hub_constants.ENDPOINT,
                                    tqdm_class=_hub_progress_class(progress, policy)))
    except DownloadError:
        raise
    except Exception as e:  # huggingface_hub's and httpx's errors: no network, 404, gated, ...
        raise _network_error(f"https://huggingface.co/{repo_id}/resolve/{revision}/{filename}",
                             f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}",
                             policy) from None
    finally:
        lock.release()


def _hub_progress_class(progress: Progress | None, policy: Policy):
    """A tqdm class for huggingface_hub that reports to `progress` and stops a download past the
    size cap or the deadline."""
    from huggingface_hub.utils import tqdm as hub_tqdm

    deadline = time.monotonic() + policy.deadline_s

    class HubProgress(hub_tqdm):
        def __init__(self, *args, **kwargs):
            if progress is not None:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.bytes_total = kwargs.get("total")
            self.bytes_done = kwargs.get("initial", 0) or 0
            self.reported = 0.0
            if self.bytes_total and self.bytes_total > policy.max_bytes:
                raise DownloadError(f"the file ({self.bytes_total} bytes) is over the limit of {policy.max_bytes} bytes")

        def update(self, n=1):
            self.bytes_done += n or 0
            if time.monotonic() > deadline:
                raise DownloadError(f"the download took longer than its deadline of {policy.deadline_s:.0f} s")
            if self.bytes_done > policy.max_bytes:
                raise DownloadError(f"more than {policy.max_bytes} bytes")
            if progress is not None and (time.monotonic() - self.reported > 0.1 or self.bytes_done == self.bytes_total):
                self.reported = time.monotonic()
                progress(self.bytes_done, self.bytes_total)
            return super().update(n)

    return HubProgress
