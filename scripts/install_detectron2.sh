#!/usr/bin/env bash
# Install Detectron2 into the given Python environment from the PyPI wheel sal-detectron2 0.7.2
# (official Detectron2 code of 2024-04-17; see README "Detectron2"). The wheel is tagged cp310 but the
# code we use is pure Python, so it is retagged py3 and installed with --no-deps (its metadata pins numpy<2,
# which is wrong: everything runs on numpy 2; pyproject.toml lists the real runtime needs).
set -euo pipefail
PY=${1:?usage: install_detectron2.sh PYTHON}
WHEEL=sal_detectron2-0.7.2-cp310-none-any.whl
SHA256=491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT

if "$PY" -c "import detectron2, sys; sys.exit(0 if detectron2.__version__ == '0.7.2' else 1)" 2>/dev/null; then
  echo "detectron2 already installed"; exit 0
fi
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 -d "$DIR" sal-detectron2==0.7.2
echo "$SHA256  $DIR/$WHEEL" | sha256sum -c --quiet - || { echo "sha256 mismatch for $WHEEL" >&2; exit 1; }
cp "$DIR/$WHEEL" "$DIR/sal_detectron2-0.7.2-py3-none-any.whl"
"$PY" -m pip install -q --no-deps "$DIR/sal_detectron2-0.7.2-py3-none-any.whl"
"$PY" -c "import detectron2.model_zoo; print('detectron2', detectron2.__version__)"
