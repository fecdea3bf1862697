"""Run a server that binds every interface (Orthanc) where only loopback exists, and reach it from the tests.

Orthanc 1.10 has no bind-address option: its HTTP (and DICOM) ports listen on 0.0.0.0. Started under
``unshare -n`` it lives in a network namespace of its own whose only interface is loopback, so nothing outside the
machine, nor the machine's other interfaces, can reach it. The tests reach it through two relays over a Unix
socket (a file: visible across network namespaces)::

    test  --TCP 127.0.0.1:P-->  relay thread  --unix socket-->  this script (in the namespace)  --TCP-->  Orthanc

Run as a script inside the namespace: ``unshare -n python netns.py --unix SOCK --port N -- CMD...`` brings
loopback up, starts ``CMD``, relays connections on ``SOCK`` to ``127.0.0.1:N`` and stops ``CMD`` when terminated.
The test side uses :func:`tcp_to_unix`. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

_SIOCGIFFLAGS, _SIOCSIFFLAGS, _SIOCGIFADDR = 0x8913, 0x8914, 0x8915
_IFF_UP = 0x1


def bring_loopback_up() -> None:
    """``ip link set lo up`` without iproute2 (a new network namespace starts with loopback down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def interface_addresses() -> dict[str, str]:
    """IPv4 address of each interface of this namespace that has one (no traffic sent)."""
    out = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(s, _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address
                continue
            out[name] = socket.inet_ntoa(answer[20:24])
    return out


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _serve(listener: socket.socket, connect: Callable[[], socket.socket], stop: threading.Event) -> None:
    """Accept on ``listener`` until ``stop``; pipe each connection both ways to a fresh ``connect()``."""
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        try:
            upstream = connect()
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


@contextlib.contextmanager
def tcp_to_unix(path: str) -> Iterator[int]:
    """Listen on a free 127.0.0.1 port (yielded) and relay every connection to the Unix socket ``path``."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def connect() -> socket.socket:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(path)
        return upstream

    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(listener, connect, stop), daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unix", required=True, help="Unix socket to listen on")
    parser.add_argument("--port", type=int, required=True, help="the server's port on this namespace's loopback")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    bring_loopback_up()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.unix)
    listener.listen(64)
    stop = threading.Event()

    def connect() -> socket.socket:
        upstream = socket.create_connection(("127.0.0.1", args.port), timeout=30)
        upstream.settimeout(None)
        return upstream

    def terminate(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    child = subprocess.Popen(command)
    try:
        threading.Thread(target=_serve, args=(listener, connect, stop), daemon=True).start()
        while not stop.is_set() and child.poll() is None:
            stop.wait(0.2)
    finally:
        listener.close()
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
