#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus (fuzz/corpus/TARGET/*) from a real
capture: a short H.264 + AAC FLV made by ffmpeg, its tags chunked as an
encoder sends them (connect, publish, SetChunkSize, media), its AMF0
metadata and commands, its video tag bodies (and HEVC ones, Enhanced RTMP
and legacy codec id 12, and AV1 and VP9 ones, from ffmpeg 9 when
scripts/setup.sh installed it);
and templates and keys from the docs. Run once by `just fuzz-corpus`; the
files are committed.

  fuzz-corpus.py OUT_DIR
"""
import os, struct, subprocess, sys, tempfile


def flv_tags(path):
    data = open(path, "rb").read()
    pos = 13
    while pos + 11 <= len(data):
        kind = data[pos] & 0x1f
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        ts = int.from_bytes(data[pos + 4:pos + 7], "big") | data[pos + 7] << 24
        yield kind, ts, data[pos + 11:pos + 11 + size]
        pos += 11 + size + 4


def amf_str(s):
    return b"\x02" + struct.pack(">H", len(s)) + s.encode()


def amf_num(n):
    return b"\x00" + struct.pack(">d", n)


def amf_obj(props):
    out = b"\x03"
    for k, v in props:
        out += struct.pack(">H", len(k)) + k.encode() + v
    return out + b"\x00\x00\x09"


def message(csid, kind, stream, ts, payload, chunk):
    out = bytes([csid]) + min(ts, 0xffffff).to_bytes(3, "big") + len(payload).to_bytes(3, "big") + bytes([kind])
    out += stream.to_bytes(4, "little")
    for i in range(0, max(len(payload), 1), chunk):
        if i:
            out += bytes([0xc0 | csid])
        out += payload[i:i + chunk]
    return out


def main(out):
    tmp = tempfile.mkdtemp()
    flv = os.path.join(tmp, "clip.flv")
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=160x90:rate=10", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050",
                    "-t", "2", "-c:v", "libx264", "-g", "10", "-bf", "2", "-c:a", "aac", "-b:a", "32k", "-f", "flv", flv],
                   check=True)
    tags = list(flv_tags(flv))
    def write(target, name, data):
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, name), "wb").write(data)

    connect = amf_str("connect") + amf_num(1) + amf_obj([
        ("app", amf_str("live")), ("flashVer", amf_str("FMLE/3.0 (compatible; Lavf59.27.100)")),
        ("tcUrl", amf_str("rtmp://127.0.0.1:1935/live")), ("fpad", b"\x01\x00"),
        ("capabilities", amf_num(15)), ("audioCodecs", amf_num(4071)), ("videoCodecs", amf_num(252)),
        ("videoFunction", amf_num(1))])
    publish = amf_str("publish") + amf_num(5) + b"\x05" + amf_str("cam1?vhost=a.example") + amf_str("live")
    write("amf0", "connect", connect)
    write("amf0", "publish", publish)
    write("amf0", "createStream", amf_str("createStream") + amf_num(4) + b"\x05")
    meta = [body for kind, _, body in tags if kind == 18]
    for i, body in enumerate(meta):
        write("amf0", f"onMetaData-{i}", body)

    video = [(ts, body) for kind, ts, body in tags if kind == 9]
    config = next(body for _, body in video if body[0] == 0x17 and body[1] == 0)
    key = next(body for _, body in video if body[0] == 0x17 and body[1] == 1)
    delta = next(body for _, body in video if body[0] == 0x27)
    write("flv", "config-and-keyframe", struct.pack(">H", len(config)) + config + key[5:])
    write("flv", "config-and-delta", struct.pack(">H", len(config)) + config + delta[5:])
    write("flv", "keyframe-tag", struct.pack(">H", len(key)) + key)
    write("flv", "delta-tag", struct.pack(">H", len(delta)) + delta)
    ffmpeg9 = os.path.join(os.environ.get("EDGESNAP_CACHE", os.path.expanduser("~/.cache/edgesnap")), "venv/bin/ffmpeg9")
    if os.path.exists(ffmpeg9):
        hevc = os.path.join(tmp, "hevc.flv")
        subprocess.run([ffmpeg9, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=160x90:rate=10", "-t", "2", "-c:v", "libx265", "-preset", "ultrafast",
                        "-x265-params", "keyint=10:log-level=error", "-f", "flv", hevc], check=True)
        bodies = [body for kind, _, body in flv_tags(hevc) if kind == 9]
        # Enhanced RTMP: SequenceStart (0x90) and a CodedFrames keyframe (0x91, 3 bytes of CTS).
        start = next(b for b in bodies if b[0] == 0x90)
        key = next(b for b in bodies if b[0] == 0x91)
        legacy = bytes([0x1c, 0, 0, 0, 0]) + start[5:]
        write("flv", "hevc-config-and-keyframe", struct.pack(">H", len(start)) + start + key[8:])
        write("flv", "hevc-legacy-config-and-keyframe", struct.pack(">H", len(legacy)) + legacy + key[8:])
        # AV1 and VP9: CodedFrames carry no composition time.
        for name, codec in [("av1", ["-c:v", "libsvtav1", "-preset", "12", "-g", "10"]),
                            ("vp9", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "10"])]:
            path = os.path.join(tmp, f"{name}.flv")
            subprocess.run([ffmpeg9, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                            "testsrc2=size=160x90:rate=10", "-t", "2", *codec, "-pix_fmt", "yuv420p", "-f", "flv", path],
                           check=True, stderr=subprocess.DEVNULL)
            bodies = [body for kind, _, body in flv_tags(path) if kind == 9]
            start = next(b for b in bodies if b[0] == 0x90)
            key = next(b for b in bodies if b[0] == 0x91)
            write("flv", f"{name}-config-and-keyframe", struct.pack(">H", len(start)) + start + key[5:])

    stream = message(2, 1, 0, 0, struct.pack(">I", 4096), 128) + message(3, 20, 0, 0, connect, 4096)
    stream += message(3, 20, 1, 0, publish, 4096)
    for kind, ts, body in tags[:24]:
        csid = {8: 4, 9: 6, 18: 5}.get(kind, 7)
        stream += message(csid, kind, 1, ts, body, 4096)
    write("chunk", "publish-media", bytes([128, 1]) + stream)
    write("chunk", "publish-media-split", bytes([7, 1]) + stream)
    write("chunk", "before-publish", bytes([200, 0]) + stream)

    for i, t in enumerate(["{AppName}/{StreamName}.jpg", "{AppName}/{StreamName}/{UnixTimestamp}.jpg",
                           "snapshots/{Domain}/{AppName}/{StreamName}/{Sequence}.jpg",
                           "{AppName}/{StreamName}/{UnixTimestampMs}.jpg", "{StreamName}-{Sequence}.jpg"]):
        write("template", f"docs-{i}", t.encode())
    for i, k in enumerate(["live/cam1.jpg", "live/cam1/2025/11/25/080000-9.jpg", "../other/x.jpg",
                           "/etc/passwd", "live\\..\\x.jpg", "live/a\x07b.jpg", "a//b.jpg"]):
        write("plugin_output", f"key-{i}", k.encode())


if __name__ == "__main__":
    main(sys.argv[1])
