"""A `Client` dropped without close(): once it is collected, its submit stream ends, and with it the stream's
reader thread, the call and the connection; and a program that never closes its client still exits."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import weakref

import psutil
import pytest

from taskwire.client import Client
from tests.harness import Cluster, ServerProcess, wait_for


def connections_to(address: str) -> int:
    """This process's open TCP connections to `address`."""
    port = int(address.rsplit(":", 1)[1])
    return sum(
        1
        for connection in psutil.Process().net_connections(kind="tcp")
        if connection.raddr and connection.raddr.port == port and connection.status == psutil.CONN_ESTABLISHED
    )


def test_a_client_dropped_without_close_ends_its_submit_stream(procs: Cluster) -> None:
    server = procs.server()  # of its own: the connections to it are this client's
    before = set(threading.enumerate())
    client = Client(server.address)
    client.submit("echo", {})
    (reader,) = [thread for thread in set(threading.enumerate()) - before if thread.name == "taskwire-submit-stream"]
    assert connections_to(server.address) == 1
    collected = weakref.ref(client)

    del client
    gc.collect()

    assert collected() is None, "something still holds the client"
    reader.join(timeout=10)
    assert not reader.is_alive(), "the submit stream's reader thread still runs"
    wait_for(lambda: connections_to(server.address) == 0, timeout_s=10, what="the client's connection to close")


@pytest.mark.parametrize("ending", ["kept", "dropped", "in-a-cycle", "closed"])
def test_a_program_exits_whatever_became_of_its_client(shared: ServerProcess, ending: str) -> None:
    """Kept to the end (its reader thread still running), dropped (its stream ended by its finalizer), or held
    in a reference cycle (collected whenever the collector runs, perhaps at exit): the program exits at once."""
    script = textwrap.dedent(
        f"""
        from taskwire.client import Client

        client = Client({shared.address!r})
        client.submit("echo", {{}})
        if {ending!r} == "dropped":
            del client
        elif {ending!r} == "in-a-cycle":
            client.itself = client
            del client
        elif {ending!r} == "closed":
            client.close()
        print("submitted", flush=True)
        """
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "submitted\n", "")
