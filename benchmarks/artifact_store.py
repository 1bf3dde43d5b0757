"""What the artifact store costs, as figures and ratios measured in one process.

1. Safe extraction of a model.tar.gz (one 1 MiB config-like file + weights) from a directory
   source, against tarfile's own ``extractall(filter="data")`` on the same archive: the
   checks (streamed size limit, no writes through links, devices refused) should cost little
   (ratio near 1).
2. The same artifact from S3 through a real moto server on 127.0.0.1: download and extract
   seconds as the store reports them (ModelDownloadingTime).
3. 8 threads fetching one name at once: downloads made (should be 1) and wall time.

    python benchmarks/artifact_store.py [--mib 64]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mmesim.emulator.store import ArtifactStore  # noqa: E402

MiB = 2**20


def make_archive(mib: int) -> bytes:
    rnd = os.urandom(MiB)                     # incompressible, like trained weights
    weights = b"".join(rnd[i % 7:] + rnd[:i % 7] for i in range(mib))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, data in (("m/config.pbtxt", b'name: "m"\n' * 1000), ("m/1/model.pt", weights)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=64, help="weights size (64 MiB)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mmesim-store-bench-"))
    try:
        src = root / "src"
        src.mkdir()
        data = make_archive(args.mib)
        (src / "m.tar.gz").write_bytes(data)
        print(f"artifact: {len(data) / MiB:.1f} MiB compressed, {args.mib} MiB of weights")

        def ours():
            cache = root / f"c{time.perf_counter_ns()}"
            got = ArtifactStore(str(src), cache, 10 * args.mib * MiB).fetch("m.tar.gz")
            shutil.rmtree(cache)
            return got

        def stdlib():
            dest = root / f"d{time.perf_counter_ns()}"
            with tarfile.open(src / "m.tar.gz") as tar:
                tar.extractall(dest, filter="data")
            shutil.rmtree(dest)
        t_ours, t_std = best_of(3, ours), best_of(3, stdlib)
        print(f"1. extraction, directory source: store {t_ours * 1e3:.0f} ms ({args.mib / t_ours:.0f} MiB/s), "
              f"tarfile data filter {t_std * 1e3:.0f} ms; ratio store/stdlib = {t_ours / t_std:.2f}")

        import boto3
        from moto_fixture import start_moto, stop
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        proc, url = start_moto(root / "moto.log")
        try:
            s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
            s3.create_bucket(Bucket="bench")
            s3.put_object(Bucket="bench", Key="p/m.tar.gz", Body=data)
            fetched = []
            for i in range(3):
                store = ArtifactStore("s3://bench/p", root / f"s3c{i}", 10 * args.mib * MiB, s3_endpoint_url=url)
                fetched.append(store.fetch("m.tar.gz"))
            down = statistics.median(f.download_s for f in fetched)
            ext = statistics.median(f.extract_s for f in fetched)
            print(f"2. S3 (moto on 127.0.0.1), median of 3: download {down * 1e3:.0f} ms "
                  f"({len(data) / MiB / down:.0f} MiB/s), extract {ext * 1e3:.0f} ms")

            store = ArtifactStore("s3://bench/p", root / "s3c-conc", 10 * args.mib * MiB, s3_endpoint_url=url)
            opened, real_open = [], store.source.open
            store.source.open = lambda *a: opened.append(1) or real_open(*a)
            barrier = threading.Barrier(8)
            results = []

            def worker():
                barrier.wait()
                results.append(store.fetch("m.tar.gz"))
            t0 = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            print(f"3. 8 concurrent fetches of one name: {len(opened)} download(s), {len(results)} answers, "
                  f"wall {wall * 1e3:.0f} ms (one fetch: {(down + ext) * 1e3:.0f} ms)")
        finally:
            stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
