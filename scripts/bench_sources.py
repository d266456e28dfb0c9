#!/usr/bin/env python3
"""Pull-source benchmark (issue 19): CPU and memory per persistent RTSP
source in edgesnap, against ffmpeg per camera, in one run.

  bench_sources.py --bin EDGESNAP [--sources 0,50,200] [--ffmpeg 20]
                   [--window 60] [--size 1280x720] [--kbps 1000] [--out FILE]
  bench_sources.py --bin EDGESNAP --frames 200

With --frames N: one source, and N requests of its frame.jpeg (signed URL,
no token) answered from the kept frame, then 10 with max_age=0 (the next
keyframe decoded for the request): latency p50 / p99 / max of each.

One RTSP server (GStreamer's RTSP server library through Debian's
python3, shared media: one encoder, every client gets the same RTP) serves
a live 720p H.264 camera (GOP 2 s). edgesnap pulls it as N sources over
TCP (interval 5 s, local directory); its CPU (utime + stime) and RSS are
read from /proc over the window, after every source is live. The
alternative is what operators run today, one ffmpeg per camera writing a
JPG every 5 s (`-vf fps=1/5 -update 1`), for --ffmpeg cameras. The
server's CPU is measured apart and is not counted for either. Figures are
only valid on an otherwise idle machine (the run prints what else used
CPU).
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time, urllib.request

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

SERVER = r'''
import sys, gi
gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0')
from gi.repository import Gst, GstRtspServer, GLib
Gst.init(None)
server = GstRtspServer.RTSPServer(); server.set_address("127.0.0.1"); server.set_service("0")
factory = GstRtspServer.RTSPMediaFactory(); factory.set_launch(sys.argv[1]); factory.set_shared(True)
server.get_mount_points().add_factory("/cam", factory)
server.attach(None)
print(server.get_bound_port(), flush=True)
GLib.MainLoop().run()
'''


def cpu_s(pids):
    total = 0
    for pid in pids:
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except FileNotFoundError:
            pass
    return total / HZ


def rss_mib(pid):
    return int(open(f"/proc/{pid}/statm").read().split()[1]) * PAGE / 2**20


def machine_busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / HZ


def get(url, token):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def start_server(size, kbps):
    w, h = size.split("x")
    launch = (f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={w},height={h},framerate=25/1 "
              f"! x264enc speed-preset=ultrafast tune=zerolatency key-int-max=50 bitrate={kbps} "
              f"! rtph264pay name=pay0 pt=96 config-interval=-1 )")
    p = subprocess.Popen(["/usr/bin/python3", "-c", SERVER, launch], stdout=subprocess.PIPE, text=True)
    port = int(p.stdout.readline())
    return p, f"rtsp://127.0.0.1:{port}/cam"


TOKEN = "0123456789abcdef0123"


def start_edgesnap(binary, workdir, url, n, decoder_workers=2):
    """edgesnap with N sources of `url` (cams/c0…): its process and API base URL."""
    d = tempfile.mkdtemp(dir=workdir)
    cfg = f'''version = 1
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "{d}/data"
operator_token = "{TOKEN}"
default_domain = "localhost"
decoder_workers = {decoder_workers}
[domains."localhost".storage.local]
type = "local"
path = "{d}/snapshots"
[[domains."localhost".snapshot_configs]]
app_name = "*"
time_interval = 5
storage = "local"
sequence_object = "{{AppName}}/{{StreamName}}/{{UnixTimestampMs}}.jpg"
'''
    for i in range(n):
        cfg += f'[[domains."localhost".sources]]\nurl = "{url}"\napp = "cams"\nstream = "c{i}"\n'
    open(f"{d}/edgesnap.toml", "w").write(cfg)
    log = open(f"{d}/edgesnap.log", "w")
    p = subprocess.Popen([binary, "serve", "--config", f"{d}/edgesnap.toml"], stdout=log, stderr=log,
                         env={**os.environ, "RUST_LOG": "warn"})
    listening = f"{d}/data/listening.json"
    deadline = time.time() + 30
    while not os.path.exists(listening):
        assert time.time() < deadline and p.poll() is None, "edgesnap did not start"
        time.sleep(0.1)
    return p, f"http://{json.load(open(listening))['http']}/v1/domains/localhost"


def run_edgesnap(binary, url, n, window, workdir):
    token = TOKEN
    p, api = start_edgesnap(binary, workdir, url, n)
    deadline = time.time() + 120
    while True:
        live = sum(1 for s in get(f"{api}/sources", token)["sources"] if s["state"] == "live")
        if live == n:
            break
        assert time.time() < deadline, f"only {live} of {n} sources live"
        time.sleep(1)
    time.sleep(10)
    stored0 = sum(s["snapshots"] for s in get(f"{api}/streams", token)["streams"])
    c0, m0, t0 = cpu_s([p.pid]), machine_busy(), time.time()
    time.sleep(window)
    c1, m1, t1 = cpu_s([p.pid]), machine_busy(), time.time()
    streams = get(f"{api}/streams", token)["streams"]
    stored = sum(s["snapshots"] for s in streams) - stored0
    missed = sum(s["snapshots_missed"] for s in streams)
    rss = rss_mib(p.pid)
    p.terminate()
    p.wait(timeout=60)
    secs = t1 - t0
    return {"tool": "edgesnap", "sources": n, "cpu_pct": 100 * (c1 - c0) / secs, "rss_mib": rss,
            "snapshots": stored, "expected": n * secs / 5, "missed": missed,
            "machine_pct": 100 * (m1 - m0) / secs}


def frame_latency(binary, url, n, workdir):
    """Starts edgesnap with one source, then times its frame.jpeg."""
    token = TOKEN
    p, api = start_edgesnap(binary, workdir, url, 1)
    try:
        deadline = time.time() + 60
        while True:
            streams = get(f"{api}/streams", token)["streams"]
            if streams and streams[0]["snapshots"] > 0:
                break
            assert time.time() < deadline, "no snapshot"
            time.sleep(0.2)
        frame_url = streams[0]["frame_url"]

        def timed(url):
            t = time.perf_counter()
            with urllib.request.urlopen(url, timeout=30) as r:
                body, age = r.read(), int(r.headers["x-frame-age-ms"])
            return (time.perf_counter() - t) * 1000, age, len(body)

        def pct(xs, q):
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(q * len(xs)))]

        kept = [timed(frame_url + "&max_age=3600") for _ in range(n)]
        fresh = [timed(frame_url + "&max_age=0") for _ in range(10)]
        for name, rows in (("kept frame", kept), ("next keyframe (max_age=0)", fresh)):
            ms = [r[0] for r in rows]
            print(f"| {name} | {len(rows)} | {pct(ms, 0.5):.1f} | {pct(ms, 0.99):.1f} | {max(ms):.1f} | "
                  f"{sum(r[2] for r in rows) // len(rows)} |")
    finally:
        p.terminate()
        p.wait(timeout=30)


def run_ffmpeg(url, n, window, workdir):
    d = tempfile.mkdtemp(dir=workdir)
    procs = []
    for i in range(n):
        # Started a quarter second apart: the RTSP server library asserts
        # when many clients join its shared media at once.
        procs.append(subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp",
                                       "-i", url, "-vf", "fps=1/5", "-update", "1", "-y", f"{d}/c{i}.jpg"],
                                      stdin=subprocess.DEVNULL))
        time.sleep(0.25)
    time.sleep(15)
    c0, m0, t0 = cpu_s([p.pid for p in procs]), machine_busy(), time.time()
    time.sleep(window)
    c1, m1, t1 = cpu_s([p.pid for p in procs]), machine_busy(), time.time()
    rss = sum(rss_mib(p.pid) for p in procs)
    alive = sum(1 for p in procs if p.poll() is None)
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=30)
    secs = t1 - t0
    return {"tool": "ffmpeg per camera", "sources": n, "cpu_pct": 100 * (c1 - c0) / secs, "rss_mib": rss,
            "alive": alive, "machine_pct": 100 * (m1 - m0) / secs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--sources", default="0,50,200")
    ap.add_argument("--ffmpeg", type=int, default=20)
    ap.add_argument("--window", type=int, default=60)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--kbps", type=int, default=1000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--frames", type=int, default=0)
    a = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="edgesnap-bench-sources-")
    server, url = start_server(a.size, a.kbps)
    if a.frames:
        try:
            print("| frame.jpeg | requests | p50 ms | p99 ms | max ms | bytes |")
            print("|---|---|---|---|---|---|")
            frame_latency(a.bin, url, a.frames, workdir)
        finally:
            server.terminate()
            shutil.rmtree(workdir, ignore_errors=True)
        return
    rows = []
    try:
        s0 = cpu_s([server.pid])
        for n in [int(x) for x in a.sources.split(",") if x]:
            t0 = time.time()
            s_before = cpu_s([server.pid])
            r = run_edgesnap(a.bin, url, n, a.window, workdir)
            r["server_pct"] = 100 * (cpu_s([server.pid]) - s_before) / (time.time() - t0)
            rows.append(r)
            print(json.dumps(r), flush=True)
        if a.ffmpeg:
            r = run_ffmpeg(url, a.ffmpeg, a.window, workdir)
            rows.append(r)
            print(json.dumps(r), flush=True)
    finally:
        server.terminate()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    # Per source: above edgesnap with no source (its engine, pools and index), when that was run.
    base = next((r for r in rows if r["tool"] == "edgesnap" and r["sources"] == 0), {"cpu_pct": 0, "rss_mib": 0})
    print("| tool | sources | CPU % | CPU % per source | RSS MiB | MiB per source | snapshots / expected | server CPU % | machine CPU % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        n = max(r["sources"], 1)
        b = base if r["tool"] == "edgesnap" else {"cpu_pct": 0, "rss_mib": 0}
        snaps = f"{r['snapshots']} / {r['expected']:.0f} ({r['missed']} missed)" if "snapshots" in r else f"{r['alive']} alive"
        print(f"| {r['tool']} | {r['sources']} | {r['cpu_pct']:.1f} | {(r['cpu_pct'] - b['cpu_pct']) / n:.3f} | "
              f"{r['rss_mib']:.0f} | {(r['rss_mib'] - b['rss_mib']) / n:.2f} | {snaps} | "
              f"{r.get('server_pct', 0):.0f} | {r['machine_pct']:.0f} |")
    if a.out:
        with open(a.out, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
