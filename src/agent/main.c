/*
 * schedphi-agent mllp: the parent process.  It listens, forks a process per
 * client connection (each with its own libpq connection and TLS session,
 * up to --max-clients at once) and one for outbound delivery, and on
 * SIGTERM or SIGINT stops accepting, tells its children to stop (each
 * finishes the message in flight), waits for them and exits 0.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>

#define MAX_LISTEN 16
#define STOP_GRACE_MS 30000

Options		opt = {
	.max_bytes = 1024 * 1024,
	.idle_timeout = 60,
	.max_clients = 64,
	.poll = 5,
};

SSL_CTX    *deliver_tls = NULL;
volatile sig_atomic_t got_stop = 0;
volatile sig_atomic_t got_child = 0;
sigset_t	wait_mask;

static pid_t *children;			/* client processes; 0 = free slot */
static int	nchildren;
static pid_t deliverer;

static void
on_stop(int sig)
{
	(void) sig;
	got_stop = 1;
}

static void
on_child(int sig)
{
	(void) sig;
	got_child = 1;
}

static void
usage(FILE *f)
{
	fprintf(f,
			"Usage: " AGENT_NAME " mllp --listen HOST:PORT --dsn CONNINFO [options]\n"
			"       " AGENT_NAME " deliver --dsn CONNINFO --vendor UUID [--smtp URL] [--https URL] ... (deliver --help)\n"
			"\n"
			"Carries HL7 v2 over MLLP to and from schedphi (docs/agent.md).\n"
			"\n"
			"  --listen HOST:PORT        address to accept MLLP on (*:PORT: all; [::1]:PORT)\n"
			"  --dsn CONNINFO            libpq connection string of an integration login\n"
			"  --tls-cert FILE           server certificate (chain), PEM: accept TLS only\n"
			"  --tls-key FILE            its private key, PEM\n"
			"  --tls-ca FILE             CA certificates: require and verify client certificates\n"
			"  --max-bytes N             longest message accepted (default 1048576)\n"
			"  --idle-timeout SECONDS    close a connection silent this long (default 60)\n"
			"  --max-clients N           connections served at once (default 64)\n"
			"  --deliver RECEIVER=HOST:PORT\n"
			"                            send hl7_outbound of the receiver (uuid) there (repeatable);\n"
			"                            RECEIVER=tls://HOST:PORT: over TLS, its certificate verified\n"
			"  --deliver-ca FILE         CA certificates for tls:// receivers (default: the system's)\n"
			"  --deliver-cert FILE       the agent's client certificate for tls:// receivers, PEM\n"
			"  --deliver-key FILE        its private key, PEM\n"
			"  --poll SECONDS            how often to look for outbound messages (default 5)\n"
			"  --help                    this text\n");
}

static long
number(const char *name, const char *s, long min, long max)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
	{
		fprintf(stderr, AGENT_NAME ": %s must be a whole number from %ld to %ld\n", name, min, max);
		exit(2);
	}
	return v;
}

static bool
is_uuid(const char *s, size_t len)
{
	if (len != 36)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		bool		dash = (i == 8 || i == 13 || i == 18 || i == 23);

		if (dash ? s[i] != '-' : strchr("0123456789abcdefABCDEF", s[i]) == NULL || s[i] == '\0')
			return false;
	}
	return true;
}

static void
add_receiver(const char *spec)
{
	const char *eq = strchr(spec, '=');
	const char *where;
	Receiver   *r;

	if (eq == NULL || !is_uuid(spec, (size_t) (eq - spec)))
	{
		fprintf(stderr, AGENT_NAME ": --deliver wants RECEIVER_UUID=HOST:PORT or RECEIVER_UUID=tls://HOST:PORT\n");
		exit(2);
	}
	opt.receivers = realloc(opt.receivers, sizeof(Receiver) * (opt.nreceivers + 1));
	if (opt.receivers == NULL)
	{
		fprintf(stderr, AGENT_NAME ": out of memory\n");
		exit(1);
	}
	r = &opt.receivers[opt.nreceivers++];
	memcpy(r->uuid, spec, 36);
	r->uuid[36] = '\0';
	where = eq + 1;
	r->tls = strncmp(where, "tls://", 6) == 0;
	if (r->tls)
		where += 6;
	if (split_host_port(where, &r->host, &r->port) != 0 || r->host == NULL)
	{
		fprintf(stderr, AGENT_NAME ": --deliver wants RECEIVER_UUID=HOST:PORT or RECEIVER_UUID=tls://HOST:PORT\n");
		exit(2);
	}
}

