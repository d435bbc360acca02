#!/usr/bin/env python3
"""TCP echo target for bench/soak_lab.sh (stdlib only): every connection gets back exactly what
it sends, and the write side is shut down after the client's EOF (the soak checks the length
too). One thread per connection; 50 soak workers at the lossy profile's 50 Mbit/s are far below
what this needs of a core.

    echo.py [--bind 127.0.0.1] [--port 7007]
"""
import argparse
import socket
import threading


def serve(c):
    with c:
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    break
                c.sendall(b)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the tunnel reset the connection: the soak worker reports it


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7007)
    a = ap.parse_args()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.bind, a.port))
    s.listen(256)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
