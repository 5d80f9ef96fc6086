#!/usr/bin/env python3
"""Builds the hello-bench image from this host's Debian packages, as an OCI image layout.

Four gzip layers, Debian-style (each layer has the parent directories of its files, as
`ctr-remote image optimize` requires):
  1. base    - libc6, coreutils, bash, dash, perl-base, apt and their libraries, and the
               merged-/usr symlinks
  2. python  - python3.11-minimal, libpython3.11-minimal, python3-minimal
  3. stdlib  - libpython3.11-stdlib and the libraries its modules load, with the
               host's compiled __pycache__ files
  4. extra   - the libraries that ls, find, grep, sed, id, cp... of the base layer still
               lack (libpcre2-8, libacl, libattr), and /opt/bench/bulk.bin: 16 MiB,
               generated (seeded: the same every time; gzip keeps ~60% of it), which
               only the large-read workload reads
Also writes the list of files `python3 -c 'print("hello")'` reads (the interpreter,
its loader and libraries, the .pyc of every module it imports), for
`strata convert --prioritize-from`.

usage: build_image.py LAYOUT_DIR PRIORITY_LIST REF_NAME
"""

import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile

LAYERS = [
    ("base", ["libc6", "zlib1g", "libexpat1", "dash", "base-files", "coreutils", "bash", "perl-base",
              "libstdc++6", "libgcc-s1", "util-linux", "findutils", "grep", "sed", "libsystemd0",
              "libudev1", "apt", "libapt-pkg6.0", "gpgv", "libgnutls30", "libp11-kit0",
              "libunistring2", "libidn2-0", "libhogweed6", "libnettle8", "libgmp10", "libzstd1",
              "libxxhash0", "liblz4-1", "libgcrypt20", "libgpg-error0", "libseccomp2", "libselinux1"]),
    ("python", ["python3.11-minimal", "libpython3.11-minimal", "python3-minimal"]),
    ("stdlib", ["libpython3.11-stdlib", "libssl3", "libffi8", "libsqlite3-0", "libbz2-1.0",
                "liblzma5", "libmpdec3", "libncursesw6", "libtinfo6", "libreadline8", "libuuid1",
                "libcrypt1", "libnsl2", "libtirpc3", "libdb5.3", "libgdbm6", "mime-support",
                "media-types", "tzdata"]),
    ("extra", ["libpcre2-8-0", "libacl1", "libattr1"]),
]
# Generated files: layer name -> [(path in the image, size)].
GENERATED = {"extra": [("/opt/bench/bulk.bin", 16 << 20)]}
MERGED = {"/bin": "/usr/bin", "/sbin": "/usr/sbin", "/lib": "/usr/lib", "/lib64": "/usr/lib64"}
PY = "/usr/bin/python3.11"


def image_path(host_path):
    """The path in the image: merged-/usr prefixes folded into /usr."""
    for top, usr in MERGED.items():
        if host_path == top or host_path.startswith(top + "/"):
            return usr + host_path[len(top):]
    return host_path


def package_files(pkg):
    out = subprocess.run(["dpkg-query", "-L", pkg], capture_output=True, text=True)
    if out.returncode != 0:
        return []
    files = []
    for line in out.stdout.splitlines():
        p = line.strip()
        # The merged-/usr tops are directories in packages and symlinks on the host.
        if not p or p == "/." or "diverted" in p or p in MERGED:
            continue
        if os.path.islink(p) or os.path.isfile(p):
            files.append(p)
            if p.endswith(".py"):
                cached = pyc(p)
                if cached and os.path.isfile(cached):
                    files.append(cached)
    return files


def pyc(path):
    d, base = os.path.split(path)
    return os.path.join(d, "__pycache__", base[:-3] + ".cpython-311.pyc")