static void
parse_options(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"listen", required_argument, NULL, 'l'},
		{"dsn", required_argument, NULL, 'd'},
		{"tls-cert", required_argument, NULL, 'c'},
		{"tls-key", required_argument, NULL, 'k'},
		{"tls-ca", required_argument, NULL, 'a'},
		{"max-bytes", required_argument, NULL, 'm'},
		{"idle-timeout", required_argument, NULL, 'i'},
		{"max-clients", required_argument, NULL, 'n'},
		{"deliver", required_argument, NULL, 'D'},
		{"deliver-ca", required_argument, NULL, 'A'},
		{"deliver-cert", required_argument, NULL, 'C'},
		{"deliver-key", required_argument, NULL, 'K'},
		{"poll", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
	{
		usage(argc < 2 ? stderr : stdout);
		exit(argc < 2 ? 2 : 0);
	}
	if (strcmp(argv[1], "mllp") != 0)
	{
		fprintf(stderr, AGENT_NAME ": unknown command \"%s\" (this build has: mllp, deliver)\n", argv[1]);
		exit(2);
	}
	optind = 2;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'l':
				opt.listen = optarg;
				break;
			case 'd':
				opt.dsn = optarg;
				break;
			case 'c':
				opt.tls_cert = optarg;
				break;
			case 'k':
				opt.tls_key = optarg;
				break;
			case 'a':
				opt.tls_ca = optarg;
				break;
			case 'm':
				opt.max_bytes = (size_t) number("--max-bytes", optarg, 64, 256L * 1024 * 1024);
				break;
			case 'i':
				opt.idle_timeout = (int) number("--idle-timeout", optarg, 1, 86400);
				break;
			case 'n':
				opt.max_clients = (int) number("--max-clients", optarg, 1, 10000);
				break;
			case 'D':
				add_receiver(optarg);
				break;
			case 'A':
				opt.deliver_ca = optarg;
				break;
			case 'C':
				opt.deliver_cert = optarg;
				break;
			case 'K':
				opt.deliver_key = optarg;
				break;
			case 'p':
				opt.poll = (int) number("--poll", optarg, 1, 86400);
				break;
			case 'h':
				usage(stdout);
				exit(0);
			default:
				usage(stderr);
				exit(2);
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, AGENT_NAME ": unexpected argument \"%s\"\n", argv[optind]);
		exit(2);
	}
	if (opt.dsn == NULL)
	{
		fprintf(stderr, AGENT_NAME ": --dsn is required\n");
		exit(2);
	}
	if (opt.listen == NULL && opt.nreceivers == 0)
	{
		fprintf(stderr, AGENT_NAME ": --listen (or --deliver) is required\n");
		exit(2);
	}
	if ((opt.tls_cert == NULL) != (opt.tls_key == NULL) || (opt.tls_ca && !opt.tls_cert))
	{
		fprintf(stderr, AGENT_NAME ": --tls-cert and --tls-key go together; --tls-ca needs them\n");
		exit(2);
	}
	if ((opt.deliver_cert == NULL) != (opt.deliver_key == NULL))
	{
		fprintf(stderr, AGENT_NAME ": --deliver-cert and --deliver-key go together\n");
		exit(2);
	}
	if (opt.deliver_ca || opt.deliver_cert)
	{
		bool		any_tls = false;

		for (int i = 0; i < opt.nreceivers; i++)
			any_tls = any_tls || opt.receivers[i].tls;
		if (!any_tls)
		{
			fprintf(stderr, AGENT_NAME ": --deliver-ca, --deliver-cert and --deliver-key are for tls:// receivers\n");
			exit(2);
		}
	}
}

/*
 * What both sides share: TLS 1.2 or later, no compression, no
 * renegotiation, and our certificate and key when given.  false on error
 * (OpenSSL's reasons queued).
 */
static bool
tls_common(SSL_CTX *ctx, const char *cert, const char *key)
{
	if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
		return false;
	if (cert && (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
				 SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
				 SSL_CTX_check_private_key(ctx) != 1))
		return false;
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
						| SSL_OP_IGNORE_UNEXPECTED_EOF	/* MLLP frames show truncation */
#endif
		);
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return true;
}

static SSL_CTX *
tls_context(void)
{
	SSL_CTX    *ctx = SSL_CTX_new(TLS_server_method());

	if (!tls_common(ctx, opt.tls_cert, opt.tls_key))
		goto fail;
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (opt.tls_ca)
	{
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(opt.tls_ca);

		if (names == NULL || SSL_CTX_load_verify_locations(ctx, opt.tls_ca, NULL) != 1)
			goto fail;
		SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	}
	return ctx;

fail:
	log_tls_error("-", "TLS setup (--tls-cert, --tls-key, --tls-ca)");
	log_error("cannot set up TLS");
	exit(1);
}

