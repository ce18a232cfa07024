# Sourced by test/run.sh, test/demo.sh and bench/run.sh: make sure the
# packages schedphi needs are present, then build and install the extension.
# Works as root or as a user with sudo; safe to run any number of times.

SP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SP_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-contrib postgresql-15-pgtap
	libtap-parser-sourcehandler-pgtap-perl libssl-dev make gcc clang libclang-rt-14-dev
	python3 openssl perl pgbouncer libcurl4-openssl-dev python3-aiosmtpd stunnel4)

sp_sudo() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

sp_install_packages() {
	local missing=() p
	for p in "${SP_PACKAGES[@]}" "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "== installing missing packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! sp_sudo apt-get install -y -q "${missing[@]}" >/tmp/schedphi-apt.log 2>&1; then
		sp_sudo apt-get update -q >>/tmp/schedphi-apt.log 2>&1
		sp_sudo apt-get install -y -q "${missing[@]}" >>/tmp/schedphi-apt.log 2>&1 || {
			tail -20 /tmp/schedphi-apt.log >&2
			echo "could not install: ${missing[*]}" >&2
			return 1
		}
	fi
}

sp_build_install() {
	export PG_CONFIG=${SP_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
	echo "== building schedphi"
	make -s -C "$SP_ROOT" PG_CONFIG="$PG_CONFIG" all >/dev/null
	sp_sudo make -s -C "$SP_ROOT" PG_CONFIG="$PG_CONFIG" install >/dev/null
}
