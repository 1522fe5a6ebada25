#!/usr/bin/env bash
# Builds .gpu/ from scratch: what bench/device_run.sh needs to run the GPU protocol (bench/gpu_sweep.sh) on a GPU
# machine without network that receives at most 64 MiB per call (the repository's files + .gpu/).
#
#   bash bench/gpu_bundle.sh [DATA]      DATA: the course dataset (default ../shared/data/nuclei)
#
# Run it from a clone on a machine that reaches PyPI, after `make install` (packing the data imports the project).
# The GPU machine's image has CPython 3.12 (manylinux x86_64) with torch, torchvision, numpy, pandas, pyarrow,
# matplotlib, opencv-python-headless, PyYAML, requests, protobuf, tqdm, tabulate, portalocker, cloudpickle... (IMAGE
# below names those that the carried packages need); it lacks the rest of the stack, so .gpu/ holds:
#   ray-slim.tar.xz  ray 2.60.0 for CPython 3.12 without its Java jars, the dashboard's web client build, RLlib and
#                    ray.llm, native binaries stripped of symbols (~18 MiB; the wheel is 76 MiB); its top level is
#                    site-packages content (ray/, ray-2.60.0.dist-info/), extracted with tar -xJf into the target
#   *.whl            the other packages the image lacks, pinned to the versions the project's .venv resolves:
#                    Ray's jsonschema (+ its needs); ray[tune]'s tensorboardX and pydantic (Ray Train v2, which Tune
#                    imports, refuses to load without it); Optuna and its needs; Detectron2 (the PyPI wheel
#                    sal-detectron2 0.7.2, retagged py3 as in scripts/install_detectron2.sh) and its runtime needs
#                    (pyproject.toml); setuptools<81, whose pkg_resources detectron2.model_zoo imports (the image's
#                    setuptools version is unknown, and newer setuptools drop pkg_resources). Not carried: torch and
#                    torchvision (the machine's own) and MLflow (too large: the protocol runs with --mlflow-uri off).
#   nuclei.tar       TRAIN training + TEST test tiles of DATA (bench/device_bundle.py pack: lossless, ~19 MiB)
# Then it checks that every carried wheel fits CPython 3.12 on manylinux x86_64 and that every requirement of the
# carried packages (extras aside) is carried or in IMAGE, prints each file's size and the total with the repository's
# files, and fails if that total exceeds 64 MiB.
#
# Env: PYTHON (runs pip and the packing; default .venv/bin/python, else python3), TRAIN / TEST (tiles; 12 / 2).
# Needs: git, unzip (keeps the binaries' exec bits), strip (binutils), xz, GNU tar.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $# -ge 1 ]]; then DATA=$(cd "$1" && pwd); else DATA=$ROOT/../shared/data/nuclei; fi
cd "$ROOT"
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
TRAIN=${TRAIN:-12}
TEST=${TEST:-2}
LIMIT=$((64 * 1024 * 1024))
OUTDIR=.gpu

die() { echo "gpu_bundle: $*" >&2; exit 1; }
for tool in git unzip strip xz tar; do command -v "$tool" >/dev/null || die "'$tool' is missing"; done
[[ -f $DATA/test_img_ids.json && -d $DATA/train ]] || die "$DATA is not the course dataset (train/, test_img_ids.json)"
"$PYTHON" -c "import detectron2, pycocotools, numpy, PIL, packaging" 2>/dev/null \
  || die "$PYTHON cannot import the project's packages: run 'make install' or set PYTHON"

RAY=ray==2.60.0
# Binary wheels for the target (pins = the project's .venv).
WHEELS=(
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1  # Ray
  tensorboardX==2.6.5 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0               # ray[tune]
  typing-inspection==0.4.5
  optuna==5.0.0 alembic==1.20.1 SQLAlchemy==2.1.9 Mako==1.4.3 colorlog==6.12.0                      # Optuna
  iopath==0.1.9 yacs==0.1.8 termcolor==3.3.0 pycocotools==2.0.11 omegaconf==2.3.1 hydra-core==1.3.8  # Detectron2
  setuptools==80.10.2
)
# Pure-Python packages that PyPI has as source only: built into py3-none-any wheels here.
SDISTS=(fvcore==0.1.5.post20221221 antlr4-python3-runtime==4.9.3)
# Detectron2: the sal-detectron2 wheel (tagged cp310, pure Python for this project), as scripts/install_detectron2.sh.
D2=sal-detectron2==0.7.2
D2_WHEEL=sal_detectron2-0.7.2-cp310-none-any.whl
D2_SHA256=491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561
# Packages of the GPU machine's image that the carried ones need (the image has many more).
IMAGE="attrs click cloudpickle filelock fsspec markupsafe matplotlib msgpack numpy opencv-python-headless packaging
pandas pillow portalocker protobuf pyarrow pyyaml requests tabulate tensorboard torch torchvision tqdm typing-extensions
zipp"
# Requirements knowingly left unmet: sal-detectron2 pins numpy<2 (wrong: it runs on numpy 2, see
# ../shared/docs/detectron2.md) and names black (only to pretty-print dumped configs, which this project does not do).
WAIVED="sal-detectron2:numpy sal-detectron2:black"
TARGET=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR" "$WORK/dl" "$WORK/ray"
pipq() { "$PYTHON" -m pip "$@" --disable-pip-version-check -q; }