/*
 * The client side, for tls:// receivers: TLS 1.2 or later, the receiver's
 * certificate verified against --deliver-ca (else the system's anchors),
 * the agent's own certificate when the receiver asks for one.
 */
static SSL_CTX *
deliver_tls_context(void)
{
	SSL_CTX    *ctx = SSL_CTX_new(TLS_client_method());

	if (!tls_common(ctx, opt.deliver_cert, opt.deliver_key) ||
		(opt.deliver_ca ? SSL_CTX_load_verify_locations(ctx, opt.deliver_ca, NULL) != 1 :
		 SSL_CTX_set_default_verify_paths(ctx) != 1))
		goto fail;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;

fail:
	log_tls_error("-", "TLS setup (--deliver-ca, --deliver-cert, --deliver-key)");
	log_error("cannot set up TLS for the receivers");
	exit(1);
}

/* Bind every address of --listen; exits when none can be. */
static int
listen_all(int *fds)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC, .ai_flags = AI_PASSIVE};
	struct addrinfo *res;
	char	   *host;
	char	   *port;
	int			n = 0;
	int			rc;

	if (split_host_port(opt.listen, &host, &port) != 0)
	{
		log_error("--listen wants HOST:PORT, [ADDRESS]:PORT or *:PORT");
		exit(2);
	}
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
	{
		log_error("--listen: cannot resolve the address: %s", gai_strerror(rc));
		exit(1);
	}
	for (struct addrinfo *ai = res; ai != NULL && n < MAX_LISTEN; ai = ai->ai_next)
	{
		int			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
								ai->ai_protocol);
		int			one = 1;
		struct sockaddr_storage ss;
		socklen_t	sslen = sizeof ss;
		char		name[80];

		if (fd < 0)
			continue;
		(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (ai->ai_family == AF_INET6)
			(void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0 ||
			getsockname(fd, (struct sockaddr *) &ss, &sslen) != 0)
		{
			peer_name(ai->ai_addr, ai->ai_addrlen, name, sizeof name);
			log_warn("cannot listen on %s: %s", name, strerror(errno));
			close(fd);
			continue;
		}
		peer_name((struct sockaddr *) &ss, sslen, name, sizeof name);
		log_info("listening on %s (%s)", name, opt.tls_cert ? (opt.tls_ca ? "TLS, client certificates required" : "TLS") : "plain MLLP");
		fds[n++] = fd;
	}
	freeaddrinfo(res);
	free(host);
	free(port);
	if (n == 0)
	{
		log_error("cannot listen on any address of --listen");
		exit(1);
	}
	return n;
}

static void
start_deliverer(int *fds, int nfds)
{
	pid_t		pid = fork();

	if (pid < 0)
	{
		log_error("cannot start the delivery process: %s", strerror(errno));
		return;
	}
	if (pid == 0)
	{
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		deliver_main();
	}
	deliverer = pid;
}

/* Reap exited children; true when the delivery process was among them. */
static bool
reap(void)
{
	bool		lost_deliverer = false;
	pid_t		pid;
	int			status;

	got_child = 0;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
	{
		if (pid == deliverer)
		{
			deliverer = 0;
			lost_deliverer = true;
		}
		else
			for (int i = 0; i < opt.max_clients; i++)
				if (children[i] == pid)
				{
					children[i] = 0;
					nchildren--;
					break;
				}
		if (WIFSIGNALED(status))
			log_warn("process %d ended by signal %d", (int) pid, WTERMSIG(status));
		else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
			log_warn("process %d exited with status %d", (int) pid, WEXITSTATUS(status));
	}
	return lost_deliverer;
}

