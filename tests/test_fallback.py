"""The fresh-machine fallback of ./run.sh, offline: no ../shared, no network.

The teacher comes from a local HTTP server on 127.0.0.1 standing in for its
public URL, and must pass the checksum its file name carries; TFDS cifar10
cannot be downloaded, which must be one clear line within seconds. A
sitecustomize in the trainer's PYTHONPATH refuses every connection and name
lookup except to 127.0.0.1, so nothing here reaches another address.
"""

import contextlib
import functools
import hashlib
import http.server
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from big_vision_sid import paths
from big_vision_sid import teachers
from input_pipeline import labeled_data

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEACHER_FILE = "resnet20-12fca82f.th"  # The CPU demo's teacher.
TEACHER = paths.shared_dir() / "teachers/cifar10_resnet_akamaster" / TEACHER_FILE
_LOOPBACK_ONLY = '''
"""Test guard: network connections and name lookups for 127.0.0.1 only."""
import socket

_ALLOWED = ("127.0.0.1", "localhost", None)
_connect, _connect_ex, _getaddrinfo = (
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)


def _check(address):
  if isinstance(address, tuple) and address[0] not in _ALLOWED:
    raise OSError(101, f"network blocked by the test: {address[0]}")


def connect(self, address):
  _check(address)
  return _connect(self, address)


def connect_ex(self, address):
  _check(address)
  return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
  if host not in _ALLOWED:
    raise socket.gaierror(socket.EAI_NONAME, f"lookup blocked by the test: {host}")
  return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.getaddrinfo = getaddrinfo
'''


class _Handler(http.server.SimpleHTTPRequestHandler):
  """Serves a folder quietly and records the (method, path) of each request."""

  requests: list[tuple[str, str]]

  def do_GET(self):
    self.requests.append(("GET", self.path))
    super().do_GET()

  def do_HEAD(self):
    self.requests.append(("HEAD", self.path))
    super().do_HEAD()

  def log_message(self, *args):
    del args


@contextlib.contextmanager
def _serve(directory: pathlib.Path):
  """An HTTP server of `directory` on 127.0.0.1; yields (base URL, requests)."""
  asked: list[tuple[str, str]] = []
  handler = type("Handler", (_Handler,), {"requests": asked})
  server = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
  finally:
    server.shutdown()
    server.server_close()