def bulk_bytes(size, seed):
    """4 KiB blocks of 1 KiB random bytes and 3 KiB word salad: gzip keeps ~60%."""
    rng = random.Random(seed)
    letters = b"abcdefghijklmnopqrstuvwxyz"
    words = [bytes(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(512)]
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(1024)
        out += b" ".join(rng.choices(words, k=600))[:3072]
    return bytes(out[:size])


def layer_tar(files, first, generated=()):
    seen_dirs = set()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            if first:
                for top, usr in MERGED.items():
                    for d in ("usr", usr[1:]):
                        if d not in seen_dirs:
                            add_dir(tar, d, seen_dirs)
                    info = tarfile.TarInfo(top[1:])
                    info.type = tarfile.SYMTYPE
                    info.linkname = usr[1:]
                    info.mode = 0o777
                    tar.addfile(info)
                for d, mode in (("tmp", 0o1777), ("etc", 0o755), ("root", 0o700)):
                    add_dir(tar, d, seen_dirs, mode)
            for host in sorted(set(files), key=image_path):
                name = image_path(host)[1:]
                parent = os.path.dirname(name)
                parts = parent.split("/") if parent else []
                for i in range(1, len(parts) + 1):
                    add_dir(tar, "/".join(parts[:i]), seen_dirs)
                info = tar.gettarinfo(host, arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if info.isreg():
                    with open(host, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
            for path, size in generated:
                name = path[1:]
                parts = os.path.dirname(name).split("/")
                for i in range(1, len(parts) + 1):
                    add_dir(tar, "/".join(parts[:i]), seen_dirs)
                data = bulk_bytes(size, seed=size)
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.uname, info.gname = len(data), 0o644, "root", "root"
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def add_dir(tar, name, seen, mode=0o755):
    if name in seen:
        return
    seen.add(name)
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def diff_id(gz_bytes):
    return "sha256:" + hashlib.sha256(gzip.decompress(gz_bytes)).hexdigest()


def write_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def priority_list(in_image):
    """What `python3 -c 'print("hello")'` reads: found by running it here, kept to the
    paths the image holds (the host may load more, e.g. a .pth file's module from a
    package the image lacks; `strata convert` refuses prioritized paths it cannot find)."""
    code = ("import sys, importlib.util\n"
            "for m in list(sys.modules.values()):\n"
            "    f = getattr(m, '__file__', None)\n"
            "    if f:\n"
            "        print(f)\n"
            "        if f.endswith('.py'): print(importlib.util.cache_from_source(f))\n")
    # Python reads a module's cached .pyc, not its .py (it only stats the source).
    mods = [m for m in subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout.split()
            if not m.endswith(".py") or not os.path.exists(pyc(m))]
    libs = []
    for line in subprocess.run(["ldd", PY], capture_output=True, text=True, check=True).stdout.splitlines():
        part = line.split("=>")[-1].strip().split(" ")[0]
        if part.startswith("/"):
            libs.append(os.path.realpath(part))
    paths = [os.path.realpath(PY)] + libs + ["/etc/ld.so.cache", "/usr/lib/python3.11/os.py"] + mods
    out, seen = [], set()
    for p in paths:
        q = image_path(os.path.realpath(os.path.dirname(p)) + "/" + os.path.basename(p)) if p.startswith("/") else None
        if q and q not in seen and os.path.exists(p) and q in in_image:
            seen.add(q)
            out.append(q)
    return out


def main():
    layout, prio_out, ref_name = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    layers, diff_ids, taken = [], [], set()
    for name, pkgs in LAYERS:
        files = [f for p in pkgs for f in package_files(p) if image_path(f) not in taken]
        if name == "base" and os.path.exists("/etc/ld.so.cache"):
            files.append("/etc/ld.so.cache")
        taken.update(image_path(f) for f in files)
        data = layer_tar(files, not layers, GENERATED.get(name, ()))
        diff_ids.append(diff_id(data))
        digest, size = write_blob(layout, data)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
        print(f"layer {name}: {len(files) + len(GENERATED.get(name, ()))} files, {size} bytes", file=sys.stderr)
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/usr/bin/python3", "-c", "print('hello')"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": n} for n, _ in LAYERS],
    }
    cdigest, csize = write_blob(layout, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
                "layers": layers}
    mdigest, msize = write_blob(layout, json.dumps(manifest).encode())
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest,
             "size": msize, "annotations": {"org.opencontainers.image.ref.name": ref_name},
             "platform": {"architecture": "amd64", "os": "linux"}}]}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(prio_out, "w") as f:
        f.write("\n".join(priority_list(taken)) + "\n")


if __name__ == "__main__":
    main()