static void
accept_clients(int lfd, int *fds, int nfds, SSL_CTX *tls)
{
	for (;;)
	{
		struct sockaddr_storage ss;
		socklen_t	sslen = sizeof ss;
		char		peer[80];
		int			one = 1;
		int			fd = accept4(lfd, (struct sockaddr *) &ss, &sslen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		pid_t		pid;
		int			slot;

		if (fd < 0)
		{
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED)
			{
				log_warn("accept: %s", strerror(errno));
				/* out of descriptors or memory: do not spin on it */
				sleep_until(now_ms() + 100);
			}
			return;
		}
		peer_name((struct sockaddr *) &ss, sslen, peer, sizeof peer);
		if (nchildren >= opt.max_clients)
		{
			log_warn("peer=%s refused: --max-clients (%d) connections are open", peer, opt.max_clients);
			close(fd);
			continue;
		}
		(void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		pid = fork();
		if (pid < 0)
		{
			log_error("peer=%s refused: cannot fork: %s", peer, strerror(errno));
			close(fd);
			continue;
		}
		if (pid == 0)
		{
			for (int i = 0; i < nfds; i++)
				close(fds[i]);
			free(children);
			serve_client(fd, peer, tls);
		}
		close(fd);
		for (slot = 0; slot < opt.max_clients && children[slot] != 0; slot++)
			;
		children[slot] = pid;
		nchildren++;
	}
}

static void
stop_children(void)
{
	int64_t		deadline = now_ms() + STOP_GRACE_MS;

	log_info("stopping: %d connection(s) to finish", nchildren);
	for (int i = 0; i < opt.max_clients; i++)
		if (children[i] > 0)
			(void) kill(children[i], SIGTERM);
	if (deliverer > 0)
		(void) kill(deliverer, SIGTERM);
	for (;;)
	{
		reap();
		if (nchildren == 0 && deliverer == 0)
			return;
		if (now_ms() >= deadline)
			break;
		sleep_until(now_ms() + 100);	/* SIGCHLD cuts it short */
		got_stop = 0;			/* a second SIGTERM must not end the wait loop */
	}
	log_warn("stopping: processes still running after %d s are killed", STOP_GRACE_MS / 1000);
	for (int i = 0; i < opt.max_clients; i++)
		if (children[i] > 0)
			(void) kill(children[i], SIGKILL);
	if (deliverer > 0)
		(void) kill(deliverer, SIGKILL);
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
}

int
main(int argc, char **argv)
{
	struct sigaction sa;
	sigset_t	block;
	int			fds[MAX_LISTEN];
	int			nfds = 0;
	SSL_CTX    *tls = NULL;
	struct rlimit nocore = {0, 0};
	int64_t		restart_deliverer = 0;

	if (argc >= 2 && strcmp(argv[1], "deliver") == 0)
		return send_main(argc, argv);
	parse_options(argc, argv);

	/* no core dumps: memory holds PHI */
	(void) setrlimit(RLIMIT_CORE, &nocore);
	(void) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = SIG_IGN;
	if (sigaction(SIGPIPE, &sa, NULL) != 0)
		return 1;
	sa.sa_handler = on_stop;
	if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
		return 1;
	sa.sa_handler = on_child;
	sa.sa_flags = SA_NOCLDSTOP;
	if (sigaction(SIGCHLD, &sa, NULL) != 0)
		return 1;
	/* blocked except while waiting (ppoll with wait_mask) */
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &block, &wait_mask) != 0)
		return 1;
	sigdelset(&wait_mask, SIGTERM);
	sigdelset(&wait_mask, SIGINT);
	sigdelset(&wait_mask, SIGCHLD);

	children = calloc(opt.max_clients, sizeof(pid_t));
	if (children == NULL)
		return 1;
	if (opt.tls_cert)
		tls = tls_context();
	if (opt.listen)
		nfds = listen_all(fds);
	for (int i = 0; i < opt.nreceivers && deliver_tls == NULL; i++)
		if (opt.receivers[i].tls)
			deliver_tls = deliver_tls_context();
	if (opt.nreceivers > 0)
		start_deliverer(fds, nfds);
	log_info("started (max %zu bytes a message, idle timeout %d s, max %d clients)",
			 opt.max_bytes, opt.idle_timeout, opt.max_clients);

	while (!got_stop)
	{
		struct pollfd pfds[MAX_LISTEN];
		struct timespec ts;
		int			rc;

		if (got_child && reap() && !got_stop)
		{
			log_warn("the delivery process ended; restarting it in %d s", opt.poll);
			restart_deliverer = now_ms() + (int64_t) opt.poll * 1000;
		}
		if (restart_deliverer && now_ms() >= restart_deliverer)
		{
			restart_deliverer = 0;
			start_deliverer(fds, nfds);
		}
		for (int i = 0; i < nfds; i++)
		{
			pfds[i].fd = fds[i];
			pfds[i].events = POLLIN;
			pfds[i].revents = 0;
		}
		ts.tv_sec = 1;
		ts.tv_nsec = 0;
		rc = ppoll(pfds, nfds, &ts, &wait_mask);
		if (rc < 0)
		{
			if (errno == EINTR)
				continue;
			log_error("poll: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < nfds && !got_stop; i++)
			if (pfds[i].revents & POLLIN)
				accept_clients(fds[i], fds, nfds, tls);
	}

	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	stop_children();
	if (tls)
		SSL_CTX_free(tls);
	log_info("stopped");
	return 0;
}
