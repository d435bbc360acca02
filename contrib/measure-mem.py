#!/usr/bin/env python3
"""Peak memory of a kcptun-rs server and client on 127.0.0.1, idle and with N busy sessions.

    python3 contrib/measure-mem.py BINARY [--sessions 1,16,64] [--bytes 1048576]
                                          [--kcp '{"sndwnd":256,"rcvwnd":256}']

Starts an echo server, a kcptun-rs server and client (the same BINARY, run natively: under
qemu-user the numbers would be qemu's), then for each N opens N connections at once, pushes
--bytes through each and reads them back, and prints VmRSS (now) and VmHWM (peak) of both
processes from /proc. Only 127.0.0.1 is used; every run is bounded in time.
"""
import argparse, json, os, socket, subprocess, sys, tempfile, threading, time


def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def echo_server():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(256)

    def serve(c):
        with c:
            try:
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    c.sendall(b)
            except OSError:
                pass

    def loop():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1]


def mem(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def one(port, nbytes, ok, deadline):
    data = os.urandom(nbytes)
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.settimeout(max(1, deadline - time.time()))
        threading.Thread(target=s.sendall, args=(data,), daemon=True).start()
        got = bytearray()
        while len(got) < nbytes:
            b = s.recv(65536)
            if not b:
                break
            got += b
        ok.append(bytes(got) == data)
        s.close()
    except OSError:
        ok.append(False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--sessions", default="1,16,64")
    ap.add_argument("--bytes", type=int, default=1 << 20)
    ap.add_argument("--kcp", default="{}")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="kcptun-mem-")
    kport, lport, eport = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM), echo_server()
    common = {"method": "xchacha20poly1305_ietf",
              "psk": "ThisIsAnInsecureDemoKeyReplaceItUsingGenpsk=", "loglevel": 3,
              "kcp": json.loads(a.kcp)}
    cfgs = {"server": dict(common, kcp_bind=f"127.0.0.1:{kport}", connect=f"127.0.0.1:{eport}"),
            "client": dict(common, listen=f"127.0.0.1:{lport}", kcp_connect=f"127.0.0.1:{kport}")}
    procs = {}
    for name, cfg in cfgs.items():
        path = os.path.join(tmp, name + ".json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        procs[name] = subprocess.Popen([a.binary, "-c", path], stderr=open(path + ".log", "w"))
    try:
        time.sleep(1)
        fmt = "{:>10} {:>6} {:>14} {:>14} {:>14} {:>14}"
        print(fmt.format("sessions", "ok", "server RSS KiB", "server peak", "client RSS KiB",
                         "client peak"))
        s, c = mem(procs["server"].pid), mem(procs["client"].pid)
        print(fmt.format("idle", "-", s["VmRSS"], s["VmHWM"], c["VmRSS"], c["VmHWM"]))
        for n in [int(x) for x in a.sessions.split(",")]:
            ok, deadline = [], time.time() + 120
            ts = [threading.Thread(target=one, args=(lport, a.bytes, ok, deadline))
                  for _ in range(n)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(max(0, deadline - time.time()))
            s, c = mem(procs["server"].pid), mem(procs["client"].pid)
            print(fmt.format(n, f"{sum(ok)}/{n}", s["VmRSS"], s["VmHWM"], c["VmRSS"],
                             c["VmHWM"]))
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
