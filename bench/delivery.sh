#!/usr/bin/env bash
# bench/delivery.sh [N] — N available rewards (default 10 000) delivered to
# the local Stripe of the tests; see bench/delivery.py.
set -euo pipefail
exec /usr/bin/python3 "$(dirname "$0")/delivery.py" "$@"
