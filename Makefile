# schedphi — PGXS build.  `make test` and `make demo` bootstrap a fresh
# machine (packages, build, install, throwaway cluster); see README.md.

EXTENSION  = schedphi
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = schedphi
OBJS       = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c src/codec/*.c)))
DATA_built = $(EXTENSION)--$(EXTVERSION).sql
EXTRA_CLEAN = $(EXTENSION)--*.sql
EXTRA_CLEAN += schedphi-agent

PG_CPPFLAGS = -Isrc
SHLIB_LINK  = -lcrypto
# -Wno-unused-parameter: PostgreSQL's own headers trip it.
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter

# pg_regress: every sql/*.sql is a test; adding a test is adding a file.
REGRESS      = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=btree_gist --load-extension=$(EXTENSION)

PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
else
all install installcheck:
	@echo "PostgreSQL server headers are missing: 'make test' and 'make demo' install them," >&2
	@echo "or run: apt-get install postgresql-server-dev-15" >&2
	@exit 1
endif

# schedphi-agent (docs/agent.md): a libpq client, not part of the module, so
# built by its own rule (PGXS's PROGRAM would share OBJS with MODULE_big).
# libpq's headers: pg_config's includedir, else pkg-config's.
AGENT_SRCS     = $(sort $(wildcard src/agent/*.c))
AGENT_CPPFLAGS = -D_GNU_SOURCE -I$(shell $(PG_CONFIG) --includedir) $(shell pkg-config --cflags libpq 2>/dev/null)
AGENT_CFLAGS   = -std=gnu11 -O2 -g -Wall -Wextra -Werror
AGENT_LIBS     = -L$(shell $(PG_CONFIG) --libdir) -lpq $(or $(shell pkg-config --libs libcurl 2>/dev/null),-lcurl) -lssl -lcrypto

schedphi-agent: $(AGENT_SRCS) $(wildcard src/agent/*.h)
	$(CC) $(AGENT_CPPFLAGS) $(AGENT_CFLAGS) -o $@ $(AGENT_SRCS) $(LDFLAGS_EX) $(AGENT_LIBS)

all: schedphi-agent
install: install-agent
install-agent: schedphi-agent
	install -d '$(DESTDIR)$(shell $(PG_CONFIG) --bindir)'
	install -m 755 schedphi-agent '$(DESTDIR)$(shell $(PG_CONFIG) --bindir)/schedphi-agent'

# The install script is the concatenation of src/sql/*.sql in name order.
$(EXTENSION)--$(EXTVERSION).sql: $(sort $(wildcard src/sql/*.sql)) $(EXTENSION).control
	cat $(sort $(wildcard src/sql/*.sql)) > $@

test:
	bash test/run.sh

demo:
	bash test/demo.sh

bench:
	bash bench/run.sh

# libFuzzer over the pure-C parsers in src/codec (FUZZ_SECONDS each, default 30).
fuzz:
	bash test/fuzz/run.sh

.PHONY: test demo bench fuzz install-agent
