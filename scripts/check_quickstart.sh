#!/usr/bin/env bash
# CI's check that the quickstart learned: reads its summary.md and fails unless the trained
# model is far above the untrained one on the held-out phantoms (P-I mIoU, P-I grounding F1,
# answer-token accuracy; this machine's runs give +22, +19 and +91 points).
#   scripts/check_quickstart.sh [out/quickstart/summary.md]
set -euo pipefail
summary=${1:-out/quickstart/summary.md}
status=0
# row label, least gain in points
for check in "P-I mIoU (%)|10" "P-I grounding F1 (%)|5" "answer-token accuracy (%, teacher forced)|50"; do
    label=${check%|*}
    least=${check##*|}
    row=$(grep -F "| $label |" "$summary" || true)
    if [ -z "$row" ]; then
        echo "FAIL: no row \`$label\` in $summary"
        status=1
        continue
    fi
    if ! awk -F'|' -v label="$label" -v least="$least" '{
        b = $3 + 0; a = $4 + 0; gain = a - b
        printf "%s: untrained %.2f, trained %.2f (gain %.2f, at least %s)\n", label, b, a, gain, least
        exit !(gain >= least)
    }' <<< "$row"; then
        echo "FAIL: the quickstart did not learn enough on \`$label\`"
        status=1
    fi
done
exit $status
