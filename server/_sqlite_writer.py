"""Entry point of the SQLite store's writer process.

``python -P -m taskwire.server._sqlite_writer FD PATH BUSY_TIMEOUT_S``.

Started by `SqliteStore.open()`; see `taskwire.server._sqlite_store.writer_process_main`.
"""

import sys

from ._sqlite_store import writer_process_main

if __name__ == "__main__":
    sys.exit(writer_process_main(sys.argv[1:]))
