/*
 * The C peer of the benchmark report: the uppercase server a C programmer writes with epoll,
 * to compare socketkit's engines with (it is not part of socketkit, and serves nothing else).
 *
 * TCP: one thread, one level-triggered epoll loop. Each readable event gets one read() into a
 * 16 KiB buffer (socketkit's default read_buffer, as in benches/tokio_baseline.rs), ASCII
 * uppercase in place, and one write(). A short write keeps the unsent rest with the
 * connection, which then waits for EPOLLOUT only: it is not read again until the rest is out
 * (back-pressure: a peer that does not read cannot make the server buffer without bound).
 * UDP: a second thread, blocking recvfrom() and sendto(); it sleeps in recvfrom while the TCP
 * cells run, as the epoll thread sleeps in epoll_wait during the UDP cells.
 *
 *   cc -O2 -pthread -o epoll_baseline benches/epoll_baseline.c
 *   ./epoll_baseline --tcp 127.0.0.1:0 --udp 127.0.0.1:0
 *
 * Prints `listening on tcp://IP:PORT` and `listening on udp://IP:PORT` to stderr (the ready
 * lines of the tokio baseline, which scripts/bench.sh reads), then serves until a signal ends
 * it (SIGTERM, SIGINT: their default action). Linux only (epoll, accept4).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_BYTES (16 * 1024)
#define DATAGRAM_BYTES (64 * 1024)
#define BACKLOG 1024 /* tokio's TcpListener::bind uses 1024 too */
#define EVENTS 256

/* One TCP connection. `rest` holds what a short write left unsent (NULL when nothing). */
struct conn {
	int fd;
	char *rest;
	size_t off, len;
};

static void upper(char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] >= 'a' && p[i] <= 'z')
			p[i] -= 'a' - 'A';
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* Binds a socket of `type` to "IP:PORT" or "[IPv6]:PORT" (port 0: the system picks), listens
 * if it is a stream, and prints the ready line. */
static int bind_to(const char *text, int type)
{
	char host[256];
	const char *colon = strrchr(text, ':');
	if (!colon || (size_t)(colon - text) >= sizeof host) {
		fprintf(stderr, "bad address %s (IP:PORT)\n", text);
		exit(2);
	}
	size_t n = (size_t)(colon - text);
	if (text[0] == '[' && n >= 2 && text[n - 1] == ']') {
		memcpy(host, text + 1, n - 2);
		host[n - 2] = '\0';
	} else {
		memcpy(host, text, n);
		host[n] = '\0';
	}
	struct addrinfo hints = {.ai_socktype = type, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
	struct addrinfo *ai;
	int rc = getaddrinfo(host, colon + 1, &hints, &ai);
	if (rc != 0) {
		fprintf(stderr, "bad address %s: %s\n", text, gai_strerror(rc));
		exit(2);
	}
	/* The listener does not block (accept_all takes connections until EAGAIN); the UDP
	 * socket does. */
	int nonblock = type == SOCK_STREAM ? SOCK_NONBLOCK : 0;
	int fd = socket(ai->ai_family, type | nonblock | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
	    (type == SOCK_STREAM && listen(fd, BACKLOG) < 0))
		die(text);
	freeaddrinfo(ai);

	struct sockaddr_storage local;
	socklen_t len = sizeof local;
	char ip[NI_MAXHOST], port[NI_MAXSERV];
	if (getsockname(fd, (struct sockaddr *)&local, &len) < 0 ||
	    getnameinfo((struct sockaddr *)&local, len, ip, sizeof ip, port, sizeof port,
			NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		die("getsockname");
	int v6 = local.ss_family == AF_INET6;
	fprintf(stderr, "listening on %s://%s%s%s:%s\n", type == SOCK_STREAM ? "tcp" : "udp",
		v6 ? "[" : "", ip, v6 ? "]" : "", port);
	return fd;
}

static void *serve_udp(void *arg)
{
	int fd = *(int *)arg;
	static char buf[DATAGRAM_BYTES];
	for (;;) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof peer;
		ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len);
		if (n < 0) {
			if (errno != EINTR)
				perror("recvfrom");
			continue;
		}
		upper(buf, (size_t)n);
		if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, len) < 0)
			perror("sendto");
	}
	return NULL;
}

