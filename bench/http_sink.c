/* bench/http_sink.c -- a fast HTTP receiver for bench/webhook: one thread, epoll,
 * keep-alive connections, answers every POST 200 at once (no signature check: the
 * Python receiver in t/receiver checks signatures; here only evproc's side is timed).
 *
 * Logs one line per request: the receipt time (Unix seconds, microseconds) and the
 * request body (the webhook JSON, one line as evproc writes it), tab-separated, so the
 * bench can count events and take commit-to-receiver latency from enqueued_at.
 *
 * Usage: http_sink --port-file FILE --log FILE   (listens on an ephemeral port of
 * 127.0.0.1, written to FILE, and its pid to FILE.pid)
 *
 * Build: cc -O2 -o http_sink bench/http_sink.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_EVENTS 64
#define INITIAL_BUFFER 65536

struct conn {
  int fd;
  char *buf;
  size_t len, cap;
};

static volatile sig_atomic_t stopping = 0;
static void on_signal(int sig) {
  (void)sig;
  stopping = 1;
}

static FILE *log_file;

static double now_seconds(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* The value of header `name` (case-insensitive) in head[0..head_len), or NULL. */
static const char *find_header(const char *head, size_t head_len, const char *name,
                               size_t *value_len) {
  size_t name_len = strlen(name);
  const char *line = memchr(head, '\n', head_len);
  while (line != NULL && (size_t)(line - head) < head_len) {
    line++;
    size_t left = head_len - (size_t)(line - head);
    if (left > name_len + 1 && strncasecmp(line, name, name_len) == 0 && line[name_len] == ':') {
      const char *value = line + name_len + 1;
      while (*value == ' ') value++;
      const char *end = memchr(value, '\r', head_len - (size_t)(value - head));
      *value_len = end != NULL ? (size_t)(end - value) : 0;
      return value;
    }
    line = memchr(line, '\n', left);
  }
  return NULL;
}

static void send_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return; /* the client went away (or its buffer is full: a tiny answer, not here) */
    }
    data += n;
    len -= (size_t)n;
  }
}

/* Serves every complete request in the buffer; returns 0 when the connection is done. */
static int serve(struct conn *c) {
  static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
  for (;;) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (end == NULL) return 1;
    size_t head_len = (size_t)(end - c->buf) + 4;
    size_t value_len = 0;
    const char *length = find_header(c->buf, head_len, "Content-Length", &value_len);
    size_t body_len = length != NULL ? strtoul(length, NULL, 10) : 0;
    if (c->len < head_len + body_len) {
      const char *expect = find_header(c->buf, head_len, "Expect", &value_len);
      if (expect != NULL && c->len == head_len) send_all(c->fd, go_on, sizeof go_on - 1);
      return 1;
    }
    fprintf(log_file, "%.6f\t", now_seconds());
    fwrite(c->buf + head_len, 1, body_len, log_file);
    fputc('\n', log_file);
    send_all(c->fd, ok, sizeof ok - 1);
    size_t used = head_len + body_len;
    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;
  }
}

int main(int argc, char **argv) {
  const char *port_file = NULL, *log_path = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--port-file") == 0) port_file = argv[i + 1];
    if (strcmp(argv[i], "--log") == 0) log_path = argv[i + 1];
  }
  if (port_file == NULL || log_path == NULL) {
    fprintf(stderr, "usage: http_sink --port-file FILE --log FILE\n");
    return 2;
  }
  log_file = fopen(log_path, "w");
  if (log_file == NULL) {
    perror(log_path);
    return 1;
  }
  setvbuf(log_file, NULL, _IOFBF, 1 << 20);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  signal(SIGPIPE, SIG_IGN);

  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 512) != 0) {
    perror("bind/listen");
    return 1;
  }
  socklen_t addr_len = sizeof addr;
  getsockname(listener, (struct sockaddr *)&addr, &addr_len);
  char pid_path[4096];
  snprintf(pid_path, sizeof pid_path, "%s.pid", port_file);
  FILE *f = fopen(pid_path, "w");
  if (f == NULL) return 1;
  fprintf(f, "%d", (int)getpid());
  fclose(f);
  f = fopen(port_file, "w"); /* last: the port file's presence means "ready" */
  if (f == NULL) return 1;
  fprintf(f, "%d", ntohs(addr.sin_port));
  fclose(f);

  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
  struct epoll_event events[MAX_EVENTS];
  while (!stopping) {
    int n = epoll_wait(ep, events, MAX_EVENTS, 100);
    if (n <= 0) {
      fflush(log_file); /* idle: what was received is on disk for the bench to read */
      continue;
    }
    for (int i = 0; i < n; i++) {
      struct conn *c = events[i].data.ptr;
      if (c == NULL) {
        int fd;
        while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct conn *nc = calloc(1, sizeof *nc);
          nc->fd = fd;
          nc->cap = INITIAL_BUFFER;
          nc->buf = malloc(nc->cap);
          struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
        }
        continue;
      }
      int open = 1;
      for (;;) {
        if (c->cap - c->len < 4096) {
          c->cap *= 2;
          c->buf = realloc(c->buf, c->cap);
        }
        ssize_t got = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (got > 0) {
          c->len += (size_t)got;
          continue;
        }
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (got < 0 && errno == EINTR) continue;
        open = 0; /* closed by the client, or an error */
        break;
      }
      if (c->len > 0) serve(c);
      if (!open) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        free(c->buf);
        free(c);
      }
    }
  }
  fflush(log_file);
  fclose(log_file);
  return 0;
}
