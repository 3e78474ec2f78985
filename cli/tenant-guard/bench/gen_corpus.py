#!/usr/bin/env python3
"""Writes the tenant-guard scan benchmark corpus.

usage: gen_corpus.py OUT_DIR [TEXT_MIB] [ARCHIVE_MIB] [SUBSET_MIB]

OUT_DIR/text/      plain source, config and log files (TEXT_MIB, default 900)
OUT_DIR/archives/  zip, jar and tar.gz files holding text (ARCHIVE_MIB of
                   uncompressed content, default 150)
OUT_DIR/subset/    a copy of part of text/ (SUBSET_MIB, default 50), for slow tools

A few made-up secrets are planted (one every ~64 KiB) so that matches happen.
Deterministic: the same arguments give the same bytes.
"""
import io
import os
import random
import sys
import tarfile
import zipfile

rng = random.Random(5)
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def rand(n, alphabet=B62):
    return "".join(rng.choice(alphabet) for _ in range(n))


LINES = [
    "import os, sys, json",
    "def handle(request, context):",
    "    payload = json.loads(request.body)",
    "    return Response(status=200, body=payload)",
    "const router = express.Router();",
    "router.get('/healthz', (req, res) => res.send('ok'));",
    "func (s *Server) Serve(ctx context.Context) error { return nil }",
    "server:\n  port: 8080\n  host: 0.0.0.0",
    "logging.level.root=INFO",
    "spring.datasource.url=jdbc:postgresql://db:5432/app",
    "FROM debian:bookworm-slim",
    "RUN apt-get update && apt-get install -y ca-certificates",
    '  "name": "tenant-service", "version": "1.4.2",',
    "# retry budget for the staging environment",
    "timeout_seconds = 30",
    "user_name = \"deploy\"",
]


def secret_line():
    kind = rng.randrange(4)
    if kind == 0:
        return "AWS_ACCESS_KEY_ID=AKIA" + rand(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    if kind == 1:
        return "SLACK_BOT_TOKEN=xoxb-%s-%s-%s" % (rand(12, "0123456789"), rand(13, "0123456789"), rand(24))
    if kind == 2:
        return "export APP_SECRET=" + rand(32)
    return "stripe.api_key = 'sk_live_%s'" % rand(24)


def block(size):
    """About `size` bytes of text lines with a secret every ~64 KiB."""
    out = []
    n = 0
    next_secret = rng.randrange(65536)
    while n < size:
        if n >= next_secret:
            line = secret_line()
            next_secret = n + 65536
        elif rng.random() < 0.3:
            line = "2024-05-01T12:%02d:%02dZ INFO req=%s path=/api/v1/items/%d took=%dms" % (
                rng.randrange(60), rng.randrange(60), rand(16, "0123456789abcdef"), rng.randrange(10**6), rng.randrange(500))
        else:
            line = rng.choice(LINES)
        out.append(line)
        n += len(line) + 1
    return ("\n".join(out) + "\n").encode()


def main():
    out = sys.argv[1]
    text_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 900
    archive_mib = int(sys.argv[3]) if len(sys.argv) > 3 else 150
    subset_mib = int(sys.argv[4]) if len(sys.argv) > 4 else 50
    exts = ["py", "js", "go", "yaml", "json", "properties", "log", "env.txt"]
    # A pool of distinct 2 MiB blocks, reused with a header so files differ.
    pool = [block(2 << 20) for _ in range(16)]
    os.makedirs(os.path.join(out, "text"), exist_ok=True)
    for i in range(text_mib // 2):
        d = os.path.join(out, "text", "svc%03d" % (i // 20))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "file%04d.%s" % (i, exts[i % len(exts)])), "wb") as f:
            f.write(b"# file %d\n" % i)
            f.write(pool[i % len(pool)])
    os.makedirs(os.path.join(out, "subset"), exist_ok=True)
    for i in range(subset_mib // 2):
        with open(os.path.join(out, "subset", "file%02d.%s" % (i, exts[i % len(exts)])), "wb") as f:
            f.write(b"# file %d\n" % i)
            f.write(pool[i % len(pool)])
    os.makedirs(os.path.join(out, "archives"), exist_ok=True)
    for i in range(archive_mib // 8):
        entries = [("app/conf/file%d.%s" % (k, exts[k % len(exts)]), pool[(i + k) % len(pool)]) for k in range(4)]
        if i % 3 == 2:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as t:
                for name, data in entries:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
            path = os.path.join(out, "archives", "release%03d.tar.gz" % i)
            with open(path, "wb") as f:
                f.write(buf.getvalue())
        else:
            ext = "jar" if i % 3 == 1 else "zip"
            with zipfile.ZipFile(os.path.join(out, "archives", "bundle%03d.%s" % (i, ext)), "w",
                                 compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
                for name, data in entries:
                    z.writestr(name, data)


if __name__ == "__main__":
    main()