static void watch(int ep, int op, struct conn *c, unsigned events)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};
	if (epoll_ctl(ep, op, c->fd, &ev) < 0)
		die("epoll_ctl");
}

static void close_conn(struct conn *c)
{
	close(c->fd); /* also takes it out of the epoll set */
	free(c->rest);
	free(c);
}

/* Writes `n` bytes of `p`; keeps what the socket does not take and waits for EPOLLOUT.
 * Returns -1 when the connection is to be closed. */
static int send_or_keep(int ep, struct conn *c, const char *p, size_t n)
{
	ssize_t w = write(c->fd, p, n);
	if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
		return -1;
	size_t sent = w < 0 ? 0 : (size_t)w;
	if (sent == n)
		return 0;
	if (!(c->rest = malloc(n - sent)))
		return -1;
	memcpy(c->rest, p + sent, n - sent);
	c->off = 0;
	c->len = n - sent;
	watch(ep, EPOLL_CTL_MOD, c, EPOLLOUT); /* stop reading until the rest is out */
	return 0;
}

/* EPOLLOUT: more of the rest; once it is all out, read again. */
static int drain(int ep, struct conn *c)
{
	ssize_t w = write(c->fd, c->rest + c->off, c->len - c->off);
	if (w < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
	c->off += (size_t)w;
	if (c->off < c->len)
		return 0;
	free(c->rest);
	c->rest = NULL;
	watch(ep, EPOLL_CTL_MOD, c, EPOLLIN);
	return 0;
}

static void accept_all(int ep, int listener)
{
	for (;;) {
		int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				/* Out of descriptors: back off instead of spinning (as tokio's does). */
				perror("accept");
				nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
				   errno != ECONNABORTED) {
				perror("accept");
			}
			return;
		}
		struct conn *c = calloc(1, sizeof *c);
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		watch(ep, EPOLL_CTL_ADD, c, EPOLLIN);
	}
}

static void serve_tcp(int listener)
{
	static char buf[READ_BYTES]; /* one thread: one buffer, shared by every connection */
	struct epoll_event events[EVENTS];
	struct conn listening = {.fd = listener};
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	watch(ep, EPOLL_CTL_ADD, &listening, EPOLLIN);
	for (;;) {
		int n = epoll_wait(ep, events, EVENTS, -1);
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		for (int i = 0; i < n; i++) {
			struct conn *c = events[i].data.ptr;
			int gone = 0;
			if (c == &listening) {
				accept_all(ep, listener);
				continue;
			}
			if (c->rest) {
				gone = drain(ep, c); /* EPOLLOUT, or EPOLLERR/EPOLLHUP: write tells */
			} else {
				ssize_t r = read(c->fd, buf, sizeof buf);
				if (r > 0) {
					upper(buf, (size_t)r);
					gone = send_or_keep(ep, c, buf, (size_t)r);
				} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
					gone = -1; /* EOF, or a reset */
				}
			}
			if (gone)
				close_conn(c);
		}
	}
}

int main(int argc, char **argv)
{
	const char *tcp = NULL, *udp = NULL;
	int usage = argc % 2 == 0; /* flags come in pairs */
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--tcp"))
			tcp = argv[i + 1];
		else if (!strcmp(argv[i], "--udp"))
			udp = argv[i + 1];
		else
			usage = 1;
	}
	if (usage || (!tcp && !udp)) {
		fprintf(stderr, "usage: epoll_baseline [--tcp IP:PORT] [--udp IP:PORT]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN); /* a write to a reset peer fails with EPIPE instead */
	setvbuf(stderr, NULL, _IOLBF, 0);
	int listener = tcp ? bind_to(tcp, SOCK_STREAM) : -1;
	static int datagrams;
	if (udp) {
		datagrams = bind_to(udp, SOCK_DGRAM);
		pthread_t thread;
		if ((errno = pthread_create(&thread, NULL, serve_udp, &datagrams)) != 0)
			die("pthread_create");
	}
	if (listener >= 0)
		serve_tcp(listener);
	else
		for (;;)
			pause();
}
