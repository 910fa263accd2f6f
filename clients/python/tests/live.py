"""A real seqd (and redis-server) for the live tests: started on a free
socket in a temporary directory, stopped with the test."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SEQD = os.environ.get("SEQD_BIN", os.path.join(ROOT, "target", "debug", "seqd"))
SEQCTL = os.environ.get("SEQCTL_BIN", os.path.join(ROOT, "target", "debug", "seqctl"))


def wait_until(what, cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="seqd-py-redis-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until("redis-server", lambda: self.cli("PING") == "PONG")

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return r.stdout.strip()

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        self.resume()
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Seqd:
    def __init__(self, redis=None, *args):
        self.dir = tempfile.mkdtemp(prefix="seqd-py-")
        self.socket = os.path.join(self.dir, "seqd.sock")
        self.args = [SEQD, "--socket", self.socket, "--data-dir", os.path.join(self.dir, "data"), *args]
        if redis is not None:
            self.args += ["--redis-url", f"redis://127.0.0.1:{redis.port}/0"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "SEQD_"))}
        self.start()

    def start(self):
        self.log = open(os.path.join(self.dir, "seqd.log"), "ab")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log, env=self.env)
        wait_until("seqd's socket", lambda: self.text("PING") == "OK pong")

    def text(self, line):
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(self.socket)
                s.sendall(line.encode() + b"\n")
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                return buf.decode().strip()
        except OSError:
            return None

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def restart(self):
        self.kill9()
        self.start()

    def stop(self):
        self.kill9()
        shutil.rmtree(self.dir, ignore_errors=True)