def _served_teacher(tmp_path: pathlib.Path, corrupt: bool) -> pathlib.Path:
  """A folder holding the teacher where the URL expects it (optionally one byte off)."""
  folder = tmp_path / "served"
  target = folder / "pretrained_models" / TEACHER_FILE
  target.parent.mkdir(parents=True)
  data = bytearray(TEACHER.read_bytes())
  if corrupt:
    data[len(data) // 2] ^= 0xFF
  target.write_bytes(bytes(data))
  return folder


def _run_fresh_machine(tmp_path: pathlib.Path, url: str) -> tuple[subprocess.CompletedProcess, float]:
  """./run.sh without shared data, HOME or network; returns (process, seconds)."""
  guard = tmp_path / "guard"
  guard.mkdir()
  (guard / "sitecustomize.py").write_text(_LOOPBACK_ONLY)
  (tmp_path / "empty_shared").mkdir()
  env = {k: v for k, v in os.environ.items()
         if "proxy" not in k.lower() and k not in ("TFDS_DATA_DIR", "XLA_FLAGS")}
  env.update(HOME=str(tmp_path / "home"), SID_SHARED_DIR=str(tmp_path / "empty_shared"),
             PYTHONPATH=str(guard), PYTHON=sys.executable,
             WORKDIR=str(tmp_path / "workdir"))
  start = time.monotonic()
  proc = subprocess.run(
      [str(ROOT / "run.sh"), f"--config.teacher.url={url}", "--config.total_steps=2",
       "--config.eval.max_examples=16"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  return proc, time.monotonic() - start


def _cache(tmp_path: pathlib.Path) -> pathlib.Path:
  return tmp_path / "home" / ".cache" / "big_vision_sid"


def test_run_sh_downloads_the_verified_teacher_then_stops_at_tfds_in_one_line(tmp_path):
  if not TEACHER.exists():
    pytest.skip("shared teachers not available")
  with _serve(_served_teacher(tmp_path, corrupt=False)) as (base, asked):
    proc, seconds = _run_fresh_machine(
        tmp_path, f"{base}/pretrained_models/{TEACHER_FILE}")
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "not found: the teacher is downloaded" in proc.stdout
  assert asked == [("GET", f"/pretrained_models/{TEACHER_FILE}")]
  assert (_cache(tmp_path) / TEACHER_FILE).read_bytes() == TEACHER.read_bytes()
  last_line = proc.stderr.strip().splitlines()[-1]
  assert last_line.startswith("error: FileNotFoundError: TFDS dataset 'cifar10' is not "
                              "prepared"), proc.stderr[-3000:]
  assert "ConnectionError: HTTPSConnectionPool(host='www.cs.toronto.edu'" in last_line
  assert "Traceback" not in proc.stderr
  assert seconds < 60, f"the offline failure took {seconds:.0f} s"
  assert not (tmp_path / "workdir" / "checkpoints").exists() or not any(
      (tmp_path / "workdir" / "checkpoints").iterdir())


def test_run_sh_rejects_a_corrupted_teacher_download_and_caches_nothing(tmp_path):
  if not TEACHER.exists():
    pytest.skip("shared teachers not available")
  with _serve(_served_teacher(tmp_path, corrupt=True)) as (base, _):
    url = f"{base}/pretrained_models/{TEACHER_FILE}"
    proc, _ = _run_fresh_machine(tmp_path, url)
  assert proc.returncode == 1, proc.stderr[-3000:]
  last_line = proc.stderr.strip().splitlines()[-1]
  assert last_line.startswith(f"error: ValueError: Downloaded teacher checkpoint {url} "
                              "has sha256 "), proc.stderr[-3000:]
  assert "not 12fca82f..." in last_line
  assert "Traceback" not in proc.stderr
  assert [p.name for p in _cache(tmp_path).iterdir() if p.is_file()] == []


@pytest.fixture(name="download_dir")
def fixture_download_dir(tmp_path, monkeypatch):
  directory = tmp_path / "cache"
  monkeypatch.setattr(teachers, "_DOWNLOAD_DIR", directory)
  return directory


def test_download_is_cached_after_one_request(tmp_path, download_dir):
  served = tmp_path / "served"
  served.mkdir()
  payload = b"any bytes: the name carries no checksum"
  (served / "teacher.msgpack").write_bytes(payload)
  with _serve(served) as (base, asked):
    first = teachers._download(f"{base}/teacher.msgpack?raw=1")  # pylint: disable=protected-access
    second = teachers._download(f"{base}/teacher.msgpack")  # pylint: disable=protected-access
  assert first == second == str(download_dir / "teacher.msgpack")
  assert pathlib.Path(first).read_bytes() == payload
  assert asked == [("GET", "/teacher.msgpack?raw=1")]


def test_download_failure_is_one_line_and_leaves_nothing(tmp_path, download_dir):
  (tmp_path / "served").mkdir()
  with _serve(tmp_path / "served") as (base, _):
    with pytest.raises(FileNotFoundError, match=r"resnet20-12fca82f\.th .*HTTP Error 404"):
      teachers._download(f"{base}/{TEACHER_FILE}")  # pylint: disable=protected-access
  assert list(download_dir.iterdir()) == []


def test_download_checks_the_sha256_prefix_in_the_name(tmp_path, download_dir):
  served = tmp_path / "served"
  served.mkdir()
  payload = b"teacher weights"
  digest = hashlib.sha256(payload).hexdigest()
  (served / f"net-{digest[:8]}.th").write_bytes(payload)
  (served / "net-00000000.th").write_bytes(payload)
  with _serve(served) as (base, _):
    good = teachers._download(f"{base}/net-{digest[:8]}.th")  # pylint: disable=protected-access
    with pytest.raises(ValueError, match=f"sha256 {digest[:16]}\\.\\.\\., not 00000000"):
      teachers._download(f"{base}/net-00000000.th")  # pylint: disable=protected-access
  assert sorted(p.name for p in download_dir.iterdir()) == [pathlib.Path(good).name]


class _Builder:
  """The two attributes of a tfds builder that the probe reads."""

  def __init__(self, urls, manual=None):
    self.url_infos = {url: None for url in urls}
    self.MANUAL_DOWNLOAD_INSTRUCTIONS = manual  # pylint: disable=invalid-name


def _closed_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_download_host_probe(tmp_path):
  (tmp_path / "served").mkdir()
  dead_port = _closed_port()
  dead = f"http://127.0.0.1:{dead_port}/data.tar.gz"
  with _serve(tmp_path / "served") as (base, asked):
    # Any HTTP answer (here a 404 for HEAD /) means the host is reachable.
    labeled_data.check_download_hosts(_Builder([f"{base}/a.tar.gz", f"{base}/b.tar.gz"]))
    assert asked == [("HEAD", "/")]  # Once per host; nothing downloaded.
    start = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError,
                       match=f"host='127.0.0.1', port={dead_port}"):
      labeled_data.check_download_hosts(_Builder([f"{base}/a.tar.gz", dead]))
    assert time.monotonic() - start < 5
    # Manual downloads fetch nothing, so nothing is probed.
    labeled_data.check_download_hosts(_Builder([dead], manual="Place the tars in ..."))
  assert all(method == "HEAD" for method, _ in asked)
