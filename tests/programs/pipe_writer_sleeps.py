"""Not a deadlock: a child reads a pipe whose writer, a sibling, sleeps in a loop (it could
still write). The parent waits for both. Prints the reader's and the writer's PIDs."""

import os
import sys
import time


def main():
    read_end, write_end = os.pipe()
    reader = os.fork()
    if reader == 0:
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    writer = os.fork()
    if writer == 0:
        os.close(read_end)
        while True:
            time.sleep(0.05)  # busy with something else: its write could still come
    os.close(read_end)
    os.close(write_end)
    print(reader, writer, flush=True)
    os.waitpid(reader, 0)
    os.waitpid(writer, 0)
    sys.exit(0)


if __name__ == "__main__":
    main()