echo "== ray ($RAY, CPython 3.12 manylinux x86_64), slimmed"
pipq download --no-deps --only-binary=:all: "${TARGET[@]}" -d "$WORK/dl" "$RAY"
unzip -q "$WORK"/dl/ray-*.whl -d "$WORK/ray"
rm -rf "$WORK"/ray/ray/{jars,dashboard/client/build,rllib,llm}
"$PYTHON" - "$WORK/ray" > "$WORK/elf.txt" <<'EOF'
import os, sys
for d, _, files in os.walk(sys.argv[1]):
    for f in files:
        p = os.path.join(d, f)
        if not os.path.islink(p):
            with open(p, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    print(p)
EOF
xargs -d '\n' -r strip --strip-unneeded < "$WORK/elf.txt"
echo "$(wc -l < "$WORK/elf.txt") native binaries stripped; compressing (xz -9, about a minute)"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@946684800 -C "$WORK/ray" -cf - ray ray-2.60.0.dist-info \
  | xz -9 -T0 > "$OUTDIR/ray-slim.tar.xz"

echo "== wheels"
pipq download --no-deps --only-binary=:all: "${TARGET[@]}" -d "$OUTDIR" "${WHEELS[@]}"
pipq wheel --no-deps -w "$OUTDIR" "${SDISTS[@]}"
pipq download --no-deps --only-binary=:all: --python-version 3.10 -d "$WORK/d2" "$D2"
echo "$D2_SHA256  $WORK/d2/$D2_WHEEL" | sha256sum -c --quiet - || die "sha256 mismatch for $D2_WHEEL"
cp "$WORK/d2/$D2_WHEEL" "$OUTDIR/sal_detectron2-0.7.2-py3-none-any.whl"

echo "== data ($TRAIN training + $TEST test tiles of $DATA)"
"$PYTHON" bench/device_bundle.py pack "$DATA" "$OUTDIR/nuclei.tar" --train "$TRAIN" --test "$TEST"

echo "== checks"
"$PYTHON" - "$OUTDIR" "$WORK/ray/ray-2.60.0.dist-info/METADATA" "$IMAGE" "$WAIVED" <<'EOF'
import email, glob, os, sys, zipfile
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

outdir, ray_metadata, image, waived = sys.argv[1], sys.argv[2], sys.argv[3].split(), set(sys.argv[4].split())
target = dict(default_environment(), python_version="3.12", python_full_version="3.12.3", sys_platform="linux",
              platform_system="Linux", platform_machine="x86_64", implementation_name="cpython",
              platform_python_implementation="CPython", os_name="posix")
errors, carried = [], {}
metas = [("ray", email.message_from_string(open(ray_metadata, encoding="utf-8").read()))]
for path in sorted(glob.glob(os.path.join(outdir, "*.whl"))):
    name, version, _, tags = parse_wheel_filename(os.path.basename(path))
    if not any(t.interpreter in ("py3", "cp312") and t.abi in ("none", "abi3", "cp312")
               and (t.platform == "any" or (t.platform.startswith("manylinux") and t.platform.endswith("_x86_64")))
               for t in tags):
        errors.append(f"{os.path.basename(path)}: not installable on CPython 3.12 manylinux x86_64")
    if name in carried:
        errors.append(f"{name}: two wheels (pip install would stop)")
    carried[name] = version
    with zipfile.ZipFile(path) as z:
        meta = [n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        metas.append((name, email.message_from_bytes(z.read(meta[0]))))
carried[canonicalize_name("ray")] = Version("2.60.0")
have = {canonicalize_name(n) for n in image}
for owner, meta in metas:
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate(dict(target, extra="")):
            continue  # an extra's, or another Python's
        dep = canonicalize_name(req.name)
        if f"{owner}:{dep}" in waived:
            continue
        if dep in carried:
            if not req.specifier.contains(carried[dep], prereleases=True):
                errors.append(f"{owner} needs {req}, carried {dep} {carried[dep]}")
        elif dep not in have:
            errors.append(f"{owner} needs {req}: neither carried nor in the GPU machine's image")
if errors:
    sys.exit("gpu_bundle: " + "\n  ".join(["requirements not met:", *errors]))
print(f"{len(metas) - 1} wheels + ray: tags fit CPython 3.12 manylinux x86_64; requirements carried or in the image")
EOF

echo "== sizes"
git ls-files -z --cached --others --exclude-standard | "$PYTHON" -c '
import os, sys
outdir, limit = sys.argv[1], int(sys.argv[2])
mib = lambda n: f"{n:12d} B {n / 2**20:7.2f} MiB"
total = 0
for name in sorted(os.listdir(outdir)):
    size = os.path.getsize(os.path.join(outdir, name))
    total += size
    print(mib(size), " ", os.path.join(outdir, name))
repo = sum(os.path.getsize(f) for f in sys.stdin.read().split("\0")
           if f and not f.startswith(outdir + "/") and os.path.isfile(f))
print(mib(total), " ", outdir + "/ in all")
print(mib(repo), "  the repository (tracked files + untracked ones git does not ignore)")
print(mib(total + repo), "  total; limit 64 MiB =", limit, "B")
if total + repo > limit:
    sys.exit(f"gpu_bundle: TOO LARGE: {total + repo} B > 64 MiB, more than the GPU machine receives (fewer TRAIN?)")
print(f"ok: {(limit - total - repo) / 2**20:.1f} MiB to spare")
' "$OUTDIR" "$LIMIT"
