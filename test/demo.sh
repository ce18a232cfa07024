#!/usr/bin/env bash
# make demo: install what is missing, build, start a throwaway cluster, load
# a synthetic clinic and show scheduling at work.  The cluster is removed
# when the demo ends, however it ends.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/setup.sh"
. "$here/lib/cluster.sh"

sp_install_packages
sp_build_install
cluster_start
echo "== throwaway cluster on socket $PGHOST, port $PGPORT (schedphi preloaded)"
echo
psql -X -q -v ON_ERROR_STOP=1 -P pager=off -f "$here/demo.sql"
echo
echo "== demo finished; the throwaway cluster is being removed"
