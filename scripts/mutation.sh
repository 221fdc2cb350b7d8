#!/usr/bin/env bash
# Mutation testing (`make mutation`; not part of `make test`): runs mutmut on the modules of
# pyproject's [tool.mutmut], one module at a time, then prints each module's kill rate.
# Usage, from the repository root: scripts/mutation.sh [module ...]  (default: all of them)
# Writes mutants/ (git-ignored): mutmut's mutated copy, its results and one log per module.
set -euo pipefail
if [ $# -eq 0 ]; then
    set -- digits.images pipeline.model.transform pipeline.compression serving.scoring.inputs
fi
rm -rf mutants && mkdir mutants
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread per mutmut worker: no oversubscription
for module in "$@"; do
    start=$SECONDS
    mutmut run --max-children "${MUTATION_JOBS:-2}" "$module*" > "mutants/$module.log" 2>&1
    echo "$module: $((SECONDS - start)) s"
done
python scripts/mutation_score.py
