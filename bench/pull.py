"""Pull benchmark: hyper's registry client against ``skopeo copy``, same image, same run.

Makes a ~200 MB image of random data (``--layers`` layers, uncompressed tars: random data does
not compress), starts Debian's docker-registry on a free loopback port, pushes the image with
hyper, then times, alternately, N pulls by hyper (``ImageService.pull`` into an empty store:
parallel layer downloads, every digest verified) and N ``skopeo copy docker://... oci:DIR``
into an empty directory. Prints one JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/pull.py [--mb 200] [--layers 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.registry_fixtures import start_registry  # noqa: E402

from hyper.config.settings import Paths, RegistrySettings, Settings  # noqa: E402
from hyper.images.builder import build_image  # noqa: E402
from hyper.images.compression import Compression  # noqa: E402
from hyper.service.caller import Caller  # noqa: E402
from hyper.service.images import ImageService  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def service(state: Path, host: str, downloads: int) -> ImageService:
    settings = Settings(
        paths=Paths(state_dir=state, run_dir=state / "run", cache_dir=state / "cache"),
        registry=RegistrySettings(insecure=(host,), max_concurrent_downloads=downloads),
    )
    return ImageService(settings)


def summary(samples: list[float], size: int) -> dict[str, float]:
    median = statistics.median(samples)
    return {
        "median_s": round(median, 3),
        "min_s": round(min(samples), 3),
        "max_s": round(max(samples), 3),
        "median_mb_per_s": round(size / median / 1e6, 1),
        "samples_s": [round(s, 3) for s in samples],  # type: ignore[dict-item]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="total image size in MB")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--downloads", type=int, default=3, help="hyper's concurrent downloads")
    args = parser.parse_args()
    if shutil.which("skopeo") is None or shutil.which("docker-registry") is None:
        log("needs skopeo and docker-registry (scripts/setup.sh installs them)")
        return 1
    work = Path(tempfile.mkdtemp(prefix="hyper-bench-pull-"))
    registry = None
    try:
        registry = start_registry(work / "registry")
        ref = f"{registry.host}/bench/random:1"
        source = service(work / "source", registry.host, args.downloads)
        per_layer = args.mb * 1_000_000 // args.layers
        log(f"building {args.layers} layers of {per_layer / 1e6:.0f} MB")
        layers: list[dict[str, bytes] | bytes] = [
            {f"data/layer{i}.bin": os.urandom(per_layer)} for i in range(args.layers)
        ]
        image = build_image(source.store, ref, layers, compression=Compression.NONE)
        size = sum(layer.size for layer in image.layers)
        started = time.monotonic()
        source.push(Caller.operator(), ref)
        push_s = time.monotonic() - started
        log(f"pushed {size / 1e6:.0f} MB in {push_s:.2f}s")
        del layers
        hyper_s: list[float] = []
        skopeo_s: list[float] = []
        for run in range(args.runs):
            state = work / f"hyper-{run}"
            started = time.monotonic()
            pulled = service(state, registry.host, args.downloads).pull(Caller.operator(), ref)
            hyper_s.append(time.monotonic() - started)
            assert pulled.digest == image.digest
            shutil.rmtree(state)
            target = work / f"skopeo-{run}"
            started = time.monotonic()
            subprocess.run(
                ["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
                 f"docker://{ref}", f"oci:{target}:bench"],
                check=True, timeout=600,
            )  # fmt: skip
            skopeo_s.append(time.monotonic() - started)
            shutil.rmtree(target)
            log(f"run {run + 1}: hyper {hyper_s[-1]:.2f}s, skopeo {skopeo_s[-1]:.2f}s")
        result = {
            "image": {"layers": args.layers, "bytes": size, "digest": str(image.digest)},
            "push_s": round(push_s, 3),
            "hyper_pull": summary(hyper_s, size),
            "skopeo_copy_to_oci_dir": summary(skopeo_s, size),
            "ratio_median_hyper_over_skopeo": round(
                statistics.median(hyper_s) / statistics.median(skopeo_s), 2
            ),
            "hyper_concurrent_downloads": args.downloads,
            "machine": {"cpus": os.cpu_count()},
            "skopeo": subprocess.run(
                ["skopeo", "--version"], capture_output=True, text=True, check=False
            ).stdout.strip(),
        }
        print(json.dumps(result, indent=1))
        return 0
    finally:
        if registry is not None:
            registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
