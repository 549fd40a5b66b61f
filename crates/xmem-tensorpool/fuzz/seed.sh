#!/usr/bin/env bash
# Seeds every fuzz target's corpus: the project's own vectors (tests/vectors/*.hex) everywhere,
# plus the C implementation's golden files when ../shared sits beside the repository.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
golden="$here/../../../../shared/tensorpool/golden"
for target in $(sed -n 's/^name = "\(decode_[a-z_]*\|shm_images\)"/\1/p' "$here/Cargo.toml"); do
    mkdir -p "$here/corpus/$target"
    for v in "$here"/../tests/vectors/*.hex; do
        sed 's/#.*//' "$v" | xxd -r -p > "$here/corpus/$target/$(basename "$v" .hex)"
    done
    if [ -d "$golden" ]; then
        cp "$golden"/*.bin "$here/corpus/$target/"
    fi
done
echo "seeded $(ls "$here/corpus" | wc -l) corpora in $here/corpus"
