#!/usr/bin/env bash
# Build the Python wheel (pragma-interp, import pragma_interp: PyO3 + maturin, one abi3
# wheel for Python >= 3.9) and optionally install it and run its tests.
#
# Usage: scripts/python/build_wheel.sh [--install] [--test]   (wheel in target/wheels/)
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install --quiet "maturin>=1.5,<2"
python3 -m maturin build --release -m python/Cargo.toml -o target/wheels
WHEEL=$(ls -t target/wheels/pragma_interp-*.whl | head -1)
echo "built $WHEEL"
for a in "$@"; do
    case $a in
        --install) python3 -m pip install --quiet --force-reinstall "$WHEEL" ;;
        --test) python3 -m pip install --quiet pytest numpy safetensors
                python3 -m pytest -q python/tests ;;
    esac
done
